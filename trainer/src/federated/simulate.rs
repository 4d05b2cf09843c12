//! `trainer federated simulate`: DP-FedAvg rounds over a simulated population of devices.
//!
//! The data are split with the PAML protocol (or `--split`); a model of `--preset` (the product
//! model, adapted by the fold-in, by default; `paper` for gradient steps over the whole MLP) is
//! meta-trained centrally with first-order gradients on the first `--central-share` of the
//! training users (a few epochs)
//! and exported to a model body; the other training users are the devices. Each round samples
//! every device independently with probability q = K / devices (Poisson sampling, what the
//! accountant assumes; drawn by geometric skips, so a round costs time linear in the clients it
//! samples, not in the population), runs the real runtime code on each sampled device (a
//! [`Session`] on the current model, the user's profile and ratings, [`Session::contribute`]),
//! and aggregates with the server's code path ([`RoundSum`]: validation and the f64 sum;
//! [`aggregate::noisy_mean`]: the fixed denominator K and N(0, (zS/K)²) noise;
//! [`aggregate::apply_step`]: θ ← θ − β·(mean + noise)); the round is charged to the privacy
//! ledger ([`ledger::append`], δ = 1/devices by default). The test users' MSE (the validation
//! users' with `--eval-on valid`, for tuning) is measured with the runtime as an app would
//! (adapt on the support ratings, score the query ones), on the averaged model under
//! `--server-average` ([`super::average`]). The noise and the sampling are seeded (`--seed`): a
//! simulation is reproducible; a deployment's noise is not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metarec_runtime::format::ModelBody;
use metarec_runtime::{contribution, Model, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::adaptive_clip::AdaptiveClip;
use super::aggregate::{self, RoundCounts, RoundSum, ServerStepArgs};
use super::average::ServerAverage;
use super::ledger::{self, LedgerRow};
use crate::config::Preset;
use crate::data::{Dataset, LoadOptions};
use crate::eval;
use crate::fsutil;
use crate::run::RunDir;
use crate::split::{EvalOn, PamlConfig, Split, Task};
use crate::train::{self, TrainArgs};

/// Arguments of `trainer federated simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Dataset directory (with schema.toml).
    #[arg(long)]
    pub data: PathBuf,
    /// A split file written by `trainer data split` (default: the PAML protocol with --seed and
    /// the protocol flags below).
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// The PAML protocol's settings (ignored with --split).
    #[command(flatten)]
    pub paml: PamlConfig,
    /// Rounds to run.
    #[arg(long)]
    pub rounds: u64,
    /// Expected clients per round K (the fixed denominator; q = K / devices).
    #[arg(long)]
    pub clients_per_round: f64,
    /// Clip norm S of the device updates.
    #[arg(long)]
    pub clip: f64,
    /// Noise multiplier z: the noise on the mean has standard deviation z·S/K per coordinate.
    #[arg(long)]
    pub noise_multiplier: f64,
    /// The server's step and clip (as `federated aggregate`'s).
    #[command(flatten)]
    pub server: ServerStepArgs,
    /// Target δ of ε (default: 1 / devices).
    #[arg(long)]
    pub delta: Option<f64>,
    /// Seed of the split, the central training, the device sampling and the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory (simulate.md, rounds.csv, simulate.png, privacy-ledger.tsv, the models,
    /// the split, the central run).
    #[arg(long, default_value = "federated-simulation")]
    pub out: PathBuf,
    /// Share of the training users the starting model is meta-trained on centrally; the other
    /// training users are the devices.
    #[arg(long, default_value_t = 0.1)]
    pub central_share: f64,
    /// Epochs of the central training.
    #[arg(long, default_value_t = 3)]
    pub central_epochs: usize,
    /// The central model's preset: `product` (the defaults: item biases, the fold-in with item
    /// factors) or `paper` (gradient steps over every MLP weight).
    #[arg(long, value_enum, default_value_t = Preset::Product)]
    pub preset: Preset,
    /// More `trainer train` flags for the central model, in one string (e.g. "--hidden 16
    /// --inner-steps 2"); the preset's flags come first, so these override them.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub central_flags: String,
    /// Evaluate every this many rounds (and after the last).
    #[arg(long, default_value_t = 1)]
    pub eval_every: u64,
    /// Evaluate only the first this many of the evaluated users (default: all).
    #[arg(long)]
    pub eval_users: Option<usize>,
    /// The users each round is evaluated on: `test` (the figures to report) or `valid` (the
    /// split's validation users: choose --server-lr, --clip and --rounds on them, never on the
    /// test users).
    #[arg(long, value_enum, default_value_t = EvalOn::Test)]
    pub eval_on: EvalOn,
    /// Worker threads for the devices and the evaluation (default: the machine's cores). The
    /// results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the PNG plot.
    #[arg(long)]
    pub no_figures: bool,
    /// Replace the outputs of an earlier simulation in --out.
    #[arg(long)]
    pub force: bool,
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    /// Round (0 = the centrally trained start).
    pub round: u64,
    /// Devices sampled this round.
    pub sampled: usize,
    /// Contributions the server accepted.
    pub clients: usize,
    /// The evaluated users' MSE after the round (when evaluated; test users unless
    /// `--eval-on valid`).
    pub test_mse: Option<f64>,
    /// ε spent so far at δ.
    pub epsilon: f64,
    /// The clip norm of the round (moves with `--adaptive-clip`).
    pub clip: f64,
    /// Seconds the round took (devices, server, evaluation).
    pub seconds: f64,
}

