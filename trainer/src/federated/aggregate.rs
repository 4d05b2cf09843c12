//! `trainer federated aggregate`: one DP-FedAvg round over device contributions.
//!
//! Every blob is validated (format, CRC, the model it was computed against, length, finite
//! values, norm ≤ S, duplicates); the accepted updates are summed and divided by the *fixed*
//! denominator m (the expected number of clients, not the number received, so one device moves
//! the mean by at most S/m whatever the others do); Gaussian noise N(0, (zS/m)²) is added once per
//! coordinate from a cryptographic generator; the server steps θ ← θ − β·(mean + noise) (the
//! contributions are meta-gradients); the next model is written atomically; and the round is
//! charged to the privacy ledger before the model is published.
//!
//! `--server-optimizer adam` steps by FedAdam (Reddi et al. 2021) instead of θ − β·mean, and
//! `--adaptive-clip γ` moves the clip towards the γ quantile of the update norms (Andrew et al.
//! 2021, [`super::adaptive_clip`]) and `--server-average d` serves a moving average of the
//! rounds' models ([`super::average`]); each keeps what the next round needs in a server state
//! file bound to the model it steps.
//!
//! `--robust median|trimmed-mean` replaces the mean by a coordinate-wise median or trimmed mean of
//! the accepted updates, against poisoned updates (Yin et al. 2018, "Byzantine-robust
//! distributed learning"). Its sensitivity is not the mean's, so it runs without noise
//! (`--noise-multiplier 0`) and the ledger records ε = ∞ for the round.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use metarec_runtime::contribution;
use metarec_runtime::format::{self, ModelBody};
use metarec_runtime::Model;
use rand::rngs::OsRng;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

use super::adaptive_clip::AdaptiveClip;
use super::average::ServerAverage;
use super::ledger::{self, LedgerRow};
use crate::fsutil;

/// Arguments of `trainer federated aggregate`.
#[derive(Debug, clap::Args)]
pub struct AggregateArgs {
    /// The current model file (the one devices computed their contributions against).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory of contribution blobs (every regular file in it is read; other entries are skipped).
    #[arg(long)]
    pub updates: PathBuf,
    /// The next model file to write (an existing file is refused unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Clip norm S: contributions with a larger L2 norm are refused.
    #[arg(long)]
    pub clip: f64,
    /// Noise multiplier z: the noise on the mean has standard deviation z·S/m per coordinate.
    #[arg(long)]
    pub noise_multiplier: f64,
    /// Expected clients per round m (the fixed denominator; q = m / population).
    #[arg(long)]
    pub expected_clients: f64,
    /// Number of users devices are sampled from, for the sampling rate q = m / population and the
    /// default δ = 1 / population of the ledger.
    #[arg(long)]
    pub population: u64,
    /// Target δ of the ledger's ε (default: 1 / population).
    #[arg(long)]
    pub delta: Option<f64>,
    /// The server's step and clip.
    #[command(flatten)]
    pub server: ServerStepArgs,
    /// Seed the noise (tests only: without it the noise comes from the operating system's
    /// cryptographic generator).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Privacy ledger to append the round to (default: `privacy-ledger.tsv` beside --out).
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Replace an existing --out.
    #[arg(long)]
    pub force: bool,
    /// A robust estimate instead of the noisy mean (needs --noise-multiplier 0: no DP guarantee).
    #[arg(long, value_enum)]
    pub robust: Option<Robust>,
    /// --robust trimmed-mean: the share of updates dropped at each end of every coordinate.
    #[arg(long, default_value_t = 0.1)]
    pub trim: f64,
    /// What the server keeps from round to round under `--server-optimizer adam` (the moments)
    /// or `--adaptive-clip` (the next clip); default: `server-state.json` beside --out. Read when
    /// it exists (it must belong to --model), then rewritten for the next model; a missing file
    /// starts the moments at zero and the clip at --clip.
    #[arg(long)]
    pub server_state: Option<PathBuf>,
    /// Where `--server-average` writes the averaged model, the one devices score with (default:
    /// --out's name with `-average` before its extension, beside it; an existing file is
    /// refused unless --force).
    #[arg(long)]
    pub average_out: Option<PathBuf>,
}

