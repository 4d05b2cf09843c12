// personalize (Swift): loads a model, reads a user file in the trainer's format (tab-separated
// user/profile/support/query lines), adapts and prints the ten best unrated items, like
// examples/c/personalize.c.
//
//   usage: personalize MODEL.mrec USER.tsv
import Foundation
import Metarec

let args = CommandLine.arguments
guard args.count == 3, let userFile = try? String(contentsOfFile: args[2], encoding: .utf8) else {
    FileHandle.standardError.write("usage: personalize MODEL.mrec USER.tsv\n".data(using: .utf8)!)
    exit(2)
}

do {
    try checkMetarecVersion()
    let model = try Model(path: args[1])
    print("metarec \(metarecVersion) (\(try model.method())): \(args[1]), \(model.itemCount) items")
    let session = try model.newSession()
    for line in userFile.split(separator: "\n") where !line.hasPrefix("#") {
        let parts = line.split(separator: "\t").map(String.init)
        switch (parts.first, parts.count) {
        case ("profile"?, 3): try session.setProfile(parts[1], parts[2])
        case ("support"?, 3): try session.addRating(itemId: parts[1], rating: Float(parts[2]) ?? .nan)
        default: continue
        }
    }
    try session.adapt()
    let top = try session.topK(10)
    print("top \(top.count) recommendations (unrated items):")
    for (rank, item) in top.enumerated() {
        print(String(format: "%3d. ", rank + 1) + item.id + String(format: "\t%.4f", Double(item.score)))
    }
} catch {
    FileHandle.standardError.write("personalize: \(error)\n".data(using: .utf8)!)
    exit(1)
}
