//! `trainer tune`: a seeded hyper-parameter search over `trainer train`'s flags, scored on the
//! validation users only (never the test users), each trial trained over several seeds.
//!
//! A trial is a set of `train` flags drawn from [`SPACE`]; its `TrainConfig` is parsed from
//! them by clap, so every value is checked by train's own parsers and the best trial is written
//! as a `--config` file `train` accepts. The search is random search with successive halving
//! (η = 3): every trial trains a ninth of `--epochs`, the best third (by the mean over the seeds
//! of the kept epoch's validation loss) continue to a third, the best third of those to all of
//! it; a run continues with `train --resume` and a larger `--epochs`.
//!
//! `--out DIR` holds `trials/<trial>/seed-<s>/` (the run directories), `trials.jsonl` (the
//! settings, then one record per finished trial and rung), `trials.md` (the table) and
//! `best.toml`. `--resume` continues a tune from its `trials.jsonl`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{self, Capped, Whole};
use crate::data::{Dataset, LoadOptions};
use crate::fsutil::{self, NewDir};
use crate::method::Method;
use crate::objective::{Loss as _, Objective, TaskKind};
use crate::split::Split;
use crate::train::{self, TrainArgs, TrainConfig};

/// How the values of one flag of the search space are drawn.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// One of these, each as likely.
    Choice(&'static [&'static str]),
    /// Log-uniform between the two bounds, rounded to 3 significant digits.
    LogUniform(f64, f64),
}

/// The search space: `train` flags and their candidate values, drawn in this order. A flag the
/// `train` command does not have is left out (so the table may name flags before they exist).
pub const SPACE: &[(&str, Values)] = &[
    ("--embedding-dim", Values::Choice(&["8", "16", "32", "64"])),
    ("--hidden", Values::Choice(&["32", "64", "64,64", "128,64"])),
    ("--inner-lr", Values::LogUniform(0.005, 0.5)),
    ("--inner-steps", Values::Choice(&["1", "2", "3", "5", "10"])),
    ("--outer-lr", Values::LogUniform(3e-4, 1e-2)),
    ("--adapt", Values::Choice(&["fold-in", "all", "head", "user"])),
    ("--fold-in-lambda", Values::Choice(&["1", "2", "5", "10", "20"])),
    ("--dropout", Values::Choice(&["0", "0.1", "0.2", "0.3"])),
    ("--embedding-decay", Values::Choice(&["0", "1e-4", "1e-3", "1e-2", "1e-1"])),
    ("--item-id-dropout", Values::Choice(&["0", "0.05", "0.1", "0.2", "0.3"])),
    ("--proximal", Values::Choice(&["0", "0.01", "0.1", "1"])),
    ("--unadapted-loss", Values::Choice(&["0", "0.1", "0.3", "1"])),
];

/// Whether a [`METHOD_SPACE`] flag acts on a method.
pub type ActsOn = fn(Method) -> bool;

/// Flags searched only for the methods they act on, drawn after [`SPACE`]'s (so the other
/// methods' trials stay the same): the PAML family's `--rate-penalty`, HML's `--shared-layers`
/// (0 or 1: every `--hidden` of [`SPACE`] leaves the output layer above one shared layer).
pub const METHOD_SPACE: &[(&str, Values, ActsOn)] = &[
    ("--rate-penalty", Values::Choice(&["0", "0.1", "0.3", "1"]), Method::has_lr_net),
    ("--shared-layers", Values::Choice(&["0", "1"]), is_hml),
];

/// Whether `method` is HML (the one with several initialisations).
fn is_hml(method: Method) -> bool {
    method == Method::Hml
}

/// Successive halving keeps the best 1/ETA of the trials at each rung.
const ETA: usize = 3;

/// `--budget`: trials to sample.
pub const BUDGET: Capped =
    Capped { rule: Whole { what: "trial count", min: 1, max: i128::MAX, why: "" }, max: 10_000, why: "" };

/// `value_parser` of `--budget`.
pub fn budget(text: &str) -> Result<usize, String> {
    BUDGET.parse(text)
}

/// What `tune` writes into `--out`: a directory holding any of them holds an earlier tune.
pub const TUNE_FILES: [&str; 4] = ["trials.jsonl", "trials.md", "best.toml", "trials"];

