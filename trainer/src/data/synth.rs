//! A seeded synthetic cold-start dataset with an imbalanced population (the PAML paper, Fig. 1 and
//! Lemma 1): a large "major" group and a small "minor" group whose profiles and tastes differ.
//!
//! Rating model: `r = clip(round(3.3 + b_u + q_i + taste_u · genres_i + noise), 1, 5)` where
//! `taste_u` = the group's genre taste + a personal deviation. The group is visible in the
//! profile (so a model can learn it); the personal part and `b_u` show only in the user's own
//! ratings (so adaptation has something to do). Item quality `q_i` follows its features.

use core::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::schema::SCHEMA_FILE;

/// Generator settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthConfig {
    /// Random seed; the same seed writes the same bytes.
    #[arg(long, default_value_t = 7, value_parser = crate::config::seed, allow_hyphen_values = true)]
    pub seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 1500, value_parser = |t: &str| SIZE.parse::<usize>(t), allow_hyphen_values = true)]
    pub users: usize,
    /// Number of items.
    #[arg(long, default_value_t = 500, value_parser = |t: &str| SIZE.parse::<usize>(t), allow_hyphen_values = true)]
    pub items: usize,
    /// Share of users in the minor group.
    #[arg(long, default_value_t = 0.15, allow_hyphen_values = true)]
    pub minor_share: f64,
    /// Fewest ratings per user.
    #[arg(long, default_value_t = 10, value_parser = |t: &str| SIZE.parse::<usize>(t), allow_hyphen_values = true)]
    pub min_ratings: usize,
    /// Most ratings per user.
    #[arg(long, default_value_t = 60, value_parser = |t: &str| SIZE.parse::<usize>(t), allow_hyphen_values = true)]
    pub max_ratings: usize,
}

/// --users, --items, --min-ratings and --max-ratings (the dataset is built in memory).
const SIZE: crate::config::Whole = crate::config::Whole { what: "count", min: 0, max: 10_000_000, why: "" };
/// Most ratings the generator writes (--users × --max-ratings): a hundred MovieLens-1Ms.
const MAX_RATINGS: usize = 100_000_000;

