//! `trainer`: the command line over the metarec-trainer library.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use metarec_runtime::format::schema_hash;
use metarec_trainer::data::mlgen::{self, SizeArgs};
use metarec_trainer::data::stats::DataStats;
use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::{self as dataset, Dataset, Format, LoadOptions};
use metarec_trainer::dist::Comm;
use metarec_trainer::eval::{self, Baselines, UserPredictions};
use metarec_trainer::export;
use metarec_trainer::fsutil;
use metarec_trainer::method::Method;
use metarec_trainer::mf;
use metarec_trainer::objective::{Loss as _, Objective};
use metarec_trainer::report::{self, ReportArgs};
use metarec_trainer::run::{self as run_dir, RunDir, RunInfo, Trained};
use metarec_trainer::split::{self, EvalOn, MeluConfig, PamlConfig, Split, State};
use metarec_trainer::train::{self, parse_device, TrainConfig};

/// Counts live heap bytes for `trainer bench device`'s memory figures.
#[global_allocator]
static ALLOCATOR: metarec_trainer::bench::CountingAllocator = metarec_trainer::bench::CountingAllocator;

/// Meta-trains cold-start recommenders and exports metarec model files.
#[derive(Debug, Parser)]
#[command(name = "trainer", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Meta-train a model and write a run directory.
    Train(TrainConfig),
    /// Evaluate a run on its test users beside trivial baselines.
    Eval(EvalArgs),
    /// Write a run's model file (and optionally an example test user).
    Export(ExportArgs),
    /// Train every method on the same split and print them side by side with the baselines.
    Compare(CompareArgs),
    /// Train and evaluate every method over several seeds; write the papers' tables and figures.
    Report(ReportArgs),
    /// Search train's settings: seeded random search with successive halving, scored on the
    /// validation users over several seeds; writes the best as a `train --config` file.
    Tune(metarec_trainer::tune::TuneArgs),
    /// Benchmarks (commands that print figures).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Federated meta-learning with user-level differential privacy (server side).
    #[command(subcommand)]
    Federated(metarec_trainer::federated::FederatedCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The on-device runtime against libtorch: personalize + score on one core.
    Device(metarec_trainer::bench::DeviceBench),
    /// AT-PAML's K nearest stored keys: the runtime's linear scan against its static kd-tree.
    Neighbours(metarec_trainer::bench_neighbours::NeighbourBench),
    /// Data-parallel training on 1 and 2 MPI ranks: throughput, communication share, memory
    /// per rank, and a projection to more ranks (needs the `mpi` feature and `mpirun`).
    Scale(metarec_trainer::bench_scale::ScaleBench),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Generate the synthetic cold-start dataset (major and minor users).
    Synth {
        /// Directory to write schema.toml and the CSV files into (one that holds a dataset is
        /// refused unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing outputs (the dataset files in --out).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        config: SynthConfig,
    },
    /// Generate a seeded MovieLens-1M-format dataset (users.dat, movies.dat, ratings.dat) of
    /// MovieLens-1M's or MovieLens-25M's size, or any counts; ratings.dat is streamed to disk.
    GenerateMl {
        /// Directory to write the three files into (one that holds a dataset is refused unless
        /// --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing outputs (the dataset files in --out).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        size: SizeArgs,
    },
    /// Print what a dataset holds: sizes, ratings per user, top-30% field shares, major/minor.
    Stats(DataSource),
    /// Apply a protocol and write its split file(s).
    #[command(subcommand)]
    Split(SplitCommand),
    /// Benchmark: generate a MovieLens-1M-sized (or --size ml-25m) input and time loading plus
    /// the PAML split.
    #[command(hide = true)]
    BenchLoad {
        #[command(flatten)]
        size: SizeArgs,
        /// Keep the generated input here (reused when it already holds ratings.dat).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Timed repetitions.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

/// Where a dataset is and how to read it.
#[derive(Debug, clap::Args)]
struct DataSource {
    /// Dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// Format of the directory (detected from its files when not given).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Skip malformed rows, reporting counts by reason, instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

impl DataSource {
    fn load(&self) -> Result<Dataset> {
        let options = LoadOptions { format: self.format, skip_invalid: self.skip_invalid };
        Dataset::load_with(&self.data, &options)
    }
}

#[derive(Debug, Subcommand)]
enum SplitCommand {
    /// The PAML paper's protocol: 80% least active users, feature filters, users 7:1:2, ratings 80/20.
    Paml {
        #[command(flatten)]
        source: DataSource,
        /// Split file to write (an existing file is refused unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing outputs (the file --out).
        #[arg(long)]
        force: bool,
        /// Random seed; the same seed writes the same bytes.
        #[arg(long, default_value_t = 1, value_parser = metarec_trainer::config::seed, allow_hyphen_values = true)]
        seed: u64,
        #[command(flatten)]
        config: PamlConfig,
    },
    /// MeLU: users with 13..100 ratings, 10 query ratings, four states (one split file each).
    Melu {
        #[command(flatten)]
        source: DataSource,
        /// Directory to write warm.csv, user_cold.csv, item_cold.csv, user_item_cold.csv into
        /// (existing ones are refused unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace existing outputs (the split files in --out).
        #[arg(long)]
        force: bool,
        /// Random seed; the same seed writes the same bytes.
        #[arg(long, default_value_t = 1, value_parser = metarec_trainer::config::seed, allow_hyphen_values = true)]
        seed: u64,
        #[command(flatten)]
        config: MeluConfig,
    },
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Run directory written by `trainer train`.
    #[arg(long)]
    run: PathBuf,
    /// Dataset directory, when it moved since the run was trained (it must hold the same data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also replay the test users through the on-device runtime with this model file, exported
    /// from this run (repeatable: e.g. the f32, f16 and int8 exports side by side).
    #[arg(long)]
    model: Vec<PathBuf>,
    /// The users to evaluate: `test` (the figures to report) or `valid` (the run's validation
    /// users: compare settings on them, never on the test users).
    #[arg(long, value_enum, default_value_t = EvalOn::Test)]
    eval_on: EvalOn,
    /// Also write every row's query predictions to this CSV file
    /// (`method,user_id,item_id,truth,prediction`, one line per evaluated query entry), for
    /// analyses of your own; an existing file is refused unless --force.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Replace an existing --predictions file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    mut_arg("out", |a| a.help("Directory of the runs: OUT/<method> each (earlier runs are refused unless --force)")),
    mut_arg("method", |a| a.hide(true)),
    mut_arg("force", |a| a.help("Replace existing outputs (earlier runs in OUT/<method>)")),
)]
struct CompareArgs {
    /// Methods to train, comma-separated (default: all). Each run goes to OUT/<method>.
    #[arg(long, value_parser = metarec_trainer::method::parser(), value_delimiter = ',')]
    methods: Vec<Method>,
    #[command(flatten)]
    train: TrainConfig,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Run directory written by `trainer train`.
    #[arg(long)]
    run: PathBuf,
    /// Dataset directory, when it moved since the run was trained (it must hold the same data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model file to write (an existing file is refused unless --force).
    #[arg(long)]
    out: PathBuf,
    /// Also write one held-out test user (profile, support, query) as TSV here (an existing
    /// file is refused unless --force).
    #[arg(long)]
    example_user: Option<PathBuf>,
    /// Replace existing outputs (--out and --example-user).
    #[arg(long)]
    force: bool,
    /// Which test user to write (default: the test user with the most query ratings).
    #[arg(long)]
    example_user_id: Option<String>,
    /// How to store the embedding tables (a matrix factorisation: its item factors): f32
    /// (exact), f16 (2 bytes a value) or int8 (1 byte a value and a scale per row). Only the
    /// tables shrink; the vocabularies, the item catalogue and the MLP stay as they are, so the
    /// file shrinks by the tables' share of it (the demo's model: 79,037 bytes in f32, 75,851 in
    /// f16, 74,456 in int8). Measure the accuracy change with `trainer eval --model`.
    #[arg(long, value_parser = export::embeddings_parser(), default_value = "f32")]
    embeddings: metarec_runtime::format::EmbeddingPrecision,
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let session = match metarec_trainer::dist::init() {
        Ok(session) => session,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let comm = Comm::world();
            if comm.size() > 1 {
                eprintln!("error (MPI rank {} of {}): {error:#}", comm.rank(), comm.size());
                // The other ranks would wait for this one forever: end the job.
                session.abort_job(2);
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(2)
        }
    }
}

/// The command line, with `--config` files expanded; clap's own errors (and `--help`) exit here.
fn parse(args: Vec<OsString>) -> Result<Cli> {
    let command = Cli::command();
    let args = metarec_trainer::config::expand_config_args(args, &command)?;
    let args = metarec_trainer::config::expand_preset_args(args, &command);
    let matches = command.try_get_matches_from(args).unwrap_or_else(|error| error.exit());
    // compare and report take --methods; the --method they inherit from train must not pass silently.
    for name in ["compare", "report"] {
        let given = matches.subcommand_matches(name).and_then(|m| m.value_source("method"));
        if given == Some(ValueSource::CommandLine) {
            bail!("{name} takes --methods a,b,…; --method is for train");
        }
    }
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit()))
}

