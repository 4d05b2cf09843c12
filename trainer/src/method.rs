//! The meta-learning methods and their settings. All share the base model (embeddings + decision
//! MLP), the data pipeline and the evaluation; they differ in the inner learning rate, the outer
//! objective and the number of initialisations (the README cites the papers).

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use serde::{Deserialize, Serialize};

use crate::config;

/// The methods, defined once by the model format (the file records which one trained it).
pub use metarec_runtime::format::Method;

/// Every method `trainer compare` and `trainer report` train, in report order: all but matrix
/// factorisation, which is fitted in seconds, so every table carries it as a baseline row.
pub fn trained() -> Vec<Method> {
    Method::ALL.into_iter().filter(|&m| m != Method::Mf).collect()
}

/// The command line's parser for a method: its canonical name ([`Method::name`]), every method
/// listed in `--help` with the papers' name.
pub fn parser() -> impl TypedValueParser<Value = Method> {
    let values = Method::ALL.map(|m| PossibleValue::new(m.name()).help(m.title()));
    PossibleValuesParser::new(values).try_map(|name| Method::from_name(&name).ok_or("not a method"))
}

/// Method-specific settings (defaults from algorithms.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct MethodConfig {
    /// REG-PAML regularizer weight gamma.
    #[arg(long, default_value_t = 1e-3, value_parser = config::weight, allow_hyphen_values = true)]
    pub gamma: f64,
    /// PAML family: weight of the penalty (ln(α_u / α))² on each training user's learning rate
    /// α_u in the outer objective, pulling it toward --inner-lr α (0: off). Without it the
    /// learning-rate network meta-overfits: the training users' rates grow until their support
    /// sets are fitted hard, and new users' scores suffer.
    #[arg(long, default_value_t = 0.3, value_parser = config::weight, allow_hyphen_values = true)]
    #[serde(default)]
    pub rate_penalty: f64,
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
    /// HML: how a training user's initialisation is chosen: `support` (the one whose adapted
    /// model best predicts the held-out part of the resampled support set, the rule of
    /// evaluation and of the device) or `query` (the best on the query set, the HML paper's
    /// Algorithm 1: training then chooses with labels that evaluation does not have).
    #[arg(long, value_enum, default_value_t = InitChoice::Support)]
    #[serde(default = "InitChoice::before_the_setting")]
    pub init_choice: InitChoice,
    /// HML: how many of the decision MLP's first layers are one set of weights that every
    /// initialisation shares; the layers above (the output layer at least) are each
    /// initialisation's own. Shared layers learn from every training user, where separate copies
    /// each learn from the users who chose them (0: every layer separate, the HML paper's model).
    #[arg(long, default_value_t = 1, value_parser = config::count_or_zero, allow_hyphen_values = true)]
    #[serde(default)]
    pub shared_layers: usize,
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

/// HML's rule for a training user's initialisation (`--init-choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitChoice {
    /// By the held-out part of the resampled support set, as in evaluation.
    Support,
    /// By the query set (the HML paper's hard task clustering).
    Query,
}

impl InitChoice {
    /// Runs written before the setting chose by the query set.
    fn before_the_setting() -> InitChoice {
        InitChoice::Query
    }
}

// The matrix factorisation defaults were chosen on validation users (ml-latest-small, PAML
// protocol, seeds 1-3; the synthetic data agreed): see the README's "Measured". Run files written
// before a setting existed read its default (the clap attribute above, the one place it is set).
fn default_mf_factors() -> usize {
    MethodConfig::default().mf_factors
}

fn default_mf_lambda() -> f64 {
    MethodConfig::default().mf_lambda
}

fn default_mf_bias_lambda() -> f64 {
    MethodConfig::default().mf_bias_lambda
}

fn default_mf_sweeps() -> usize {
    MethodConfig::default().mf_sweeps
}

impl Default for MethodConfig {
    /// The command line's defaults.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: MethodConfig,
        }
        <Defaults as clap::Parser>::parse_from(["defaults"]).config
    }
}
