//! The runtime's integration tests, one binary: file format, validation, sessions, adaptation.

mod adaptation;
mod fixture;
mod golden;
mod load_errors;
mod session;
mod validation;
