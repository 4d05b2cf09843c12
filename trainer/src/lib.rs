//! metarec's trainer: loads datasets, meta-trains cold-start recommenders on libtorch, evaluates
//! them beside trivial baselines, and exports model files for the on-device runtime.
//!
//! Modules follow the pipeline: [`data`] → [`split`] → [`model`] / [`train`] → [`eval`] →
//! [`export`]; [`run`] is the on-disk run directory that connects the commands; [`report`] trains
//! and evaluates every method over several seeds and writes the papers' tables and figures.

pub mod bench;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod memory;
pub mod method;
pub mod model;
pub mod optim;
pub mod report;
pub mod run;
pub mod split;
pub mod train;
