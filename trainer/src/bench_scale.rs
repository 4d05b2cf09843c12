//! `trainer bench scale`: data-parallel training on 1 and 2 MPI ranks (or the `--ranks` given).
//! For each rank count it launches `mpirun -np N trainer bench scale --worker …`, whose ranks
//! train the same run (synthetic data unless `--data`) and report the seconds of the training
//! epochs (validation excluded), the seconds of those spent in MPI collectives (waiting for a
//! slower rank included) and the bytes rank 0 gave to them, and their peak resident memory. It
//! prints throughput (training users per second), speed-up, the communication share, bytes and
//! the memory per rank, then projects the epoch to more ranks from the measured split: compute
//! per step `a + b·users` (fixed cost and cost per user of a rank's shard, fitted to the 1- and
//! 2-rank compute times) and the all-reduce of the measured run with the most ranks, scaled as a
//! ring all-reduce (2(N−1)/N of the data).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::dist::Comm;
use crate::train::{self, TrainConfig};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleBench {
    /// Dataset directory (default: the synthetic dataset of `trainer data synth`, generated in
    /// a temporary directory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A split file of `--data` (`trainer data split`; default: every user, 7:1:2).
    #[arg(long, requires = "data")]
    pub split: Option<PathBuf>,
    /// Rank counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = crate::config::count)]
    pub ranks: Vec<usize>,
    /// Training method.
    #[arg(long, value_parser = crate::method::parser(), default_value = "reg-paml")]
    pub method: crate::method::Method,
    /// Timed training epochs per rank count.
    #[arg(long, default_value_t = 2, value_parser = crate::config::count)]
    pub epochs: usize,
    /// Users per outer step (the global batch, shared by the ranks).
    #[arg(long, default_value_t = 32, value_parser = crate::config::count)]
    pub batch_users: usize,
    /// Time only the first this many steps of each epoch (a large input's epoch in minutes
    /// rather than hours; the figures are per step and per user, so they extrapolate).
    #[arg(long, value_parser = crate::config::count)]
    pub epoch_steps: Option<usize>,
    /// Lazy (row-sparse) Adam for the lookup tables (`trainer train --lazy-adam`; `false`:
    /// dense Adam).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub lazy_adam: bool,
    /// The MPI launcher.
    #[arg(long, default_value = "mpirun")]
    pub mpirun: String,
    /// Rank counts of the projection, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32", value_parser = crate::config::count)]
    pub project: Vec<usize>,
    /// Run as one rank of the measurement (what the benchmark launches under mpirun) and write
    /// the figures to this file (rank 0).
    #[arg(long, hide = true)]
    pub worker: Option<PathBuf>,
}

/// One rank count's figures (rank 0's epoch time; the slowest rank's memory).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Measured {
    ranks: usize,
    epoch_seconds: f64,
    communication_seconds: f64,
    communication_bytes: u64,
    steps: usize,
    users: usize,
    peak_rss_mib: f64,
}

/// Runs the benchmark (or, with `--worker`, one rank of it) and returns the printed figures.
pub fn run(bench: &ScaleBench) -> Result<String> {
    if let Some(out) = &bench.worker {
        return worker(bench, out).map(|()| String::new());
    }
    let comm = Comm::world();
    if comm.size() > 1 {
        bail!("bench scale launches mpirun itself: run it without mpirun");
    }
    let scratch = std::env::temp_dir().join(format!("metarec-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = measure_all(bench, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let measured = result?;
    Ok(table(bench, &measured))
}

fn measure_all(bench: &ScaleBench, scratch: &Path) -> Result<Vec<Measured>> {
    let data = match &bench.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = scratch.join("data");
            let config = <SynthArgs as clap::Parser>::parse_from(["synth"]).config;
            crate::data::synth::generate(&config, &dir)?;
            dir
        }
    };
    let exe = std::env::current_exe().context("locating the trainer executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut measured = Vec::new();
    for &ranks in &bench.ranks {
        let figures = scratch.join(format!("figures-{ranks}.json"));
        let mut command = Command::new(&bench.mpirun);
        command.args(["-np", &ranks.to_string()]);
        if ranks > cores {
            command.arg("--oversubscribe");
        }
        command.arg(&exe).args(["bench", "scale", "--worker"]).arg(&figures).arg("--data").arg(&data);
        command.args(["--method", bench.method.name(), "--epochs", &bench.epochs.to_string()]);
        command.args(["--batch-users", &bench.batch_users.to_string(), "--lazy-adam", &bench.lazy_adam.to_string()]);
        if let Some(split) = &bench.split {
            command.arg("--split").arg(split);
        }
        if let Some(steps) = bench.epoch_steps {
            command.args(["--epoch-steps", &steps.to_string()]);
        }
        eprintln!("measuring {ranks} rank(s): {command:?}");
        let output = command.output().with_context(|| format!("starting {} (is Open MPI installed?)", bench.mpirun))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} -np {ranks} failed ({}); as root, set OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1:\n{}",
                bench.mpirun,
                output.status,
                tail.join("\n")
            );
        }
        let text = std::fs::read_to_string(&figures).with_context(|| format!("reading {}", figures.display()))?;
        measured.push(serde_json::from_str(&text).with_context(|| format!("parsing {}", figures.display()))?);
    }
    Ok(measured)
}

/// `trainer data synth`'s defaults, parsed as its command line parses them.
#[derive(Debug, clap::Parser)]
struct SynthArgs {
    #[command(flatten)]
    config: crate::data::synth::SynthConfig,
}

