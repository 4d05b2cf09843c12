//! Federated meta-learning with user-level differential privacy: the server's side.
//!
//! Devices send clipped first-order meta-updates (the runtime's `contribute`); the server sums
//! them over a fixed denominator, adds Gaussian noise once and steps the model (DP-FedAvg,
//! McMahan et al. 2018). [`accountant`] tracks the privacy spent (RDP of the Poisson-subsampled
//! Gaussian mechanism), [`adaptive_clip`] moves the clip norm towards a quantile of the update
//! norms, [`average`] keeps the moving average of the models that devices score with.

pub mod accountant;
pub mod adaptive_clip;
pub mod aggregate;
pub mod average;
pub mod ledger;
pub mod simulate;

use anyhow::{bail, Result};
use clap::Subcommand;

/// `trainer federated …`
#[derive(Debug, Subcommand)]
pub enum FederatedCommand {
    /// Print ε of T rounds of the Poisson-subsampled Gaussian mechanism at δ (RDP accountant,
    /// dp-accounting's default orders and conversion): `epsilon E order A steps T delta D`, one
    /// line per T and δ.
    Epsilon(EpsilonArgs),
    /// One DP-FedAvg round: validate device contributions, sum them over the fixed denominator,
    /// add Gaussian noise once, step the model, write the next model file and charge the
    /// privacy ledger.
    Aggregate(aggregate::AggregateArgs),
    /// Simulate DP-FedAvg rounds: a model meta-trained centrally on a share of the training
    /// users, the other training users as devices running the runtime's contribution, the
    /// server's aggregation, test MSE and ε per round (table, rounds.csv, PNG plot).
    Simulate(simulate::SimulateArgs),
}

/// Arguments of `trainer federated epsilon`.
#[derive(Debug, clap::Args)]
pub struct EpsilonArgs {
    /// Sampling rate: the probability that a device joins a round (expected clients / population).
    #[arg(long)]
    pub q: f64,
    /// Noise standard deviation over the clip norm (z).
    #[arg(long)]
    pub noise_multiplier: f64,
    /// Rounds (T); several, comma-separated, print one line each.
    #[arg(long, value_delimiter = ',', required = true)]
    pub steps: Vec<u64>,
    /// Target δ (typically below 1 / population); several, comma-separated, print one line each
    /// (for every --steps value).
    #[arg(long, value_delimiter = ',', required = true)]
    pub delta: Vec<f64>,
}

/// Runs one `trainer federated` subcommand.
pub fn command(command: &FederatedCommand) -> Result<()> {
    match command {
        FederatedCommand::Aggregate(args) => aggregate::command(args)?,
        FederatedCommand::Simulate(args) => {
            simulate::command(args)?;
        }
        FederatedCommand::Epsilon(args) => {
            if !args.q.is_finite() || !args.noise_multiplier.is_finite() {
                bail!("--q and --noise-multiplier must be finite numbers");
            }
            for &steps in &args.steps {
                let mut rdp = accountant::RdpAccountant::default();
                rdp.compose_poisson_gaussian(args.q, args.noise_multiplier, steps)?;
                for &delta in &args.delta {
                    let (eps, order) = rdp.epsilon(delta)?;
                    println!("epsilon {eps:.9} order {order} steps {steps} delta {delta:e}");
                }
            }
        }
    }
    Ok(())
}
