//! Meta-training of every method on one split, with a checkpoint each epoch, `--resume`, and
//! model selection (early stopping) on validation users only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::{
    self, check_flag, COUNT, COUNT_OR_ZERO, INITS, INNER_LR, INNER_STEPS, KERNEL_WIDTH, MEMORY_SIZE, MF_FACTORS,
    NEIGHBOURS, OUTER_LR, RATING, THREADS, WEIGHT, WIDTH,
};
use crate::data::{Dataset, Format, LoadOptions};
use crate::dist::Comm;
use crate::eval::mean_user_loss;
use crate::fsutil::NewDir;
use crate::method::{Method, MethodConfig};
use crate::model::{MetaModel, ModelOptions, ModelShape, ModelSpec, Order, TaskBatch};
use crate::objective::{Loss as _, Objective, TaskKind};
use crate::optim::Adam;
use crate::run::{self, EpochRecord, RunDir, RunInfo};
use crate::split::{Split, Task};

/// Settings of `trainer train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainConfig {
    /// Dataset directory (with schema.toml).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory to write (run.json, split.csv, weights, checkpoint). One that holds an
    /// earlier run is refused unless --force (or --resume continues it).
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset format (detected from the files when left out).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Skip malformed dataset rows (counted by reason) instead of failing at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// A split file written by `trainer data split` (default: every user, 7:1:2, 80/20).
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// Learn from the split's existing users too: the users a protocol leaves out of its
    /// cold-start users (the PAML protocol's most active 20%) join the training users, for
    /// meta-training, the item biases and factors, and the baselines beside them. They are
    /// never validation or test users.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub warm_users: bool,
    /// An item-id embedding among the item fields (per-item effects of the items seen in
    /// training inside the MLP; other items take the unknown row and score from their
    /// features). Off by default: the item biases and factors carry each item's identity.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub item_id: bool,
    /// Bias-aware output: MLP + a learned bias per item, starting from the bias baseline
    /// (μ + item bias; the adapted output bias is the user's bias).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub item_bias: bool,
    /// What the inner loop adapts: fold-in (the output layer and a user factor vector, solved
    /// exactly by ridge regression: matrix factorisation's fold-in over learned item
    /// features), all (every MLP weight by gradient steps, the papers), head (the output layer)
    /// or user (layer 0's bias and user-field weights, and the output bias).
    #[arg(long, default_value = "fold-in", value_parser = config::adapt)]
    pub adapt: metarec_runtime::format::Adapt,
    /// Inner-loop proximal weight: (proximal/2)·‖θ − θ₀‖² added to the support loss.
    #[arg(long, default_value_t = 0.0, value_parser = config::weight, allow_hyphen_values = true)]
    pub proximal: f64,
    /// Dropout of the MLP's hidden units during meta-training.
    #[arg(long, default_value_t = 0.0, value_parser = config::share, allow_hyphen_values = true)]
    pub dropout: f64,
    /// Share of item ids (embedding row and item bias) replaced by the unknown item's in each
    /// training step, so that new items score well from their features.
    #[arg(long, default_value_t = 0.1, value_parser = config::share, allow_hyphen_values = true)]
    pub item_id_dropout: f64,
    /// Decoupled weight decay of the embedding tables and item biases.
    #[arg(long, default_value_t = 0.0, value_parser = config::weight, allow_hyphen_values = true)]
    pub embedding_decay: f64,
    /// With --adapt fold-in: item factors (--mf-factors of them) in the fold-in beside the
    /// hidden features, warm-started with the item factors and biases of matrix factorisation
    /// fitted on the training users (the --mf-* settings).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub item_factors: bool,
    /// With --adapt fold-in: the starting ridge weight of the hidden features (meta-learned
    /// from there).
    #[arg(long, default_value_t = 5.0, value_parser = config::ridge, allow_hyphen_values = true)]
    pub fold_in_lambda: f64,
    /// Weight of the unadapted model's query loss in the outer objective (0: off): the
    /// initialisation (under the fold-in, the ridge prior's mean) learns to predict by itself.
    #[arg(long, default_value_t = 0.3, value_parser = config::weight, allow_hyphen_values = true)]
    pub unadapted_loss: f64,
    /// Training method.
    #[arg(long, value_parser = crate::method::parser(), default_value = "melu")]
    pub method: Method,
    /// product (the defaults) or paper (each paper's published model: no item identity or
    /// biases, every MLP weight adapted by gradient steps); flags given override the preset's.
    #[arg(long, value_enum, default_value_t = config::Preset::Product)]
    pub preset: config::Preset,
    /// What the model predicts: ratings (MSE) or clicks (binary cross-entropy, AUC).
    #[arg(long, value_enum, default_value_t = TaskKind::Rating)]
    pub task: TaskKind,
    /// `--task click`: ratings at or above this value count as clicks (the rest as non-clicks).
    #[arg(long, default_value_t = 4.0, value_parser = config::rating, allow_hyphen_values = true)]
    pub click_threshold: f32,
    /// Method-specific settings.
    #[command(flatten)]
    pub method_config: MethodConfig,
    /// Seed of the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 1, value_parser = config::seed, allow_hyphen_values = true)]
    pub seed: u64,
    /// Field embedding width.
    #[arg(long, default_value_t = 32, value_parser = config::width, allow_hyphen_values = true)]
    pub embedding_dim: i64,
    /// Hidden layer widths of the decision MLP, comma-separated (a later --hidden replaces an
    /// earlier one).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,64",
        action = clap::ArgAction::Set,
        value_parser = config::width,
        allow_hyphen_values = true
    )]
    pub hidden: Vec<i64>,
    /// Inner-loop learning rate (fixed for MeLU/HML/transfer; the starting value where learned).
    #[arg(long, default_value_t = 0.05, value_parser = config::inner_lr, allow_hyphen_values = true)]
    pub inner_lr: f64,
    /// Inner-loop gradient steps (1 to the on-device runtime's limit, 1000).
    #[arg(long, default_value_t = 5, value_parser = config::inner_steps, allow_hyphen_values = true)]
    pub inner_steps: u32,
    /// First-order MAML (no gradient through the inner loop; with the fold-in, none through the
    /// solve's rows: the gradient a device contributes in federated training).
    #[arg(long)]
    pub first_order: bool,
    /// Outer (Adam) learning rate; also the step of the AT-PAML memory entries.
    #[arg(long, default_value_t = 2e-3, value_parser = config::outer_lr, allow_hyphen_values = true)]
    pub outer_lr: f64,
    /// Users per outer step.
    #[arg(long, default_value_t = 32, value_parser = config::count, allow_hyphen_values = true)]
    pub batch_users: usize,
    /// Lazy (row-sparse) Adam for the lookup tables (embeddings, item biases and factors): a
    /// step updates only the rows its batch reached (their moments, decay and value), as
    /// PyTorch's SparseAdam and TensorFlow's LazyAdam, so its cost does not grow with the
    /// catalogue and the user vocabularies. `false`: dense Adam, every row every step (the
    /// papers' optimizer; `--preset paper`).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub lazy_adam: bool,
    /// Stop each epoch after this many outer steps (profiling a large input: the epoch's other
    /// batches are skipped; the validation pass still runs).
    #[arg(long, value_parser = config::count, allow_hyphen_values = true)]
    pub epoch_steps: Option<usize>,
    /// Maximum epochs over the training users.
    #[arg(long, default_value_t = 30, value_parser = config::count, allow_hyphen_values = true)]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation MSE.
    #[arg(long, default_value_t = 5, value_parser = config::count, allow_hyphen_values = true)]
    pub patience: usize,
    /// `cpu`, `cuda` or `auto` (CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads. One is the default: the batched inner loop is many small
    /// operations, and OpenMP workers spinning on a shared or busy machine made training up to
    /// 7x slower in our measurements (`trainer train --threads 2` to compare).
    #[arg(long, default_value_t = 1, value_parser = config::threads, allow_hyphen_values = true)]
    pub threads: i32,
    /// Continue from the run directory's last checkpoint, with the settings it was trained with.
    #[arg(long)]
    pub resume: bool,
    /// Replace existing outputs (an earlier run in --out).
    #[arg(long)]
    pub force: bool,
    /// No progress bar (logs one line per epoch instead).
    #[arg(long)]
    pub quiet: bool,
}