/// Settings of `trainer tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Dataset directory (with schema.toml).
    #[arg(long)]
    pub data: PathBuf,
    /// Training method whose settings are searched.
    #[arg(long, value_parser = crate::method::parser(), default_value = "melu")]
    pub method: Method,
    /// Trials (sets of train flags) to sample. All train a ninth of --epochs, the best third a
    /// third, the best third of those all of them.
    #[arg(long, value_parser = budget, allow_hyphen_values = true)]
    pub budget: usize,
    /// A split file written by `trainer data split`: once for every seed, or once per seed (in
    /// the order of --seeds). Default: train's own split of each seed.
    #[arg(long)]
    pub split: Vec<PathBuf>,
    /// Seeds every trial trains with (split, initialisation, batch order), comma-separated; a
    /// trial's score is the mean of their validation losses.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3", value_parser = config::seed, allow_hyphen_values = true)]
    pub seeds: Vec<u64>,
    /// Directory to write the trials' runs, trials.jsonl, trials.md and best.toml into (one that
    /// holds an earlier tune is refused unless --force, or --resume continues it).
    #[arg(long)]
    pub out: PathBuf,
    /// What the model predicts: ratings (MSE) or clicks (log loss).
    #[arg(long, value_enum, default_value_t = TaskKind::Rating)]
    pub task: TaskKind,
    /// Epochs of the trials that reach the last rung (train's --epochs).
    #[arg(long, default_value_t = 30, value_parser = config::count, allow_hyphen_values = true)]
    pub epochs: usize,
    /// `cpu`, `cuda` or `auto` (CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seed of the sampled trials: the same seed draws the same trials.
    #[arg(long, default_value_t = 1, value_parser = config::seed, allow_hyphen_values = true)]
    pub tune_seed: u64,
    /// Continue the tune in --out from its trials.jsonl, with the settings it was started with.
    #[arg(long)]
    pub resume: bool,
    /// Replace existing outputs (an earlier tune in --out).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One sampled set of `train` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 1-based.
    pub number: usize,
    /// (flag, value) pairs in [`SPACE`] order, e.g. ("--hidden", "64,64").
    pub flags: Vec<(String, String)>,
}

/// One seed's result of a trial at a rung.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedScore {
    /// The seed.
    pub seed: u64,
    /// `RunInfo::best_valid_loss`: validation MSE, or log loss for clicks.
    pub valid: f64,
}

/// A trial trained to a rung: one line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial number (1-based).
    pub trial: usize,
    /// Epochs trained (train's --epochs).
    pub epochs: usize,
    /// The trial's sampled flags.
    pub flags: Vec<(String, String)>,
    /// Per-seed validation losses, in --seeds order (up to the seed that failed).
    pub seeds: Vec<SeedScore>,
    /// Mean of the seeds' validation losses (`None`: the trial failed).
    pub mean: Option<f64>,
    /// Why the trial failed (e.g. it diverged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TrialRecord {
    /// The score: the mean validation loss, +inf for a failed trial.
    pub fn score(&self) -> f64 {
        self.mean.unwrap_or(f64::INFINITY)
    }
}

/// A line of `trials.jsonl`: the settings first, then the records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
enum Line {
    Settings { settings: BTreeMap<String, String> },
    Trial(TrialRecord),
}

/// What a tune found: every trial at the last rung it reached, sorted by score.
#[derive(Debug)]
pub struct Tuned {
    /// Every trial's last record, best first (failed trials last).
    pub trials: Vec<TrialRecord>,
    /// `trials.md`'s table.
    pub table: String,
    /// The summary line ("best: trial K, …"), when a trial succeeded.
    pub best_line: Option<String>,
}

/// `trainer tune` on the command line: runs the search, prints the table and the best trial.
pub fn command(args: &TuneArgs) -> Result<()> {
    let tuned = run(args)?;
    print!("{}", tuned.table);
    match &tuned.best_line {
        Some(line) => println!("{line}"),
        None => bail!("every trial failed (see {}); no best.toml written", args.out.join("trials.md").display()),
    }
    Ok(())
}

/// Everything a search needs besides the trials.
struct Search<'a> {
    args: &'a TuneArgs,
    splits: Vec<Option<PathBuf>>,
    objective: Objective,
}