/// How the server steps and clips, the same flags for `aggregate` and `simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerStepArgs {
    /// Server learning rate β.
    #[arg(long, default_value_t = 1.0)]
    pub server_lr: f64,
    /// The server's optimizer: `sgd` (θ ← θ − β·(mean + noise)) or `adam` (FedAdam: Adam's
    /// moments over the rounds' noisy means, kept from round to round; β is then a step per
    /// coordinate, e.g. 0.01).
    #[arg(long, value_enum, default_value_t = ServerOptimizer::Sgd)]
    pub server_optimizer: ServerOptimizer,
    /// Adaptive clipping (Andrew et al. 2021) towards this quantile of the update norms:
    /// --clip is the first round's clip; each round the server counts the updates that fitted
    /// under it (from their norms: a clipped update's is S·(1 − 10⁻⁶)), noises the count with
    /// σ = m/20 (its share of the round's budget: the updates' noise multiplier rises so that
    /// the round still costs z) and multiplies the clip by exp(−0.2 (fraction − quantile)).
    /// `aggregate` keeps the next clip in --server-state and prints it; the next round's --clip
    /// must be it.
    #[arg(long)]
    pub adaptive_clip: Option<f64>,
    /// Serve an exponential moving average of the rounds' models with this decay d (e.g. 0.99;
    /// round t weighs in with at least 1/t): devices contribute against the latest model and
    /// score with the average, which is computed from published models only and so costs no
    /// privacy. `aggregate` writes it beside --out (--average-out) and keeps it in
    /// --server-state; `simulate` evaluates it.
    #[arg(long)]
    pub server_average: Option<f64>,
}

impl ServerStepArgs {
    /// Checks the flags; returns the adaptive clipping rule and the updates' noise multiplier
    /// for `expected_clients` per round at noise multiplier `z`.
    pub fn check(&self, expected_clients: f64, z: f64) -> Result<(Option<AdaptiveClip>, f64)> {
        if !(self.server_lr.is_finite() && self.server_lr > 0.0) {
            bail!("--server-lr must be a positive number, got {}", self.server_lr);
        }
        if let Some(decay) = self.server_average {
            ServerAverage::check_decay(decay)?;
        }
        match self.adaptive_clip {
            Some(quantile) => AdaptiveClip::for_rounds(quantile, expected_clients, z).map(|(r, n)| (Some(r), n)),
            None => Ok((None, z)),
        }
    }

    /// Whether the server keeps something from round to round (FedAdam's moments, the adaptive
    /// clip, the average).
    pub fn keeps_state(&self) -> bool {
        self.server_optimizer == ServerOptimizer::Adam || self.adaptive_clip.is_some() || self.server_average.is_some()
    }

    /// The step from a round's noisy mean: the mean itself, or FedAdam's through `adam`.
    pub fn step(&self, mean: Vec<f64>, adam: &mut ServerAdam) -> Result<Vec<f64>> {
        match self.server_optimizer {
            ServerOptimizer::Sgd => Ok(mean),
            ServerOptimizer::Adam => adam.step(&mean),
        }
    }
}

/// The server's optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerOptimizer {
    /// Plain steps on the noisy mean.
    Sgd,
    /// Adam on the noisy means ([`ServerAdam`]).
    Adam,
}

/// A coordinate-wise robust aggregate of the accepted updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Robust {
    /// The median of every coordinate (the mean of the middle two for an even count).
    Median,
    /// The mean of every coordinate after dropping the --trim share at each end.
    TrimmedMean,
}

/// What a round did: accepted contributions and refusals by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundCounts {
    /// Contributions summed.
    pub accepted: usize,
    /// Not a readable contribution: truncated, bad magic, other version, CRC, non-finite.
    pub malformed: usize,
    /// Computed against another model (stale round or foreign model) or of the wrong length.
    pub wrong_model: usize,
    /// L2 norm above the clip.
    pub over_clip: usize,
    /// Byte-identical to a contribution already counted.
    pub duplicate: usize,
    /// Accepted contributions the device did not have to scale down: norm below the clip (a
    /// clipped update's norm is S·(1 − 10⁻⁶); adaptive clipping counts these).
    pub unclipped: usize,
}

