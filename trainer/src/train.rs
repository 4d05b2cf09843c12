//! Meta-training (MeLU: MAML with a fixed inner learning rate adapting the decision MLP).

use std::path::PathBuf;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind};

use crate::data::Dataset;
use crate::eval::mean_user_mse;
use crate::model::{MetaModel, ModelShape, Order, TaskBatch};
use crate::run::{self, RunInfo};
use crate::split::Split;

/// Settings of `trainer train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainConfig {
    /// Dataset directory (with schema.toml).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory to write (run.json, split.csv, weights.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the split, the initialisation and the batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Field embedding width.
    #[arg(long, default_value_t = 32)]
    pub embedding_dim: i64,
    /// Hidden layer widths of the decision MLP, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,64")]
    pub hidden: Vec<i64>,
    /// Inner-loop learning rate (fixed, as in MeLU).
    #[arg(long, default_value_t = 0.05)]
    pub inner_lr: f64,
    /// Inner-loop gradient steps.
    #[arg(long, default_value_t = 5)]
    pub inner_steps: u32,
    /// First-order MAML (no gradient through the inner loop).
    #[arg(long)]
    pub first_order: bool,
    /// Outer (Adam) learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub outer_lr: f64,
    /// Users per outer step.
    #[arg(long, default_value_t = 32)]
    pub batch_users: usize,
    /// Maximum epochs over the training users.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation MSE.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// `cpu`, `cuda` or `auto` (CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar (logs one line per epoch instead).
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `--device`.
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => bail!("--device cuda: no CUDA device is available to libtorch"),
        other => bail!("--device '{other}': expected cpu, cuda or auto"),
    })
}

/// Trains and writes the run directory; returns its info.
pub fn train(config: &TrainConfig) -> Result<RunInfo> {
    if config.inner_lr < 0.0 || !config.inner_lr.is_finite() {
        bail!("--inner-lr must be a finite number >= 0");
    }
    if config.embedding_dim < 1 || config.hidden.iter().any(|&h| h < 1) {
        bail!("--embedding-dim and --hidden widths must be >= 1");
    }
    let device = parse_device(&config.device)?;
    tch::manual_seed(config.seed as i64);
    let data = Dataset::load(&config.data)?;
    let split = Split::new(&data, config.seed)?;
    let run = run::create(&config.out)?;
    split.write(&data, &run.split_path())?;

    let train_ratings: Vec<f32> =
        split.train.iter().flat_map(|t| t.support.iter().chain(&t.query)).map(|r| r.value).collect();
    let global_mean = train_ratings.iter().sum::<f32>() / train_ratings.len().max(1) as f32;
    let shape = ModelShape { embedding_dim: config.embedding_dim, hidden: config.hidden.clone() };
    let model = MetaModel::new(&data, &shape, global_mean, device);
    let mut optimizer = nn::Adam::default().build(&model.vs, config.outer_lr)?;
    let order = if config.first_order { Order::First } else { Order::Second };

    let mut info = RunInfo {
        data: config.data.canonicalize().unwrap_or_else(|_| config.data.clone()),
        fingerprint: run::fingerprint(&data),
        seed: config.seed,
        shape,
        inner_lr: config.inner_lr,
        inner_steps: config.inner_steps,
        global_mean,
        best_epoch: 0,
        best_valid_mse: f64::INFINITY,
    };
    eprintln!(
        "training MeLU on {} users ({} validation, {} test), {} items, device {:?}",
        split.train.len(),
        split.valid.len(),
        split.test.len(),
        data.items.len(),
        device
    );
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut tasks = split.train.clone();
    let steps_per_epoch = tasks.len().div_ceil(config.batch_users.max(1));
    let bar =
        if config.quiet { ProgressBar::hidden() } else { ProgressBar::new((steps_per_epoch * config.epochs) as u64) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut since_best = 0;
    for epoch in 1..=config.epochs {
        tasks.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for chunk in tasks.chunks(config.batch_users.max(1)) {
            let batch = TaskBatch::new(chunk, device);
            let (_, query_mse) = model.adapt_and_predict(&batch, config.inner_steps, config.inner_lr, order);
            let loss = query_mse.mean(Kind::Float);
            optimizer.backward_step(&loss);
            epoch_loss += loss.double_value(&[]) * chunk.len() as f64;
            bar.inc(1);
        }
        let train_mse = epoch_loss / tasks.len() as f64;
        let valid_mse = mean_user_mse(&model, &split.valid, config.inner_steps, config.inner_lr, 256);
        let line = format!("epoch {epoch}: train query MSE {train_mse:.4}, validation MSE {valid_mse:.4}");
        bar.set_message(line.clone());
        if config.quiet {
            eprintln!("{line}");
        } else {
            bar.println(&line);
        }
        if valid_mse < info.best_valid_mse {
            info.best_valid_mse = valid_mse;
            info.best_epoch = epoch;
            run.save_weights(&model)?;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= config.patience {
                eprintln!("early stop: no validation improvement for {} epochs", config.patience);
                break;
            }
        }
    }
    bar.finish_and_clear();
    if info.best_epoch == 0 {
        bail!("training produced no finite validation MSE (diverged?); try a smaller --inner-lr or --outer-lr");
    }
    run.save_info(&info)?;
    eprintln!("kept epoch {} (validation MSE {:.4}) in {}", info.best_epoch, info.best_valid_mse, config.out.display());
    Ok(info)
}
