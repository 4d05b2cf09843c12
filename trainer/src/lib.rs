//! metarec's trainer: loads datasets, meta-trains cold-start recommenders on libtorch, evaluates
//! them beside trivial baselines, and exports model files for the on-device runtime.
//!
//! Modules follow the pipeline: [`data`] → [`split`] → [`model`] / [`train`] → [`eval`] →
//! [`export`]; [`run`] is the on-disk run directory that connects the commands; [`report`] trains
//! and evaluates every method over several seeds and writes the papers' tables and figures.
//!
//! Without the default feature `torch` only the dataset layer builds ([`data`], [`split`],
//! [`fsutil`], the flag rules of [`config`], and the static [`kdtree`] of the neighbour
//! benchmark): no libtorch is linked (the dataset fuzz target in `fuzz/` uses this).

#[cfg(feature = "torch")]
pub mod bench;
#[cfg(feature = "torch")]
pub mod bench_neighbours;
#[cfg(feature = "torch")]
pub mod bench_scale;
pub mod config;
pub mod data;
#[cfg(feature = "torch")]
pub mod dist;
#[cfg(feature = "torch")]
pub mod eval;
#[cfg(feature = "torch")]
pub mod export;
#[cfg(feature = "torch")]
pub mod federated;
pub mod fsutil;
pub mod kdtree;
#[cfg(feature = "torch")]
pub mod memory;
#[cfg(feature = "torch")]
pub mod method;
#[cfg(feature = "torch")]
pub mod mf;
#[cfg(feature = "torch")]
pub mod model;
#[cfg(feature = "torch")]
pub mod objective;
#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
pub mod report;
#[cfg(feature = "torch")]
pub mod run;
pub mod split;
#[cfg(feature = "torch")]
pub mod train;
#[cfg(feature = "torch")]
pub mod tune;
