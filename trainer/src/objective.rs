//! What a model predicts, and the loss that goes with it: a rating (linear output, squared
//! error) or a click (one logit, binary cross-entropy; a rating at or above a threshold counts
//! as a click, as in the CTR variant of the reference protocols).
//!
//! The split file always keeps the raw ratings, so rating and click runs share the same users
//! and items; a click run turns the values into 0/1 labels after reading it.

use tch::{Kind, Tensor};

use crate::split::Split;

/// What a model predicts: the model format's task, one definition for the trainer, the file and
/// the device (called the objective here, where a [`crate::split::Task`] is one user's episode).
pub use metarec_runtime::format::Task as Objective;

/// `--task` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskKind {
    /// Rating regression (MSE).
    Rating,
    /// Click-through prediction (binary cross-entropy; AUC and normalised entropy). `ctr` is
    /// accepted too.
    #[value(alias = "ctr")]
    Click,
}

/// The objective's training side: its losses on tensors, its labels and its names.
pub trait Loss: Sized {
    /// From the command line's `--task` and `--click-threshold`.
    fn from_cli(task: TaskKind, threshold: f32) -> Self;
    /// Per-user mean loss over the entries where `mask` is 1: `[B]`. `outputs` are the model's
    /// raw outputs (ratings, or logits for clicks).
    fn per_user_loss(self, outputs: &Tensor, values: &Tensor, mask: &Tensor) -> Tensor;
    /// Per user, `‖∂ per_user_loss / ∂δ‖²` at δ = 0 for outputs linear in δ with rows `z`, from
    /// `zᵀ(residual · mask)` `[B, W, 1]` (the residual: label − rating or − click probability).
    fn support_gradient_sqnorm(self, z_residual: &Tensor, mask: &Tensor) -> Tensor;
    /// What a raw output means to a user: the rating itself, or the click probability σ(z).
    fn prediction(self, outputs: &Tensor) -> Tensor;
    /// Initial output bias for a mean training label `mean`.
    fn initial_output_bias(self, mean: f32) -> f64;
    /// Turns a split's ratings into this task's labels (no change for ratings).
    fn apply(self, split: &mut Split);
    /// Name of the loss the validation criterion uses.
    fn loss_name(self) -> &'static str;
}

impl Loss for Objective {
    fn from_cli(task: TaskKind, threshold: f32) -> Objective {
        match task {
            TaskKind::Rating => Objective::Rating,
            TaskKind::Click => Objective::Click { threshold },
        }
    }

    /// Per-user mean loss over the entries where `mask` is 1: `[B]`. `outputs` are the model's
    /// raw outputs (ratings, or logits for clicks).
    fn per_user_loss(self, outputs: &Tensor, values: &Tensor, mask: &Tensor) -> Tensor {
        let elementwise = match self {
            Objective::Rating => (outputs - values).square(),
            // log(1 + e^z) − y·z = BCE(σ(z), y), stable for any z and twice differentiable.
            Objective::Click { .. } => outputs.softplus() - outputs * values,
        };
        (elementwise * mask).sum_dim_intlist(1, false, Kind::Float)
            / mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }

    /// The squared error's derivative is −2·residual, the log loss's −residual; both losses are
    /// means over the user's entries.
    fn support_gradient_sqnorm(self, z_residual: &Tensor, mask: &Tensor) -> Tensor {
        let factor = match self {
            Objective::Rating => 2.0,
            Objective::Click { .. } => 1.0,
        };
        let count = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        z_residual.square().sum_dim_intlist([1, 2].as_slice(), false, Kind::Float) * (factor * factor) / count.square()
    }

    /// What a raw output means to a user: the rating itself, or the click probability σ(z).
    fn prediction(self, outputs: &Tensor) -> Tensor {
        match self {
            Objective::Rating => outputs.shallow_clone(),
            Objective::Click { .. } => outputs.sigmoid(),
        }
    }

    /// Initial output bias for a mean training label `mean`: the mean rating, or the logit of
    /// the click rate (so an untrained model predicts the base rate).
    fn initial_output_bias(self, mean: f32) -> f64 {
        match self {
            Objective::Rating => f64::from(mean),
            Objective::Click { .. } => {
                let p = f64::from(mean).clamp(1e-3, 1.0 - 1e-3);
                (p / (1.0 - p)).ln()
            }
        }
    }

    /// Turns a split's ratings into this task's labels (no change for ratings).
    fn apply(self, split: &mut Split) {
        let Objective::Click { threshold } = self else { return };
        for task in split.train.iter_mut().chain(&mut split.valid).chain(&mut split.test) {
            for r in task.support.iter_mut().chain(&mut task.query) {
                r.value = if r.value >= threshold { 1.0 } else { 0.0 };
            }
        }
    }

    /// Name of the loss the validation criterion uses.
    fn loss_name(self) -> &'static str {
        match self {
            Objective::Rating => "MSE",
            Objective::Click { .. } => "log loss",
        }
    }
}
