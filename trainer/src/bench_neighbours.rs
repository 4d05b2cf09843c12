//! `trainer bench neighbours`: two searches for AT-PAML's K nearest stored keys (the runtime's
//! linear scan, and the static kd-tree of [`crate::kdtree`]) on one thread, over table sizes around the default
//! memory (M = 4096), for unit keys spread uniformly over the sphere (the kd-tree's worst case)
//! and for tightly clustered unit keys (its good case), and with `--run` on the stored keys of a
//! trained AT-PAML run. Prints the median time per query of the scan, of the tree over the keys
//! as stored and of the tree over the same keys laid out in tree order (as an exporter could
//! write them), the tree's build time and bytes, and checks on every query that every search
//! returns the scan's list.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use metarec_runtime::neighbours::{nearest_scan, Nearest};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::{Real, Whole};
use crate::kdtree::KdTree;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NeighbourBench {
    /// Table sizes (stored entries), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,1024,4096,16384,65536",
        value_parser = |t: &str| ENTRIES.parse::<usize>(t),
        allow_hyphen_values = true
    )]
    pub entries: Vec<usize>,
    /// Key width.
    #[arg(long, default_value_t = 16, value_parser = |t: &str| KEY_DIM.parse::<usize>(t), allow_hyphen_values = true)]
    pub key_dim: usize,
    /// Neighbours per query (K, at most 16).
    #[arg(long, default_value_t = 4, value_parser = crate::config::neighbours, allow_hyphen_values = true)]
    pub neighbours: usize,
    /// Timed queries per table (the median is reported).
    #[arg(long, default_value_t = 2000, value_parser = |t: &str| ROWS.parse::<usize>(t), allow_hyphen_values = true)]
    pub queries: usize,
    /// Timed passes over the queries (the searches take turns pass by pass).
    #[arg(long, default_value_t = 3, value_parser = crate::config::count, allow_hyphen_values = true)]
    pub passes: usize,
    /// Cluster centres of the clustered keys.
    #[arg(long, default_value_t = 32, value_parser = |t: &str| ROWS.parse::<usize>(t), allow_hyphen_values = true)]
    pub clusters: usize,
    /// Per-coordinate standard deviation around a centre before normalising (clustered keys).
    #[arg(long, default_value_t = 0.05, value_parser = spread, allow_hyphen_values = true)]
    pub spread: f32,
    /// Also measure the stored keys of this AT-PAML run directory (its `memory.ot`): one eighth
    /// of them, held out at random, are the queries (new users from the same distribution) and
    /// the rest the table.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Seed of keys and queries.
    #[arg(long, default_value_t = 1, value_parser = crate::config::seed, allow_hyphen_values = true)]
    pub seed: u64,
}

/// Keys drawn per table, query set or centre set: the tables are held in memory.
const ROWS: Whole = Whole { what: "count", min: 1, max: 1 << 20, why: "" };
/// --entries: as [`ROWS`], and an empty table is measured too.
const ENTRIES: Whole = Whole { what: "table size", min: 0, max: 1 << 20, why: "" };
/// --key-dim.
const KEY_DIM: Whole = Whole { what: "key width", min: 1, max: 256, why: "" };
/// --spread.
const SPREAD: Real = Real { what: "standard deviation", min: 0.0, inclusive: true, max: f64::INFINITY };

fn spread(text: &str) -> Result<f32, String> {
    let value = SPREAD.parse(text)? as f32;
    SPREAD.check(f64::from(value)).map_err(|rule| format!("{text} is not a valid standard deviation: {rule}"))?;
    Ok(value)
}

/// How keys and queries are drawn.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// Normalised Gaussian vectors: uniform on the unit sphere.
    Uniform,
    /// Normalised (centre + spread · Gaussian) around a few unit centres.
    Clustered,
}

fn normalise(v: &mut [f32]) {
    // As the runtime and the trainer: the squared norm is clamped to 1e-16 before the root.
    let norm = v.iter().map(|x| x * x).sum::<f32>().max(1e-16).sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()
}

/// `count` unit keys of width `dim`, row-major.
fn draw(kind: Keys, count: usize, dim: usize, centres: &[f32], spread: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * dim);
    for _ in 0..count {
        let mut v = match kind {
            Keys::Uniform => gaussian(rng, dim),
            Keys::Clustered => {
                let c = rng.gen_range(0..centres.len() / dim) * dim;
                centres[c..c + dim].iter().map(|&x| x + spread * rng.sample::<f32, _>(StandardNormal)).collect()
            }
        };
        normalise(&mut v);
        out.extend_from_slice(&v);
    }
    out
}