/// Runs one round (see the module docs).
pub fn command(args: &AggregateArgs) -> Result<()> {
    check_args(args)?;
    fsutil::refuse_existing_file("--out", &args.out, args.force)?;
    let (bytes, model) = read_model(&args.model)?;
    let mut body = format::decode(&bytes).map_err(|e| anyhow::anyhow!("--model: {}", e.message()))?;
    let average_out = average_path(args);
    if let Some(path) = &average_out {
        fsutil::refuse_existing_file("--average-out", path, args.force)?;
    }
    let server = &args.server;
    let state_path = server
        .keeps_state()
        .then(|| args.server_state.clone().unwrap_or_else(|| beside(&args.out, "server-state.json")));
    let mut state = match &state_path {
        Some(path) => Some(ServerState::read(path, contribution::model_id(&model))?),
        None => None,
    };
    let clip = round_clip(args, state.as_ref(), state_path.as_deref())?;
    let (rule, update_noise) = server.check(args.expected_clients, args.noise_multiplier)?;
    let mut rng: Box<dyn RngCore> = match args.seed {
        Some(seed) => Box::new(ChaCha20Rng::seed_from_u64(seed)),
        None => Box::new(ChaCha20Rng::from_rng(OsRng).context("seeding the noise from the OS")?),
    };
    let (mean, counts) = round_step(args, &model, (clip, update_noise), &mut *rng)?;
    let mut unused = ServerAdam::default();
    let adam = match state.as_mut() {
        Some(state) if server.server_optimizer == ServerOptimizer::Adam => {
            state.adam.get_or_insert_with(ServerAdam::default)
        }
        _ => &mut unused,
    };
    let step = server.step(mean, adam)?;
    apply_step(&mut body, &step, server.server_lr)?;
    let next_bytes = encode(&body, "the next model")?;
    let next = Model::from_bytes(&next_bytes).map_err(|e| anyhow::anyhow!("the next model: {}", e.message()))?;
    let fitted = (counts.unclipped, counts.accepted);
    let next_clip = rule.map(|r| r.after_round(clip, fitted, args.expected_clients, &mut *rng)).transpose()?;
    // Charge the round before the model that reveals it exists.
    let ledger_path = args.ledger.clone().unwrap_or_else(|| beside(&args.out, "privacy-ledger.tsv"));
    let row = ledger::append(&ledger_path, ledger_row(args, (&counts, clip), (&model, &next)))?;
    if let (Some(path), Some(mut state)) = (&state_path, state) {
        state.model = contribution::model_id(&next);
        state.clip = next_clip;
        if let (Some(decay), Some(out)) = (server.server_average, &average_out) {
            write_average(state.average.get_or_insert_with(ServerAverage::default), decay, &body, out)?;
        }
        state.write(path)?;
    }
    fsutil::write_atomic(&args.out, &next_bytes)?;
    println!(
        "round {}: {} accepted, refused {} malformed, {} stale or foreign, {} above the clip, {} duplicates",
        row.round, counts.accepted, counts.malformed, counts.wrong_model, counts.over_clip, counts.duplicate
    );
    println!("privacy so far: epsilon {:.6} at delta {:e} after {} rounds", row.epsilon, row.delta, row.round);
    if let Some(next_clip) = next_clip {
        println!("next round's clip: {next_clip} (devices clip to it; give it as --clip)");
    }
    Ok(())
}

/// --average-out, or its default beside --out, under --server-average.
fn average_path(args: &AggregateArgs) -> Option<PathBuf> {
    args.server.server_average?;
    Some(args.average_out.clone().unwrap_or_else(|| {
        let stem = args.out.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
        let name = match args.out.extension() {
            Some(ext) => format!("{stem}-average.{}", ext.to_string_lossy()),
            None => format!("{stem}-average"),
        };
        beside(&args.out, &name)
    }))
}

