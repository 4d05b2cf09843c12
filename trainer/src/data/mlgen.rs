//! A seeded generator of MovieLens-1M-format files (`users.dat`, `movies.dat`, `ratings.dat`,
//! `::`-separated, Latin-1 titles) of any size: `trainer data generate-ml`, the loading
//! benchmark's input and test data for the protocols. Named sizes ([`SizePreset`]) give
//! MovieLens-1M's population (6,040 users, 3,706 rated movies, 1,000,209 ratings, the default)
//! and MovieLens-25M's (162,541 users, 59,047 rated movies, 25,000,095 ratings) in the 1M layout,
//! so the large input has the demographics the PAML protocol and the major/minor rule use.
//! `ratings.dat` is streamed to disk user by user: the generator holds each user's movie list
//! (4 bytes a rating), never the file's text. Every user gets at least 20 ratings (as in ML-1M) when the total allows, and every
//! movie at least one; activity is long-tailed. The values follow a user bias plus an item bias
//! plus noise; they carry no real preference structure.

use core::fmt::Write as _;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Normal};

/// Size and seed of a generated dataset (the counts of any size; [`SizePreset`] names two).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Ml1mSize {
    /// Users.
    #[arg(long, default_value_t = 6040)]
    pub users: usize,
    /// Movies (each rated at least once).
    #[arg(long, default_value_t = 3706)]
    pub items: usize,
    /// Ratings.
    #[arg(long, default_value_t = 1_000_209)]
    pub ratings: usize,
    /// Random seed; the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for Ml1mSize {
    fn default() -> Ml1mSize {
        SizePreset::Ml1m.size(1)
    }
}

/// A MovieLens release whose population (users, rated movies, ratings) a generated dataset
/// copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SizePreset {
    /// MovieLens-1M: 6,040 users, 3,706 movies, 1,000,209 ratings.
    #[default]
    #[value(name = "ml-1m")]
    Ml1m,
    /// MovieLens-25M: 162,541 users, 59,047 rated movies, 25,000,095 ratings (about 700 MB of
    /// `ratings.dat`).
    #[value(name = "ml-25m")]
    Ml25m,
}

impl SizePreset {
    /// The preset's counts with `seed`.
    pub fn size(self, seed: u64) -> Ml1mSize {
        let (users, items, ratings) = match self {
            SizePreset::Ml1m => (6040, 3706, 1_000_209),
            SizePreset::Ml25m => (162_541, 59_047, 25_000_095),
        };
        Ml1mSize { users, items, ratings, seed }
    }
}

/// The size options of the commands that generate: a preset, each count overridable.
#[derive(Debug, Clone, clap::Args)]
pub struct SizeArgs {
    /// Population to copy: ml-1m or ml-25m (users, movies, ratings); --users, --items and
    /// --ratings override its counts.
    #[arg(long, value_enum, default_value = "ml-1m")]
    pub size: SizePreset,
    /// Users (default: the preset's).
    #[arg(long)]
    pub users: Option<usize>,
    /// Movies, each rated at least once (default: the preset's).
    #[arg(long)]
    pub items: Option<usize>,
    /// Ratings (default: the preset's).
    #[arg(long)]
    pub ratings: Option<usize>,
    /// Random seed; the same seed and counts write the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl SizeArgs {
    /// The counts asked for: the preset's, overridden by those given.
    pub fn resolve(&self) -> Ml1mSize {
        let preset = self.size.size(self.seed);
        Ml1mSize {
            users: self.users.unwrap_or(preset.users),
            items: self.items.unwrap_or(preset.items),
            ratings: self.ratings.unwrap_or(preset.ratings),
            seed: self.seed,
        }
    }
}

/// The most users or ratings generated (ratings.dat of about 28 GB; the loader numbers users and
/// items in `u32`).
pub const MAX_COUNT: usize = 1_000_000_000;

/// MovieLens-1M's genres: MovieLens-100K's list without its leading "unknown".
const GENRES: &[&str] = super::movielens::ML100K_GENRES.split_at(1).1;
const AGES: [(&str, f64); 7] =
    [("1", 0.037), ("18", 0.183), ("25", 0.347), ("35", 0.197), ("45", 0.091), ("50", 0.082), ("56", 0.063)];

/// Number of ratings of each user: at least `floor` each, long-tailed, summing to `total`.
fn user_counts(rng: &mut ChaCha8Rng, size: &Ml1mSize) -> Vec<usize> {
    let floor = (size.ratings / size.users).min(20);
    let spread = LogNormal::new(0.0, 1.1).expect("valid lognormal");
    let weights: Vec<f64> = (0..size.users).map(|_| spread.sample(rng)).collect();
    let sum: f64 = weights.iter().sum();
    let extra = size.ratings - floor * size.users;
    let mut counts: Vec<usize> =
        weights.iter().map(|w| (floor + (w / sum * extra as f64).floor() as usize).min(size.items)).collect();
    let mut assigned: usize = counts.iter().sum();
    while assigned < size.ratings {
        let u = rng.gen_range(0..size.users);
        if counts[u] < size.items {
            counts[u] += 1;
            assigned += 1;
        }
    }
    counts
}