fn run(cli: Cli) -> Result<()> {
    let comm = Comm::world();
    let distributed = matches!(cli.command, Command::Train(_) | Command::Bench(BenchCommand::Scale(_)));
    if comm.size() > 1 && !distributed {
        bail!(
            "this command runs in one process; of the commands, only `train` (and `bench scale`'s workers) run on \
             several MPI ranks: run it without mpirun"
        );
    }
    match cli.command {
        Command::Data(command) => data(command)?,
        Command::Train(config) => {
            train::train(&config)?;
        }
        Command::Eval(args) => evaluate(&args)?,
        Command::Compare(args) => compare(&args)?,
        Command::Bench(BenchCommand::Device(config)) => {
            print!("{}", metarec_trainer::bench::device_benchmark(&config)?)
        }
        Command::Bench(BenchCommand::Neighbours(config)) => {
            print!("{}", metarec_trainer::bench_neighbours::run(&config)?)
        }
        Command::Bench(BenchCommand::Scale(config)) => print!("{}", metarec_trainer::bench_scale::run(&config)?),
        Command::Report(args) => {
            let written = report::run(&args, &std::env::args().collect::<Vec<_>>())?;
            println!(
                "wrote {} and {} figures in {:.0} s",
                written.markdown_path.display(),
                written.figures.len(),
                written.seconds
            );
        }
        Command::Export(args) => export(&args)?,
        Command::Tune(args) => metarec_trainer::tune::command(&args)?,
        Command::Federated(command) => metarec_trainer::federated::command(&command)?,
    }
    Ok(())
}