impl TrainConfig {
    /// Defaults for `data` → `out` (as the command line would give, with `--quiet`).
    pub fn new(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> TrainConfig {
        Self::with_preset(data, out, config::Preset::Product)
    }

    /// The settings of `trainer train --data DATA --out OUT --preset PRESET`: the preset's
    /// flags parsed as the command line parses them (one definition of each preset).
    pub fn with_preset(data: impl Into<PathBuf>, out: impl Into<PathBuf>, preset: config::Preset) -> TrainConfig {
        let (data, out) = (data.into(), out.into());
        let mut args: Vec<std::ffi::OsString> =
            vec!["train".into(), "--data".into(), data.into(), "--out".into(), out.into()];
        args.extend(preset.flags().iter().flat_map(|(flag, value)| [(*flag).into(), (*value).into()]));
        let mut config = <TrainArgs as clap::Parser>::try_parse_from(args).expect("every preset flag parses").train;
        config.preset = preset;
        config.quiet = true;
        config
    }
}

/// `train`'s command line alone: `train` flags parsed into a [`TrainConfig`] as the command
/// line parses them (presets, `trainer tune`'s trials).
#[derive(Debug, clap::Parser)]
#[command(name = "train", args_override_self = true)]
pub struct TrainArgs {
    /// The parsed settings.
    #[command(flatten)]
    pub train: TrainConfig,
}

/// Parses `--device`. Under `mpirun` the ranks on one node take its GPUs in turn (rank i of
/// the node the GPU i mod the count).
pub fn parse_device(name: &str) -> Result<Device> {
    let gpu = || Device::Cuda(crate::dist::local_rank() % tch::Cuda::device_count().max(1) as usize);
    Ok(match name {
        "cpu" => Device::Cpu,
        "auto" if tch::Cuda::is_available() => gpu(),
        "auto" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => gpu(),
        "cuda" => bail!("--device cuda: no CUDA device is available to libtorch"),
        other => bail!("--device '{other}': expected cpu, cuda or auto"),
    })
}

/// Where a run stands between epochs (saved beside the checkpoint tensors).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    since_best: usize,
    info: RunInfo,
}

/// Every flag's rule (the command line checks them when it is parsed; library callers here).
fn check(config: &TrainConfig) -> Result<()> {
    check_flag("--inner-lr", config.inner_lr, INNER_LR.check(config.inner_lr))?;
    check_flag("--outer-lr", config.outer_lr, OUTER_LR.check(config.outer_lr))?;
    check_flag("--embedding-dim", config.embedding_dim, WIDTH.check(config.embedding_dim))?;
    for &width in &config.hidden {
        check_flag("--hidden", width, WIDTH.check(width))?;
    }
    check_flag("--inner-steps", config.inner_steps, INNER_STEPS.check(config.inner_steps))?;
    for (flag, value) in
        [("--batch-users", config.batch_users), ("--epochs", config.epochs), ("--patience", config.patience)]
    {
        check_flag(flag, value, COUNT.check(value))?;
    }
    check_flag("--threads", config.threads, THREADS.check(config.threads))?;
    let threshold = config.click_threshold;
    check_flag("--click-threshold", threshold, RATING.check(f64::from(threshold)))?;
    if config.resume && config.split.is_some() {
        bail!(
            "--resume continues on the run's own split ({}); leave out --split",
            RunDir(config.out.clone()).split_path().display()
        );
    }
    if config.resume && config.force {
        bail!("--resume continues the run in {}, --force would replace it: pass one of them", config.out.display());
    }
    check_method(&config.method_config, config.method, &config.hidden)
}

