//! `trainer report`: trains and evaluates every method on identical seeded splits, for several
//! seeds, and writes a Markdown report in the shape of the papers' tables plus PNG figures.
//!
//! # What it writes (`--out DIR`)
//! - `report.md`: Table 2 of the PAML paper (MSE, nDCG@3, nDCG@5, mean ± std over seeds, best in
//!   bold, † where the per-user MSE is significantly lower than the best trivial baseline's);
//!   Table 3 (MSE of major and minor users, two-tailed Student t-test between their per-user
//!   MSEs); Table 4 (REG-PAML's gamma, PAML vs AT-PAML vs REG-PAML); under the MeLU protocol the
//!   Table 2 of the HML paper (MAE, RMSE, nDCG@10 per state); the trivial baselines in every table;
//!   what it takes to reproduce the report (command line, settings, seeds, split file SHA-256,
//!   versions, device, wall time per method).
//! - `metrics.csv`: every row × seed × evaluation set.
//! - `figures/*.png`: per-user MSE box plots split major/minor, learning curves, a PCA of the
//!   user embeddings h_i coloured major/minor, and the AT-PAML learning rates of major and minor
//!   users.
//! - `splits/` (the split files every method was trained on) and `runs/seed-N/<method>/` (the
//!   run directories, usable with `trainer eval` and `trainer export`).
//!
//! # Protocols
//! `paml`: [`Split::paml`] per seed; the test users are the one evaluation set. `melu`:
//! [`split::melu`] per seed; every method trains once on the shared warm training users and is
//! evaluated on the four states; Tables 2–4 and the figures use the user-cold state (new users,
//! existing items: the cold-start case).
//!
//! # Statistics
//! Per-user values are pooled over seeds. The mark † of Table 2 is a paired two-tailed t-test
//! (same test users) between a method's per-user MSEs and those of the best trivial baseline
//! (lowest mean MSE), p < 0.05 and a lower mean. Table 3's p-value is a two-sample Student
//! t-test (pooled variance) between the per-user MSEs of major and minor users. A method that
//! fails on a seed (e.g. diverges) is reported as such; its rows use the seeds that succeeded.

pub mod figures;
pub mod pca;
pub mod stats;
mod tables;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use tch::Kind;

use crate::data::{Dataset, LoadOptions};
use crate::eval::{self, Baselines, UserPredictions};
use crate::method::Method;
use crate::model::{tensor_values, MetaModel, Order, TaskBatch};
use crate::run::{self, RunDir, RunInfo};
use crate::split::{self, MeluConfig, PamlConfig, Split, State, Task};
use crate::train::{self, parse_device, TrainConfig};

/// Which protocol the report follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The PAML paper: 80% least active users, users 7:1:2, ratings 80/20 support/query.
    Paml,
    /// MeLU / the HML paper: users with 13..100 ratings, 10 query ratings, four states.
    Melu,
}

/// Settings of `trainer report`. The training flags are `trainer train`'s; `--seed` is the first
/// seed, `--out` the report directory, and `--method` is replaced by `--methods`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    mut_arg("out", |a| a.help(
        "Report directory (report.md, metrics.csv, figures/, splits/, runs/); an earlier report there is refused \
         unless --force"
    )),
    mut_arg("seed", |a| a.help("First seed; the report uses SEED, SEED+1, ... (--seeds of them)")),
    mut_arg("method", |a| a.hide(true)),
    mut_arg("split", |a| a.hide(true)),
    mut_arg("resume", |a| a.hide(true)),
    mut_arg("epochs", |a| a.default_value(DEFAULT_EPOCHS)),
    mut_arg("patience", |a| a.default_value(DEFAULT_PATIENCE)),
    mut_arg("quiet", |a| a.hide(true)),
    mut_arg("force", |a| a.help("Replace existing outputs (an earlier report in --out, and its runs)")),
)]
pub struct ReportArgs {
    /// Data protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Paml)]
    pub protocol: Protocol,
    /// Number of seeds (each gives its own split and initialisation).
    #[arg(long, default_value_t = 3, value_parser = crate::config::seeds, allow_hyphen_values = true)]
    pub seeds: u64,
    /// Methods to train, comma-separated (default: all).
    #[arg(long, value_parser = crate::method::parser(), value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// REG-PAML regularizer weights of the ablation (Table 4), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-5,1e-4,1e-3,1e-2",
        value_parser = crate::config::weight,
        allow_hyphen_values = true
    )]
    pub gammas: Vec<f64>,
    /// Skip the gamma ablation (Table 4 then compares PAML, AT-PAML and REG-PAML only).
    #[arg(long)]
    pub no_ablation: bool,
    /// Write the tables only, no PNG figures (no font needed).
    #[arg(long)]
    pub no_figures: bool,
    /// Training settings shared by every method.
    #[command(flatten)]
    pub train: TrainConfig,
}