/// The simulated population: the dataset, the devices' and the evaluated users' tasks.
struct Population {
    data: Dataset,
    devices: Vec<Task>,
    /// The test users, or the validation users with `--eval-on valid`.
    test: Vec<Task>,
    central: usize,
    /// Dataset item index → model item index.
    items: Vec<Option<u32>>,
}

const OUTPUTS: [&str; 9] = [
    "simulate.md",
    "rounds.csv",
    "simulate.png",
    "privacy-ledger.tsv",
    "initial.mrec",
    "model.mrec",
    "average.mrec",
    "split.csv",
    "devices.txt",
];

/// Runs the simulation (see the module docs) and writes its outputs.
pub fn command(args: &SimulateArgs) -> Result<Vec<RoundRow>> {
    check_args(args)?;
    fsutil::refuse_existing_in_dir(
        "--out",
        &args.out,
        &[&OUTPUTS[..], &["central"]].concat(),
        "a simulation",
        args.force,
    )?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating --out {}", args.out.display()))?;
    for name in OUTPUTS {
        let _ = std::fs::remove_file(args.out.join(name));
    }
    let started = Instant::now();
    let (population, mut body) = prepare(args)?;
    let prepared_seconds = started.elapsed().as_secs_f64();
    let rows = simulate(args, &population, &mut body)?;
    let total = started.elapsed().as_secs_f64();
    let table = table(args, &population, &rows, (prepared_seconds, total));
    print!("{table}");
    fsutil::write_atomic(&args.out.join("simulate.md"), table.as_bytes())?;
    fsutil::write_atomic(&args.out.join("rounds.csv"), rounds_csv(&rows).as_bytes())?;
    if !args.no_figures {
        plot(&args.out.join("simulate.png"), &rows)?;
    }
    Ok(rows)
}

fn check_args(args: &SimulateArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !(args.clip.is_finite() && args.clip > 0.0) {
        bail!("--clip must be a positive number, got {}", args.clip);
    }
    if !(args.noise_multiplier.is_finite() && args.noise_multiplier >= 0.0) {
        bail!("--noise-multiplier must be a non-negative number, got {}", args.noise_multiplier);
    }
    if !(args.clients_per_round.is_finite() && args.clients_per_round >= 1.0) {
        bail!("--clients-per-round must be at least 1, got {}", args.clients_per_round);
    }
    args.server.check(args.clients_per_round, args.noise_multiplier)?;
    if !(args.central_share > 0.0 && args.central_share < 1.0) {
        bail!("--central-share must be in (0, 1), got {}", args.central_share);
    }
    if let Some(delta) = args.delta {
        if !(delta > 0.0 && delta < 1.0) {
            bail!("--delta must be in (0, 1), got {delta}");
        }
    }
    if args.eval_every == 0 || args.central_epochs == 0 || args.threads == Some(0) || args.eval_users == Some(0) {
        bail!("--eval-every, --central-epochs, --threads and --eval-users must be at least 1");
    }
    Ok(())
}

