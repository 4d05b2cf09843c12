//! The runtime's one error type: small, closed, fieldless, so it crosses the C ABI as a number.

use core::fmt;

/// Everything that can go wrong in the runtime. Variants are never reused or renumbered:
/// the C API exposes `code()` as a stable number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The file does not start with the metarec magic bytes.
    BadMagic,
    /// The file's major format version is not one this runtime reads.
    UnsupportedVersion,
    /// The file is shorter than its header or than the body length the header states.
    Truncated,
    /// The body's CRC32 does not match the header.
    ChecksumMismatch,
    /// Bytes follow the body (in the file or inside the postcard body).
    TrailingBytes,
    /// The body is not a valid postcard encoding of a model.
    MalformedBody,
    /// The body decodes, but its sizes do not fit together (layers, embeddings, vocabularies).
    InconsistentDimensions,
    /// A weight, embedding or hyper-parameter is NaN or infinite (or a learning rate is negative,
    /// or a ridge weight not positive); or a fold-in's system is not positive definite in f64 for
    /// this user (the model's ridge weights too small for the features it computes).
    NonFiniteParameter,
    /// An item id is not in the model's catalogue.
    UnknownItem,
    /// A profile field name is not one of the model's user fields.
    UnknownField,
    /// A rating is NaN, infinite or outside the model's rating scale.
    InvalidRating,
    /// The session already holds the maximum number of support ratings.
    TooManyRatings,
    /// An output buffer's length differs from the number of candidates.
    LengthMismatch,
    /// The file needs a feature (a required flag) this runtime does not implement.
    UnsupportedFeature,
    /// The model goes past a documented limit of this runtime ([`crate::limits`]): a file
    /// larger than [`crate::limits::MAX_MODEL_BYTES`], a catalogue larger than
    /// [`crate::limits::MAX_CANDIDATES`], more inner steps than [`crate::limits::MAX_STEPS`], or
    /// an id, field name or value longer than [`crate::limits::MAX_STRING_LEN`].
    ModelTooLarge,
    /// A scoring call asks for more than [`crate::limits::MAX_CANDIDATES`] items.
    TooManyCandidates,
    /// An adaptation asks for more than [`crate::limits::MAX_STEPS`] gradient steps.
    TooManySteps,
    /// An item id, field name or value is longer than [`crate::limits::MAX_STRING_LEN`] bytes.
    StringTooLong,
    /// A federated contribution was asked of a model whose adaptation is neither gradient steps
    /// over every decision-MLP parameter nor the fold-in (a factor model, several
    /// initialisations, an adaptation scope `head` or `user`, or zero inner steps).
    NotContributable,
    /// A federated contribution needs at least two support ratings (one to adapt on, one to
    /// score the adapted weights on).
    TooFewRatings,
    /// A clip norm is NaN, infinite, zero or negative.
    InvalidClipNorm,
    /// An internal invariant is broken: a bug in metarec, never the caller's input (a validated
    /// model makes every one of them hold). The call's outputs are unspecified; a session that
    /// returned it scores with the meta-learned weights until it adapts again. Debug builds
    /// assert instead of returning it.
    Internal,
}

impl Error {
    /// Stable numeric code (also used by the C API); 0 is reserved for success. 100–199: the
    /// model file and its validation; 200–299: a session call's arguments; 300–399: bugs in
    /// metarec itself.
    pub const fn code(self) -> u32 {
        match self {
            Error::BadMagic => 100,
            Error::UnsupportedVersion => 101,
            Error::Truncated => 102,
            Error::ChecksumMismatch => 103,
            Error::TrailingBytes => 104,
            Error::MalformedBody => 105,
            Error::InconsistentDimensions => 106,
            Error::NonFiniteParameter => 107,
            Error::UnknownItem => 200,
            Error::UnknownField => 201,
            Error::InvalidRating => 202,
            Error::TooManyRatings => 203,
            Error::LengthMismatch => 204,
            Error::UnsupportedFeature => 108,
            Error::ModelTooLarge => 109,
            Error::TooManyCandidates => 205,
            Error::TooManySteps => 206,
            Error::StringTooLong => 207,
            Error::NotContributable => 208,
            Error::TooFewRatings => 209,
            Error::InvalidClipNorm => 210,
            Error::Internal => 300,
        }
    }