/// `--epochs` of a report: sized so the whole suite on MovieLens latest-small (3 seeds, every
/// method and the ablation) stays within 30 minutes on 2 CPU cores.
pub const DEFAULT_EPOCHS: &str = "8";
/// `--patience` of a report.
pub const DEFAULT_PATIENCE: &str = "2";

impl ReportArgs {
    /// Report settings for `data` → `out` with the command line's defaults.
    pub fn new(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ReportArgs {
        let mut train = TrainConfig::new(data, out);
        train.epochs = DEFAULT_EPOCHS.parse().expect("a number");
        train.patience = DEFAULT_PATIENCE.parse().expect("a number");
        ReportArgs {
            protocol: Protocol::Paml,
            seeds: 3,
            methods: Vec::new(),
            gammas: vec![1e-5, 1e-4, 1e-3, 1e-2],
            no_ablation: false,
            no_figures: false,
            train,
        }
    }
}

/// What a report run wrote.
#[derive(Debug, Clone)]
pub struct Report {
    /// `report.md`.
    pub markdown_path: PathBuf,
    /// Its text.
    pub markdown: String,
    /// The PNG files written.
    pub figures: Vec<PathBuf>,
    /// Wall time of the whole report in seconds.
    pub seconds: f64,
}

/// What a row of the tables is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RowKind {
    /// A method with its inner loop.
    Method(Method),
    /// A method with adaptation switched off (the adaptation gain).
    NoAdaptation(Method),
    /// A trivial baseline.
    Baseline,
    /// REG-PAML trained with this gamma (ablation).
    Gamma(f64),
}

/// One row: per seed that produced it, per evaluation set, the users' predictions.
#[derive(Debug, Clone)]
struct Row {
    name: String,
    kind: RowKind,
    seeds: Vec<(u64, Vec<Vec<UserPredictions>>)>,
}

/// One training run and its outcome.
#[derive(Debug, Clone)]
struct RunRecord {
    label: String,
    seed: u64,
    /// A REG-PAML ablation run (another gamma than the method's own row).
    ablation: bool,
    outcome: std::result::Result<RunInfo, String>,
    eval_seconds: f64,
}

/// The evaluation sets of one seed and the split file(s) behind them.
#[derive(Debug)]
struct SeedSplit {
    split: Split,
    sets: Vec<Vec<Task>>,
    train_file: PathBuf,
}

/// Test users' embeddings h_i: `(user, h_i)`.
type UserVectors = Vec<(u32, Vec<f32>)>;

/// Everything collected over the seeds.
#[derive(Debug, Default)]
struct Collected {
    rows: Vec<Row>,
    runs: Vec<RunRecord>,
    split_hashes: Vec<(String, String)>,
    split_notes: Vec<String>,
    /// First seed, primary set: per method, each test user's h_i.
    embeddings: Vec<(Method, UserVectors)>,
    /// First seed, primary set: AT-PAML's learning rate per test user.
    at_paml_rates: Vec<(u32, f64)>,
}