/// What `trainer data synth` writes, and the files of every dataset format: a directory that
/// holds any of them holds a dataset.
fn dataset_files() -> Vec<&'static str> {
    let mut names = vec!["schema.toml", "users.csv", "items.csv", "ratings.csv"];
    for format in Format::ALL {
        names.extend(format.marker_files().iter().copied().filter(|n| !names.contains(n)).collect::<Vec<_>>());
    }
    names
}

fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth { out, force, config } => {
            fsutil::refuse_existing_in_dir("--out", &out, &dataset_files(), "a dataset", force)?;
            synth::generate(&config, &out)?;
            eprintln!("wrote synthetic dataset (seed {}) to {}", config.seed, out.display());
        }
        DataCommand::GenerateMl { out, force, size } => {
            let size = size.resolve();
            fsutil::refuse_existing_in_dir("--out", &out, &dataset_files(), "a dataset", force)?;
            let started = std::time::Instant::now();
            mlgen::write_ml1m(&out, &size)?;
            eprintln!(
                "wrote {} users, {} movies, {} ratings (seed {}) in MovieLens-1M format to {} in {:.1} s",
                size.users,
                size.items,
                size.ratings,
                size.seed,
                out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        DataCommand::Stats(source) => {
            let data = source.load()?;
            println!("dataset       {}", source.data.display());
            print!("{}", DataStats::of(&data));
        }
        DataCommand::Split(SplitCommand::Paml { source, out, force, seed, config }) => {
            fsutil::refuse_existing_file("--out", &out, force)?;
            let data = source.load()?;
            let (tasks, report) = Split::paml(&data, &config, seed)?;
            tasks.write(&data, &out)?;
            println!("PAML protocol (seed {seed}) on {}:\n{report}wrote {}", source.data.display(), out.display());
        }
        DataCommand::Split(SplitCommand::Melu { source, out, force, seed, config }) => {
            let files: Vec<String> = State::ALL.iter().map(|s| format!("{}.csv", s.name())).collect();
            let names: Vec<&str> = files.iter().map(String::as_str).collect();
            fsutil::refuse_existing_in_dir("--out", &out, &names, "split files", force)?;
            let data = source.load()?;
            let (states, report) = split::melu(&data, &config, seed)?;
            let created = fsutil::NewDir::create(&out)?;
            states.write(&data, &out)?;
            created.keep();
            println!(
                "MeLU protocol (seed {seed}) on {}:\n{report}wrote {} in {}",
                source.data.display(),
                files.join(", "),
                out.display()
            );
        }
        DataCommand::BenchLoad { size, dir, repeat } => {
            print!("{}", dataset::bench::run(&size.resolve(), dir.as_deref(), repeat)?);
        }
    }
    Ok(())
}