/// Runs the search (or continues it with `--resume`) and writes trials.md and best.toml.
pub fn run(args: &TuneArgs) -> Result<Tuned> {
    let splits = check(args)?;
    let trials = sample(&known_space(args.method)?, args.budget, args.tune_seed);
    check_out(args)?;
    let settings = settings(args, &splits)?;
    let mut journal = if args.resume {
        Journal::open(&args.out.join("trials.jsonl"), &settings)?
    } else {
        let created = NewDir::create(&args.out)?;
        if args.force {
            remove_outputs(&args.out)?;
        }
        let journal = Journal::create(&args.out.join("trials.jsonl"), &settings)?;
        created.keep();
        journal
    };
    let objective = Objective::from_cli(args.task, 4.0);
    let context = Search { args, splits, objective };
    let mut records = search(&context, &trials, &mut journal)?;
    records.sort_by(|a, b| a.score().total_cmp(&b.score()).then(b.epochs.cmp(&a.epochs)).then(a.trial.cmp(&b.trial)));
    let table = table(args, objective, &records);
    let best = records.first().filter(|r| r.mean.is_some());
    let best_line = best.map(|b| best_line(args, objective, b));
    let mut markdown = format!("# trainer tune\n\n{}\n\n{table}", description(args, objective));
    if let Some(line) = &best_line {
        markdown += &format!("\n{line}\n");
    }
    fsutil::write_atomic(&args.out.join("trials.md"), markdown.as_bytes())?;
    if let Some(best) = best {
        fsutil::write_atomic(&args.out.join("best.toml"), best_toml(args, objective, best)?.as_bytes())?;
    }
    Ok(Tuned { trials: records, table, best_line })
}

/// The flags' rules that clap cannot check, and the split file of each seed.
fn check(args: &TuneArgs) -> Result<Vec<Option<PathBuf>>> {
    if args.seeds.is_empty() {
        bail!("--seeds: give at least one seed");
    }
    for (i, seed) in args.seeds.iter().enumerate() {
        if args.seeds[..i].contains(seed) {
            bail!("--seeds: seed {seed} is given twice");
        }
    }
    if args.resume && args.force {
        bail!("--resume continues the tune in {}, --force would replace it: pass one of them", args.out.display());
    }
    train::parse_device(&args.device)?;
    match args.split.len() {
        0 => Ok(vec![None; args.seeds.len()]),
        1 => Ok(vec![Some(args.split[0].clone()); args.seeds.len()]),
        n if n == args.seeds.len() => Ok(args.split.iter().cloned().map(Some).collect()),
        n => bail!(
            "--split is given {n} times for {} seeds: give it once (for every seed) or once per seed",
            args.seeds.len()
        ),
    }
}

/// `--out`: refused when it holds an earlier tune (unless `--force`); with `--resume` it must
/// hold one.
fn check_out(args: &TuneArgs) -> Result<()> {
    let out = &args.out;
    if !args.resume {
        return fsutil::refuse_existing_in_dir("--out", out, &TUNE_FILES, "an earlier tune", args.force);
    }
    if std::fs::symlink_metadata(out).is_ok() && !out.is_dir() {
        bail!("--out {} is a file, not a directory", out.display());
    }
    if !out.join("trials.jsonl").is_file() {
        bail!("--resume: {} holds no trials.jsonl to continue from; start the tune without --resume", out.display());
    }
    Ok(())
}