/// Splits the data, trains the central model on the first `--central-share` of the training
/// users and exports it; the rest of the training users become the devices.
fn prepare(args: &SimulateArgs) -> Result<(Population, ModelBody)> {
    let data = Dataset::load_with(&args.data, &LoadOptions::default())
        .with_context(|| format!("--data {}", args.data.display()))?;
    let mut split = match &args.split {
        Some(path) => Split::read(&data, path).with_context(|| format!("--split {}", path.display()))?,
        None => Split::paml(&data, &args.paml, args.seed)?.0,
    };
    let central = ((split.train.len() as f64 * args.central_share).round() as usize).max(1);
    if central >= split.train.len() || split.valid.is_empty() || split.test.is_empty() {
        bail!(
            "the split has {} training, {} validation and {} test users: --central-share {} must leave devices, \
             and the central model needs validation users and the simulation test users",
            split.train.len(),
            split.valid.len(),
            split.test.len(),
            args.central_share
        );
    }
    split.write(&data, &args.out.join("split.csv"))?;
    let devices = split.train.split_off(central);
    let ids: String = devices.iter().map(|t| format!("{}\n", data.users[t.user as usize].id)).collect();
    fsutil::write_atomic(&args.out.join("devices.txt"), ids.as_bytes())?;
    let central_split = args.out.join("central-split.csv");
    split.write(&data, &central_split)?;
    let body = train_central(args, &central_split)?;
    let _ = std::fs::remove_file(&central_split);
    let model = model_of(&body)?;
    let items = data.items.iter().map(|item| model.item_index(&item.id)).collect();
    let test = split.evaluated(args.eval_on).iter().take(args.eval_users.unwrap_or(usize::MAX)).cloned().collect();
    Ok((Population { data, devices, test, central, items }, body))
}

/// `trainer train --preset P --first-order` on the central split, then the exported body.
fn train_central(args: &SimulateArgs, split: &Path) -> Result<ModelBody> {
    let run = args.out.join("central");
    let mut words: Vec<String> = vec!["train".into(), "--data".into(), args.data.display().to_string()];
    words.extend(["--out".into(), run.display().to_string(), "--split".into(), split.display().to_string()]);
    for (flag, value) in args.preset.flags() {
        words.extend([flag.to_string(), value.to_string()]);
    }
    words.extend(["--first-order", "--device", "cpu", "--quiet", "--force"].map(String::from));
    words.extend(["--epochs".into(), args.central_epochs.to_string(), "--seed".into(), args.seed.to_string()]);
    words.extend(args.central_flags.split_whitespace().map(String::from));
    let mut config = <TrainArgs as clap::Parser>::try_parse_from(&words)
        .map_err(|e| anyhow::anyhow!("--central-flags '{}': {e}", args.central_flags))?
        .train;
    config.preset = args.preset;
    eprintln!("central training: {}", words[1..].join(" "));
    train::train(&config).context("training the central model")?;
    let (info, data, _, trained) = RunDir(run).load_trained_from(tch::Device::Cpu, None)?;
    let body = crate::export::model_body(&info, &data, &trained)?;
    let bytes = aggregate::encode(&body, "the central model")?;
    fsutil::write_atomic(&args.out.join("initial.mrec"), &bytes)?;
    Ok(body)
}

fn model_of(body: &ModelBody) -> Result<Model> {
    let bytes = aggregate::encode(body, "the model")?;
    Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("the model: {}", e.message()))
}