/// Folds the stepped `body` into `average` and writes the averaged model to `out`.
fn write_average(average: &mut ServerAverage, decay: f64, body: &ModelBody, out: &Path) -> Result<()> {
    average.after_round(decay, body)?;
    let served = encode(&average.served(body)?, "the averaged model")?;
    fsutil::write_atomic(out, &served).with_context(|| format!("writing --average-out {}", out.display()))
}

/// Reads and checks --model: a model devices can contribute to.
fn read_model(path: &Path) -> Result<(Vec<u8>, Model)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading --model {}", path.display()))?;
    let model =
        Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("--model {}: {}", path.display(), e.message()))?;
    contribution::check_contributable(&model).map_err(|e| {
        anyhow::anyhow!(
            "--model {}: {} (devices contribute to models with one initialisation adapted by gradient steps over \
             the whole MLP or by the fold-in)",
            path.display(),
            e.message()
        )
    })?;
    Ok((bytes, model))
}

/// The round's clip: --clip, which under --adaptive-clip must be the clip the last round set
/// (in the server state), when there was one.
fn round_clip(args: &AggregateArgs, state: Option<&ServerState>, path: Option<&Path>) -> Result<f64> {
    let set = state.and_then(|s| s.clip).filter(|_| args.server.adaptive_clip.is_some());
    match set {
        Some(clip) if (args.clip / clip - 1.0).abs() > 1e-6 => bail!(
            "--clip {} is not this round's clip {clip}: --adaptive-clip set it last round (in --server-state {}); \
             devices clip to it and the server checks them against it",
            args.clip,
            path.map_or(String::new(), |p| p.display().to_string())
        ),
        Some(clip) => Ok(clip),
        None => Ok(args.clip),
    }
}

/// The ledger row of a round from `model` to `next` (the ledger numbers it and adds ε).
fn ledger_row(args: &AggregateArgs, (counts, clip): (&RoundCounts, f64), (model, next): (&Model, &Model)) -> LedgerRow {
    LedgerRow {
        round: 0,
        model_in: contribution::model_id(model),
        model_out: contribution::model_id(next),
        accepted: counts.accepted,
        refused: counts.malformed + counts.wrong_model + counts.over_clip + counts.duplicate,
        expected_clients: args.expected_clients,
        q: args.expected_clients / args.population as f64,
        noise_multiplier: args.noise_multiplier,
        clip,
        delta: args.delta.unwrap_or(1.0 / args.population as f64),
        epsilon: 0.0,
    }
}

/// The round's step (the noisy mean with the updates' noise multiplier, or the robust
/// aggregate) and its counts, against `clip`.
fn round_step(
    args: &AggregateArgs,
    model: &Model,
    (clip, noise_multiplier): (f64, f64),
    rng: &mut dyn RngCore,
) -> Result<(Vec<f64>, RoundCounts)> {
    let mut round = RoundSum::new(model, clip);
    if let Some(rule) = args.robust {
        round.keep_updates();
        read_contributions(&mut round, &args.updates)?;
        let updates = round.updates.take().unwrap_or_default();
        let (_, counts) = round.finish();
        if updates.is_empty() {
            bail!("--robust: no contribution was accepted ({counts:?})");
        }
        return Ok((robust_aggregate(&updates, rule, args.trim), counts));
    }
    read_contributions(&mut round, &args.updates)?;
    let (sum, counts) = round.finish();
    Ok((noisy_mean(&sum, args.expected_clients, noise_multiplier, clip, rng)?, counts))
}

