//! Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with
//! Adaptive Clipping", NeurIPS 2021, arXiv 1905.03871), with tensorflow-privacy's sign.
//!
//! Each device reports one bit, `b_i = 1[‖Δ_i‖ ≤ C]` (its update fitted under the clip). The
//! server noises the count, forms the fraction `b̃` of *unclipped* updates and moves the clip
//! geometrically towards the target quantile γ: `C ← C · exp(−η (b̃ − γ))`. Too many updates fit
//! (b̃ > γ) shrinks C, too few grows it, so C tracks the γ-quantile of the update norms.
//!
//! Flower 1.42's `DifferentialPrivacy*AdaptiveClipping` counts *clipped* updates and applies the
//! same formula, so its clip moves the wrong way and collapses towards zero (a test here shows
//! both rules on the same norms). Do not copy that rule.

use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// Settings of the quantile tracker; the defaults are tensorflow-privacy's / TFF's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveClip {
    /// Target fraction γ of updates that fit under the clip (0.5: the median norm).
    pub target_quantile: f64,
    /// Geometric learning rate η.
    pub learning_rate: f64,
    /// Standard deviation of the noise on the count of fitting updates (TFF: m/20).
    pub count_stddev: f64,
}

impl AdaptiveClip {
    /// The defaults for `expected_clients` devices per round: γ = 0.5, η = 0.2, σ_b = m/20.
    pub fn with_defaults(expected_clients: f64) -> Self {
        Self { target_quantile: 0.5, learning_rate: 0.2, count_stddev: expected_clients / 20.0 }
    }

    /// The rule `--adaptive-clip quantile` runs with `expected_clients` per round and noise
    /// multiplier `z`, and the noise multiplier it leaves the update sum
    /// ([`AdaptiveClip::update_noise_multiplier`]); at z = 0 nothing is noised, the count
    /// neither. Errors name the flag: a quantile outside (0, 1), or a count noise that leaves
    /// the updates no budget.
    pub fn for_rounds(quantile: f64, expected_clients: f64, z: f64) -> Result<(AdaptiveClip, f64)> {
        if !(quantile > 0.0 && quantile < 1.0) {
            bail!("--adaptive-clip must be a quantile in (0, 1), got {quantile}");
        }
        let rule = AdaptiveClip { target_quantile: quantile, ..Self::with_defaults(expected_clients) };
        if z == 0.0 {
            return Ok((AdaptiveClip { count_stddev: 0.0, ..rule }, 0.0));
        }
        let update_noise = rule.update_noise_multiplier(z).map_err(|e| anyhow::anyhow!("--adaptive-clip: {e}"))?;
        Ok((rule, update_noise))
    }

    /// The noise multiplier left for the update sum when the round's privacy budget, the one a
    /// plain noise multiplier `z` would spend, is shared with the count query:
    /// `z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)` (the count has sensitivity ½). Errors when σ_b is too small
    /// to leave any budget for the updates.
    pub fn update_noise_multiplier(&self, z: f64) -> Result<f64> {
        let rest = z.powi(-2) - (2.0 * self.count_stddev).powi(-2);
        if z.is_nan() || z <= 0.0 || rest.is_nan() || rest <= 0.0 {
            bail!("count noise {} leaves no budget for noise multiplier {z}: need 2·σ_b > z", self.count_stddev);
        }
        Ok(rest.powf(-0.5))
    }

    /// The noised fraction of updates that fit under the clip, clamped to [0, 1]:
    /// `(Σ (b_i − ½) + N(0, σ_b²)) / m + ½` over the fixed denominator `m`.
    pub fn noisy_unclipped_fraction<R: Rng + ?Sized>(
        &self,
        fits: &[bool],
        expected_clients: f64,
        rng: &mut R,
    ) -> Result<f64> {
        let fitting = fits.iter().filter(|&&b| b).count();
        self.noisy_fraction_of(fitting, fits.len(), expected_clients, rng)
    }

    /// [`AdaptiveClip::noisy_unclipped_fraction`] from counts: `fitting` of `accepted` updates
    /// fitted under the clip.
    pub fn noisy_fraction_of<R: Rng + ?Sized>(
        &self,
        fitting: usize,
        accepted: usize,
        expected_clients: f64,
        rng: &mut R,
    ) -> Result<f64> {
        if expected_clients.is_nan() || expected_clients <= 0.0 {
            bail!("expected clients must be positive, got {expected_clients}");
        }
        if fitting > accepted {
            bail!("{fitting} updates fitted under the clip out of {accepted}");
        }
        let centred = 0.5 * fitting as f64 - 0.5 * (accepted - fitting) as f64;
        let noise = if self.count_stddev > 0.0 { Normal::new(0.0, self.count_stddev)?.sample(rng) } else { 0.0 };
        Ok(((centred + noise) / expected_clients + 0.5).clamp(0.0, 1.0))
    }

    /// The next round's clip after a round at `clip` in which `fitting` of the `accepted`
    /// updates fitted under it: the noised fraction ([`AdaptiveClip::noisy_fraction_of`]), then
    /// [`AdaptiveClip::next_clip`].
    pub fn after_round<R: Rng + ?Sized>(
        &self,
        clip: f64,
        (fitting, accepted): (usize, usize),
        expected_clients: f64,
        rng: &mut R,
    ) -> Result<f64> {
        let fraction = self.noisy_fraction_of(fitting, accepted, expected_clients, rng)?;
        Ok(self.next_clip(clip, fraction))
    }

    /// The next clip norm from the (noised) fraction of updates that fitted under `clip`.
    pub fn next_clip(&self, clip: f64, unclipped_fraction: f64) -> f64 {
        clip * (-self.learning_rate * (unclipped_fraction - self.target_quantile)).exp()
    }
}