    /// Every variant, for tables and exhaustive tests.
    pub const ALL: [Error; 22] = [
        Error::BadMagic,
        Error::UnsupportedVersion,
        Error::Truncated,
        Error::ChecksumMismatch,
        Error::TrailingBytes,
        Error::MalformedBody,
        Error::InconsistentDimensions,
        Error::NonFiniteParameter,
        Error::UnknownItem,
        Error::UnknownField,
        Error::InvalidRating,
        Error::TooManyRatings,
        Error::LengthMismatch,
        Error::UnsupportedFeature,
        Error::ModelTooLarge,
        Error::TooManyCandidates,
        Error::TooManySteps,
        Error::StringTooLong,
        Error::NotContributable,
        Error::TooFewRatings,
        Error::InvalidClipNorm,
        Error::Internal,
    ];

    /// One-line human-readable description.
    pub const fn message(self) -> &'static str {
        match self {
            Error::BadMagic => "not a metarec model file (bad magic bytes)",
            Error::UnsupportedVersion => "unsupported model format major version",
            Error::Truncated => "model file is truncated",
            Error::ChecksumMismatch => "model body checksum mismatch (file corrupted)",
            Error::TrailingBytes => "unexpected bytes after the model body",
            Error::MalformedBody => "model body is malformed",
            Error::InconsistentDimensions => "model dimensions are inconsistent",
            Error::NonFiniteParameter => {
                "model holds a NaN, infinite or negative-rate parameter (or ridge weights too small to fold this user in)"
            }
            Error::UnknownItem => "item id is not in the model's catalogue",
            Error::UnknownField => "profile field is not one of the model's user fields",
            Error::InvalidRating => "rating is NaN, infinite or outside the model's rating scale",
            Error::TooManyRatings => "too many support ratings in one session",
            Error::LengthMismatch => "output buffer length differs from the candidate count",
            Error::UnsupportedFeature => "model file needs a feature this runtime does not implement",
            Error::ModelTooLarge => {
                "model exceeds a runtime limit (file size, catalogue size, inner steps or string length)"
            }
            Error::TooManyCandidates => "too many candidate items in one scoring call",
            Error::TooManySteps => "too many adaptation steps",
            Error::StringTooLong => "item id, field name or value is too long",
            Error::NotContributable => {
                "this model's adaptation has no first-order meta-update to contribute (factor model, several initialisations, scope head or user, or no steps)"
            }
            Error::TooFewRatings => "a contribution needs at least two support ratings",
            Error::InvalidClipNorm => "clip norm is NaN, infinite or not positive",
            Error::Internal => "internal invariant broken (a bug in metarec; please report)",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for Error {}

/// Result alias used across the runtime.
pub type Result<T> = core::result::Result<T, Error>;

/// A broken internal invariant (`what` names it): asserts in debug builds (the tests and the
/// fuzz targets), and in release builds becomes [`Error::Internal`], which the public call
/// returns instead of a wrong result.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn broken(what: &'static str) -> Error {
    debug_assert!(false, "internal invariant broken: {what}");
    Error::Internal
}

/// [`broken`] unless `holds`.
#[inline(always)]
#[track_caller]
pub(crate) fn ensure(holds: bool, what: &'static str) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(broken(what))
    }
}

/// A value an internal invariant guarantees (a slice in range, a layer that validation
/// requires): [`broken`] when it is missing.
pub(crate) trait Invariant<T> {
    /// The value, or [`Error::Internal`] (asserting in debug builds).
    fn invariant(self, what: &'static str) -> Result<T>;
}

impl<T> Invariant<T> for Option<T> {
    #[inline(always)]
    #[track_caller]
    fn invariant(self, what: &'static str) -> Result<T> {
        match self {
            Some(value) => Ok(value),
            None => Err(broken(what)),
        }
    }
}
