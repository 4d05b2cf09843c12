//! metarec-trainer integration tests, one binary, modules by topic.

mod parity;
