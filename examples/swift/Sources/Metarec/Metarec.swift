// A thin Swift layer over the C API (include/metarec.h): Model and Session own their handles
// and free them in deinit; every failing status throws MetarecError with the C code.
//
// Thread safety is the C API's: a Model is immutable and may be shared by any number of
// threads (and outlives nothing: sessions keep the C model alive); a Session is for one user
// and must be used by one thread at a time.
#if canImport(Darwin)
import Darwin
#else
import Glibc
#endif
import CMetarec

/// A failed call: `code` is one of the C API's METAREC_ERR_* values.
public struct MetarecError: Error, CustomStringConvertible {
    public let code: Int32

    /// `contribute`: the model's adaptation cannot give a federated update (HML, MF, ...).
    public static let notContributable = Int32(METAREC_ERR_NOT_CONTRIBUTABLE)
    /// `contribute`: fewer than two support ratings.
    public static let tooFewRatings = Int32(METAREC_ERR_TOO_FEW_RATINGS)
    /// `contribute`: a clip norm that is NaN, infinite, zero or negative.
    public static let invalidClipNorm = Int32(METAREC_ERR_INVALID_CLIP_NORM)

    public var description: String {
        var buf = [CChar](repeating: 0, count: 256)
        _ = metarec_error_message(code, &buf, buf.count)
        return "metarec error \(code): \(String(cString: buf))"
    }
}

@inline(__always)
func check(_ code: Int32) throws {
    if code != METAREC_OK {
        throw MetarecError(code: code)
    }
}

/// Reads a string through the C API's `(buf, buf_len, out_len)` convention.
func text(_ get: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32) throws -> String {
    var needed = 0
    let code = get(nil, 0, &needed)
    if code != METAREC_ERR_BUFFER_TOO_SMALL {
        try check(code)
        return ""
    }
    var buf = [CChar](repeating: 0, count: needed)
    try check(get(&buf, needed, nil))
    return String(cString: buf)
}

/// The library version, e.g. "0.1.0".
public var metarecVersion: String { String(cString: metarec_version()) }

/// Checks that the loaded library matches the header this module was compiled against.
public func checkMetarecVersion() throws {
    try check(metarec_check_version(UInt32(METAREC_VERSION_MAJOR), UInt32(METAREC_VERSION_MINOR)))
}

/// Which fields of a model: the user's profile fields or the catalogue's item fields.
public enum FieldSide {
    case user, item

    var code: Int32 { self == .user ? Int32(METAREC_FIELDS_USER) : Int32(METAREC_FIELDS_ITEM) }
}

/// A loaded, validated, immutable model.
public final class Model {
    let handle: OpaquePointer

    /// Loads the model file at `path`.
    public init(path: String) throws {
        var model: OpaquePointer?
        try check(metarec_model_load(path, &model))
        handle = model!
    }

    /// Loads a model from bytes in memory (they are copied).
    public init(bytes: [UInt8]) throws {
        var model: OpaquePointer?
        try check(bytes.withUnsafeBufferPointer { metarec_model_load_from_memory($0.baseAddress, $0.count, &model) })
        handle = model!
    }

    deinit {
        metarec_model_free(handle)
    }

    public var itemCount: Int { metarec_model_item_count(handle) }

    public func itemId(_ index: Int) throws -> String {
        try text { metarec_model_item_id(handle, index, $0, $1, $2) }
    }

    /// The meta-learning method, spelled like the trainer's --method values ("melu", ...).
    public func method() throws -> String {
        try text { metarec_model_method(handle, $0, $1, $2) }
    }

    public func fieldNames(_ side: FieldSide) throws -> [String] {
        try (0..<metarec_model_field_count(handle, side.code)).map { index in
            try text { metarec_model_field_name(handle, side.code, index, $0, $1, $2) }
        }
    }

    public func newSession() throws -> Session {
        try Session(model: self)
    }
}

/// One ranked item.
public struct Recommendation {
    public let index: Int
    public let id: String
    public let score: Float
}

/// One user's session: profile, support ratings, adapted weights. One thread at a time.
public final class Session {
    let handle: OpaquePointer
    public let model: Model

    init(model: Model) throws {
        var session: OpaquePointer?
        try check(metarec_session_new(model.handle, &session))
        handle = session!
        self.model = model
    }

    deinit {
        metarec_session_free(handle)
    }

    /// Sets a profile field; values the model does not know map to its "unknown" embedding.
    public func setProfile(_ field: String, _ value: String) throws {
        try check(metarec_session_set_profile(handle, field, value))
    }

    public func addRating(itemId: String, rating: Float) throws {
        try check(metarec_session_add_rating(handle, itemId, rating))
    }

    public func clearRatings() throws {
        try check(metarec_session_clear_ratings(handle))
    }

    /// Adapts to the support ratings; `steps` 0 uses the model's own step count.
    public func adapt(steps: UInt32 = 0) throws {
        try check(metarec_session_adapt(handle, steps))
    }

    /// Predicted ratings of the given items.
    public func score(itemIds: [String]) throws -> [Float] {
        let copies: [UnsafePointer<CChar>?] = itemIds.map { UnsafePointer(strdup($0)) }
        defer { copies.forEach { free(UnsafeMutableRawPointer(mutating: $0)) } }
        var scores = [Float](repeating: 0, count: itemIds.count)
        try check(metarec_session_score(handle, copies, copies.count, &scores))
        return scores
    }

    /// The `k` best items, best first, leaving out rated items unless `excludeRated` is false.
    public func topK(_ k: Int, excludeRated: Bool = true) throws -> [Recommendation] {
        var indices = [Int](repeating: 0, count: k)
        var scores = [Float](repeating: 0, count: k)
        var len = 0
        try check(metarec_session_top_k(handle, k, excludeRated ? 1 : 0, &indices, &scores, &len))
        return try (0..<len).map { Recommendation(index: indices[$0], id: try model.itemId(indices[$0]), score: scores[$0]) }
    }

    /// This user's federated contribution (`metarec_session_contribute`): the first-order
    /// meta-update from the support ratings, clipped to L2 norm `clipNorm`, as the versioned,
    /// CRC-checked blob the app sends to the server (`trainer federated aggregate` reads it). It
    /// carries no ratings, item ids, counts or losses. Afterwards the session scores with the
    /// meta-learned weights: call `adapt()` again. Throws `MetarecError` with codes such as
    /// `MetarecError.notContributable`, `.tooFewRatings` or `.invalidClipNorm`.
    public func contribute(clipNorm: Float) throws -> [UInt8] {
        var needed = 0
        let code = metarec_session_contribute(handle, clipNorm, nil, 0, &needed)
        if code != METAREC_ERR_BUFFER_TOO_SMALL {
            try check(code)
            return []
        }
        var blob = [UInt8](repeating: 0, count: needed)
        var len = 0
        try check(metarec_session_contribute(handle, clipNorm, &blob, needed, &len))
        return Array(blob.prefix(len))
    }
}