impl Collected {
    fn push(&mut self, name: &str, kind: RowKind, seed: u64, sets: Vec<Vec<UserPredictions>>) {
        match self.rows.iter_mut().find(|r| r.name == name) {
            Some(row) => row.seeds.push((seed, sets)),
            None => self.rows.push(Row { name: name.to_string(), kind, seeds: vec![(seed, sets)] }),
        }
    }
}

/// Names of the evaluation sets of a protocol, and which one Tables 2–4 and the figures use.
fn set_names(protocol: Protocol) -> (Vec<&'static str>, usize) {
    match protocol {
        Protocol::Paml => (vec!["test users"], 0),
        Protocol::Melu => (State::ALL.iter().map(|s| state_title(*s)).collect(), 1),
    }
}

fn state_title(state: State) -> &'static str {
    match state {
        State::Warm => "existing users, existing items",
        State::UserCold => "new users",
        State::ItemCold => "new items",
        State::UserItemCold => "new users, new items",
    }
}

fn slug(method: Method) -> String {
    method.name().to_string()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// What a report writes into `--out`: a directory holding any of them holds an earlier report.
pub const REPORT_FILES: [&str; 5] = ["report.md", "metrics.csv", "figures", "splits", "runs"];

/// Everything checked before anything is written or trained: the settings, the font, the
/// outputs (an earlier report is refused unless `--force`).
fn check(args: &ReportArgs) -> Result<Vec<Method>> {
    crate::config::check_flag("--seeds", args.seeds, crate::config::SEEDS.check(args.seeds))?;
    ensure!(
        args.train.seed.checked_add(args.seeds - 1).is_some(),
        "--seed {} with --seeds {}: the last seed would be above {}",
        args.train.seed,
        args.seeds,
        u64::MAX
    );
    ensure!(args.train.split.is_none(), "trainer report makes its own splits; --split is not accepted");
    ensure!(!args.train.resume, "trainer report does not resume runs; --resume is not accepted");
    // The tables, statistics and figures are the rating papers' (MSE, nDCG, per-user MSE tests).
    ensure!(
        args.train.task == crate::objective::TaskKind::Rating,
        "trainer report covers the rating task; for --task click use `trainer compare --task click` (AUC, user AUC, \
         NE, log loss and nDCG@3 of every method beside the click-rate baselines) or `trainer eval`"
    );
    for &gamma in &args.gammas {
        crate::config::check_flag("--gammas", gamma, crate::config::WEIGHT.check(gamma))?;
    }
    crate::fsutil::refuse_existing_in_dir(
        "--out",
        &args.train.out,
        &REPORT_FILES,
        "an earlier report",
        args.train.force,
    )?;
    if !args.no_figures {
        // Fail before hours of training rather than after.
        figures::register_font()?;
    }
    let methods: Vec<Method> = if args.methods.is_empty() { crate::method::trained() } else { dedup(&args.methods) };
    ensure!(
        !methods.contains(&Method::Mf),
        "--methods mf: matrix factorisation with fold-in is a baseline row of every report table already; leave it \
         out of --methods (its knobs are --mf-factors, --mf-lambda, --mf-bias-lambda, --mf-sweeps)"
    );
    train::check_factors(&args.train.method_config)?;
    Ok(methods)
}

/// Runs the report: trains every method on every seed's split, evaluates, writes the files.
/// `command_line` is recorded in the report as given. Nothing is written before the dataset
/// loaded and every seed's split was made.
pub fn run(args: &ReportArgs, command_line: &[String]) -> Result<Report> {
    let started = Instant::now();
    let methods = check(args)?;
    let device = parse_device(&args.train.device)?;
    let out = &args.train.out;
    let options = LoadOptions { format: args.train.format, skip_invalid: args.train.skip_invalid };
    let mut data = Dataset::load_with(&args.train.data, &options)?;
    if args.train.item_id {
        data.add_item_id_field();
    }
    let fingerprint = run::fingerprint(&data);
    let (set_titles, primary) = set_names(args.protocol);
    let ablation_gammas: Vec<f64> =
        if args.no_ablation || !methods.contains(&Method::RegPaml) { Vec::new() } else { dedup(&args.gammas) };

    let mut collected = Collected::default();
    let created = crate::fsutil::NewDir::create(out)?;
    for sub in ["splits", "runs", "figures"] {
        std::fs::create_dir_all(out.join(sub)).with_context(|| format!("creating {}", out.join(sub).display()))?;
    }
    let seeds: Vec<u64> = (args.train.seed..args.train.seed + args.seeds).collect();
    let splits = seeds.iter().map(|&seed| make_split(args, &data, seed, &mut collected)).collect::<Result<Vec<_>>>()?;
    created.keep();
    let mut seconds_per_method: Vec<(String, f64)> = Vec::new();
    for (&seed, seed_split) in seeds.iter().zip(&splits) {
        push_baselines(args, &data, seed, seed_split, &mut collected);
        let mut jobs: Vec<(Method, Option<f64>)> = methods.iter().map(|&m| (m, None)).collect();
        for &gamma in &ablation_gammas {
            if gamma != args.train.method_config.gamma {
                jobs.push((Method::RegPaml, Some(gamma)));
            }
        }
        for (position, &job) in jobs.iter().enumerate() {
            let label = match job.1 {
                Some(g) => format!("{} (gamma {g:e})", job.0.title()),
                None => job.0.title().to_string(),
            };
            eprintln!("[report] seed {seed}: {label} ({}/{})", position + 1, jobs.len());
            let context = JobContext { args, device, fingerprint, primary, ablation_gammas: &ablation_gammas };
            let wall = run_job(&context, seed, seed_split, job, &label, &mut collected);
            match seconds_per_method.iter_mut().find(|(l, _)| *l == label) {
                Some((_, s)) => *s += wall,
                None => seconds_per_method.push((label, wall)),
            }
        }
    }

    sort_rows(&mut collected.rows, &methods);
    let groups = two_groups(&data);
    let context = tables::Context {
        args,
        command_line,
        data: &data,
        fingerprint,
        device: format!("{device:?}"),
        set_titles: &set_titles,
        primary,
        groups: groups.clone(),
        seeds,
    };
    let mut figure_paths = Vec::new();
    let mut figure_notes = Vec::new();
    if !args.no_figures {
        figure_paths = write_figures(&context, &collected, &mut figure_notes)?;
    }
    let metrics_csv = tables::metrics_csv(&context, &collected.rows);
    crate::fsutil::write_atomic(&out.join("metrics.csv"), metrics_csv.as_bytes())?;
    let seconds = started.elapsed().as_secs_f64();
    let markdown = tables::markdown(&context, &collected, &seconds_per_method, &figure_paths, &figure_notes, seconds);
    let markdown_path = out.join("report.md");
    crate::fsutil::write_atomic(&markdown_path, markdown.as_bytes())?;
    eprintln!("[report] wrote {} in {seconds:.0} s", markdown_path.display());
    Ok(Report { markdown_path, markdown, figures: figure_paths, seconds })
}

/// Methods first (in the order given), then their no-adaptation twins, the ablation, the
/// baselines. (A method that failed on the first seed joins the rows late; the sort is stable.)
fn sort_rows(rows: &mut [Row], methods: &[Method]) {
    let position = |m: Method| methods.iter().position(|&x| x == m).unwrap_or(usize::MAX);
    rows.sort_by_key(|r| match r.kind {
        RowKind::Method(m) => (0, position(m)),
        RowKind::NoAdaptation(m) => (1, position(m)),
        RowKind::Gamma(_) => (2, 0),
        RowKind::Baseline => (3, 0),
    });
}

/// The trivial baselines and the MF fold-in of one seed.
fn push_baselines(args: &ReportArgs, data: &Dataset, seed: u64, seed_split: &SeedSplit, collected: &mut Collected) {
    let baselines = Baselines::fit(data.items.len(), &seed_split.split.train, &seed_split.split.valid);
    let per_set: Vec<Vec<(String, Vec<UserPredictions>)>> =
        seed_split.sets.iter().map(|tasks| baselines.predict_all(tasks)).collect();
    for (b, (name, _)) in per_set[0].iter().enumerate() {
        let sets = per_set.iter().map(|rows| rows[b].1.clone()).collect();
        collected.push(name, RowKind::Baseline, seed, sets);
    }
    let objective = crate::objective::Objective::Rating;
    let factors = crate::mf::fit(
        data.items.len(),
        &seed_split.split.train,
        &seed_split.split.valid,
        objective,
        &args.train.method_config,
        seed,
    );
    let sets = seed_split.sets.iter().map(|tasks| factors.model.predict_tasks(tasks, true)).collect();
    collected.push(Method::Mf.title(), RowKind::Baseline, seed, sets);
}

/// What every training job of a report shares.
struct JobContext<'a> {
    args: &'a ReportArgs,
    device: tch::Device,
    fingerprint: u32,
    primary: usize,
    ablation_gammas: &'a [f64],
}

