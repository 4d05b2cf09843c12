//! `--server-average d`: the model to serve is an exponential moving average of the rounds'
//! models (Polyak averaging; with DP noise, the averaged iterate scores better than the last one:
//! De et al. 2022, "Unlocking high-accuracy differentially private image classification through
//! scale", report the same for DP-SGD).
//!
//! Devices keep contributing against the latest model (the server's iterate, whose id their
//! blobs are bound to); the average is what they score with. It is computed from the published
//! models alone, so it is post-processing and costs no privacy.

use anyhow::{bail, Context, Result};
use metarec_runtime::format::ModelBody;

use super::aggregate::{stepped_values, stepped_values_mut, Scale};

/// The running average of the rounds' models, over the values the server steps (the
/// contributions' layout: the decision MLP's parameters, then a fold-in head's ridge weights,
/// averaged as logarithms since the server steps them multiplicatively).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerAverage {
    /// Rounds averaged so far.
    pub rounds: u64,
    /// The average (empty before the first round).
    pub values: Vec<f64>,
}

impl ServerAverage {
    /// Checks the decay `d` of `--server-average`.
    pub fn check_decay(decay: f64) -> Result<()> {
        if !(decay > 0.0 && decay < 1.0) {
            bail!("--server-average must be a decay in (0, 1), e.g. 0.99, got {decay}");
        }
        Ok(())
    }

    /// Folds in the model of the round just stepped: `average ← d_t·average + (1 − d_t)·θ_t` with
    /// `d_t = min(decay, 1 − 1/t)` in the t-th round, so the first rounds average uniformly
    /// rather than lean on the first model.
    pub fn after_round(&mut self, decay: f64, body: &ModelBody) -> Result<()> {
        let now = averaged_values(body);
        self.rounds += 1;
        if self.values.is_empty() {
            self.values = now;
            return Ok(());
        }
        if self.values.len() != now.len() {
            bail!("the server average holds {} values, the model {}", self.values.len(), now.len());
        }
        let d = decay.min(1.0 - 1.0 / self.rounds as f64);
        for (a, x) in self.values.iter_mut().zip(now) {
            *a = d * *a + (1.0 - d) * x;
        }
        Ok(())
    }

    /// `body` with the average in place of the values the server steps: the model to serve.
    pub fn served(&self, body: &ModelBody) -> Result<ModelBody> {
        let mut served = body.clone();
        let mut values = self.values.iter();
        for (value, scale) in stepped_values_mut(&mut served) {
            let v = values.next().context("the server average is shorter than the model's stepped values")?;
            *value = match scale {
                Scale::Linear => *v,
                Scale::Log => v.exp(),
            } as f32;
        }
        if values.next().is_some() {
            bail!("the server average is longer than the model's stepped values");
        }
        Ok(served)
    }
}

/// The values the server steps, ridge weights as logarithms (what the average is over).
fn averaged_values(body: &ModelBody) -> Vec<f64> {
    let as_averaged = |(value, scale): (f32, Scale)| match scale {
        Scale::Linear => f64::from(value),
        Scale::Log => f64::from(value).ln(),
    };
    stepped_values(body).map(as_averaged).collect()
}
