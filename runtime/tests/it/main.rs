//! The runtime's integration tests, one binary: file format, validation, sessions, adaptation,
//! ranking.

mod adaptation;
mod aligned;
mod compact;
mod contribution;
mod corruption;
mod factors;
mod fixture;
mod fold_in;
mod golden;
mod limits;
mod load_errors;
mod neighbours;
mod product;
mod ranking;
mod session;
mod validation;