/// The coordinate-wise median or trimmed mean of `updates` (each of one length, at least one).
pub fn robust_aggregate(updates: &[Vec<f32>], rule: Robust, trim: f64) -> Vec<f64> {
    let n = updates.len();
    let cut = match rule {
        Robust::Median => 0,
        // At least one value is kept.
        Robust::TrimmedMean => ((trim * n as f64).floor() as usize).min((n - 1) / 2),
    };
    let mut column = vec![0f64; n];
    (0..updates.first().map_or(0, Vec::len))
        .map(|k| {
            for (c, u) in column.iter_mut().zip(updates) {
                *c = f64::from(u[k]);
            }
            column.sort_by(f64::total_cmp);
            match rule {
                Robust::Median if n % 2 == 1 => column[n / 2],
                Robust::Median => 0.5 * (column[n / 2 - 1] + column[n / 2]),
                Robust::TrimmedMean => column[cut..n - cut].iter().sum::<f64>() / (n - 2 * cut) as f64,
            }
        })
        .collect()
}

fn check_args(args: &AggregateArgs) -> Result<()> {
    if args.robust.is_some() && args.noise_multiplier != 0.0 {
        bail!("--robust runs without noise (its sensitivity is not the mean's): give --noise-multiplier 0");
    }
    if !(args.trim.is_finite() && (0.0..0.5).contains(&args.trim)) {
        bail!("--trim must be in [0, 0.5), got {}", args.trim);
    }
    if !(args.clip.is_finite() && args.clip > 0.0) {
        bail!("--clip must be a positive number, got {}", args.clip);
    }
    if !(args.noise_multiplier.is_finite() && args.noise_multiplier >= 0.0) {
        bail!("--noise-multiplier must be a non-negative number, got {}", args.noise_multiplier);
    }
    if !(args.expected_clients.is_finite() && args.expected_clients >= 1.0) {
        bail!("--expected-clients must be at least 1, got {}", args.expected_clients);
    }
    if args.population == 0 || args.expected_clients > args.population as f64 {
        bail!("--population must be at least --expected-clients ({}), got {}", args.expected_clients, args.population);
    }
    if let Some(delta) = args.delta {
        if !(delta > 0.0 && delta < 1.0) {
            bail!("--delta must be in (0, 1), got {delta}");
        }
    }
    args.server.check(args.expected_clients, args.noise_multiplier)?;
    let server = &args.server;
    if args.server_state.is_some() && !server.keeps_state() {
        bail!(
            "--server-state keeps FedAdam's moments, the adaptive clip and the average: give it with \
             --server-optimizer adam, --adaptive-clip or --server-average"
        );
    }
    if args.average_out.is_some() && server.server_average.is_none() {
        bail!("--average-out is where --server-average writes the averaged model: give --server-average too");
    }
    Ok(())
}

/// Sums every acceptable contribution in `dir` (in f64), files in name order.
pub fn sum_contributions(model: &Model, dir: &Path, clip: f64) -> Result<(Vec<f64>, RoundCounts)> {
    let mut round = RoundSum::new(model, clip);
    read_contributions(&mut round, dir)?;
    Ok(round.finish())
}

/// Adds every regular file in `dir` to `round`, in name order.
fn read_contributions(round: &mut RoundSum, dir: &Path) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --updates {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading --updates {}", dir.display()))?;
    entries.sort();
    for path in entries.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        round.add(bytes);
    }
    Ok(())
}

/// One round's running sum: validates each contribution (format and CRC, the model it was
/// computed against, length, norm ≤ the clip, duplicates) and adds the accepted ones in f64.
#[derive(Debug)]
pub struct RoundSum {
    id: u64,
    version: u16,
    schema: u64,
    clip: f64,
    sum: Vec<f64>,
    counts: RoundCounts,
    seen: HashSet<Vec<u8>>,
    /// The accepted updates themselves, for a robust aggregate ([`RoundSum::keep_updates`]).
    updates: Option<Vec<Vec<f32>>>,
}

impl RoundSum {
    /// An empty round against `model` with clip norm `clip`.
    pub fn new(model: &Model, clip: f64) -> RoundSum {
        let layout = contribution::UpdateLayout::of(model);
        RoundSum {
            id: contribution::model_id(model),
            version: layout.version(),
            schema: format::schema_hash(model.body()),
            clip,
            sum: vec![0.0; layout.len()],
            counts: RoundCounts::default(),
            seen: HashSet::new(),
            updates: None,
        }
    }