/// The rounds: sample, contribute, aggregate, step, charge, evaluate.
fn simulate(args: &SimulateArgs, population: &Population, body: &mut ModelBody) -> Result<Vec<RoundRow>> {
    let devices = population.devices.len();
    let q = args.clients_per_round / devices as f64;
    if q > 1.0 {
        bail!("--clients-per-round {} is more than the {devices} devices", args.clients_per_round);
    }
    let delta = args.delta.unwrap_or(1.0 / devices as f64);
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut sampling = ChaCha20Rng::seed_from_u64(args.seed);
    let mut noise = ChaCha20Rng::seed_from_u64(args.seed ^ 0x6e6f_6973_6500_0000);
    let ledger_path = args.out.join("privacy-ledger.tsv");
    let mut model = model_of(body)?;
    let mut adam = aggregate::ServerAdam::default();
    let mut average = args.server.server_average.map(|decay| (decay, ServerAverage::default()));
    let started = Instant::now();
    let mse = test_mse(&model, population, threads)?;
    let mut clipping = Clipping::new(args)?;
    let start =
        RoundRow { round: 0, sampled: 0, clients: 0, test_mse: Some(mse), epsilon: 0.0, clip: args.clip, seconds: 0.0 };
    let mut rows = vec![start];
    report_row(&rows[0], started);
    for round in 1..=args.rounds {
        let started = Instant::now();
        let sampled = poisson_sample(devices, q, &mut sampling);
        let clip = clipping.clip;
        let (sum, counts) = round_sum(&model, population, &sampled, clip, threads)?;
        let step = aggregate::noisy_mean(&sum, args.clients_per_round, clipping.update_noise, clip, &mut noise)?;
        clipping.adapt(&counts, args.clients_per_round, &mut noise)?;
        let step = args.server.step(step, &mut adam)?;
        aggregate::apply_step(body, &step, args.server.server_lr)?;
        let next = model_of(body)?;
        let row = LedgerRow {
            round: 0,
            model_in: contribution::model_id(&model),
            model_out: contribution::model_id(&next),
            accepted: counts.accepted,
            refused: sampled.len() - counts.accepted,
            expected_clients: args.clients_per_round,
            q,
            noise_multiplier: args.noise_multiplier,
            clip,
            delta,
            epsilon: 0.0,
        };
        let charged = ledger::append(&ledger_path, row)?;
        model = next;
        if let Some((decay, average)) = &mut average {
            average.after_round(*decay, body)?;
        }
        let evaluate = round % args.eval_every == 0 || round == args.rounds;
        let test_mse = match (evaluate, &average) {
            (false, _) => None,
            (true, None) => Some(test_mse(&model, population, threads)?),
            (true, Some((_, average))) => Some(test_mse(&model_of(&average.served(body)?)?, population, threads)?),
        };
        let seconds = started.elapsed().as_secs_f64();
        let row = RoundRow {
            round,
            sampled: sampled.len(),
            clients: counts.accepted,
            test_mse,
            epsilon: charged.epsilon,
            clip,
            seconds,
        };
        report_row(&row, started);
        rows.push(row);
    }
    fsutil::write_atomic(&args.out.join("model.mrec"), &aggregate::encode(body, "the last model")?)?;
    if let Some((_, average)) = &average {
        let served = aggregate::encode(&average.served(body)?, "the averaged model")?;
        fsutil::write_atomic(&args.out.join("average.mrec"), &served)?;
    }
    Ok(rows)
}

/// The clip norm of the rounds: fixed, or moved by adaptive clipping ([`AdaptiveClip`]).
struct Clipping {
    clip: f64,
    /// The noise multiplier of the update sum: z, or with adaptive clipping what the noised
    /// count leaves of the round's budget.
    update_noise: f64,
    rule: Option<AdaptiveClip>,
}

impl Clipping {
    fn new(args: &SimulateArgs) -> Result<Clipping> {
        let (rule, update_noise) = args.server.check(args.clients_per_round, args.noise_multiplier)?;
        Ok(Clipping { clip: args.clip, update_noise, rule })
    }

