//! metarec-trainer integration tests, one binary, modules by topic.

mod crash;
mod ctr;
mod data;
mod factors;
mod formats;
mod methods;
mod metrics;
mod parity;
mod pipeline;
mod protocols;
mod report;