const GENRES: [&str; 8] = ["action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "family"];
const OCCUPATIONS: usize = 12;
const REGIONS: usize = 10;
/// Genre taste of the major group; the minor group's is mostly the opposite.
const MAJOR_TASTE: [f64; 8] = [1.0, 0.6, -0.2, 0.8, -0.6, 0.9, -1.0, -0.4];
const MINOR_TASTE: [f64; 8] = [-0.9, -0.2, 0.9, -1.0, 0.8, -0.7, 1.0, 0.5];

const SCHEMA: &str = r#"# metarec dataset schema (written by `trainer data synth`)
rating_min = 1
rating_max = 5

[users]
file = "users.csv"
id = "user_id"
group = "group"
fields = [
  { name = "gender", kind = "categorical" },
  { name = "age", kind = "numeric", bounds = [18, 25, 35, 45, 56] },
  { name = "occupation", kind = "categorical" },
  { name = "region", kind = "categorical" },
]

[items]
file = "items.csv"
id = "item_id"
year = "year"
fields = [
  { name = "genres", kind = "multi", separator = "|" },
  { name = "year", kind = "numeric", bounds = [1970, 1980, 1990, 2000, 2010] },
]

[ratings]
file = "ratings.csv"
user = "user_id"
item = "item_id"
rating = "rating"
"#;

/// Writes `schema.toml`, `users.csv`, `items.csv` and `ratings.csv` into `dir`.
pub fn generate(config: &SynthConfig, dir: &Path) -> Result<()> {
    check_config(config)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let unit = Normal::new(0.0, 1.0).expect("valid normal");
    let items = synth_items(config, &mut rng, &unit)?;

    let mut users_csv = String::from("user_id,gender,age,occupation,region,group\n");
    let mut ratings_csv = String::from("user_id,item_id,rating\n");
    let minor_count = ((config.users as f64) * config.minor_share).round() as usize;
    let mut is_minor: Vec<bool> = (0..config.users).map(|u| u < minor_count).collect();
    is_minor.shuffle(&mut rng);
    let mut order: Vec<usize> = (0..config.items).collect();
    for (u, &minor) in is_minor.iter().enumerate() {
        let (gender, age, occupation, region) = user_features(minor, &mut rng);
        let group = if minor { "minor" } else { "major" };
        writeln!(users_csv, "u{u:05},{gender},{age},occ{occupation:02},r{region},{group}")?;
        write_user_ratings(&mut ratings_csv, config, &items, u, minor, &mut order, &mut rng)?;
    }

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        (SCHEMA_FILE, SCHEMA),
        ("users.csv", users_csv.as_str()),
        ("items.csv", items.csv.as_str()),
        ("ratings.csv", ratings_csv.as_str()),
    ] {
        crate::fsutil::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// The settings' bounds: enough users and items, a valid ratings range, a minor share of at
/// most half, and not too many ratings in all.
fn check_config(config: &SynthConfig) -> Result<()> {
    anyhow::ensure!(config.users >= 10 && config.items >= 10, "need at least 10 users and 10 items");
    anyhow::ensure!(
        2 <= config.min_ratings && config.min_ratings <= config.max_ratings && config.max_ratings <= config.items,
        "need 2 <= --min-ratings <= --max-ratings <= --items"
    );
    anyhow::ensure!((0.0..=0.5).contains(&config.minor_share), "--minor-share must be in [0, 0.5]");
    anyhow::ensure!(
        config.users.checked_mul(config.max_ratings).is_some_and(|n| n <= MAX_RATINGS),
        "--users {} × --max-ratings {} is more than {MAX_RATINGS} ratings",
        config.users,
        config.max_ratings
    );
    Ok(())
}

/// The generated items: `items.csv`, and each item's genres and latent quality.
struct SynthItems {
    csv: String,
    genres: Vec<Vec<usize>>,
    quality: Vec<f64>,
}

fn synth_items(config: &SynthConfig, rng: &mut ChaCha8Rng, unit: &Normal<f64>) -> Result<SynthItems> {
    let mut items_csv = String::from("item_id,title,genres,year\n");
    let mut item_genres = Vec::with_capacity(config.items);
    let mut item_quality = Vec::with_capacity(config.items);
    for i in 0..config.items {
        let count = rng.gen_range(1..=3);
        let mut genres: Vec<usize> = (0..GENRES.len()).collect();
        genres.shuffle(rng);
        genres.truncate(count);
        genres.sort_unstable();
        let year: i32 = rng.gen_range(1960..=2020);
        // Quality follows the features (newer and multi-genre items rate a little higher).
        let quality = 0.35 * f64::from(year - 1990) / 30.0 + 0.1 * (count as f64 - 2.0) + 0.1 * unit.sample(rng);
        let names: Vec<&str> = genres.iter().map(|&g| GENRES[g]).collect();
        writeln!(items_csv, "i{i:04},\"Item {i}, {year}\",{},{year}", names.join("|"))?;
        item_genres.push(genres);
        item_quality.push(quality);
    }
    Ok(SynthItems { csv: items_csv, genres: item_genres, quality: item_quality })
}

/// A user's gender, age, occupation and region, drawn from their group's profile.
fn user_features(minor: bool, rng: &mut ChaCha8Rng) -> (&'static str, i32, usize, usize) {
    if minor {
        (
            if rng.gen_bool(0.7) { "F" } else { "M" },
            rng.gen_range(45..=70),
            rng.gen_range(6..OCCUPATIONS),
            rng.gen_range(5..REGIONS),
        )
    } else {
        (
            if rng.gen_bool(0.8) { "M" } else { "F" },
            rng.gen_range(18..=38),
            if rng.gen_bool(0.85) { rng.gen_range(0..3) } else { rng.gen_range(0..OCCUPATIONS) },
            if rng.gen_bool(0.85) { rng.gen_range(0..3) } else { rng.gen_range(0..REGIONS) },
        )
    }
}

/// User `u`'s ratings, into `ratings_csv`: a taste around their group's, a bias, and a
/// long-tailed number of items drawn by reshuffling `order`.
fn write_user_ratings(
    ratings_csv: &mut String,
    config: &SynthConfig,
    items: &SynthItems,
    u: usize,
    minor: bool,
    order: &mut [usize],
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let unit = Normal::new(0.0, 1.0).expect("valid normal");
    let base = if minor { &MINOR_TASTE } else { &MAJOR_TASTE };
    let taste: Vec<f64> = base.iter().map(|t| t + 0.6 * unit.sample(rng)).collect();
    let bias = 0.5 * unit.sample(rng);
    // Activity is long-tailed: most users rate few items.
    let span = (config.max_ratings - config.min_ratings) as f64;
    let count = config.min_ratings + (span * rng.gen::<f64>().powi(3)).round() as usize;
    order.shuffle(rng);
    for &i in &order[..count] {
        let genres = &items.genres[i];
        let affinity = genres.iter().map(|&g| taste[g]).sum::<f64>() / genres.len() as f64;
        let raw = 3.3 + bias + items.quality[i] + affinity + 0.35 * unit.sample(rng);
        let rating = raw.round().clamp(1.0, 5.0) as i32;
        writeln!(ratings_csv, "u{u:05},i{i:04},{rating}")?;
    }
    Ok(())
}