    /// Keeps every accepted update as well as the sum (memory: one update per client).
    pub fn keep_updates(&mut self) {
        self.updates.get_or_insert_with(Vec::new);
    }

    /// Adds one blob if it is acceptable, else counts why not.
    pub fn add(&mut self, bytes: Vec<u8>) {
        let Ok(blob) = contribution::decode(&bytes) else {
            self.counts.malformed += 1;
            return;
        };
        if blob.model_id != self.id
            || blob.schema_hash != self.schema
            || blob.version != self.version
            || blob.update.len() != self.sum.len()
        {
            self.counts.wrong_model += 1;
            return;
        }
        let norm = blob.update.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        if norm > self.clip * (1.0 + contribution::CLIP_MARGIN) {
            self.counts.over_clip += 1;
            return;
        }
        if !self.seen.insert(bytes) {
            self.counts.duplicate += 1;
            return;
        }
        // A clipped update's norm is S·(1 − margin), up to f32 rounding.
        if norm < self.clip * (1.0 - 2.0 * contribution::CLIP_MARGIN) {
            self.counts.unclipped += 1;
        }
        for (s, v) in self.sum.iter_mut().zip(&blob.update) {
            *s += f64::from(*v);
        }
        if let Some(updates) = &mut self.updates {
            updates.push(blob.update);
        }
        self.counts.accepted += 1;
    }

    /// The sum of the accepted contributions and the counts.
    pub fn finish(self) -> (Vec<f64>, RoundCounts) {
        (self.sum, self.counts)
    }
}

/// `sum / m + N(0, (z·S/m)²)` per coordinate, for m = `expected_clients`, z =
/// `noise_multiplier`, S = `clip`.
pub fn noisy_mean(
    sum: &[f64],
    expected_clients: f64,
    noise_multiplier: f64,
    clip: f64,
    rng: &mut dyn RngCore,
) -> Result<Vec<f64>> {
    let m = expected_clients;
    let stddev = noise_multiplier * clip / m;
    let normal = Normal::new(0.0, stddev).context("noise distribution")?;
    Ok(sum.iter().map(|s| s / m + if stddev > 0.0 { normal.sample(rng) } else { 0.0 }).collect())
}

/// The server's Adam (FedAdam: Reddi et al., "Adaptive Federated Optimization", ICLR 2021, with
/// their β₁ = 0.9, β₂ = 0.99 and adaptivity τ = 1e-3, plus Adam's bias correction): each round's
/// noisy mean is the gradient, its moments persist from round to round, and the step
/// [`apply_step`] takes is `m̂ / (√v̂ + τ)`, so β is a step size per coordinate whatever the
/// coordinate's scale (MLP weights and log ridge weights alike). It reads only the published
/// noisy means: post-processing, no privacy cost.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerAdam {
    m: Vec<f64>,
    v: Vec<f64>,
    rounds: i32,
}

impl ServerAdam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.99;
    const TAU: f64 = 1e-3;

    /// This round's step from its noisy mean (the moments start at zero on the first round).
    pub fn step(&mut self, mean: &[f64]) -> Result<Vec<f64>> {
        if self.rounds == 0 {
            self.m = vec![0.0; mean.len()];
            self.v = vec![0.0; mean.len()];
        }
        if mean.len() != self.m.len() {
            bail!("server Adam: an update of {} values after updates of {}", mean.len(), self.m.len());
        }
        self.rounds = self.rounds.saturating_add(1);
        let c1 = 1.0 - Self::BETA1.powi(self.rounds);
        let c2 = 1.0 - Self::BETA2.powi(self.rounds);
        Ok(mean
            .iter()
            .zip(self.m.iter_mut().zip(&mut self.v))
            .map(|(&g, (m, v))| {
                *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
                *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
                (*m / c1) / ((*v / c2).sqrt() + Self::TAU)
            })
            .collect())
    }
}

/// How the server moves a value it steps: a decision-MLP parameter linearly, a fold-in ridge
/// weight λ through its logarithm (λ ← λ·exp(−β·step), so it stays positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// θ ← θ − β·step.
    Linear,
    /// log λ ← log λ − β·step.
    Log,
}