/// One rank: trains, then rank 0 writes the job's figures.
fn worker(bench: &ScaleBench, out: &Path) -> Result<()> {
    let comm = Comm::world();
    let data = bench.data.as_ref().context("--worker needs --data")?;
    let run = out.with_extension("run");
    let mut config = TrainConfig::new(data, &run);
    config.method = bench.method;
    config.epochs = bench.epochs;
    config.patience = bench.epochs;
    config.batch_users = bench.batch_users;
    config.split.clone_from(&bench.split);
    config.epoch_steps = bench.epoch_steps;
    config.lazy_adam = bench.lazy_adam;
    config.device = "cpu".into();
    config.force = true;
    train::train(&config)?;
    let timing = train::epoch_timing();
    let mut rss = [0.0; 1];
    rss[0] = peak_rss_mib()?;
    // The largest peak over the ranks (a sum of one rank's value and zeros elsewhere would do
    // for rank 0's; the maximum needs every rank's).
    let all = comm.gather_f32(&[rss[0] as f32]);
    let peak = all.iter().fold(0f32, |a, &b| a.max(b));
    if comm.is_lead() {
        let figures = Measured {
            ranks: comm.size(),
            epoch_seconds: timing.seconds,
            communication_seconds: timing.communication_seconds,
            communication_bytes: timing.communication_bytes,
            steps: timing.steps,
            users: timing.users,
            peak_rss_mib: f64::from(peak),
        };
        crate::fsutil::write_atomic(out, serde_json::to_string(&figures)?.as_bytes())?;
    }
    Ok(())
}

/// This process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("/proc/self/status has no VmHWM")?;
    let kib: f64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).context("parsing VmHWM")?;
    Ok(kib / 1024.0)
}

/// The measured table and the projection.
fn table(bench: &ScaleBench, measured: &[Measured]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data-parallel training, {} on {} epoch(s){}, global batch {} users, {} Adam, 1 thread per rank",
        bench.method.title(),
        bench.epochs,
        bench.epoch_steps.map_or(String::new(), |s| format!(" of at most {s} steps")),
        bench.batch_users,
        if bench.lazy_adam { "lazy" } else { "dense" }
    );
    let _ = writeln!(
        out,
        "{:>5} {:>10} {:>9} {:>11} {:>8} {:>13} {:>14} {:>13} {:>13}",
        "ranks",
        "epoch s",
        "step ms",
        "users/s",
        "speed-up",
        "all-reduce %",
        "all-reduce ms",
        "sent KiB/step",
        "peak MiB/rank"
    );
    let base = measured.iter().find(|m| m.ranks == 1).map(throughput);
    for m in measured {
        let speedup = base.map_or(String::from("-"), |b| format!("{:.2}x", throughput(m) / b));
        let _ = writeln!(
            out,
            "{:>5} {:>10.2} {:>9.1} {:>11.1} {:>8} {:>12.1}% {:>14.3} {:>13.1} {:>13.0}",
            m.ranks,
            m.epoch_seconds / bench.epochs as f64,
            1e3 * m.epoch_seconds / m.steps.max(1) as f64,
            throughput(m),
            speedup,
            100.0 * m.communication_seconds / m.epoch_seconds.max(1e-12),
            1e3 * m.communication_seconds / m.steps.max(1) as f64,
            m.communication_bytes as f64 / 1024.0 / m.steps.max(1) as f64,
            m.peak_rss_mib
        );
    }
    match projection(bench, measured) {
        Ok(lines) => out += &lines,
        Err(e) => {
            let _ = writeln!(out, "no projection: {e}");
        }
    }
    out
}

/// Users trained per second.
fn throughput(m: &Measured) -> f64 {
    m.users as f64 / m.epoch_seconds.max(1e-12)
}

/// The epoch time at more ranks from the measured compute/communication split.
fn projection(bench: &ScaleBench, measured: &[Measured]) -> Result<String> {
    let one = measured.iter().find(|m| m.ranks == 1).context("needs a 1-rank measurement")?;
    let many = measured.iter().filter(|m| m.ranks > 1).max_by_key(|m| m.ranks).context("needs a run of 2+ ranks")?;
    ensure!(one.steps > 0 && many.steps > 0, "no training steps measured");
    let users_per_step = one.users as f64 / one.steps as f64;
    // Compute per step of a shard of u users: a + b·u, from the 1-rank (u = B) and N-rank
    // (u = B/N) compute times (the N-rank figure is the epoch less its collectives).
    let compute_one = one.epoch_seconds / one.steps as f64;
    let compute_many = (many.epoch_seconds - many.communication_seconds) / many.steps as f64;
    let n = many.ranks as f64;
    let b = ((compute_one - compute_many) / (users_per_step * (1.0 - 1.0 / n))).max(0.0);
    let a = (compute_one - b * users_per_step).max(0.0);
    let reduce = many.communication_seconds / many.steps as f64;
    let ring = |ranks: f64| 2.0 * (ranks - 1.0) / ranks;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "projection (compute per step {:.2} ms + {:.3} ms per user of a rank's shard; all-reduce {:.3} ms per step at \
         {} ranks, scaled as a ring all-reduce 2(N-1)/N):",
        a * 1e3,
        b * 1e3,
        reduce * 1e3,
        many.ranks
    );
    let _ = writeln!(out, "{:>5} {:>11} {:>8} {:>13}", "ranks", "users/s", "speed-up", "all-reduce %");
    for &ranks in &bench.project {
        let r = ranks as f64;
        let compute = a + b * (users_per_step / r).max(1.0);
        let communication = if ranks > 1 { reduce * ring(r) / ring(n) } else { 0.0 };
        let step = compute + communication;
        let users = users_per_step / step;
        let _ = writeln!(
            out,
            "{:>5} {:>11.1} {:>7.2}x {:>12.1}%",
            ranks,
            users,
            users / (users_per_step / compute_one),
            100.0 * communication / step
        );
    }
    Ok(out)
}
