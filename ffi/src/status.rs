//! Status codes returned by every fallible C function, and their messages.
//!
//! Codes are never reused or renumbered. 0 is success; 1–99 belong to the C layer itself
//! (pointer and buffer misuse, I/O, panics); 100–199 are the runtime's model-loading errors,
//! 200–299 its session errors and 300–399 its bugs (a broken internal invariant), passed through
//! unchanged from `metarec_runtime::Error::code()`.

use metarec_runtime::Error;

/// Success.
pub const METAREC_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const METAREC_ERR_NULL_POINTER: i32 = 1;
/// A string argument was not valid UTF-8.
pub const METAREC_ERR_INVALID_UTF8: i32 = 2;
/// The model file could not be opened or read (missing, a directory, no permission, ...).
pub const METAREC_ERR_IO: i32 = 3;
/// An output buffer is too small; the call reports the size it needs.
pub const METAREC_ERR_BUFFER_TOO_SMALL: i32 = 4;
/// An argument is out of range (an item index past the catalogue, a wrong buffer length,
/// a misaligned or oversized array).
pub const METAREC_ERR_INVALID_ARGUMENT: i32 = 5;
/// The library panicked (a bug in metarec). The session involved, if any, must only be freed.
pub const METAREC_ERR_PANIC: i32 = 6;
/// The library is not compatible with the header version the caller was compiled against
/// (`metarec_check_version`).
pub const METAREC_ERR_INCOMPATIBLE_VERSION: i32 = 7;

/// The file does not start with the metarec magic bytes.
pub const METAREC_ERR_BAD_MAGIC: i32 = 100;
/// The file's major format version is not one this library reads.
pub const METAREC_ERR_UNSUPPORTED_VERSION: i32 = 101;
/// The file is shorter than its header or than the body length the header states.
pub const METAREC_ERR_TRUNCATED: i32 = 102;
/// The body's CRC32 does not match the header (the file is corrupted).
pub const METAREC_ERR_CHECKSUM_MISMATCH: i32 = 103;
/// Bytes follow the model body.
pub const METAREC_ERR_TRAILING_BYTES: i32 = 104;
/// The body is not a valid encoding of a model.
pub const METAREC_ERR_MALFORMED_BODY: i32 = 105;
/// The model's sizes do not fit together.
pub const METAREC_ERR_INCONSISTENT_DIMENSIONS: i32 = 106;
/// The model holds a NaN, infinite or negative-rate parameter, or (from an adaptation) a
/// fold-in cannot be solved for this user: the model's ridge weights are too small for the
/// features it computes.
pub const METAREC_ERR_NON_FINITE_PARAMETER: i32 = 107;
/// The model file needs a feature (a required flag of its header) this library does not
/// implement; a newer library may read it.
pub const METAREC_ERR_UNSUPPORTED_FEATURE: i32 = 108;
/// The model goes past a documented limit: a file larger than `METAREC_MAX_MODEL_BYTES`, more
/// than `METAREC_MAX_CANDIDATES` items, more than `METAREC_MAX_STEPS` inner steps, or an id,
/// field name or value longer than `METAREC_MAX_STRING_LEN` bytes.
pub const METAREC_ERR_MODEL_TOO_LARGE: i32 = 109;
/// An item id is not in the model's catalogue.
pub const METAREC_ERR_UNKNOWN_ITEM: i32 = 200;
/// A profile field name is not one of the model's user fields.
pub const METAREC_ERR_UNKNOWN_FIELD: i32 = 201;
/// A rating is NaN, infinite or outside the model's rating scale.
pub const METAREC_ERR_INVALID_RATING: i32 = 202;
/// The session already holds the maximum number of support ratings.
pub const METAREC_ERR_TOO_MANY_RATINGS: i32 = 203;
/// An output length differs from the number of candidates.
pub const METAREC_ERR_LENGTH_MISMATCH: i32 = 204;
/// A scoring call asks for more than `METAREC_MAX_CANDIDATES` items.
pub const METAREC_ERR_TOO_MANY_CANDIDATES: i32 = 205;
/// An adaptation asks for more than `METAREC_MAX_STEPS` gradient steps.
pub const METAREC_ERR_TOO_MANY_STEPS: i32 = 206;
/// An item id, field name or value is longer than `METAREC_MAX_STRING_LEN` bytes.
pub const METAREC_ERR_STRING_TOO_LONG: i32 = 207;
/// `metarec_session_contribute` was asked of a model whose adaptation is neither gradient steps
/// over every decision-MLP parameter nor the fold-in (a factor model, several initialisations
/// (HML), an adaptation scope `head` or `user`, or zero inner steps).
pub const METAREC_ERR_NOT_CONTRIBUTABLE: i32 = 208;
/// `metarec_session_contribute` needs at least two support ratings.
pub const METAREC_ERR_TOO_FEW_RATINGS: i32 = 209;
/// A clip norm is NaN, infinite, zero or negative.
pub const METAREC_ERR_INVALID_CLIP_NORM: i32 = 210;
/// An internal invariant of the library is broken (a bug in metarec, never the caller's input;
/// please report it). Any call that loads a model, adapts or scores may return it instead of a
/// wrong result. Its outputs are unspecified; a session that returned it scores with the
/// meta-learned weights until it adapts again.
pub const METAREC_ERR_INTERNAL: i32 = 300;

/// Every code the C layer defines itself, with its message.
pub(crate) const FFI_CODES: [(i32, &str); 8] = [
    (METAREC_OK, "ok"),
    (METAREC_ERR_NULL_POINTER, "a required pointer argument is NULL"),
    (METAREC_ERR_INVALID_UTF8, "a string argument is not valid UTF-8"),
    (METAREC_ERR_IO, "the model file could not be opened or read"),
    (METAREC_ERR_BUFFER_TOO_SMALL, "an output buffer is too small"),
    (METAREC_ERR_INVALID_ARGUMENT, "an argument is out of range"),
    (METAREC_ERR_PANIC, "internal error: metarec panicked (please report this bug)"),
    (
        METAREC_ERR_INCOMPATIBLE_VERSION,
        "the library is not compatible with the header version the program was built with",
    ),
];

/// Message for unknown codes.
pub(crate) const UNKNOWN_CODE_MESSAGE: &str = "unknown error code";

/// A failed call's status code, so `?` works inside the entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Code(pub(crate) i32);

impl From<Error> for Code {
    fn from(error: Error) -> Self {
        // Runtime codes are small (100..400), so the cast never wraps.
        Code(error.code() as i32)
    }
}

/// Result of the body of an entry point.
pub(crate) type Status<T> = Result<T, Code>;

/// The message of any code: the C layer's own, the runtime's, or "unknown error code".
pub fn message(code: i32) -> &'static str {
    if let Some((_, text)) = FFI_CODES.iter().find(|(known, _)| *known == code) {
        return text;
    }
    Error::ALL
        .iter()
        .find(|error| i64::from(error.code()) == i64::from(code))
        .map_or(UNKNOWN_CODE_MESSAGE, |error| error.message())
}