/// Writes `users.dat`, `movies.dat` and `ratings.dat` into `dir` (each atomically, in that
/// order); `ratings.dat` is streamed.
pub fn write_ml1m(dir: &Path, size: &Ml1mSize) -> Result<()> {
    ensure!(size.users >= 1 && size.items >= 1, "need at least one user and one item");
    ensure!(
        size.items <= size.ratings && size.ratings <= size.users.saturating_mul(size.items),
        "need items <= ratings <= users x items (got {} users, {} items, {} ratings)",
        size.users,
        size.items,
        size.ratings
    );
    ensure!(
        size.users.max(size.ratings) <= MAX_COUNT,
        "at most {MAX_COUNT} users and ratings (got {} users, {} ratings)",
        size.users,
        size.ratings
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(size.seed);
    let unit = Normal::new(0.0, 1.0).expect("valid normal");
    let users = users_dat(&mut rng, size)?;
    crate::fsutil::write_atomic(&dir.join("users.dat"), users.as_bytes())?;
    let (movies, item_bias) = movies_dat(&mut rng, size, &unit)?;
    let (movies_latin1, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&movies);
    ensure!(!unmappable, "generated titles must be Latin-1");
    crate::fsutil::write_atomic(&dir.join("movies.dat"), &movies_latin1)?;
    let lists = rated_movies(&mut rng, size);
    crate::fsutil::write_atomic_with(&dir.join("ratings.dat"), |out| {
        ratings_dat(out, &mut rng, &lists, &item_bias, &unit)
    })
}

/// `users.dat`: gender, age band, occupation and zip code per user.
fn users_dat(rng: &mut ChaCha8Rng, size: &Ml1mSize) -> Result<String> {
    let mut users = String::new();
    for u in 1..=size.users {
        let gender = if rng.gen_bool(0.717) { "M" } else { "F" };
        let mut pick = rng.gen::<f64>();
        let age = AGES.iter().find(|(_, p)| {
            pick -= p;
            pick < 0.0
        });
        let age = age.map_or("25", |(a, _)| a);
        let occupation = rng.gen_range(0..21);
        // Zip codes cluster: a few hundred common prefixes.
        let zip = rng.gen_range(0..3400usize).pow(2) / 3400 * 29 + rng.gen_range(0..29);
        writeln!(users, "{u}::{gender}::{age}::{occupation}::{zip:05}")?;
    }
    Ok(users)
}

/// `movies.dat` (in UTF-8), and each movie's rating bias.
fn movies_dat(rng: &mut ChaCha8Rng, size: &Ml1mSize, unit: &Normal<f64>) -> Result<(String, Vec<f64>)> {
    let mut movies = String::new();
    let mut item_bias = Vec::with_capacity(size.items);
    for i in 1..=size.items {
        let year = if rng.gen_bool(0.8) { rng.gen_range(1919..=1997) } else { rng.gen_range(1998..=2000) };
        let count = rng.gen_range(1..=3);
        let genres: Vec<&str> = index::sample(rng, GENRES.len(), count).into_iter().map(|g| GENRES[g]).collect();
        // Some titles carry Latin-1 letters and commas, as ML-1M's do.
        let title = match i % 9 {
            0 => format!("Misérables {i}, Les ({year})"),
            3 => format!("Crème {i} à la Garçon ({year})"),
            _ => format!("Movie {i}, The ({year})"),
        };
        writeln!(movies, "{i}::{title}::{}", genres.join("|"))?;
        item_bias.push(0.5 * unit.sample(rng));
    }
    Ok((movies, item_bias))
}

/// The movies each user rates: long-tailed counts, every movie rated at least once.
fn rated_movies(rng: &mut ChaCha8Rng, size: &Ml1mSize) -> Vec<Vec<u32>> {
    let counts = user_counts(rng, size);
    // Positions below `size.items` <= `size.ratings` <= MAX_COUNT (checked by `write_ml1m`).
    let mut lists: Vec<Vec<u32>> =
        counts.iter().map(|&n| index::sample(rng, size.items, n).into_iter().map(|i| i as u32).collect()).collect();
    // Every movie rated at least once: swap an uncovered movie into a list whose movie is
    // covered elsewhere.
    let mut covered = vec![0usize; size.items];
    for list in &lists {
        for &i in list {
            covered[i as usize] += 1;
        }
    }
    for item in 0..size.items {
        while covered[item] == 0 {
            let u = rng.gen_range(0..size.users);
            let k = rng.gen_range(0..lists[u].len());
            let old = lists[u][k] as usize;
            if covered[old] > 1 && !lists[u].contains(&(item as u32)) {
                lists[u][k] = item as u32;
                covered[old] -= 1;
                covered[item] += 1;
            }
        }
    }
    lists
}

/// `ratings.dat`, streamed to `out`: a user bias plus the movie's bias plus noise, at
/// increasing timestamps.
fn ratings_dat(
    out: &mut dyn std::io::Write,
    rng: &mut ChaCha8Rng,
    lists: &[Vec<u32>],
    item_bias: &[f64],
    unit: &Normal<f64>,
) -> Result<()> {
    for (u, list) in lists.iter().enumerate() {
        let bias = 0.6 * unit.sample(rng);
        let mut time = 956_703_932 + rng.gen_range(0..90_000_000u64);
        for &i in list {
            let value = (3.6f64 + bias + item_bias[i as usize] + 0.9 * unit.sample(rng)).round().clamp(1.0, 5.0) as u8;
            time += rng.gen_range(1..600);
            writeln!(out, "{}::{}::{value}::{time}", u + 1, i + 1)?;
        }
    }
    Ok(())
}
