//! `trainer`: the command line over the metarec-trainer library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::eval::{self, predict_tasks};
use metarec_trainer::export;
use metarec_trainer::run::RunDir;
use metarec_trainer::train::{self, parse_device, TrainConfig};

/// Meta-trains cold-start recommenders and exports metarec model files.
#[derive(Debug, Parser)]
#[command(name = "trainer", version, about)]
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
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Generate the synthetic cold-start dataset (major and minor users).
    Synth {
        /// Directory to write schema.toml and the CSV files into.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        config: SynthConfig,
    },
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Run directory written by `trainer train`.
    #[arg(long)]
    run: PathBuf,
    /// `cpu`, `cuda` or `auto`.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Run directory written by `trainer train`.
    #[arg(long)]
    run: PathBuf,
    /// Model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write one held-out test user (profile, support, query) as TSV here.
    #[arg(long)]
    example_user: Option<PathBuf>,
    /// Which test user to write (default: the test user with the most query ratings).
    #[arg(long)]
    example_user_id: Option<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Synth { out, config }) => {
            synth::generate(&config, &out)?;
            eprintln!("wrote synthetic dataset (seed {}) to {}", config.seed, out.display());
        }
        Command::Train(config) => {
            train::train(&config)?;
        }
        Command::Eval(args) => evaluate(&args)?,
        Command::Export(args) => {
            let (info, data, split, model) = RunDir(args.run.clone()).load(tch::Device::Cpu)?;
            let body = export::model_body(&info, &data, &model);
            let bytes = export::write_model(&body, &args.out)?;
            println!("wrote {} ({bytes} bytes, {} items)", args.out.display(), body.items.len());
            if let Some(path) = &args.example_user {
                let task = match &args.example_user_id {
                    Some(id) => split
                        .test
                        .iter()
                        .find(|t| &data.users[t.user as usize].id == id)
                        .with_context(|| format!("--example-user-id '{id}' is not a test user of this run"))?,
                    None => split
                        .test
                        .iter()
                        .max_by_key(|t| (t.query.len(), std::cmp::Reverse(t.user)))
                        .context("the run has no test users")?,
                };
                export::write_example_user(&data, task, path)?;
                println!("wrote example test user {} to {}", data.users[task.user as usize].id, path.display());
            }
        }
    }
    Ok(())
}

fn evaluate(args: &EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let (info, data, split, model) = RunDir(args.run.clone()).load(device)?;
    let tasks = &split.test;
    let spec = &info.spec;
    let adapted = predict_tasks(&model, tasks, spec.inner_steps, 256);
    let unadapted = predict_tasks(&model, tasks, 0, 256);
    let global_mean = eval::baseline(tasks, |_| info.global_mean);
    let support_mean = eval::baseline(tasks, eval::support_mean);
    let melu = format!("{} ({} steps)", spec.method.name(), spec.inner_steps);
    let no_adaptation = format!("{} without adaptation", spec.method.name());
    println!("test users: {} (query ratings: {})", tasks.len(), tasks.iter().map(|t| t.query.len()).sum::<usize>());
    print!(
        "{}",
        eval::report(
            &data,
            &[
                (melu.as_str(), adapted),
                (no_adaptation.as_str(), unadapted),
                ("global mean", global_mean),
                ("user support mean", support_mean),
            ]
        )
    );
    Ok(())
}