/// `--force`: removes an earlier tune's outputs (and nothing else in `out`).
fn remove_outputs(out: &Path) -> Result<()> {
    for name in TUNE_FILES {
        let path = out.join(name);
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The settings that decide which runs a tune trains (compared on `--resume`): the dataset's
/// fingerprint, the flags and the search space. Loads the dataset and the split files.
fn settings(args: &TuneArgs, splits: &[Option<PathBuf>]) -> Result<BTreeMap<String, String>> {
    let data = Dataset::load_with(&args.data, &LoadOptions::default())?;
    let mut split_ids = Vec::new();
    for path in splits {
        split_ids.push(match path {
            None => "default".to_string(),
            Some(path) => {
                let split = Split::read(&data, path).with_context(|| format!("--split {}", path.display()))?;
                if split.train.is_empty() || split.valid.is_empty() {
                    let missing = if split.train.is_empty() { "training" } else { "validation" };
                    bail!(
                        "--split {} has no {missing} users; tune trains on the first, scores on the second",
                        path.display()
                    );
                }
                let sha = crate::report::sha256_file(path).with_context(|| format!("--split {}", path.display()))?;
                format!("sha256 {}", &sha[..16])
            }
        });
    }
    let name = |value: Option<clap::builder::PossibleValue>| value.map_or(String::new(), |v| v.get_name().into());
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    Ok(BTreeMap::from([
        ("data fingerprint".to_string(), format!("{:08x}", crate::run::fingerprint(&data))),
        ("--method".to_string(), args.method.name().to_string()),
        ("--task".to_string(), name(args.task.to_possible_value())),
        ("--budget".to_string(), args.budget.to_string()),
        ("--seeds".to_string(), seeds.join(",")),
        ("--tune-seed".to_string(), args.tune_seed.to_string()),
        ("--epochs".to_string(), args.epochs.to_string()),
        ("--split".to_string(), split_ids.join(", ")),
        ("search space".to_string(), describe_space(&known_space(args.method)?)),
    ]))
}

/// [`SPACE`], then the [`METHOD_SPACE`] flags that act on `method`, without the flags `train`
/// does not have. Every candidate value (and both bounds of a range) must pass the flag's own
/// parser.
pub fn known_space(method: Method) -> Result<Vec<(&'static str, Values)>> {
    let command = TrainArgs::command();
    let mut space = Vec::new();
    let for_method = METHOD_SPACE.iter().filter(|(_, _, acts)| acts(method)).map(|&(flag, values, _)| (flag, values));
    for (flag, values) in SPACE.iter().copied().chain(for_method) {
        let long = flag.trim_start_matches("--");
        if !command.get_arguments().any(|a| a.get_long() == Some(long)) {
            continue;
        }
        let candidates: Vec<String> = match values {
            Values::Choice(choices) => choices.iter().map(|c| c.to_string()).collect(),
            Values::LogUniform(low, high) => vec![low.to_string(), high.to_string()],
        };
        for value in candidates {
            let words = ["train", "--data", "d", "--out", "o", &format!("{flag}={value}")];
            TrainArgs::try_parse_from(words)
                .map_err(|e| anyhow!("search space: train rejects {flag} {value}: {}", clap_message(&e)))?;
        }
        space.push((flag, values));
    }
    Ok(space)
}

/// The search space in one line (stored with the settings: an edited table is another tune).
fn describe_space(space: &[(&str, Values)]) -> String {
    let items: Vec<String> = space
        .iter()
        .map(|(flag, values)| match values {
            Values::Choice(choices) => format!("{flag} {}", choices.join("|")),
            Values::LogUniform(low, high) => format!("{flag} {low}..{high} (log)"),
        })
        .collect();
    items.join("; ")
}

/// `budget` trials drawn from `space` with `tune_seed`. Trial k's flags do not depend on the
/// budget: a larger budget draws the same first trials.
pub fn sample(space: &[(&str, Values)], budget: usize, tune_seed: u64) -> Vec<Trial> {
    let mut rng = ChaCha8Rng::seed_from_u64(tune_seed);
    (1..=budget)
        .map(|number| {
            let flags = space
                .iter()
                .map(|&(flag, values)| {
                    let value = match values {
                        Values::Choice(choices) => choices[rng.gen_range(0..choices.len())].to_string(),
                        Values::LogUniform(low, high) => {
                            let drawn = (low.ln() + rng.gen::<f64>() * (high.ln() - low.ln())).exp();
                            significant(drawn.clamp(low, high))
                        }
                    };
                    (flag.to_string(), value)
                })
                .collect();
            Trial { number, flags }
        })
        .collect()
}

/// `x` with 3 significant digits, in the shortest decimal form (0.0123).
fn significant(x: f64) -> String {
    let rounded = format!("{x:.2e}");
    rounded.parse::<f64>().map_or(rounded, |v| v.to_string())
}

/// The rungs of successive halving for `budget` trials and `epochs`: (epochs, trials trained to
/// them). The nominal rungs train `max(1, E/9)`, `max(1, E/3)` and `E` epochs, each keeping the
/// best `max(1, n/3)` of the one before; a rung with no more epochs than the one before only
/// narrows the trials (the next rung keeps a third of those), and trains nothing.
pub fn rungs(budget: usize, epochs: usize) -> Vec<(usize, usize)> {
    let mut rungs: Vec<(usize, usize)> = Vec::new();
    let mut trials = budget;
    for (i, e) in [(epochs / (ETA * ETA)).max(1), (epochs / ETA).max(1), epochs].into_iter().enumerate() {
        if i > 0 {
            trials = (trials / ETA).max(1);
        }
        if rungs.last().is_none_or(|last| e > last.0) {
            rungs.push((e, trials));
        }
    }
    rungs
}

/// `trials.jsonl`: the settings line, then one record per finished (trial, rung), rewritten
/// atomically after each record so a crash never leaves half a line.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    text: String,
    records: Vec<TrialRecord>,
}

impl Journal {
    /// A new journal holding the settings line.
    fn create(path: &Path, settings: &BTreeMap<String, String>) -> Result<Journal> {
        let line = serde_json::to_string(&Line::Settings { settings: settings.clone() })?;
        let journal = Journal { path: path.to_path_buf(), text: format!("{line}\n"), records: Vec::new() };
        fsutil::write_atomic(path, journal.text.as_bytes())?;
        Ok(journal)
    }

    /// `--resume`: an earlier tune's journal, refused when it was started with other settings.
    fn open(path: &Path, settings: &BTreeMap<String, String>) -> Result<Journal> {
        let text = std::fs::read_to_string(path).with_context(|| format!("--resume: reading {}", path.display()))?;
        let mut stored = None;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let parsed: Line =
                serde_json::from_str(line).with_context(|| format!("parsing {} line {}", path.display(), i + 1))?;
            match parsed {
                Line::Settings { settings } if stored.is_none() => stored = Some(settings),
                Line::Settings { .. } => bail!("{} line {}: a second settings record", path.display(), i + 1),
                Line::Trial(record) => records.push(record),
            }
        }
        let stored = stored.with_context(|| format!("--resume: {} holds no settings record", path.display()))?;
        let differences: Vec<String> = settings
            .iter()
            .filter(|&(key, now)| stored.get(key) != Some(now))
            .map(|(key, now)| format!("{key}: the tune has {}, given {now}", stored.get(key).map_or("none", |v| v)))
            .collect();
        if !differences.is_empty() {
            bail!(
                "--resume: the tune in {} was started with other settings:\n  {}\npass its settings to continue it, \
                 or start a new tune (another --out, or --force without --resume to replace this one)",
                path.parent().unwrap_or(Path::new(".")).display(),
                differences.join("\n  ")
            );
        }
        let mut text = text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(Journal { path: path.to_path_buf(), text, records })
    }

    /// The record of `trial` trained to `epochs`, when an earlier run of the tune finished it.
    fn find(&self, trial: usize, epochs: usize) -> Option<&TrialRecord> {
        self.records.iter().find(|r| r.trial == trial && r.epochs == epochs)
    }

    /// Appends a record.
    fn push(&mut self, record: &TrialRecord) -> Result<()> {
        self.text += &serde_json::to_string(&Line::Trial(record.clone()))?;
        self.text.push('\n');
        self.records.push(record.clone());
        fsutil::write_atomic(&self.path, self.text.as_bytes())
    }
}