/// The method knobs (all of them, whichever method trains: they are stored with the run).
fn check_method(m: &MethodConfig, method: Method, hidden: &[i64]) -> Result<()> {
    check_flag("--gamma", m.gamma, WEIGHT.check(m.gamma))?;
    check_flag("--lr-hidden", m.lr_hidden, WIDTH.check(m.lr_hidden))?;
    check_flag("--delta", m.delta, KERNEL_WIDTH.check(m.delta))?;
    check_flag("--memory-size", m.memory_size, MEMORY_SIZE.check(m.memory_size))?;
    check_flag("--neighbours", m.neighbours, NEIGHBOURS.check(m.neighbours))?;
    check_flag("--inits", m.inits, INITS.check(m.inits))?;
    check_flag("--warmup", m.warmup, COUNT_OR_ZERO.check(m.warmup))?;
    let layers = hidden.len() + 1;
    if method == Method::Hml && m.inits > 1 && m.shared_layers >= layers {
        let hidden: Vec<String> = hidden.iter().map(i64::to_string).collect();
        bail!(
            "--shared-layers {}: HML's initialisations need a layer of their own, and --hidden {} makes {layers} \
             layers (the output layer included): at most {}",
            m.shared_layers,
            hidden.join(","),
            layers - 1
        );
    }
    if method == Method::AtPaml && m.memory_size < m.neighbours.max(m.warmup) {
        bail!(
            "AT-PAML needs --memory-size >= max(--neighbours, --warmup); got --memory-size {}, --neighbours {}, \
             --warmup {}",
            m.memory_size,
            m.neighbours,
            m.warmup
        );
    }
    check_factors(m)
}

/// What every method trains on: the dataset, the run directory, the split (labels for clicks)
/// and the mean training value.
struct Prepared {
    data: Dataset,
    run: RunDir,
    split: Split,
    objective: Objective,
    global_mean: f32,
}

/// Checks the outputs and the inputs before anything is written: `--out` must not hold an
/// earlier run (unless `--force`) or, with `--resume`, must hold one trained with the same
/// settings and dataset; the dataset and the split (the run's own on `--resume`) must load, and
/// a click run's training labels must hold both classes. Only then is a new run directory
/// created and its split written, so a refused run leaves nothing behind. The split comes back
/// turned into click labels for the click task.
/// Under MPI rank 0 alone checks and writes the run directory; the other ranks draw the same
/// split themselves (or read the run's own on `--resume`).
fn prepare(config: &TrainConfig, comm: Comm) -> Result<Prepared> {
    let resumed = if config.resume {
        Some(resumable(config)?)
    } else {
        if comm.is_lead() {
            run::check_new_run(&config.out, config.force)?;
        }
        None
    };
    let load_options = LoadOptions { format: config.format, skip_invalid: config.skip_invalid };
    let mut data = Dataset::load_with(&config.data, &load_options)?;
    if config.item_id {
        data.add_item_id_field();
    }
    let run = RunDir(config.out.clone());
    if let Some(info) = &resumed {
        let fingerprint = run::fingerprint(&data);
        if fingerprint != info.fingerprint {
            bail!(
                "--resume: the run in {} was trained on {} (fingerprint {:08x}); --data {} holds another dataset \
                 (fingerprint {fingerprint:08x})",
                config.out.display(),
                info.data.display(),
                info.fingerprint,
                config.data.display()
            );
        }
    }
    let objective = Objective::from_cli(config.task, config.click_threshold);
    let split = match (&resumed, &config.split) {
        (Some(_), _) => Split::read(&data, &run.split_path()).context("--resume: reading the run's split")?,
        (None, Some(path)) => Split::read(&data, path).with_context(|| format!("--split {}", path.display()))?,
        (None, None) => Split::new(&data, config.seed)?,
    };
    if split.train.is_empty() || split.valid.is_empty() {
        let source = match &config.split {
            Some(path) => format!("--split {}", path.display()),
            None => run.split_path().display().to_string(),
        };
        bail!(
            "{source} has no {} users; training needs both training and validation users (the validation users \
             select the epoch)",
            if split.train.is_empty() { "training" } else { "validation" }
        );
    }
    check_labels(config, &data, &split)?;
    if resumed.is_none() && comm.is_lead() {
        let created = NewDir::create(&config.out)?;
        if config.force {
            run.remove_files()?;
        }
        split.write(&data, &run.split_path())?;
        created.keep();
    }
    // The split file keeps the warm part and raw ratings; a click run trains on 0/1 labels.
    let mut split = split.with_warm_users(config.warm_users);
    objective.apply(&mut split);
    let train_ratings: Vec<f32> =
        split.train.iter().flat_map(|t| t.support.iter().chain(&t.query)).map(|r| r.value).collect();
    let global_mean = train_ratings.iter().sum::<f32>() / train_ratings.len().max(1) as f32;
    Ok(Prepared { data, run, split, objective, global_mean })
}

/// `--task click`: the training ratings (raw) must fall on both sides of the threshold.
fn check_labels(config: &TrainConfig, data: &Dataset, split: &Split) -> Result<()> {
    if config.task != TaskKind::Click {
        return Ok(());
    }
    let threshold = config.click_threshold;
    let labels = split.train.iter().flat_map(|t| t.support.iter().chain(&t.query));
    let clicks = labels.clone().filter(|r| r.value >= threshold).count();
    let total = labels.count();
    if clicks == 0 || clicks == total {
        bail!(
            "--task click: every training label is {} at --click-threshold {threshold}; choose a threshold inside the \
             rating scale {}..{}",
            if clicks == 0 { "0" } else { "1" },
            data.rating_min,
            data.rating_max
        );
    }
    Ok(())
}

