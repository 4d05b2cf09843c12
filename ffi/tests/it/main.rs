//! Integration tests of the C ABI, called from Rust exactly as C calls it: the committed header
//! (drift, version macros, code table), the happy path, and every documented error path.

#[allow(dead_code)]
#[path = "../../../tests/src/fixture.rs"]
mod fixture;

mod api;
mod contribute;
mod errors;
mod factors;
mod header;
mod limits;
mod util;
