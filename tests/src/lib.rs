//! Shared fixtures of metarec's cross-language tests (the tests themselves are in
//! `tests/tests/it`): a tiny deterministic model and a user file in the trainer's format.

mod fixture;

pub use fixture::*;