/// `--resume`: the settings stored in the run directory (its checkpoint record, or run.json for
/// a finished or a matrix factorisation run), compared with the given flags before the dataset
/// or any tensor is loaded.
fn resumable(config: &TrainConfig) -> Result<RunInfo> {
    let dir = &config.out;
    if std::fs::symlink_metadata(dir).is_ok() && !dir.is_dir() {
        bail!("--out {} is a file, not a directory", dir.display());
    }
    if !dir.is_dir() {
        bail!("--resume: {} does not exist; start the run without --resume", dir.display());
    }
    let run = RunDir(dir.clone());
    let (_, progress_path) = checkpoint_paths(&run);
    let info = if progress_path.is_file() {
        let text = std::fs::read_to_string(&progress_path)
            .with_context(|| format!("--resume: reading {}", progress_path.display()))?;
        let progress: Progress =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", progress_path.display()))?;
        progress.info
    } else if run.info_path().is_file() {
        run.read_info()?
    } else {
        bail!(
            "--resume: {} holds no checkpoint.json or run.json to continue from; start the run again without \
             --resume (with --force to replace what is there)",
            dir.display()
        );
    };
    check_same_settings(&info, config)?;
    Ok(info)
}

/// Names every setting the flags set that differs between the stored run and the command line.
fn check_same_settings(stored: &RunInfo, config: &TrainConfig) -> Result<()> {
    let objective = Objective::from_cli(config.task, config.click_threshold);
    let given = flag_settings(&run_info(config, objective, stored.fingerprint));
    let differences: Vec<String> = flag_settings(stored)
        .into_iter()
        .filter_map(|(flag, had)| {
            let now = &given.iter().find(|(f, _)| *f == flag)?.1;
            (*now != had).then(|| format!("{flag}: the run has {had}, given {now}"))
        })
        .collect();
    if differences.is_empty() {
        return Ok(());
    }
    bail!(
        "--resume: the run in {} was trained with other settings:\n  {}\npass the run's settings to continue it, or \
         train a new run (another --out, or --force without --resume to replace this one)",
        config.out.display(),
        differences.join("\n  ")
    )
}