/// The stored keys of an AT-PAML run (`memory.ot`): `(keys, key_dim)`, the used rows only.
fn run_keys(dir: &Path) -> Result<(Vec<f32>, usize)> {
    let path = crate::run::RunDir(dir.to_path_buf()).memory_path();
    if !path.is_file() {
        anyhow::bail!(
            "--run {} holds no memory.ot: it takes the directory of an AT-PAML run (`trainer train --method at-paml`)",
            dir.display()
        );
    }
    let named: std::collections::HashMap<String, tch::Tensor> = crate::run::load_tensors(&path)
        .with_context(|| format!("loading {} (an AT-PAML run's memory)", path.display()))?
        .into_iter()
        .collect();
    let keys = named.get("memory.keys").context("the memory lacks memory.keys")?;
    let len_clock = crate::model::tensor_values(
        &named.get("memory.len_clock").context("the memory lacks memory.len_clock")?.to_kind(tch::Kind::Float),
    );
    let size = keys.size();
    ensure!(size.len() == 2 && size[1] > 0, "memory.keys is not a matrix");
    let len = len_clock.first().map_or(0, |&l| l as i64).clamp(0, size[0]);
    ensure!(len >= 16, "the memory holds {len} keys; too few to measure");
    Ok((crate::model::tensor_values(&keys.narrow(0, 0, len)), size[1] as usize))
}

/// One row of the report.
fn write_row(report: &mut String, label: &str, keys: &[f32], f: &Figures, entries: usize) -> Result<()> {
    writeln!(
        report,
        "{:<10} {:>7} {:>9.0} {:>9.0} {:>9.0} {:>8.2}× {:>8.2}× {:>10.1} {:>10} {:>10} {:>9}",
        label,
        entries,
        f.scan_ns,
        f.tree_ns,
        f.laid_out_ns,
        f.scan_ns / f.tree_ns.max(1.0),
        f.scan_ns / f.laid_out_ns.max(1.0),
        f.build_us,
        f.tree_bytes,
        f.laid_out_bytes,
        keys.len() * 4
    )?;
    Ok(())
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median cost of an empty `Instant` pair, subtracted from every per-query sample.
fn timer_overhead_ns() -> f64 {
    median(
        (0..10_000)
            .map(|_| {
                let start = Instant::now();
                black_box(());
                start.elapsed().as_nanos() as f64
            })
            .collect(),
    )
}

/// One table's figures.
#[derive(Debug)]
struct Figures {
    scan_ns: f64,
    tree_ns: f64,
    laid_out_ns: f64,
    build_us: f64,
    tree_bytes: usize,
    laid_out_bytes: usize,
}

/// One way to answer a query.
type Search<'a> = dyn Fn(&[f32], &mut Nearest) + 'a;

/// Median ns per query of each search, one sample per query and pass. The searches take turns
/// pass by pass (each pass runs every query), so a burst of load on the machine falls on all of
/// them alike while each runs with its own data warm in cache, as a device would between queries
/// of one session.
fn time_queries<const N: usize>(
    queries: &[f32],
    dim: usize,
    passes: usize,
    overhead: f64,
    searches: [&Search<'_>; N],
) -> [f64; N] {
    let mut out = Nearest::new();
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(passes * queries.len() / dim));
    for _ in 0..passes {
        for (search, samples) in searches.iter().zip(samples.iter_mut()) {
            for query in queries.chunks_exact(dim) {
                let start = Instant::now();
                search(black_box(query), &mut out);
                let ns = start.elapsed().as_nanos() as f64;
                black_box(&out);
                samples.push((ns - overhead).max(0.0));
            }
        }
    }
    samples.map(median)
}

/// Warms up and checks, on every query, that the tree returns the scan's list.
fn check(tree: &KdTree, keys: &[f32], queries: &[f32], dim: usize, k: usize) -> Result<()> {
    let (mut scanned, mut found) = (Nearest::new(), Nearest::new());
    for query in queries.chunks_exact(dim) {
        nearest_scan(keys, dim, query, k, &mut scanned);
        tree.nearest(keys, query, k, &mut found);
        ensure!(scanned == found, "the kd-tree and the scan disagree: {found:?} vs {scanned:?}");
    }
    Ok(())
}

/// One table: the scan, the tree over the keys as stored, and the tree over the same keys
/// rewritten in tree order (as an exporter would lay them out).
fn measure(keys: &[f32], queries: &[f32], dim: usize, config: &NeighbourBench, overhead: f64) -> Result<Figures> {
    let k = config.neighbours;
    let build_us = median(
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let tree = KdTree::build(black_box(keys), dim);
                let us = start.elapsed().as_secs_f64() * 1e6;
                black_box(tree);
                us
            })
            .collect(),
    );
    let tree = KdTree::build(keys, dim);
    check(&tree, keys, queries, dim, k)?;
    let laid_out_keys: Vec<f32> = match tree.order() {
        Some(order) => order.iter().flat_map(|&e| &keys[e as usize * dim..(e as usize + 1) * dim]).copied().collect(),
        None => keys.to_vec(),
    };
    let laid_out = KdTree::build(&laid_out_keys, dim);
    ensure!(laid_out.order().is_none(), "keys rewritten in tree order did not rebuild to the identity");
    check(&laid_out, &laid_out_keys, queries, dim, k)?;
    let [scan_ns, tree_ns, laid_out_ns] = time_queries(
        queries,
        dim,
        config.passes,
        overhead,
        [
            &|query, out| nearest_scan(keys, dim, query, k, out),
            &|query, out| tree.nearest(keys, query, k, out),
            &|query, out| laid_out.nearest(&laid_out_keys, query, k, out),
        ],
    );
    Ok(Figures {
        scan_ns,
        tree_ns,
        laid_out_ns,
        build_us,
        tree_bytes: tree.memory_bytes(),
        laid_out_bytes: laid_out.memory_bytes(),
    })
}

