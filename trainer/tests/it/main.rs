//! metarec-trainer integration tests, one binary, modules by topic.

mod data;
mod methods;
mod metrics;
mod parity;
mod pipeline;