/// Successive halving over `trials`; returns every trial's last record. Records already in the
/// journal (`--resume`) are taken from it, not trained again.
fn search(context: &Search<'_>, trials: &[Trial], journal: &mut Journal) -> Result<Vec<TrialRecord>> {
    let args = context.args;
    let schedule = rungs(trials.len(), args.epochs);
    let runs: usize = schedule.iter().map(|&(_, n)| n * args.seeds.len()).sum();
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(runs as u64) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} train runs  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut latest: Vec<Option<TrialRecord>> = vec![None; trials.len()];
    let mut cohort: Vec<usize> = (0..trials.len()).collect();
    let mut trained_to = 0;
    for &(epochs, keep) in &schedule {
        // The best `keep` of the trials that did not fail, by score (ties: the lower number).
        cohort.retain(|&t| latest[t].as_ref().is_none_or(|r| r.mean.is_some()));
        cohort.sort_by(|&a, &b| score(&latest[a]).total_cmp(&score(&latest[b])).then(a.cmp(&b)));
        cohort.truncate(keep);
        cohort.sort_unstable();
        for &t in &cohort {
            let trial = &trials[t];
            bar.set_message(format!("trial {}, {epochs} epochs", trial.number));
            let record = match journal.find(trial.number, epochs) {
                Some(record) => {
                    bar.inc(args.seeds.len() as u64);
                    record.clone()
                }
                None => {
                    let record = train_trial(context, trial, epochs, trained_to == 0, &bar)?;
                    let line = record_line(context.objective, &record);
                    if args.quiet {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                    journal.push(&record)?;
                    record
                }
            };
            latest[t] = Some(record);
        }
        trained_to = epochs;
    }
    bar.finish_and_clear();
    Ok(latest.into_iter().flatten().collect())
}

