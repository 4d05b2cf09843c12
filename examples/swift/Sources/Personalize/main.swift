// personalize (Swift): loads a model, reads a user file in the trainer's format (tab-separated
// user/profile/support/query lines), prints the size of the federated contribution the support
// ratings give (the blob an app would send to the server; not printed for models that cannot
// contribute), adapts and prints the ten best unrated items, like examples/c/personalize.c.
//
//   usage: personalize MODEL.mrec USER.tsv
//
// The user file is checked whole before the library is called: a line of another kind or with
// another number of tab-separated fields, or a rating that is not a finite number (nan, inf,
// 1e999, empty, 4.5x), is reported with the file, line number and value. Exits with 1 on a
// metarec error, 2 on a usage or file error.
import Foundation
import Metarec

func fail(_ message: String) -> Never {
    FileHandle.standardError.write("personalize: \(message)\n".data(using: .utf8)!)
    exit(2)
}

struct Rating {
    let itemId: String
    let value: Float
}

struct UserFile {
    var user: String?
    var profile: [(field: String, value: String)] = []
    var support: [Rating] = []
    var query: [Rating] = []
}

func readUserFile(_ path: String) -> UserFile {
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        fail("cannot read \(path): \(error.localizedDescription)")
    }
    var file = UserFile()
    // Lines end in "\n" or "\r\n" (one Character); empty lines are kept so the numbers are right.
    let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0.isNewline })
    for (index, line) in lines.enumerated() {
        if line.isEmpty || line.hasPrefix("#") { continue }
        let place = "\(path):\(index + 1)"
        let parts = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        let kind = parts[0]
        let want: Int
        switch kind {
        case "user": want = 2
        case "profile", "support", "query": want = 3
        default: fail("\(place): unknown line kind '\(kind)' (want user, profile, support or query)")
        }
        guard parts.count == want else {
            fail("\(place): a \(kind) line has \(parts.count) tab-separated fields, want \(want)")
        }
        switch kind {
        case "user": file.user = parts[1]
        case "profile": file.profile.append((field: parts[1], value: parts[2]))
        default:
            // Float(_:) takes "nan" and "inf", and 1e999 overflows to infinity.
            guard let value = Float(parts[2]), value.isFinite else {
                fail("\(place): \(kind) rating '\(parts[2])' is not a finite number")
            }
            let rating = Rating(itemId: parts[1], value: value)
            if kind == "support" { file.support.append(rating) } else { file.query.append(rating) }
        }
    }
    return file
}

let args = CommandLine.arguments
guard args.count == 3 else {
    FileHandle.standardError.write("usage: personalize MODEL.mrec USER.tsv\n".data(using: .utf8)!)
    exit(2)
}
let userFile = readUserFile(args[2])

do {
    try checkMetarecVersion()
    let model = try Model(path: args[1])
    print("metarec \(metarecVersion) (\(try model.method())): \(args[1]), \(model.itemCount) items")
    let session = try model.newSession()
    for (field, value) in userFile.profile {
        try session.setProfile(field, value)
    }
    for rating in userFile.support {
        try session.addRating(itemId: rating.itemId, rating: rating.value)
    }
    // Before adapt(): a contribution leaves the session unadapted.
    do {
        let blob = try session.contribute(clipNorm: 1)
        print("contribution: \(blob.count) bytes (clip norm 1)")
    } catch let error as MetarecError
        where error.code == MetarecError.notContributable || error.code == MetarecError.tooFewRatings {
        print("contribution: none (\(error))")
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
