//! metarec-trainer integration tests, one binary, modules by topic.

mod cli;
mod common;
mod crash;
mod ctr;
mod data;
mod factors;
mod federated;
mod formats;
mod loaders;
mod methods;
mod metrics;
#[cfg(feature = "mpi")]
mod mpi;
mod optim;
mod outputs;
mod parity;
mod pipeline;
mod protocols;
mod report;
mod tune;
