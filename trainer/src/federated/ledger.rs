//! The privacy ledger: one TSV row per aggregation round, with the ε spent so far.
//!
//! ε is recomputed from every recorded round's (q, z) at each append (rounds may differ), with
//! the RDP accountant at the newest row's δ. The file is rewritten atomically.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::accountant::RdpAccountant;
use crate::fsutil;

const HEADER: &str =
    "round\tmodel_in\tmodel_out\taccepted\trefused\texpected_clients\tq\tnoise_multiplier\tclip\tdelta\tepsilon";

/// One round.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// 1-based round number (set by [`append`]).
    pub round: u64,
    /// Model id the round started from (hex in the file).
    pub model_in: u64,
    /// Model id it wrote.
    pub model_out: u64,
    /// Contributions summed.
    pub accepted: usize,
    /// Contributions refused.
    pub refused: usize,
    /// The fixed denominator m.
    pub expected_clients: f64,
    /// Sampling rate q.
    pub q: f64,
    /// Noise multiplier z.
    pub noise_multiplier: f64,
    /// Clip norm S.
    pub clip: f64,
    /// δ of the ε column.
    pub delta: f64,
    /// ε after this round (set by [`append`]).
    pub epsilon: f64,
}

/// Reads the rounds' (q, z) recorded in `path` (none when the file does not exist).
pub fn read_rounds(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading the ledger {}", path.display())),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        bail!("{} is not a metarec privacy ledger (unexpected header)", path.display());
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            let parse = |k: usize| -> Result<f64> {
                cols.get(k)
                    .and_then(|c| c.parse().ok())
                    .with_context(|| format!("{} line {}: column {} unreadable", path.display(), i + 2, k + 1))
            };
            Ok((parse(6)?, parse(7)?))
        })
        .collect()
}

/// Appends `row` as the next round, with ε over every round so far; returns it completed.
pub fn append(path: &Path, mut row: LedgerRow) -> Result<LedgerRow> {
    let mut rounds = read_rounds(path)?;
    rounds.push((row.q, row.noise_multiplier));
    let mut accountant = RdpAccountant::default();
    // Runs of equal (q, z) are charged at once: a round's RDP is the same for each of them, so
    // a long simulation does not recompute every round's at every round.
    for run in rounds.chunk_by(|a, b| a == b) {
        let (q, z) = run[0];
        accountant.compose_poisson_gaussian(q, z, run.len() as u64)?;
    }
    row.round = rounds.len() as u64;
    row.epsilon = accountant.epsilon(row.delta)?.0;
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(_) => format!("{HEADER}\n"),
    };
    text.push_str(&format!(
        "{}\t{:016x}\t{:016x}\t{}\t{}\t{}\t{}\t{}\t{}\t{:e}\t{:.6}\n",
        row.round,
        row.model_in,
        row.model_out,
        row.accepted,
        row.refused,
        row.expected_clients,
        row.q,
        row.noise_multiplier,
        row.clip,
        row.delta,
        row.epsilon
    ));
    fsutil::write_atomic(path, text.as_bytes())?;
    Ok(row)
}
