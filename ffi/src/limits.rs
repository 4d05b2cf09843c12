//! The runtime's documented caps, as header macros (`metarec_runtime::limits` holds the same
//! numbers; a test checks that they agree). A request past a cap fails with the error named
//! beside it, never with an out-of-memory or an overflow.

/// Largest model file `metarec_model_load` reads and largest buffer
/// `metarec_model_load_from_memory` accepts, in bytes (1 GiB); past it:
/// `METAREC_ERR_MODEL_TOO_LARGE`.
pub const METAREC_MAX_MODEL_BYTES: usize = 1_073_741_824;
/// Most support ratings one session holds; past it `metarec_session_add_rating` returns
/// `METAREC_ERR_TOO_MANY_RATINGS`.
pub const METAREC_MAX_SUPPORT_RATINGS: usize = 10_000;
/// Most items one `metarec_session_score` call scores (`METAREC_ERR_TOO_MANY_CANDIDATES` past
/// it), and the largest catalogue a model may hold (`METAREC_ERR_MODEL_TOO_LARGE`).
pub const METAREC_MAX_CANDIDATES: usize = 1_048_576;
/// Most gradient steps `metarec_session_adapt` runs (`METAREC_ERR_TOO_MANY_STEPS` past it), and
/// the largest step count a model may ask for (`METAREC_ERR_MODEL_TOO_LARGE`).
pub const METAREC_MAX_STEPS: u32 = 1_000;
/// Longest item id, field name or field value, in bytes without the NUL
/// (`METAREC_ERR_STRING_TOO_LONG` past it; the library reads at most this many bytes plus one
/// of a string argument).
pub const METAREC_MAX_STRING_LEN: usize = 4_096;

#[cfg(test)]
mod tests {
    use super::*;
    use metarec_runtime::limits;

    #[test]
    fn header_limits_equal_the_runtime_limits() {
        assert_eq!(METAREC_MAX_MODEL_BYTES, limits::MAX_MODEL_BYTES);
        assert_eq!(METAREC_MAX_SUPPORT_RATINGS, limits::MAX_SUPPORT_RATINGS);
        assert_eq!(METAREC_MAX_CANDIDATES, limits::MAX_CANDIDATES);
        assert_eq!(METAREC_MAX_STEPS, limits::MAX_STEPS);
        assert_eq!(METAREC_MAX_STRING_LEN, limits::MAX_STRING_LEN);
    }
}
