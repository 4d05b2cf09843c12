//! metarec's on-device runtime: load a model file, adapt it to one user's own ratings with the
//! meta-learned inner loop, and score candidate items — without std, without the network.
//!
//! Principal types: [`Model`] (immutable, validated, shareable read-only) and [`Session`] (one
//! user's profile, support ratings and adapted weights). The file format lives in [`format`].
#![no_std]
#![deny(missing_docs)]
// The core must stay portable: reach for core and alloc before std, even where std re-exports them.
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod catalogue;
mod compact;
pub mod contribution;
pub mod error;
pub mod factors;
pub mod format;
mod gemm;
pub mod limits;
mod mlp;
mod model;
pub mod neighbours;
pub mod resample;
mod scope;
mod session;
pub mod simd;

pub use error::{Error, Result};
pub use factors::CLICK_FACTOR_FLOOR;
pub use format::{ModelBody, FORMAT_MAJOR, FORMAT_MINOR};
pub use limits::{MAX_CANDIDATES, MAX_MODEL_BYTES, MAX_STEPS, MAX_STRING_LEN, MAX_SUPPORT_RATINGS};
#[cfg(feature = "std")]
pub use model::LoadFileError;
pub use model::Model;
pub use session::{default_candidates, Explanation, FoldIn, Neighbour, Ranked, Ranking, Session, SHORTLIST_FROM};