    /// After a round: the next round's clip from the noised share of updates that fitted.
    fn adapt(&mut self, counts: &RoundCounts, expected_clients: f64, rng: &mut impl Rng) -> Result<()> {
        if let Some(rule) = &self.rule {
            self.clip = rule.after_round(self.clip, (counts.unclipped, counts.accepted), expected_clients, rng)?;
        }
        Ok(())
    }
}

fn report_row(row: &RoundRow, started: Instant) {
    let mse = row.test_mse.map_or("-".to_string(), |m| format!("{m:.4}"));
    eprintln!(
        "round {}: {} sampled, {} accepted, clip {:.4}, test MSE {mse}, epsilon {:.4} ({:.2} s)",
        row.round,
        row.sampled,
        row.clients,
        row.clip,
        row.epsilon,
        started.elapsed().as_secs_f64()
    );
}

/// Poisson sampling of `n` devices with rate `q`, by geometric skips between the sampled ones:
/// every device joins independently with probability q, in time linear in the number sampled.
pub fn poisson_sample(n: usize, q: f64, rng: &mut impl Rng) -> Vec<usize> {
    if q >= 1.0 {
        return (0..n).collect();
    }
    if q <= 0.0 {
        return Vec::new();
    }
    let log_keep = (-q).ln_1p();
    let mut out = Vec::with_capacity((n as f64 * q * 1.2) as usize + 8);
    let mut position = -1.0f64;
    loop {
        // 1 − u is in (0, 1]: the number of devices skipped is Geometric(q) on {0, 1, …}.
        let u: f64 = rng.gen();
        position += ((1.0 - u).ln() / log_keep).floor() + 1.0;
        if position >= n as f64 {
            return out;
        }
        out.push(position as usize);
    }
}

/// The sampled devices' contributions (computed on `threads` workers, added in sample order)
/// through the server's validation and sum.
fn round_sum(
    model: &Model,
    population: &Population,
    sampled: &[usize],
    clip: f64,
    threads: usize,
) -> Result<(Vec<f64>, RoundCounts)> {
    let tasks: Vec<&Task> = sampled.iter().map(|&d| &population.devices[d]).collect();
    let blobs = parallel(&tasks, threads, |chunk| {
        chunk.iter().map(|task| device_contribution(model, population, task, clip as f32)).collect::<Result<Vec<_>>>()
    })?;
    let mut round = RoundSum::new(model, clip);
    for blob in blobs.into_iter().flatten() {
        round.add(blob);
    }
    Ok(round.finish())
}

/// What one device sends: a session on the model with the user's profile and every rating the
/// user has (support, then query), then `contribute`. `None` when the device has too few
/// ratings to contribute (it sends nothing).
fn device_contribution(model: &Model, population: &Population, task: &Task, clip: f32) -> Result<Option<Vec<u8>>> {
    let data = &population.data;
    let user = &data.users[task.user as usize];
    let fail = |what: &str, e: metarec_runtime::Error| anyhow::anyhow!("device user {}: {what}: {e}", user.id);
    let mut session = Session::new(model);
    for (field, value) in data.user_fields.iter().zip(&user.raw) {
        session.set_profile(&field.name, value).map_err(|e| fail(&format!("profile field {}", field.name), e))?;
    }
    for r in task.support.iter().chain(&task.query) {
        let item = population.items[r.item as usize]
            .with_context(|| format!("item {} is not in the model's catalogue", data.items[r.item as usize].id))?;
        session.add_rating_by_index(item, r.value).map_err(|e| fail("rating", e))?;
    }
    match session.contribute(clip) {
        Ok(blob) => Ok(Some(blob)),
        Err(metarec_runtime::Error::TooFewRatings) => Ok(None),
        Err(e @ metarec_runtime::Error::NotContributable) => Err(fail(
            "contribute (train the central model with one initialisation, adapted by steps or the fold-in)",
            e,
        )),
        Err(e) => Err(fail("contribute", e)),
    }
}