/// A trial's score so far (+inf before its first rung and when it failed).
fn score(record: &Option<TrialRecord>) -> f64 {
    record.as_ref().map_or(f64::INFINITY, TrialRecord::score)
}

/// The log line of a finished (trial, rung).
fn record_line(objective: Objective, record: &TrialRecord) -> String {
    let loss = objective.loss_name();
    match (&record.mean, &record.error) {
        (Some(mean), _) => format!(
            "[tune] trial {}, {}: validation {loss} {mean:.4} ({})",
            record.trial,
            epochs(record.epochs),
            seed_values(record)
        ),
        (None, error) => format!(
            "[tune] trial {}, {}: failed: {}",
            record.trial,
            epochs(record.epochs),
            error.as_deref().unwrap_or("no result")
        ),
    }
}

/// "1 epoch", "3 epochs".
fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

/// "seed 1: 0.9123, seed 2: 0.9345".
fn seed_values(record: &TrialRecord) -> String {
    let values: Vec<String> = record.seeds.iter().map(|s| format!("seed {}: {:.4}", s.seed, s.valid)).collect();
    values.join(", ")
}

/// Trains (or, after its first rung, continues) one trial to `epochs` on every seed. A seed
/// whose training fails (e.g. diverges) fails the trial, which scores +inf; the seeds after it
/// are skipped.
fn train_trial(
    context: &Search<'_>,
    trial: &Trial,
    epochs: usize,
    first: bool,
    bar: &ProgressBar,
) -> Result<TrialRecord> {
    let seeds = &context.args.seeds;
    let mut record = TrialRecord {
        trial: trial.number,
        epochs,
        flags: trial.flags.clone(),
        seeds: Vec::new(),
        mean: None,
        error: None,
    };
    for (i, (&seed, split)) in seeds.iter().zip(&context.splits).enumerate() {
        let config = trial_config(context, trial, seed, split.as_deref(), epochs, first)?;
        let outcome = bar.suspend(|| train::train(&config));
        bar.inc(1);
        match outcome {
            Ok(info) => record.seeds.push(SeedScore { seed, valid: info.best_valid_loss }),
            Err(error) => {
                record.error = Some(format!("seed {seed}: {error:#}"));
                bar.inc((seeds.len() - i - 1) as u64);
                return Ok(record);
            }
        }
    }
    record.mean = Some(record.seeds.iter().map(|s| s.valid).sum::<f64>() / record.seeds.len() as f64);
    Ok(record)
}

/// The run directory of a trial's seed: `OUT/trials/<trial>/seed-<seed>`.
pub fn run_dir(out: &Path, budget: usize, trial: usize, seed: u64) -> PathBuf {
    let width = budget.to_string().len();
    out.join("trials").join(format!("{trial:0width$}")).join(format!("seed-{seed}"))
}