/// Runs the benchmark and returns its report.
pub fn run(config: &NeighbourBench) -> Result<String> {
    ensure!(
        config.key_dim > 0 && config.queries > 0 && config.passes > 0,
        "--key-dim, --queries and --passes must be > 0"
    );
    ensure!((1..=16).contains(&config.neighbours), "--neighbours must be in 1..=16");
    ensure!(config.clusters > 0 && !config.entries.is_empty(), "--clusters and --entries must not be empty");
    for (flag, value, rule) in [
        ("--key-dim", config.key_dim, KEY_DIM),
        ("--queries", config.queries, ROWS),
        ("--clusters", config.clusters, ROWS),
    ]
    .into_iter()
    .chain(config.entries.iter().map(|&e| ("--entries", e, ENTRIES)))
    {
        crate::config::check_flag(flag, value, rule.check(value))?;
    }
    crate::config::check_flag("--spread", config.spread, SPREAD.check(f64::from(config.spread)))?;
    // The run's keys are read first: a run that has none is refused before minutes of timing.
    let stored = config.run.as_deref().map(run_keys).transpose()?;
    let dim = config.key_dim;
    let overhead = timer_overhead_ns();
    let mut report = String::new();
    writeln!(
        report,
        "neighbour search: key_dim {dim}, K {}, {} queries × {} passes per table, one thread; median ns per \
         query (timer overhead {overhead:.0} ns subtracted); tree == scan checked on every query",
        config.neighbours, config.queries, config.passes
    )?;
    writeln!(
        report,
        "clustered: {} centres, spread {} per coordinate before normalising",
        config.clusters, config.spread
    )?;
    writeln!(
        report,
        "tree: over the keys as stored (an order array, 4 bytes per entry); laid out: the same keys written in \
         tree order, as an exporter would (no order array, contiguous leaves)"
    )?;
    writeln!(
        report,
        "{:<10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}",
        "keys",
        "entries",
        "scan ns",
        "tree ns",
        "laid ns",
        "scan/tree",
        "scan/laid",
        "build µs",
        "tree B",
        "laid B",
        "keys B"
    )?;
    for kind in [Keys::Uniform, Keys::Clustered] {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let centres = draw(Keys::Uniform, config.clusters, dim, &[], 0.0, &mut rng);
        let queries = draw(kind, config.queries, dim, &centres, config.spread, &mut rng);
        for &entries in &config.entries {
            let keys = draw(kind, entries, dim, &centres, config.spread, &mut rng);
            let f = measure(&keys, &queries, dim, config, overhead)?;
            write_row(&mut report, &format!("{kind:?}").to_lowercase(), &keys, &f, entries)?;
        }
    }
    if let (Some(dir), Some((stored, run_dim))) = (&config.run, stored) {
        let mut rows: Vec<&[f32]> = stored.chunks_exact(run_dim).collect();
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed));
        let held_out = rows.len() / 8;
        let queries: Vec<f32> = rows[..held_out].concat();
        let keys: Vec<f32> = rows[held_out..].concat();
        let f = measure(&keys, &queries, run_dim, config, overhead)?;
        write_row(&mut report, "run", &keys, &f, rows.len() - held_out)?;
        writeln!(
            report,
            "run: the stored keys of {} (key_dim {run_dim}); {held_out} of them held out as the queries",
            dir.display()
        )?;
    }
    Ok(report)
}