/// The test users' pooled MSE on the runtime (adapt on the support ratings, score the query).
fn test_mse(model: &Model, population: &Population, threads: usize) -> Result<f64> {
    let predictions =
        parallel(&population.test, threads, |chunk| eval::device_predictions(model, &population.data, chunk))?;
    Ok(eval::metrics(&predictions).mse)
}

/// Maps `work` over contiguous chunks of `items` on up to `threads` scoped threads; the results
/// come back in the items' order whatever the thread count.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&[T]) -> Result<Vec<R>> + Sync,
) -> Result<Vec<R>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let size = items.len().div_ceil(threads.max(1));
    let parts: Vec<Result<Vec<R>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(size).map(|chunk| scope.spawn(|| work(chunk))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

fn rounds_csv(rows: &[RoundRow]) -> String {
    let mut text = String::from("round,clients,test_mse,epsilon,clip\n");
    for row in rows {
        let mse = row.test_mse.map_or(String::new(), |m| format!("{m:.6}"));
        text.push_str(&format!("{},{},{mse},{:.6},{}\n", row.round, row.clients, row.epsilon, row.clip));
    }
    text
}

/// The Markdown report: settings, population and the per-round table.
fn table(args: &SimulateArgs, population: &Population, rows: &[RoundRow], seconds: (f64, f64)) -> String {
    let devices = population.devices.len();
    let q = args.clients_per_round / devices as f64;
    let delta = args.delta.unwrap_or(1.0 / devices as f64);
    let mut text = format!(
        "# Federated simulation\n\n{} devices, {} central training users, evaluated on {} {} users; K = {}, q = {q:.6}, \
         S = {}{}, z = {}, server lr = {} ({:?}){}, delta = {delta:.3e}, seed {}.\nSetup (split, central training, export) {:.1} \
         s; total {:.1} s.\n\n| round | sampled | clients | clip | test MSE | epsilon | seconds |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
        devices,
        population.central,
        population.test.len(),
        args.eval_on.users(),
        args.clients_per_round,
        args.clip,
        args.server.adaptive_clip.map_or(String::new(), |g| format!(" at first, adaptive towards the {g} quantile")),
        args.noise_multiplier,
        args.server.server_lr,
        args.server.server_optimizer,
        args.server.server_average.map_or(String::new(), |d| format!(", the averaged model (decay {d}) evaluated")),
        args.seed,
        seconds.0,
        seconds.1
    );
    for row in rows {
        let mse = row.test_mse.map_or("-".to_string(), |m| format!("{m:.4}"));
        text.push_str(&format!(
            "| {} | {} | {} | {:.4} | {mse} | {:.4} | {:.2} |\n",
            row.round, row.sampled, row.clients, row.clip, row.epsilon, row.seconds
        ));
    }
    text
}

/// Test MSE and ε per round, side by side (the report's font and PNG conventions).
fn plot(path: &Path, rows: &[RoundRow]) -> Result<()> {
    use plotters::prelude::*;
    crate::report::figures::register_font()?;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let tmp = path.with_file_name(".simulate.tmp.png");
    let mse: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.test_mse.map(|m| (r.round as f64, m))).collect();
    let eps: Vec<(f64, f64)> =
        rows.iter().filter(|r| r.epsilon.is_finite()).map(|r| (r.round as f64, r.epsilon)).collect();
    let last = rows.last().map_or(1.0, |r| r.round as f64).max(1.0);
    {
        let root = BitMapBackend::new(&tmp, (1200, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((1, 2));
        let eps_title = if eps.len() < rows.len() { "epsilon (infinite rounds left out: z = 0)" } else { "epsilon" };
        for (panel, (title, points)) in panels.iter().zip([("test MSE", &mse), (eps_title, &eps)]) {
            let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.1).max(1e-4);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..last, (lo - pad)..(hi + pad))
                .map_err(|e| err(&e))?;
            chart.configure_mesh().x_desc("round").label_style(("sans-serif", 13)).draw().map_err(|e| err(&e))?;
            let colour = RGBColor(31, 119, 180);
            chart.draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2))).map_err(|e| err(&e))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