/// The values the server steps, in the contributions' layout ([`contribution::UpdateLayout`]):
/// the decision MLP's parameters (per layer: weights, then biases), then a fold-in head's ridge
/// weights.
pub fn stepped_values(body: &ModelBody) -> impl Iterator<Item = (f32, Scale)> + '_ {
    let mlp = body.layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias)).map(|&p| (p, Scale::Linear));
    let ridge = body.product.fold_in.iter().flat_map(|head| head.ridge.iter()).map(|&l| (l, Scale::Log));
    mlp.chain(ridge)
}

/// [`stepped_values`], to write.
pub fn stepped_values_mut(body: &mut ModelBody) -> impl Iterator<Item = (&mut f32, Scale)> {
    let mlp = body.layers.iter_mut().flat_map(|l| l.weight.iter_mut().chain(l.bias.iter_mut()));
    let ridge = body.product.fold_in.iter_mut().flat_map(|head| head.ridge.iter_mut());
    mlp.map(|p| (p, Scale::Linear)).chain(ridge.map(|l| (l, Scale::Log)))
}

/// A model file's bytes for `body`; an error names `what` was being encoded (e.g. "the next
/// model").
pub fn encode(body: &ModelBody, what: &str) -> Result<Vec<u8>> {
    format::encode(body).map_err(|e| anyhow::anyhow!("encoding {what}: {}", e.message()))
}

/// θ ← θ − β·step over [`stepped_values`]: the decision MLP's parameters, then a fold-in
/// head's log ridge weights, λ ← λ·exp(−β·step).
pub fn apply_step(body: &mut ModelBody, step: &[f64], server_lr: f64) -> Result<()> {
    let mut steps = step.iter();
    for (value, scale) in stepped_values_mut(body) {
        let s = steps.next().context("the update is shorter than the model's parameters and ridge weights")?;
        *value = match scale {
            Scale::Linear => f64::from(*value) - server_lr * s,
            Scale::Log => f64::from(*value) * (-server_lr * s).exp(),
        } as f32;
    }
    if steps.next().is_some() {
        bail!("the update is longer than the model's parameters");
    }
    Ok(())
}

/// `name` in the directory of `out`.
fn beside(out: &Path, name: &str) -> PathBuf {
    out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(name)
}

/// What the server keeps between `aggregate` rounds (FedAdam's moments, the adaptive clip),
/// bound to the model the next round steps (its [`contribution::model_id`]): a round reads the
/// state of its --model and writes the state of the model it publishes (before publishing it,
/// after charging the ledger).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ServerState {
    /// The id of the model this state belongs to (the one the next round steps).
    model: u64,
    /// FedAdam's moments (`--server-optimizer adam`).
    #[serde(default)]
    adam: Option<ServerAdam>,
    /// The next round's clip norm (`--adaptive-clip`).
    #[serde(default)]
    clip: Option<f64>,
    /// The average of the models so far (`--server-average`).
    #[serde(default)]
    average: Option<ServerAverage>,
}

impl ServerState {
    /// The state for the model with id `model`: read from `path`, or fresh moments when no
    /// file is there. A state written for another model is refused.
    fn read(path: &Path, model: u64) -> Result<ServerState> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ServerState { model, adam: None, clip: None, average: None });
            }
            Err(e) => return Err(e).with_context(|| format!("reading --server-state {}", path.display())),
        };
        let state: ServerState =
            serde_json::from_str(&text).with_context(|| format!("parsing --server-state {}", path.display()))?;
        if state.model != model {
            bail!(
                "--server-state {} belongs to model {:016x}, not --model's {model:016x} (the state of another \
                 run, or of a round whose model was never written): pass this model's state, or a new \
                 --server-state path to start the moments at zero and the clip at --clip",
                path.display(),
                state.model
            );
        }
        Ok(state)
    }

    fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).context("encoding the server state")?;
        fsutil::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing --server-state {}", path.display()))
    }
}
