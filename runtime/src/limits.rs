//! Documented caps on what one model or one call may ask of the runtime.
//!
//! Every request past a cap is an error, never an out-of-memory, an overflow or a call that
//! runs for hours. The C API exports the same numbers as `METAREC_MAX_*` macros.
//!
//! | cap | value | error past it |
//! |---|---|---|
//! | [`MAX_MODEL_BYTES`] | 1 GiB | [`Error::ModelTooLarge`](crate::Error::ModelTooLarge) |
//! | [`MAX_SUPPORT_RATINGS`] | 10,000 | [`Error::TooManyRatings`](crate::Error::TooManyRatings) |
//! | [`MAX_CANDIDATES`] | 1,048,576 | [`Error::TooManyCandidates`](crate::Error::TooManyCandidates) (a catalogue this large: [`Error::ModelTooLarge`](crate::Error::ModelTooLarge)) |
//! | [`MAX_STEPS`] | 1,000 | [`Error::TooManySteps`](crate::Error::TooManySteps) (a model's own step count: [`Error::ModelTooLarge`](crate::Error::ModelTooLarge)) |
//! | [`MAX_STRING_LEN`] | 4,096 bytes | [`Error::StringTooLong`](crate::Error::StringTooLong) (inside a model: [`Error::ModelTooLarge`](crate::Error::ModelTooLarge)) |

/// Largest model file (or in-memory buffer) [`crate::Model::from_bytes`] accepts: 1 GiB.
pub const MAX_MODEL_BYTES: usize = 1 << 30;

/// Most support ratings one session holds ([`crate::Session::add_rating`] refuses more).
pub const MAX_SUPPORT_RATINGS: usize = 10_000;

/// Most items one scoring call may score, and the largest catalogue a model may hold (so that
/// scoring the whole catalogue always fits): 2^20 = 1,048,576.
pub const MAX_CANDIDATES: usize = 1 << 20;

/// Most gradient steps one adaptation may run, and the largest step count a model may ask for.
pub const MAX_STEPS: u32 = 1_000;

/// Longest item id, field name or field value, in bytes of UTF-8 (the same cap holds for the
/// strings stored in a model, so every id a model holds can be passed back).
pub const MAX_STRING_LEN: usize = 4_096;