/// Trains and evaluates one method (or one ablation gamma) on one seed and records the outcome
/// (a failure is recorded, not returned); returns its wall time.
fn run_job(
    context: &JobContext<'_>,
    seed: u64,
    seed_split: &SeedSplit,
    (method, gamma): (Method, Option<f64>),
    label: &str,
    collected: &mut Collected,
) -> f64 {
    let args = context.args;
    let mut config = args.train.clone();
    config.method = method;
    config.seed = seed;
    config.split = Some(seed_split.train_file.clone());
    config.quiet = true;
    config.resume = false;
    let dir_name = match gamma {
        Some(g) => format!("{}-gamma-{g:e}", slug(method)),
        None => slug(method),
    };
    config.out = args.train.out.join("runs").join(format!("seed-{seed}")).join(dir_name);
    if let Some(g) = gamma {
        config.method_config.gamma = g;
    }
    let run_started = Instant::now();
    let outcome = train::train(&config).and_then(|info| {
        let eval_started = Instant::now();
        let (_, _, _, model) = RunDir(config.out.clone()).load(context.device)?;
        ensure!(info.fingerprint == context.fingerprint, "the run's dataset differs from the report's");
        let first = seed == args.train.seed;
        let evaluated = evaluate(&model, &seed_split.sets, context.primary, first && gamma.is_none())?;
        Ok((info, evaluated, eval_started.elapsed().as_secs_f64()))
    });
    let wall = run_started.elapsed().as_secs_f64();
    let label = label.to_string();
    match outcome {
        Ok((info, evaluated, eval_seconds)) => {
            match gamma {
                Some(g) => collected.push(&gamma_name(g), RowKind::Gamma(g), seed, evaluated.adapted),
                None => record_method(context, method, seed, evaluated, collected),
            }
            collected.runs.push(RunRecord { label, seed, ablation: gamma.is_some(), outcome: Ok(info), eval_seconds });
        }
        Err(error) => {
            eprintln!("[report] seed {seed}: {label} failed: {error:#}");
            let outcome = Err(format!("{error:#}"));
            collected.runs.push(RunRecord { label, seed, ablation: gamma.is_some(), outcome, eval_seconds: 0.0 });
        }
    }
    wall
}