/// A trial's `TrainConfig` for one seed, parsed by clap from train's flags: the first rung
/// trains a new run (`--force` replaces what an interrupted tune left), later rungs continue it
/// with `--resume` and more epochs (`--resume` compares every stored setting but --epochs).
fn trial_config(
    context: &Search<'_>,
    trial: &Trial,
    seed: u64,
    split: Option<&Path>,
    epochs: usize,
    first: bool,
) -> Result<TrainConfig> {
    let args = context.args;
    let name = |value: Option<clap::builder::PossibleValue>| value.map_or(String::new(), |v| v.get_name().into());
    let mut words: Vec<OsString> = vec!["train".into(), "--data".into(), args.data.clone().into(), "--out".into()];
    words.push(run_dir(&args.out, args.budget, trial.number, seed).into());
    for (flag, value) in [
        ("--method", args.method.name().to_string()),
        ("--seed", seed.to_string()),
        ("--task", name(args.task.to_possible_value())),
        ("--epochs", epochs.to_string()),
        ("--device", args.device.clone()),
    ] {
        words.extend([flag.into(), value.into()]);
    }
    words.push("--quiet".into());
    match (first, split) {
        (true, Some(path)) => words.extend(["--force".into(), "--split".into(), path.as_os_str().to_owned()]),
        (true, None) => words.push("--force".into()),
        (false, _) => words.push("--resume".into()),
    }
    words.extend(trial.flags.iter().map(|(flag, value)| OsString::from(format!("{flag}={value}"))));
    TrainArgs::try_parse_from(words)
        .map(|parsed| parsed.train)
        .map_err(|e| anyhow!("trial {}: train rejects its flags: {}", trial.number, clap_message(&e)))
}

/// clap's message without the usage lines.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.split("\n\n").next().unwrap_or(&text);
    first.trim().trim_start_matches("error: ").to_string()
}

/// One paragraph on how the tune was run (trials.md).
fn description(args: &TuneArgs, objective: Objective) -> String {
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    format!(
        "Random search with successive halving (η = {ETA}) over {} trials of `trainer train --method {}` on {} \
         (--tune-seed {}), up to {} epochs, seeds {}; a trial's score is its mean validation {} over the seeds \
         (validation users only: the test users are never read).",
        args.budget,
        args.method.name(),
        args.data.display(),
        args.tune_seed,
        args.epochs,
        seeds.join(", "),
        objective.loss_name()
    )
}

