//! The loading benchmark (`trainer data bench-load`): generates a MovieLens-1M-sized input in
//! the ML-1M format ([`super::mlgen`]) and times loading (read, decode, parse, vocabularies,
//! rows, major/minor labels) plus preprocessing (the PAML protocol split and its split file),
//! each repeated; the loader is single-threaded, so run it under `taskset -c 0` for one core.
//! `--size ml-25m` times MovieLens-25M's population instead (about 700 MB of `ratings.dat`).

use core::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::mlgen::{write_ml1m, Ml1mSize, SizePreset};
use super::{Dataset, Format, LoadOptions};
use crate::split::{PamlConfig, Split};

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the benchmark; `dir` keeps the generated input (reused when it already holds
/// `ratings.dat`), otherwise a temporary directory is used and removed. Returns the report.
pub fn run(size: &Ml1mSize, dir: Option<&Path>, repeat: usize) -> Result<String> {
    let temp;
    let dir: PathBuf = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let mut out = String::new();
    if dir.join("ratings.dat").is_file() {
        writeln!(out, "input: reusing {}", dir.display())?;
    } else {
        let start = Instant::now();
        write_ml1m(&dir, size)?;
        writeln!(
            out,
            "input: generated {} users, {} items, {} ratings (seed {}) in {} in {:.2} s (not timed below)",
            size.users,
            size.items,
            size.ratings,
            size.seed,
            dir.display(),
            start.elapsed().as_secs_f64()
        )?;
    }
    let bytes: u64 = ["users.dat", "movies.dat", "ratings.dat"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum();
    writeln!(out, "input size: {:.1} MiB", bytes as f64 / (1024.0 * 1024.0))?;

    let options = LoadOptions { format: Some(Format::Ml1m), skip_invalid: false };
    let (mut load, mut split, mut write, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let split_path = dir.join(".bench-split.csv");
    let mut summary = String::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let data = Dataset::load_with(&dir, &options)?;
        let loaded = start.elapsed().as_secs_f64();
        let (tasks, _) = Split::paml(&data, &PamlConfig::default(), 1)?;
        let split_done = start.elapsed().as_secs_f64();
        tasks.write(&data, &split_path)?;
        let all = start.elapsed().as_secs_f64();
        load.push(loaded);
        split.push(split_done - loaded);
        write.push(all - split_done);
        total.push(all);
        summary = format!(
            "loaded {} users, {} items, {} ratings; PAML split: {} train / {} valid / {} test users",
            data.users.len(),
            data.items.len(),
            data.ratings.len(),
            tasks.train.len(),
            tasks.valid.len(),
            tasks.test.len()
        );
    }
    let _ = std::fs::remove_file(&split_path);
    writeln!(out, "{summary}")?;
    let line = |name: &str, v: &[f64]| {
        format!(
            "{name:<34} median {:>6.3} s   min {:>6.3} s",
            median(v.to_vec()),
            v.iter().copied().fold(f64::INFINITY, f64::min)
        )
    };
    writeln!(out, "runs: {}", total.len())?;
    writeln!(out, "{}", line("load (read+decode+parse+map)", &load))?;
    writeln!(out, "{}", line("PAML protocol split", &split))?;
    writeln!(out, "{}", line("write split file", &write))?;
    writeln!(out, "{}", line("total load + preprocessing", &total))?;
    let peak = peak_rss_mib();
    if let Some(mib) = peak {
        writeln!(out, "peak resident memory: {mib:.0} MiB")?;
    }
    let seconds = median(total.clone());
    if size.ratings > SizePreset::Ml1m.size(size.seed).ratings {
        // Issue 17: MovieLens-25M's population loads and splits in <= 60 s and <= 4 GB.
        let met = seconds <= 60.0 && peak.is_some_and(|mib| mib <= 4096.0);
        writeln!(out, "goal (<= 60 s and <= 4 GiB at MovieLens-25M's size): {}", if met { "met" } else { "NOT met" })?;
    } else {
        let goal = if seconds < 5.0 { "met" } else { "NOT met" };
        writeln!(out, "goal (< 5 s on one core): {goal}")?;
    }
    Ok(out)
}

/// A temporary directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("metarec-bench-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