/// The settings a run stores that flags set, as (flag, value) pairs.
fn flag_settings(info: &RunInfo) -> Vec<(String, String)> {
    let spec = &info.spec;
    let switch = |on: bool| if on { "on" } else { "off" }.to_string();
    let name = |value: Option<clap::builder::PossibleValue>| value.map_or(String::new(), |v| v.get_name().into());
    let mut settings = vec![
        ("--method", spec.method.name().to_string()),
        ("--task", spec.objective.name().to_string()),
        ("--embedding-dim", spec.shape.embedding_dim.to_string()),
        ("--hidden", spec.shape.hidden.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        ("--inner-lr", spec.inner_lr.to_string()),
        ("--inner-steps", spec.inner_steps.to_string()),
        ("--first-order", switch(info.first_order)),
        ("--item-id", switch(info.item_id)),
        ("--warm-users", switch(info.warm_users)),
        ("--lazy-adam", switch(info.lazy_adam)),
        ("--item-bias", switch(spec.options.item_bias)),
        ("--adapt", spec.options.adapt.name().to_string()),
        ("--proximal", spec.options.proximal.to_string()),
        ("--dropout", spec.options.dropout.to_string()),
        ("--item-id-dropout", spec.options.item_id_dropout.to_string()),
        ("--embedding-decay", spec.options.embedding_decay.to_string()),
        ("--item-factors", switch(spec.options.item_factors)),
        ("--fold-in-lambda", spec.options.fold_in_lambda.to_string()),
        ("--unadapted-loss", spec.options.unadapted_loss.to_string()),
        ("--seed", info.seed.to_string()),
        ("--format", info.format.map_or("detected".into(), |f| name(f.to_possible_value()))),
        ("--skip-invalid", switch(info.skip_invalid)),
    ];
    if let Objective::Click { threshold } = spec.objective {
        settings.push(("--click-threshold", threshold.to_string()));
    }
    let mut settings: Vec<(String, String)> = settings.into_iter().map(|(f, v)| (f.to_string(), v)).collect();
    if let Ok(serde_json::Value::Object(knobs)) = serde_json::to_value(&spec.config) {
        let text = |value: &serde_json::Value| value.as_str().map_or_else(|| value.to_string(), str::to_string);
        settings.extend(knobs.iter().map(|(key, value)| (format!("--{}", key.replace('_', "-")), text(value))));
    }
    settings
}

/// The run's settings as a model spec.
fn spec_of(config: &TrainConfig, objective: Objective) -> ModelSpec {
    ModelSpec {
        shape: ModelShape { embedding_dim: config.embedding_dim, hidden: config.hidden.clone() },
        method: config.method,
        config: config.method_config.clone(),
        inner_lr: config.inner_lr,
        inner_steps: config.inner_steps,
        objective,
        options: ModelOptions {
            item_bias: config.item_bias,
            adapt: config.adapt,
            proximal: config.proximal,
            dropout: config.dropout,
            item_id_dropout: config.item_id_dropout,
            embedding_decay: config.embedding_decay,
            fold_in_lambda: config.fold_in_lambda,
            item_factors: config.item_factors,
            unadapted_loss: config.unadapted_loss,
        },
    }
}

/// The run's settings before training (no results yet).
fn run_info(config: &TrainConfig, objective: Objective, fingerprint: u32) -> RunInfo {
    RunInfo {
        data: config.data.canonicalize().unwrap_or_else(|_| config.data.clone()),
        fingerprint,
        format: config.format,
        skip_invalid: config.skip_invalid,
        item_id: config.item_id,
        warm_users: config.warm_users,
        lazy_adam: config.lazy_adam,
        seed: config.seed,
        spec: spec_of(config, objective),
        first_order: config.first_order,
        global_mean: 0.0,
        best_epoch: 0,
        best_valid_loss: f64::INFINITY,
        history: Vec::new(),
        train_seconds: 0.0,
        device: String::new(),
    }
}

/// `--method mf`: alternating least squares, the sweep kept by the validation users (see
/// [`crate::mf`]). Deterministic and fast, so there is no checkpoint: `--resume` retrains on the
/// run's split.
fn train_factors(config: &TrainConfig, prepared: Prepared, started: Instant) -> Result<RunInfo> {
    let Prepared { data, run, split, objective, .. } = prepared;
    eprintln!(
        "training {} on {} users ({} validation, {} test), {} items",
        Method::Mf.title(),
        split.train.len(),
        split.valid.len(),
        split.test.len(),
        data.items.len()
    );
    let fitted =
        crate::mf::fit(data.items.len(), &split.train, &split.valid, objective, &config.method_config, config.seed);
    let loss_name = objective.loss_name();
    for r in &fitted.history {
        eprintln!(
            "sweep {}: train {loss_name} {:.4}, validation {loss_name} {:.4}",
            r.epoch, r.train_loss, r.valid_loss
        );
    }
    // What eval, export and the device will check: refused here, not by every later command.
    if let Err(e) = metarec_runtime::factors::check(&fitted.model.factors, data.items.len()) {
        bail!(
            "the trained factors fail the on-device runtime's check ({e}): the fold-in needs --mf-lambda and \
             --mf-bias-lambda of at least 1e-5 · (1 + |q_i|²) for every item factor q_i; given {} and {}, try \
             larger ones",
            config.method_config.mf_lambda,
            config.method_config.mf_bias_lambda
        );
    }
    let info = RunInfo {
        global_mean: fitted.model.mean,
        best_epoch: fitted.best_sweep,
        best_valid_loss: fitted.best_valid,
        history: fitted.history,
        train_seconds: started.elapsed().as_secs_f64(),
        device: "Cpu".into(),
        ..run_info(config, objective, run::fingerprint(&data))
    };
    run.save_factors(&fitted.model)?;
    run.save_info(&info)?;
    eprintln!(
        "kept sweep {} (validation {loss_name} {:.4}) in {} after {:.1} s",
        info.best_epoch,
        info.best_valid_loss,
        config.out.display(),
        info.train_seconds
    );
    Ok(info)
}

/// The matrix factorisation knobs (checked for every method: every table fits MF beside it).
pub fn check_factors(m: &MethodConfig) -> Result<()> {
    check_flag("--mf-factors", m.mf_factors, MF_FACTORS.check(m.mf_factors))?;
    check_flag("--mf-lambda", m.mf_lambda, config::check_ridge(m.mf_lambda))?;
    check_flag("--mf-bias-lambda", m.mf_bias_lambda, config::check_ridge(m.mf_bias_lambda))?;
    check_flag("--mf-sweeps", m.mf_sweeps, COUNT.check(m.mf_sweeps))
}

/// Trains and writes the run directory; returns its info. Under `mpirun` (the `mpi` feature)
/// every rank trains its shard of each batch and rank 0 alone writes and prints.
pub fn train(config: &TrainConfig) -> Result<RunInfo> {
    check(config)?;
    tch::set_num_threads(config.threads.max(1));
    let started = Instant::now();
    let comm = Comm::world();
    let device = parse_device(&config.device)?;
    let prepared = prepare(config, comm)?;
    if config.method == Method::Mf {
        if comm.size() > 1 {
            bail!("--method mf fits in one process; run it without mpirun");
        }
        return train_factors(config, prepared, started);
    }
    let Prepared { data, run, split, objective, global_mean } = prepared;
    let spec = spec_of(config, objective);
    let model = MetaModel::new_seeded(&data, &spec, global_mean, device, config.seed);
    warm_start(config, &model, &data, &split, objective);
    let mut optimizer = optimizer(config, &model);
    let fresh =
        RunInfo { global_mean, device: format!("{device:?}"), ..run_info(config, objective, run::fingerprint(&data)) };
    let mut progress = Progress { epochs_done: 0, since_best: 0, info: fresh.clone() };
    let lead = comm.is_lead();
    if config.resume {
        progress = load_checkpoint(config, &run, &model, &mut optimizer)?;
        // Where the dataset is now (the fingerprint matched).
        progress.info.data = fresh.data;
        if lead {
            eprintln!("resuming after epoch {}", progress.epochs_done);
        }
    }
    if lead {
        eprintln!(
            "training {} on {} users ({} validation, {} test), {} items, device {device:?}{}",
            config.method.title(),
            split.train.len(),
            split.valid.len(),
            split.test.len(),
            data.items.len(),
            if comm.size() > 1 { format!(", {} MPI ranks", comm.size()) } else { String::new() }
        );
    }
    let stepper = Stepper { config, comm, model: &model, run: &run, objective };
    if progress.epochs_done == 0 {
        stepper.start(&mut progress, &split.valid)?;
    }
    let bar = progress_bar(config, lead, split.train.len(), progress.epochs_done);
    let resumed_seconds = progress.info.train_seconds;
    for epoch in progress.epochs_done + 1..=config.epochs {
        if progress.since_best >= config.patience {
            break;
        }
        let losses = train_epoch(config, comm, &model, &mut optimizer, &split.train, epoch, &bar);
        stepper.end_epoch(&mut progress, epoch, losses, &split.valid, &bar)?;
        progress.info.train_seconds = resumed_seconds + started.elapsed().as_secs_f64();
        if lead {
            save_checkpoint(&run, &model, &optimizer, &progress)?;
            if progress.since_best >= config.patience {
                eprintln!("early stop: no validation improvement for {} epochs", config.patience);
            }
        }
    }
    bar.finish_and_clear();
    finish(config, lead, &run, objective, progress.info)
}

/// The outer optimizer: Adam, decoupled weight decay on the embedding tables and item biases,
/// lazy on the lookup tables with `--lazy-adam`.
fn optimizer(config: &TrainConfig, model: &MetaModel) -> Adam {
    let decayed = |name: &str| name.contains("embedding") || name.starts_with("item_");
    let tables = |name: &str| {
        ["user_embedding_", "item_embedding_", "wide_user_", "wide_item_", "item_bias", "item_factors"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    let optimizer = Adam::new(&model.vs, config.outer_lr).with_decay(config.embedding_decay, decayed);
    if config.lazy_adam {
        optimizer.with_lazy_rows(tables)
    } else {
        optimizer
    }
}

/// What the end of every epoch needs: validation, the log line, model selection.
struct Stepper<'a> {
    config: &'a TrainConfig,
    comm: Comm,
    model: &'a MetaModel,
    run: &'a RunDir,
    objective: Objective,
}

impl Stepper<'_> {
    /// Epoch 0, the starting point (the product model's is the baseline it was warm-started
    /// from): kept if no epoch of meta-training beats it on the validation users.
    fn start(&self, progress: &mut Progress, valid: &[Task]) -> Result<()> {
        let valid_loss = validation_loss(self.comm, self.model, valid, self.config.inner_steps);
        if self.comm.is_lead() {
            eprintln!("epoch 0 (start): validation {} {valid_loss:.4}", self.objective.loss_name());
        }
        if valid_loss.is_finite() {
            progress.info.best_valid_loss = valid_loss;
            if self.comm.is_lead() {
                self.run.save_weights(self.model)?;
            }
        }
        Ok(())
    }

    /// Scores the validation users, logs the epoch and keeps the weights when they are the
    /// best so far (rank 0 writes them).
    fn end_epoch(
        &self,
        progress: &mut Progress,
        epoch: usize,
        (train_loss, alpha_mean): (f64, f64),
        valid: &[Task],
        bar: &ProgressBar,
    ) -> Result<()> {
        let (config, model) = (self.config, self.model);
        let valid_loss = validation_loss(self.comm, model, valid, config.inner_steps);
        let line = epoch_line(config, model, self.objective, epoch, (train_loss, valid_loss), alpha_mean);
        match (self.comm.is_lead(), config.quiet) {
            (false, _) => {}
            (true, true) => eprintln!("{line}"),
            (true, false) => bar.println(&line),
        }
        let info = &mut progress.info;
        info.history.push(EpochRecord { epoch, train_loss, valid_loss });
        if valid_loss < info.best_valid_loss {
            info.best_valid_loss = valid_loss;
            info.best_epoch = epoch;
            if self.comm.is_lead() {
                self.run.save_weights(model)?;
            }
            progress.since_best = 0;
        } else {
            progress.since_best += 1;
        }
        progress.epochs_done = epoch;
        Ok(())
    }
}

/// The mean validation loss per user; under MPI each rank scores its shard of the users and
/// the sums are added up.
fn validation_loss(comm: Comm, model: &MetaModel, valid: &[Task], steps: u32) -> f64 {
    if comm.size() == 1 {
        return mean_user_loss(model, valid, steps, 256);
    }
    let shard = &valid[comm.shard(valid.len())];
    let mut sum = [mean_user_loss(model, shard, steps, 256) * shard.len() as f64];
    comm.sum_f64(&mut sum);
    sum[0] / valid.len().max(1) as f64
}

/// Where the product model starts: the item biases and (with item factors) the item factors
/// of matrix factorisation fitted on the same users, else the bias baseline's item biases. A
/// click model's biases are those click rates turned into logits around the mean's.
fn warm_start(config: &TrainConfig, model: &MetaModel, data: &Dataset, split: &Split, objective: Objective) {
    let items = data.items.len();
    let (mean, mut biases) = if config.item_factors && config.adapt == metarec_runtime::format::Adapt::FoldIn {
        let fitted = crate::mf::fit(items, &split.train, &split.valid, objective, &config.method_config, config.seed);
        model.set_item_factors(&fitted.model.factors.item_factors);
        (fitted.model.mean, fitted.model.factors.item_bias)
    } else if config.item_bias {
        let baselines = crate::eval::Baselines::fit(items, &split.train, &split.valid);
        (baselines.global_mean, baselines.item_biases().to_vec())
    } else {
        return;
    };
    if objective.is_click() {
        let logit = |p: f32| {
            let p = p.clamp(0.01, 0.99);
            (p / (1.0 - p)).ln()
        };
        for b in &mut biases {
            *b = logit(mean + *b) - logit(mean);
        }
    }
    model.set_item_bias(&biases);
}

/// The progress bar over the steps left (hidden with `--quiet`, and on every MPI rank but 0).
fn progress_bar(config: &TrainConfig, lead: bool, train_users: usize, epochs_done: usize) -> ProgressBar {
    let steps_per_epoch = train_users.div_ceil(config.batch_users);
    let remaining = config.epochs.saturating_sub(epochs_done);
    let bar = if config.quiet || !lead {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((steps_per_epoch * remaining) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// One epoch of outer steps over the training users; returns their mean query loss and (for
/// the methods with a learning-rate network) their mean inner learning rate. Under MPI each
/// rank runs its shard of every batch and the gradients are summed before each step, so the
/// ranks take the step one process would take on the whole batch.
fn train_epoch(
    config: &TrainConfig,
    comm: Comm,
    model: &MetaModel,
    optimizer: &mut Adam,
    train_tasks: &[Task],
    epoch: usize,
    bar: &ProgressBar,
) -> (f64, f64) {
    let (started, communication) = (Instant::now(), crate::dist::communication_seconds());
    let communication_bytes = crate::dist::communication_bytes();
    let mut batches = epoch_batches(config, train_tasks, epoch);
    batches.truncate(config.epoch_steps.unwrap_or(usize::MAX));
    let mut sums = [0.0, 0.0];
    for (step, chunk) in batches.iter().enumerate() {
        model.set_noise_seed(config.seed ^ ((epoch as u64) << 40) ^ ((step as u64) << 8) ^ 0x5EED);
        let positions = comm.balanced_shard(&chunk.iter().map(|t| t.support.len() + t.query.len()).collect::<Vec<_>>());
        let shard: Vec<&Task> = positions.iter().map(|&i| chunk[i]).collect();
        let forward = (!shard.is_empty()).then(|| outer_forward(config, model, &shard, chunk.len(), optimizer));
        if forward.is_none() {
            optimizer.zero_grad();
        }
        let mut parameters = optimizer.parameters();
        if let Some(memory) = &model.memory {
            parameters.extend(memory.borrow().trainable().map(|t| (t, crate::dist::Layout::Dense)));
        }
        let rows = comm.sum_gradients(&parameters);
        optimizer.step_rows(&rows);
        if let Some(memory) = &model.memory {
            update_memory(comm, &mut memory.borrow_mut(), forward.as_ref(), &positions, config.outer_lr);
        }
        if let Some(forward) = &forward {
            sums[0] += forward.query_loss.sum(tch::Kind::Double).double_value(&[]);
            if let Some(alpha) = &forward.alpha {
                sums[1] += alpha.sum(tch::Kind::Double).double_value(&[]);
            }
        }
        bar.inc(1);
    }
    comm.sum_f64(&mut sums);
    EPOCH_TIMING.with(|timing| {
        let mut timing = timing.borrow_mut();
        timing.seconds += started.elapsed().as_secs_f64();
        timing.communication_seconds += crate::dist::communication_seconds() - communication;
        timing.communication_bytes += crate::dist::communication_bytes() - communication_bytes;
        timing.steps += batches.len();
        timing.users += batches.iter().map(Vec::len).sum::<usize>();
    });
    let users = batches.iter().map(Vec::len).sum::<usize>().max(1) as f64;
    (sums[0] / users, sums[1] / users)
}

/// Where this thread's training epochs spent their time (all of its runs together): what
/// `trainer bench scale` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochTiming {
    /// Seconds in training epochs (validation excluded).
    pub seconds: f64,
    /// Of those, seconds in MPI collectives (waiting for slower ranks included).
    pub communication_seconds: f64,
    /// Bytes this rank gave to those collectives (its values of each sum and gather).
    pub communication_bytes: u64,
    /// Outer steps taken.
    pub steps: usize,
    /// Users trained on (over all ranks: each epoch counts every training user once).
    pub users: usize,
}

thread_local! {
    static EPOCH_TIMING: std::cell::RefCell<EpochTiming> = std::cell::RefCell::default();
}

/// This thread's [`EpochTiming`] so far.
pub fn epoch_timing() -> EpochTiming {
    EPOCH_TIMING.with(|timing| *timing.borrow())
}

/// The epoch's batches: their order depends only on (seed, epoch), so a resumed run sees the
/// same batches. Users of similar activity share a batch, which cuts the padding of the
/// support and query tensors: pools of 8 batches are sorted by length, cut into batches, and
/// those shuffled. The batches borrow the tasks (no copy of the ratings).
fn epoch_batches<'t>(config: &TrainConfig, train_tasks: &'t [Task], epoch: usize) -> Vec<Vec<&'t Task>> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64));
    let mut tasks: Vec<&Task> = train_tasks.iter().collect();
    tasks.shuffle(&mut rng);
    let mut batches: Vec<Vec<&Task>> = Vec::new();
    for pool in tasks.chunks_mut(config.batch_users.saturating_mul(8)) {
        pool.sort_by_key(|t| t.support.len() + t.query.len());
        batches.extend(pool.chunks(config.batch_users).map(<[&Task]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// The forward pass over this rank's `shard` of a batch of `batch_users` users and the
/// back-propagation of its part of the outer loss (the batch mean: sums over the shard divided
/// by the whole batch's size, so the ranks' gradients add up to the batch's).
fn outer_forward(
    config: &TrainConfig,
    model: &MetaModel,
    shard: &[&Task],
    batch_users: usize,
    optimizer: &mut Adam,
) -> crate::model::Forward {
    let device = model.device();
    let order = if config.first_order { Order::First } else { Order::Second };
    let gamma = if config.method == Method::RegPaml { config.method_config.gamma } else { 0.0 };
    let (batch, steps) = if config.method.pooled_training() {
        (TaskBatch::pooled(shard, device), 0)
    } else {
        (TaskBatch::new(shard, device), config.inner_steps)
    };
    let forward = model.forward(&batch, steps, order, true);
    // A rank's shard: the sum of its users' terms over the whole batch's size.
    let loss = forward.outer_terms(gamma).sum(tch::Kind::Float) / batch_users as f64;
    optimizer.backward(&loss);
    forward
}

/// AT-PAML's memory after a step, the same on every rank: the neighbours every rank's shard
/// used are marked used, the outer gradient moves the stored entries, and every rank's new
/// users are stored in batch order (each rank's shard holds the batch `positions` it took).
fn update_memory(
    comm: Comm,
    memory: &mut crate::memory::Memory,
    forward: Option<&crate::model::Forward>,
    positions: &[usize],
    lr: f64,
) {
    let touched = comm.gather_u32(&memory.take_touched());
    memory.touch(&touched);
    memory.outer_step(lr);
    let values = |t: Option<&Tensor>| t.map(crate::model::tensor_values).unwrap_or_default();
    let mut keys = comm.gather_f32(&values(forward.and_then(|f| f.memory_keys.as_ref())));
    let mut alpha = comm.gather_f32(&values(forward.and_then(|f| f.alpha.as_ref())));
    if comm.size() > 1 {
        // One process's shard is the batch itself, in order.
        let order = comm.gather_u32(&positions.iter().map(|&p| p as u32).collect::<Vec<_>>());
        if order.len() == alpha.len() && keys.len() == alpha.len() * crate::memory::KEY_DIM {
            (keys, alpha) = in_batch_order(&order, &keys, &alpha);
        }
    }
    if !alpha.is_empty() && keys.len() == alpha.len() * crate::memory::KEY_DIM {
        let keys = Tensor::from_slice(&keys).view([alpha.len() as i64, crate::memory::KEY_DIM as i64]);
        memory.insert(&keys, &Tensor::from_slice(&alpha));
    }
    memory.rebuild();
}

/// The gathered memory keys (`KEY_DIM` a user) and rates, rank after rank, put back in batch
/// order: `order[j]` is the batch position of gathered user j.
fn in_batch_order(order: &[u32], keys: &[f32], alpha: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut by_position: Vec<usize> = (0..order.len()).collect();
    by_position.sort_by_key(|&j| order[j]);
    let dim = crate::memory::KEY_DIM;
    let keys = by_position.iter().flat_map(|&j| keys[j * dim..(j + 1) * dim].iter().copied()).collect();
    (keys, by_position.iter().map(|&j| alpha[j]).collect())
}

/// The log line of one epoch.
fn epoch_line(
    config: &TrainConfig,
    model: &MetaModel,
    objective: Objective,
    epoch: usize,
    (train_loss, valid_loss): (f64, f64),
    alpha_mean: f64,
) -> String {
    let loss_name = objective.loss_name();
    let mut line =
        format!("epoch {epoch}: train query {loss_name} {train_loss:.4}, validation {loss_name} {valid_loss:.4}");
    if config.method.has_lr_net() {
        line += &format!(", mean inner lr {alpha_mean:.4}");
    }
    if let Some((mean, min, max)) = model.per_parameter_lr_summary() {
        line += &format!(", inner lr mean {mean:.4} [{min:.4}, {max:.4}]");
    }
    line
}

/// Writes run.json (rank 0) once training kept an epoch.
fn finish(config: &TrainConfig, lead: bool, run: &RunDir, objective: Objective, info: RunInfo) -> Result<RunInfo> {
    if !info.best_valid_loss.is_finite() {
        bail!(
            "training produced no finite validation {} (diverged?); try a smaller --inner-lr or --outer-lr",
            objective.loss_name()
        );
    }
    if !lead {
        return Ok(info);
    }
    run.save_info(&info)?;
    eprintln!(
        "kept epoch {} (validation {} {:.4}) in {} after {:.1} s",
        info.best_epoch,
        objective.loss_name(),
        info.best_valid_loss,
        config.out.display(),
        info.train_seconds
    );
    Ok(info)
}

fn checkpoint_paths(run: &RunDir) -> (PathBuf, PathBuf) {
    (run.0.join("checkpoint.ot"), run.0.join("checkpoint.json"))
}

/// Name of the progress record (JSON bytes) inside `checkpoint.ot`.
const PROGRESS_TENSOR: &str = "progress.json";

/// Every variable, the optimizer moments, the memory and the progress record, in one file
/// written atomically (serialised in memory, then temporary file, fsync, rename): a crash or a
/// full disk at any moment leaves the previous checkpoint whole, and the tensors and the progress
/// record that describes them can never come from different epochs. `checkpoint.json` repeats
/// the progress record for people and scripts; `--resume` reads the copy inside the tensors.
fn save_checkpoint(run: &RunDir, model: &MetaModel, optimizer: &Adam, progress: &Progress) -> Result<()> {
    let (tensors_path, progress_path) = checkpoint_paths(run);
    let progress_json = serde_json::to_string_pretty(progress)?;
    let mut named: Vec<(String, Tensor)> =
        model.vs.variables().into_iter().map(|(name, t)| (format!("var.{name}"), t.detach())).collect();
    named.extend(optimizer.state());
    if let Some(memory) = &model.memory {
        named.extend(memory.borrow().state());
    }
    named.push((PROGRESS_TENSOR.to_owned(), Tensor::from_slice(progress_json.as_bytes())));
    crate::fsutil::write_atomic(&tensors_path, &crate::run::tensors_to_bytes(&named)?)?;
    crate::fsutil::write_atomic(&progress_path, progress_json.as_bytes())
}

fn load_checkpoint(config: &TrainConfig, run: &RunDir, model: &MetaModel, optimizer: &mut Adam) -> Result<Progress> {
    let (tensors_path, progress_path) = checkpoint_paths(run);
    let named: HashMap<String, Tensor> = run::load_tensors(&tensors_path)
        .with_context(|| format!("--resume: reading {}", tensors_path.display()))?
        .into_iter()
        .collect();
    // The record inside the tensors file always matches them; checkpoints written before it was
    // stored there have only the JSON file.
    let (text, source) = match named.get(PROGRESS_TENSOR) {
        Some(bytes) => {
            let bytes = Vec::<u8>::try_from(bytes).context("reading the checkpoint's progress record")?;
            (String::from_utf8(bytes).context("the checkpoint's progress record is not UTF-8")?, &tensors_path)
        }
        None => (
            std::fs::read_to_string(&progress_path)
                .with_context(|| format!("--resume: reading {}", progress_path.display()))?,
            &progress_path,
        ),
    };
    let progress: Progress =
        serde_json::from_str(&text).with_context(|| format!("parsing the progress record of {}", source.display()))?;
    check_same_settings(&progress.info, config)?;
    {
        let _guard = tch::no_grad_guard();
        for (name, mut variable) in model.vs.variables() {
            let saved =
                named.get(&format!("var.{name}")).with_context(|| format!("checkpoint lacks variable {name}"))?;
            if saved.size() != variable.size() {
                bail!(
                    "--resume: {} holds variable {name} of shape {:?}, the model's is {:?} (other settings)",
                    tensors_path.display(),
                    saved.size(),
                    variable.size()
                );
            }
            variable.copy_(&saved.to(variable.device()));
        }
    }
    optimizer.load_state(&named)?;
    if let Some(memory) = &model.memory {
        memory.borrow_mut().load_state(&named)?;
    }
    Ok(progress)
}