/// The table of every trial at the last rung it reached, in the order of `records`, as
/// Markdown with aligned columns; failures are listed under it.
fn table(args: &TuneArgs, objective: Objective, records: &[TrialRecord]) -> String {
    let mut header = vec!["trial".to_string(), "epochs".into(), format!("validation {}", objective.loss_name())];
    header.extend(args.seeds.iter().map(|s| format!("seed {s}")));
    header.push("flags".into());
    let mut rows = vec![header];
    for r in records {
        let mut row =
            vec![r.trial.to_string(), r.epochs.to_string(), r.mean.map_or("failed".into(), |m| format!("{m:.4}"))];
        for seed in &args.seeds {
            row.push(r.seeds.iter().find(|s| s.seed == *seed).map_or("—".into(), |s| format!("{:.4}", s.valid)));
        }
        let flags: Vec<String> = r.flags.iter().map(|(f, v)| format!("{f} {v}")).collect();
        row.push(flags.join(" "));
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = " ".repeat(widths[c] - cell.chars().count());
                if c + 1 == columns {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    // Numbers right-aligned, the flags left-aligned.
    let rules: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| if c + 1 == columns { "-".repeat(w + 2) } else { format!("{}:", "-".repeat(w + 1)) })
        .collect();
    let mut text = line(&rows[0]) + &format!("|{}|\n", rules.join("|"));
    text.extend(rows[1..].iter().map(|row| line(row)));
    for r in records.iter().filter(|r| r.mean.is_none()) {
        text += &format!("\ntrial {} failed at {}: {}", r.trial, epochs(r.epochs), r.error.as_deref().unwrap_or("?"));
    }
    if records.iter().any(|r| r.mean.is_none()) {
        text.push('\n');
    }
    text
}

/// "best: trial K, validation MSE X (seed 1: …) → DIR/best.toml".
fn best_line(args: &TuneArgs, objective: Objective, best: &TrialRecord) -> String {
    format!(
        "best: trial {}, validation {} {:.4} ({}) → {}",
        best.trial,
        objective.loss_name(),
        best.score(),
        seed_values(best),
        args.out.join("best.toml").display()
    )
}

/// `best.toml`: the best trial's flags with the method, the task and its epochs, as the keys of
/// a `trainer train --config` file, under a comment saying how it was found.
fn best_toml(args: &TuneArgs, objective: Objective, best: &TrialRecord) -> Result<String> {
    let command = TrainArgs::command();
    let name = |value: Option<clap::builder::PossibleValue>| value.map_or(String::new(), |v| v.get_name().into());
    let mut text = format!(
        "# Found by `trainer tune` (random search, successive halving η = {ETA}): trial {} of {} (--tune-seed {}),\n\
         # mean validation {} {:.6} over seeds {} at {} epochs (validation users only).\n\
         # Use: trainer train --config best.toml --data DATA --out RUN\n",
        best.trial,
        args.budget,
        args.tune_seed,
        objective.loss_name(),
        best.score(),
        args.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        best.epochs
    );
    let mut keys = vec![
        ("method".to_string(), toml::Value::String(args.method.name().to_string())),
        ("task".to_string(), toml::Value::String(name(args.task.to_possible_value()))),
        ("epochs".to_string(), toml::Value::Integer(i64::try_from(best.epochs).context("--epochs is too large")?)),
    ];
    for (flag, value) in &best.flags {
        let long = flag.trim_start_matches("--");
        let list = command.get_arguments().any(|a| a.get_long() == Some(long) && a.get_value_delimiter().is_some());
        let value =
            if list { toml::Value::Array(value.split(',').map(toml_scalar).collect()) } else { toml_scalar(value) };
        keys.push((long.replace('-', "_"), value));
    }
    for (key, value) in keys {
        text += &format!("{key} = {value}\n");
    }
    Ok(text)
}

/// A flag value as a TOML value: an integer, a float, or a string.
fn toml_scalar(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = text.parse::<f64>() {
        toml::Value::Float(f)
    } else {
        toml::Value::String(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_follow_successive_halving() {
        assert_eq!(rungs(27, 30), [(3, 27), (10, 9), (30, 3)]);
        assert_eq!(rungs(3, 3), [(1, 3), (3, 1)]);
        assert_eq!(rungs(27, 3), [(1, 27), (3, 3)]);
        assert_eq!(rungs(5, 1), [(1, 5)]);
        assert_eq!(rungs(1, 9), [(1, 1), (3, 1), (9, 1)]);
    }

    #[test]
    fn the_space_is_accepted_by_train_and_sampling_is_seeded() {
        let space = known_space(Method::Melu).unwrap();
        let names: Vec<&str> = space.iter().map(|(f, _)| *f).collect();
        assert!(names.starts_with(&["--embedding-dim", "--hidden", "--inner-lr", "--inner-steps", "--outer-lr"]));
        assert!(!names.contains(&"--rate-penalty"), "MeLU has no per-user rates");
        let paml = known_space(Method::Paml).unwrap();
        assert_eq!(paml.len(), space.len() + 1);
        assert_eq!(paml.last().map(|(f, _)| *f), Some("--rate-penalty"));
        let hml = known_space(Method::Hml).unwrap();
        assert_eq!(hml.len(), space.len() + 1);
        assert_eq!(hml.last().map(|(f, _)| *f), Some("--shared-layers"));
        // The shared flags come first: the first trial draws them as MeLU's does.
        assert_eq!(sample(&paml, 1, 7)[0].flags[..space.len()], sample(&space, 1, 7)[0].flags[..]);
        let trials = sample(&space, 20, 7);
        assert_eq!(trials, sample(&space, 20, 7));
        assert_eq!(trials[..5], sample(&space, 5, 7)[..]);
        assert_ne!(trials, sample(&space, 20, 8));
        for trial in &trials {
            let lr: f64 = trial.flags.iter().find(|(f, _)| f == "--inner-lr").unwrap().1.parse().unwrap();
            assert!((0.005..=0.5).contains(&lr), "{lr}");
        }
    }

    #[test]
    fn values_become_toml_of_their_type() {
        assert_eq!(significant(0.0123456), "0.0123");
        assert_eq!(toml_scalar("64"), toml::Value::Integer(64));
        assert_eq!(toml_scalar("1e-4"), toml::Value::Float(1e-4));
        assert_eq!(toml_scalar("head"), toml::Value::String("head".into()));
    }
}