/// The rows of a method's run: adapted, without adaptation, the ablation's row of the chosen
/// gamma, and the first seed's embeddings and learning rates.
fn record_method(context: &JobContext<'_>, method: Method, seed: u64, evaluated: Evaluated, collected: &mut Collected) {
    collected.push(method.title(), RowKind::Method(method), seed, evaluated.adapted);
    if let Some(sets) = evaluated.without_adaptation {
        let name = format!("{} without adaptation", method.title());
        collected.push(&name, RowKind::NoAdaptation(method), seed, sets);
    }
    let gamma = context.args.train.method_config.gamma;
    if method == Method::RegPaml && context.ablation_gammas.contains(&gamma) {
        let row = collected.rows.iter().find(|r| r.kind == RowKind::Method(method)).expect("pushed");
        let sets = row.seeds.last().expect("pushed").1.clone();
        collected.push(&gamma_name(gamma), RowKind::Gamma(gamma), seed, sets);
    }
    if let Some(h) = evaluated.embeddings {
        collected.embeddings.push((method, h));
    }
    if let Some(rates) = evaluated.rates {
        collected.at_paml_rates = rates;
    }
}

fn gamma_name(gamma: f64) -> String {
    format!("REG-PAML, gamma = {gamma:e}")
}

fn dedup<T: PartialEq + Copy>(values: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for &v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Applies the protocol for one seed, writes its split file(s) and records their hashes.
fn make_split(args: &ReportArgs, data: &Dataset, seed: u64, collected: &mut Collected) -> Result<SeedSplit> {
    let splits_dir = args.train.out.join("splits");
    match args.protocol {
        Protocol::Paml => {
            let (split, report) = Split::paml(data, &PamlConfig::default(), seed)?;
            let file = splits_dir.join(format!("paml-seed-{seed}.csv"));
            split.write(data, &file)?;
            collected.split_hashes.push((relative(&args.train.out, &file), sha256_file(&file)?));
            collected.split_notes.push(format!("seed {seed}: {}", one_line(&report.to_string())));
            let sets = vec![split.test.clone()];
            // The baselines learn from the users the methods learn from (`--warm-users`).
            let split = split.with_warm_users(args.train.warm_users);
            Ok(SeedSplit { split, sets, train_file: file })
        }
        Protocol::Melu => {
            let (states, report) = split::melu(data, &MeluConfig::default(), seed)?;
            let dir = splits_dir.join(format!("melu-seed-{seed}"));
            states.write(data, &dir)?;
            for state in State::ALL {
                let file = dir.join(format!("{}.csv", state.name()));
                collected.split_hashes.push((relative(&args.train.out, &file), sha256_file(&file)?));
            }
            collected.split_notes.push(format!("seed {seed}: {}", one_line(&report.to_string())));
            let sets = State::ALL.iter().map(|&s| states.state(s).test.clone()).collect();
            let split = states.state(State::Warm).clone().with_warm_users(args.train.warm_users);
            Ok(SeedSplit { split, sets, train_file: dir.join(format!("{}.csv", State::Warm.name())) })
        }
    }
}

fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

fn one_line(report: &str) -> String {
    report.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A trained model's predictions on every evaluation set.
#[derive(Debug)]
struct Evaluated {
    adapted: Vec<Vec<UserPredictions>>,
    without_adaptation: Option<Vec<Vec<UserPredictions>>>,
    embeddings: Option<UserVectors>,
    rates: Option<Vec<(u32, f64)>>,
}

/// Users per evaluation batch.
const EVAL_BATCH: usize = 256;

fn evaluate(model: &MetaModel, sets: &[Vec<Task>], primary: usize, extras: bool) -> Result<Evaluated> {
    let spec = &model.spec;
    let steps = if spec.method.adapts() { spec.inner_steps } else { 0 };
    let adapted: Vec<Vec<UserPredictions>> =
        sets.iter().map(|tasks| eval::predict_tasks(model, tasks, steps, EVAL_BATCH)).collect();
    let without_adaptation = (spec.method.adapts() && steps > 0)
        .then(|| sets.iter().map(|tasks| eval::predict_tasks(model, tasks, 0, EVAL_BATCH)).collect());
    let (mut embeddings, mut rates) = (None, None);
    if extras {
        let tasks = &sets[primary];
        let mut h = Vec::with_capacity(tasks.len());
        let mut alpha = Vec::new();
        for chunk in tasks.chunks(EVAL_BATCH) {
            let batch = TaskBatch::new(chunk, model.device());
            let values = model.user_embeddings(&batch);
            let width = values.size()[1] as usize;
            let flat = tensor_values(&values);
            for (b, task) in chunk.iter().enumerate() {
                h.push((task.user, flat[b * width..(b + 1) * width].to_vec()));
            }
            if spec.method == Method::AtPaml {
                let forward = model.forward(&batch, 0, Order::Detached, false);
                let rates = forward.alpha.context("AT-PAML gives per-user learning rates")?;
                let rates = Vec::<f64>::try_from(&rates.to_kind(Kind::Double).to(tch::Device::Cpu))?;
                alpha.extend(chunk.iter().map(|t| t.user).zip(rates));
            }
        }
        embeddings = Some(h);
        if spec.method == Method::AtPaml {
            rates = Some(alpha);
        }
    }
    Ok(Evaluated { adapted, without_adaptation, embeddings, rates })
}

/// The two groups Table 3 compares: major and minor when the users carry those labels,
/// otherwise the two labels there are; `None` with fewer or more than two.
fn two_groups(data: &Dataset) -> Option<[String; 2]> {
    let mut labels: Vec<&str> = data.users.iter().filter_map(|u| u.group.as_deref()).collect();
    labels.sort_unstable();
    labels.dedup();
    if labels.contains(&"major") && labels.contains(&"minor") {
        return Some(["major".into(), "minor".into()]);
    }
    match labels[..] {
        [a, b] => Some([a.into(), b.into()]),
        _ => None,
    }
}

/// The group of a user, as an index into `groups` (0 for everyone without two groups).
fn group_of(data: &Dataset, groups: &Option<[String; 2]>, user: u32) -> Option<usize> {
    match groups {
        None => Some(0),
        Some(g) => {
            let label = data.users[user as usize].group.as_deref()?;
            g.iter().position(|name| name == label)
        }
    }
}

fn group_names(groups: &Option<[String; 2]>) -> Vec<String> {
    match groups {
        Some(g) => g.iter().map(|name| format!("{name} users")).collect(),
        None => vec!["all users".into()],
    }
}

fn write_figures(
    context: &tables::Context<'_>,
    collected: &Collected,
    notes: &mut Vec<String>,
) -> Result<Vec<PathBuf>> {
    let dir = context.args.train.out.join("figures");
    let mut written = vec![per_user_mse_figure(context, collected, &dir)?];
    written.extend(learning_curves_figure(context, collected, &dir, notes)?);
    written.extend(embeddings_figure(context, collected, &dir, notes)?);
    written.extend(learning_rates_figure(context, collected, &dir, notes)?);
    Ok(written)
}

/// Box plots of the per-user MSE per method (adapted) and baseline, split by group.
fn per_user_mse_figure(context: &tables::Context<'_>, collected: &Collected, dir: &Path) -> Result<PathBuf> {
    let data = context.data;
    let groups = &context.groups;
    let names = group_names(groups);
    let primary = context.primary;
    let set_title = context.set_titles[primary];
    // Pooled over seeds.
    let rows: Vec<(String, Vec<Vec<f64>>)> = collected
        .rows
        .iter()
        .filter(|r| matches!(r.kind, RowKind::Method(_) | RowKind::Baseline))
        .map(|r| {
            let mut per_group = vec![Vec::new(); names.len()];
            for (_, sets) in &r.seeds {
                for u in &sets[primary] {
                    if let Some(g) = group_of(data, groups, u.user) {
                        per_group[g].push(eval::user_mse(u));
                    }
                }
            }
            (r.name.clone(), per_group)
        })
        .collect();
    let path = dir.join("per_user_mse.png");
    let title = format!("Per-user query MSE ({set_title}, {} seeds pooled)", context.seeds.len());
    figures::box_plot(&path, &title, &names, &rows)?;
    Ok(path)
}

/// Learning curves of the first seed's runs; `None`, with a note, when none succeeded.
fn learning_curves_figure(
    context: &tables::Context<'_>,
    collected: &Collected,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    let first = context.seeds[0];
    let curves: Vec<(String, Vec<run::EpochRecord>)> = collected
        .runs
        .iter()
        .filter(|r| r.seed == first && !r.ablation)
        .filter_map(|r| r.outcome.as_ref().ok().map(|info| (r.label.clone(), info.history.clone())))
        .collect();
    if curves.is_empty() {
        notes.push("learning curves: no run succeeded on the first seed".into());
        Ok(None)
    } else {
        let path = dir.join("learning_curves.png");
        let title = format!("Learning curves (seed {first}): mean query MSE per epoch");
        figures::learning_curves(&path, &title, &curves)?;
        Ok(Some(path))
    }
}

/// A PCA of the user embeddings h_i of the first available model, by group; `None`, with a
/// note, when there is none.
fn embeddings_figure(
    context: &tables::Context<'_>,
    collected: &Collected,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    let data = context.data;
    let groups = &context.groups;
    let names = group_names(groups);
    let set_title = context.set_titles[context.primary];
    let first = context.seeds[0];
    // PCA of h_i, from the first available model in order of preference.
    let preference = [Method::AtPaml, Method::RegPaml, Method::Paml, Method::Melu];
    let chosen = preference
        .iter()
        .find_map(|m| collected.embeddings.iter().find(|(method, _)| method == m))
        .or(collected.embeddings.first());
    match chosen {
        Some((method, points)) if points.len() >= 2 => {
            let matrix = ndarray::Array2::from_shape_vec(
                (points.len(), points[0].1.len()),
                points.iter().flat_map(|(_, h)| h.iter().map(|&v| f64::from(v))).collect(),
            )?;
            let pca = pca::pca_2d(&matrix);
            let mut by_group: Vec<(String, Vec<(f64, f64)>)> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
            for (k, (user, _)) in points.iter().enumerate() {
                if let Some(g) = group_of(data, groups, *user) {
                    by_group[g].1.push((pca.projected[[k, 0]], pca.projected[[k, 1]]));
                }
            }
            let path = dir.join("user_embeddings_pca.png");
            let title = format!("User embeddings h_i of {} (seed {first}, {set_title}): PCA", method.title());
            let axes = (
                format!("PC1 ({:.1}% of variance)", 100.0 * pca.explained[0]),
                format!("PC2 ({:.1}% of variance)", 100.0 * pca.explained[1]),
            );
            figures::scatter(&path, &title, (&axes.0, &axes.1), &by_group)?;
            Ok(Some(path))
        }
        _ => {
            notes.push("user embeddings: no trained model on the first seed".into());
            Ok(None)
        }
    }
}

/// A histogram of AT-PAML's personalized learning rates, by group; `None`, with a note, when
/// AT-PAML has none.
fn learning_rates_figure(
    context: &tables::Context<'_>,
    collected: &Collected,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    let data = context.data;
    let groups = &context.groups;
    let names = group_names(groups);
    let set_title = context.set_titles[context.primary];
    let first = context.seeds[0];
    if collected.at_paml_rates.is_empty() {
        notes.push("AT-PAML learning rates: AT-PAML was not trained (or failed) on the first seed".into());
        Ok(None)
    } else {
        let mut by_group: Vec<(String, Vec<f64>)> = names.iter().map(|n| (n.clone(), Vec::new())).collect();
        for &(user, rate) in &collected.at_paml_rates {
            if let Some(g) = group_of(data, groups, user) {
                by_group[g].1.push(rate);
            }
        }
        let path = dir.join("at_paml_learning_rates.png");
        let title = format!("AT-PAML personalized inner learning rates (seed {first}, {set_title})");
        figures::histogram(&path, &title, "inner learning rate alpha(h_i)", &by_group, 30)?;
        Ok(Some(path))
    }
}

/// libtorch's version, read beside the loaded `libtorch_cpu.so` (`build-version` of a libtorch
/// archive, or `version.py` of a PyTorch wheel); `None` when it cannot be found.
pub fn libtorch_version() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libtorch_cpu.so"))?;
    let root = Path::new(lib).parent()?.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        return Some(text.trim().to_string());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("__version__ = ")).map(|v| v.trim().trim_matches(['\'', '"']).to_string())
}

/// Quotes an argument for a POSIX shell when it needs it.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
