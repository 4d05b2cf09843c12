//! The meta-learning methods and their settings. All share the base model (embeddings + decision
//! MLP), the data pipeline and the evaluation; they differ in the inner learning rate, the outer
//! objective and the number of initialisations (see ../shared/reference/algorithms.md).

use serde::{Deserialize, Serialize};

use crate::config;

/// A training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MAML with one fixed inner learning rate (MeLU).
    Melu,
    /// A learned learning rate per adapted parameter (Li et al. 2017).
    MetaSgd,
    /// Per-user learning rate from the user embedding: alpha'(h_i) (the PAML paper).
    Paml,
    /// PAML plus the memory-agnostic regularizer gamma·||dL/dθ||²·|alpha(h_i)|.
    RegPaml,
    /// PAML plus the learning rates of the K nearest stored users (kd-tree memory).
    AtPaml,
    /// Several initialisations, one chosen per user (the HML paper).
    Hml,
    /// Supervised pre-training on all training ratings, plain SGD fine-tuning per user.
    Transfer,
    /// Wide & Deep (Cheng et al. 2016): linear over the features plus the MLP; no adaptation.
    WideDeep,
    /// DeepFM (Guo et al. 2017): linear + factorization-machine interactions + the MLP; no adaptation.
    DeepFm,
    /// Biased matrix factorisation (ALS), new users folded in by ridge regression: no
    /// meta-learning, the baseline every table carries (see `mf`).
    Mf,
}

impl Method {
    /// Every method `compare` and `report` train, in report order. Matrix factorisation is not
    /// among them: it is fitted in seconds, so every table carries it as a baseline row.
    pub const ALL: [Method; 9] = [
        Method::Melu,
        Method::MetaSgd,
        Method::Paml,
        Method::RegPaml,
        Method::AtPaml,
        Method::Hml,
        Method::Transfer,
        Method::WideDeep,
        Method::DeepFm,
    ];

    /// Display name as in the papers.
    pub fn name(self) -> &'static str {
        match self {
            Method::Melu => "MeLU",
            Method::MetaSgd => "Meta-SGD",
            Method::Paml => "PAML",
            Method::RegPaml => "REG-PAML",
            Method::AtPaml => "AT-PAML",
            Method::Hml => "HML",
            Method::Transfer => "transfer learning",
            Method::WideDeep => "Wide&Deep",
            Method::DeepFm => "DeepFM",
            Method::Mf => crate::mf::NAME,
        }
    }

    /// Whether the method adapts to a user's support set (all but the supervised baselines).
    pub fn adapts(self) -> bool {
        !matches!(self, Method::WideDeep | Method::DeepFm)
    }

    /// Whether training is supervised on pooled ratings rather than episodic (matrix
    /// factorisation trains by its own alternating least squares, not by these batches).
    pub fn pooled_training(self) -> bool {
        matches!(self, Method::Transfer | Method::WideDeep | Method::DeepFm)
    }

    /// Whether the inner learning rate comes from the learning-rate network alpha'(h_i).
    pub fn has_lr_net(self) -> bool {
        matches!(self, Method::Paml | Method::RegPaml | Method::AtPaml)
    }
}

/// Method-specific settings (defaults from algorithms.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct MethodConfig {
    /// REG-PAML regularizer weight gamma.
    #[arg(long, default_value_t = 1e-3, value_parser = config::weight, allow_hyphen_values = true)]
    pub gamma: f64,
    /// Hidden width of the learning-rate network.
    #[arg(long, default_value_t = 32, value_parser = config::width, allow_hyphen_values = true)]
    pub lr_hidden: i64,
    /// AT-PAML memory capacity M (least recently used entries are evicted).
    #[arg(long, default_value_t = 4096, value_parser = config::memory_size, allow_hyphen_values = true)]
    pub memory_size: usize,
    /// AT-PAML neighbours K (at most 16, the on-device runtime's limit).
    #[arg(long, default_value_t = 4, value_parser = config::neighbours, allow_hyphen_values = true)]
    pub neighbours: usize,
    /// AT-PAML kernel width delta in s_k = exp(-delta·||h_i − h_k||²) (keys are unit vectors).
    #[arg(long, default_value_t = 1.0, value_parser = config::kernel_width, allow_hyphen_values = true)]
    pub delta: f64,
    /// AT-PAML warm-up: the first W users are stored with the fixed learning rate (values below
    /// --neighbours count as --neighbours).
    #[arg(long, default_value_t = 32, value_parser = config::count_or_zero, allow_hyphen_values = true)]
    pub warmup: usize,
    /// HML: number of initialisations.
    #[arg(long, default_value_t = 3, value_parser = config::inits, allow_hyphen_values = true)]
    pub inits: usize,
    /// Matrix factorisation (the `mf` method and every table's MF fold-in row): factors per
    /// user and item.
    #[arg(long, default_value_t = 8, value_parser = config::mf_factors, allow_hyphen_values = true)]
    #[serde(default = "default_mf_factors")]
    pub mf_factors: usize,
    /// Matrix factorisation: ridge weight λ on the factors (users and items, training and fold-in).
    #[arg(long, default_value_t = 5.0, value_parser = config::ridge, allow_hyphen_values = true)]
    #[serde(default = "default_mf_lambda")]
    pub mf_lambda: f64,
    /// Matrix factorisation: ridge weight on the user and item biases.
    #[arg(long, default_value_t = 3.0, value_parser = config::ridge, allow_hyphen_values = true)]
    #[serde(default = "default_mf_bias_lambda")]
    pub mf_bias_lambda: f64,
    /// Matrix factorisation: alternating-least-squares sweeps (the best on validation users is kept).
    #[arg(long, default_value_t = 30, value_parser = config::count, allow_hyphen_values = true)]
    #[serde(default = "default_mf_sweeps")]
    pub mf_sweeps: usize,
}

// The matrix factorisation defaults were chosen on validation users (ml-latest-small, PAML
// protocol, seeds 1-3; the synthetic data agreed): see the README's "Measured".
fn default_mf_factors() -> usize {
    8
}

fn default_mf_lambda() -> f64 {
    5.0
}

fn default_mf_bias_lambda() -> f64 {
    3.0
}

fn default_mf_sweeps() -> usize {
    30
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig {
            gamma: 1e-3,
            lr_hidden: 32,
            memory_size: 4096,
            neighbours: 4,
            delta: 1.0,
            warmup: 32,
            inits: 3,
            mf_factors: default_mf_factors(),
            mf_lambda: default_mf_lambda(),
            mf_bias_lambda: default_mf_bias_lambda(),
            mf_sweeps: default_mf_sweeps(),
        }
    }
}