/// `trainer export`: both outputs are checked, the run loaded and the example user found
/// before anything is written.
fn export(args: &ExportArgs) -> Result<()> {
    fsutil::refuse_existing_file("--out", &args.out, args.force)?;
    if let Some(path) = &args.example_user {
        fsutil::refuse_existing_file("--example-user", path, args.force)?;
    }
    let (info, data, split, trained) =
        RunDir(args.run.clone()).load_trained_from(tch::Device::Cpu, args.data.as_deref())?;
    let body = export::model_body(&info, &data, &trained)?;
    let example = match (&args.example_user, &args.example_user_id) {
        (None, _) => None,
        (Some(_), Some(id)) => Some(
            split
                .test
                .iter()
                .find(|t| &data.users[t.user as usize].id == id)
                .with_context(|| format!("--example-user-id '{id}' is not a test user of this run"))?,
        ),
        (Some(_), None) => Some(
            split
                .test
                .iter()
                .max_by_key(|t| (t.query.len(), std::cmp::Reverse(t.user)))
                .context("the run has no test users")?,
        ),
    };
    let bytes = export::write_model_with(&body, &args.out, args.embeddings)?;
    println!("wrote {} ({bytes} bytes, {} items)", args.out.display(), body.items.len());
    if let (Some(path), Some(task)) = (&args.example_user, example) {
        export::write_example_user(&data, task, path)?;
        println!("wrote example test user {} to {}", data.users[task.user as usize].id, path.display());
    }
    Ok(())
}

fn evaluate(args: &EvalArgs) -> Result<()> {
    if let Some(path) = &args.predictions {
        fsutil::refuse_existing_file("--predictions", path, args.force)?;
    }
    let device = parse_device(&args.device)?;
    let (info, data, split, trained) = RunDir(args.run.clone()).load_trained_from(device, args.data.as_deref())?;
    let mut device_models = Vec::new();
    for path in &args.model {
        let device_model = metarec_runtime::Model::from_path(path)
            .map_err(|e| anyhow::anyhow!("loading model file {}: {e}", path.display()))?;
        check_model_of_run(&args.run, &info, &data, &trained, path, &device_model)?;
        device_models.push((path, device_model));
    }
    let objective = info.spec.objective;
    let users = split.evaluated(args.eval_on);
    let mut rows = trained.rows(users);
    for (path, device_model) in &device_models {
        let predictions = eval::device_predictions(device_model, &data, users)
            .with_context(|| format!("replaying the {} users on {}", args.eval_on.users(), path.display()))?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        rows.push((format!("device: {name}"), predictions));
    }
    let baselines = Baselines::fit(data.items.len(), &split.train, &split.valid).for_objective(objective);
    rows.extend(baselines.predict_all(users));
    if !matches!(trained, Trained::Factors(_)) {
        rows.push(mf::baseline_row(data.items.len(), &split, objective, &info.spec.config, info.seed, users));
    }
    print_table(&data, objective, &split, args.eval_on, &rows);
    if let Some(path) = &args.predictions {
        fsutil::write_atomic_with(path, |out| eval::write_predictions(out, &data, users, &rows))
            .with_context(|| format!("writing --predictions {}", path.display()))?;
        println!("wrote the predictions to {}", path.display());
    }
    Ok(())
}

/// `eval --model M`: M must be an export of the run R — the same feature schema (hash), item
/// catalogue, method and task — or its replay would be printed as if it were R's.
fn check_model_of_run(
    run: &Path,
    info: &RunInfo,
    data: &Dataset,
    trained: &Trained,
    path: &Path,
    model: &metarec_runtime::Model,
) -> Result<()> {
    let foreign =
        |why: String| anyhow::anyhow!("--model {} does not belong to the run {}: {why}", path.display(), run.display());
    let body =
        export::model_body(info, data, trained).map_err(|e| foreign(format!("the run has no model file ({e:#})")))?;
    let file = model.body();
    let mut differences = Vec::new();
    let (ours, theirs) = (schema_hash(&body), schema_hash(file));
    if ours != theirs {
        differences.push(format!("schema hash {theirs:016x}, the run's {ours:016x} (other fields or vocabularies)"));
    }
    let items = model.item_count();
    if items != body.items.len()
        || (0..items as u32).zip(&body.items).any(|(i, b)| model.item_id(i) != Some(b.id.as_str()))
    {
        differences.push(format!("{items} catalogue items, the run's {} (other item ids)", body.items.len()));
    }
    if file.method != body.method {
        differences.push(format!("method {}, the run's {}", file.method.name(), body.method.name()));
    }
    if file.task != body.task {
        differences.push(format!("task {:?}, the run's {:?}", file.task, body.task));
        // names and thresholds
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(foreign(differences.join("; ")))
    }
}

/// The table of `rows`, evaluated on `split`'s users that `on` names.
fn print_table(
    data: &Dataset,
    objective: Objective,
    split: &Split,
    on: EvalOn,
    rows: &[(String, Vec<UserPredictions>)],
) {
    let tasks = split.evaluated(on);
    let what = if objective.is_click() { "query labels" } else { "query ratings" };
    let count = tasks.iter().map(|t| t.query.len()).sum::<usize>();
    println!("{} users: {} ({what}: {count})", on.users(), tasks.len());
    print!("{}", eval::report(data, objective, rows));
}

fn compare(args: &CompareArgs) -> Result<()> {
    let methods = if args.methods.is_empty() { metarec_trainer::method::trained() } else { args.methods.clone() };
    metarec_trainer::train::check_factors(&args.train.method_config)?;
    // Every run directory is checked before the first method trains.
    let out = &args.train.out;
    if std::fs::symlink_metadata(out).is_ok() && !out.is_dir() {
        bail!("--out {} is a file, not a directory", out.display());
    }
    if !args.train.resume {
        for method in &methods {
            run_dir::check_new_run(&args.train.out.join(method.name()), args.train.force)?;
        }
    }
    let mut rows = Vec::new();
    let mut timings = Vec::new();
    let mut last = None;
    for &method in &methods {
        let mut config = args.train.clone();
        config.method = method;
        config.out = args.train.out.join(method.name());
        let info = train::train(&config)?;
        timings.push((method, info.train_seconds, info.best_epoch));
        let (_, data, split, trained) = RunDir(config.out.clone()).load_trained(parse_device(&config.device)?)?;
        rows.extend(trained.rows(&split.test));
        last = Some((data, split));
    }
    let (data, split) = last.context("no methods to compare")?;
    let objective = Objective::from_cli(args.train.task, args.train.click_threshold);
    let baselines = Baselines::fit(data.items.len(), &split.train, &split.valid).for_objective(objective);
    rows.extend(baselines.predict_all(&split.test));
    if !methods.contains(&Method::Mf) {
        let config = &args.train.method_config;
        rows.push(mf::baseline_row(data.items.len(), &split, objective, config, args.train.seed, &split.test));
    }
    print_table(&data, objective, &split, EvalOn::Test, &rows);
    for (method, seconds, epoch) in timings {
        println!("{}: trained in {seconds:.1} s, kept epoch {epoch}", method.title());
    }
    Ok(())
}
