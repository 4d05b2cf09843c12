//! The papers' protocols: which users are tasks, which part (train / validation / test) each
//! belongs to, and which of a user's ratings are support and which query. Every protocol is
//! seeded and written to a split file, so every method is compared on identical users and items.
//!
//! # Design
//! A [`Split`] is three lists of [`Task`]s (train, valid, test); it is what training and
//! evaluation consume, whatever the protocol. A split file is CSV,
//! `part,user_id,item_id,role,rating`, one row per rating in task order; the same data and seed
//! write the same bytes.
//!
//! - [`Split::new`]: every user with at least 2 ratings, users 7:1:2, ratings 80/20. It is the
//!   PAML protocol without the activity cut and the feature filter ([`PamlConfig::every_user`]).
//! - [`Split::paml`] (the PAML paper): rank users by number of ratings, keep the 80% least active as
//!   cold-start users; drop users with a feature problem (age below 10 or above 100, garbled
//!   location: [`crate::data::DataInfo::user_problem`]) and users with fewer than 2 ratings;
//!   split the rest 7:1:2 at random; per user 80% support / 20% query at random. The users
//!   left out as too active are the split's `warm` part (existing users, cut 80/20 the same way
//!   with a generator of their own): never evaluated, and learned from only where the trainer
//!   is told to ([`Split::with_warm_users`], `--warm-users`).
//! - [`melu`] (MeLU, followed by the HML paper): items released up to 1997 are existing, from 1998
//!   new (items without a known year count as existing); 80% of users, at random, are existing,
//!   the rest new. A state pairs a user set with an item set: warm (existing users × existing
//!   items), user-cold (new × existing), item-cold (existing × new), user-and-item-cold (new ×
//!   new). In each state a user's ratings of that state's items form a task when there are 13 to
//!   100 of them: 10 random ratings are the query, the rest the support.
//!
//!   The four states are expressed as four ordinary [`Split`]s that share their train and valid
//!   parts: the warm tasks of the existing users, who are divided 7:1 into training and
//!   validation users (so users are 7:1:2 overall, as in the PAML protocol). Each state's test
//!   part holds that state's tasks: the new users' for user-cold and user-and-item-cold, the
//!   training users' new-item tasks for item-cold (those items never appear in training), and
//!   for warm the training users' own warm tasks (in-sample, as MeLU's Table 2 reports it).
//!   `trainer data split --protocol melu --out DIR` writes `DIR/<state>.csv`, one split file per
//!   state, each usable on its own.
//!
//! Major/minor labels ([`crate::data::groups`]) are computed over all users of the dataset and
//! travel with the users, not the split.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{pair_key, Dataset, Format, PairMap, Rating};

/// Which part of the user split a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Meta-training users.
    Train,
    /// Validation users (model selection).
    Valid,
    /// Held-out test users (reported metrics).
    Test,
    /// Existing users: those a protocol leaves out of its cold-start users (the PAML protocol's
    /// most active share). Never evaluated; with `--warm-users` the trainer learns from them.
    Warm,
}

impl Part {
    /// Every part, in split-file order.
    const ALL: [Part; 4] = [Part::Train, Part::Valid, Part::Test, Part::Warm];

    fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
            Part::Warm => "warm",
        }
    }

    fn parse(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The columns of a split file.
const SPLIT_HEADER: [&str; 5] = ["part", "user_id", "item_id", "role", "rating"];

/// One user as a task: support ratings to adapt on, query ratings to predict.
#[derive(Debug, Clone)]
pub struct Task {
    /// Index into [`Dataset::users`].
    pub user: u32,
    /// Ratings the device knows.
    pub support: Vec<Rating>,
    /// Ratings to predict.
    pub query: Vec<Rating>,
}

/// The split of a dataset into tasks.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// Meta-training tasks.
    pub train: Vec<Task>,
    /// Validation tasks.
    pub valid: Vec<Task>,
    /// Test tasks.
    pub test: Vec<Task>,
    /// Existing users' tasks (cut like the others), outside the cold-start users: never
    /// evaluated, used for training only with `--warm-users` ([`Split::with_warm_users`]).
    pub warm: Vec<Task>,
}

/// The users an evaluation reads (`--eval-on`): the test users give the figures to report; the
/// validation users are the ones to choose settings on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalOn {
    /// The split's test users.
    Test,
    /// The split's validation users.
    Valid,
}

impl EvalOn {
    /// How tables and reports name them.
    pub fn users(self) -> &'static str {
        match self {
            EvalOn::Test => "test",
            EvalOn::Valid => "validation",
        }
    }
}

/// Settings of the PAML protocol (the PAML paper, Experimental Setup).
#[derive(Debug, Clone, clap::Args)]
pub struct PamlConfig {
    /// Share of users, least active first, kept as cold-start users.
    #[arg(long, default_value_t = 0.8, allow_hyphen_values = true)]
    pub cold_share: f64,
    /// Train and validation shares of the kept users (test gets the rest).
    #[arg(long, value_delimiter = ',', default_value = "0.7,0.1", allow_hyphen_values = true)]
    pub train_valid: Vec<f64>,
    /// Users with fewer ratings are dropped.
    #[arg(long, default_value_t = 2, value_parser = crate::config::count_or_zero, allow_hyphen_values = true)]
    pub min_ratings: usize,
    /// Share of a user's ratings in the support set.
    #[arg(long, default_value_t = 0.8, allow_hyphen_values = true)]
    pub support_share: f64,
    /// Keep users whose features are invalid (age outside 10..100, garbled location).
    #[arg(long)]
    pub keep_invalid_features: bool,
}

impl Default for PamlConfig {
    fn default() -> PamlConfig {
        PamlConfig {
            cold_share: 0.8,
            train_valid: vec![0.7, 0.1],
            min_ratings: 2,
            support_share: 0.8,
            keep_invalid_features: false,
        }
    }
}

impl PamlConfig {
    /// Every user, no feature filter: the split [`Split::new`] makes.
    pub fn every_user() -> PamlConfig {
        PamlConfig { cold_share: 1.0, keep_invalid_features: true, ..PamlConfig::default() }
    }

    fn check(&self) -> Result<(f64, f64)> {
        let [train, valid] = self.train_valid[..] else { bail!("--train-valid takes two shares, e.g. 0.7,0.1") };
        ensure!(self.cold_share > 0.0 && self.cold_share <= 1.0, "--cold-share must be in (0, 1]");
        ensure!(
            train > 0.0 && valid > 0.0 && train + valid < 1.0,
            "--train-valid shares must be above 0 (validation users select the epoch) and leave room for test"
        );
        ensure!(self.support_share > 0.0 && self.support_share < 1.0, "--support-share must be in (0, 1)");
        ensure!(self.min_ratings >= 2, "--min-ratings must be at least 2 (one support, one query)");
        Ok((train, valid))
    }
}

/// What a protocol kept and dropped, step by step (for the command line and the run notes).
#[derive(Debug, Clone, Default)]
pub struct ProtocolReport {
    /// `(step, count)` lines in order.
    pub steps: Vec<(String, usize)>,
}

impl core::fmt::Display for ProtocolReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (step, count) in &self.steps {
            writeln!(f, "  {step}: {count}")?;
        }
        Ok(())
    }
}

/// Shuffles and cuts `ratings` into (support, query) with `support` ratings in the support set.
fn cut(mut ratings: Vec<Rating>, support: usize, rng: &mut ChaCha8Rng) -> (Vec<Rating>, Vec<Rating>) {
    ratings.shuffle(rng);
    let query = ratings.split_off(support);
    (ratings, query)
}

/// [`cut`] with `share` of the ratings (rounded, at least one on each side) in the support set.
fn cut_share(ratings: Vec<Rating>, share: f64, rng: &mut ChaCha8Rng) -> (Vec<Rating>, Vec<Rating>) {
    let n_support = ((ratings.len() as f64 * share).round() as usize).clamp(1, ratings.len() - 1);
    cut(ratings, n_support, rng)
}

/// The generator of the warm users' cuts: their own, so the other users' split is what it was
/// before the warm part existed.
fn warm_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x5741_524D)
}

impl Split {
    /// The tasks `on` names.
    pub fn evaluated(&self, on: EvalOn) -> &[Task] {
        match on {
            EvalOn::Test => &self.test,
            EvalOn::Valid => &self.valid,
        }
    }

    /// Splits every user with at least 2 ratings 7:1:2 and each user's ratings 80/20.
    pub fn new(data: &Dataset, seed: u64) -> Result<Split> {
        Ok(Split::paml(data, &PamlConfig::every_user(), seed)?.0)
    }

    /// The PAML protocol (see the module documentation).
    pub fn paml(data: &Dataset, config: &PamlConfig, seed: u64) -> Result<(Split, ProtocolReport)> {
        let (train_share, valid_share) = config.check()?;
        let mut report = ProtocolReport::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let by_user = data.ratings_by_user();
        report.steps.push(("users".into(), by_user.len()));

        let mut by_activity: Vec<u32> = (0..by_user.len() as u32).collect();
        by_activity.sort_by_key(|&u| (by_user[u as usize].len(), u));
        let cold = ((by_user.len() as f64 * config.cold_share).round() as usize).min(by_user.len());
        let mut cold_start = vec![false; by_user.len()];
        for &u in &by_activity[..cold] {
            cold_start[u as usize] = true;
        }
        if config.cold_share < 1.0 {
            let most = by_activity[..cold].last().map_or(0, |&u| by_user[u as usize].len());
            report.steps.push((
                format!("cold-start users ({:.0}% least active, <= {most} ratings)", 100.0 * config.cold_share),
                cold,
            ));
        }
        let mut problems = 0;
        let mut few = 0;
        let mut users: Vec<(u32, Vec<Rating>)> = Vec::new();
        let mut existing: Vec<(u32, Vec<Rating>)> = Vec::new();
        for (u, ratings) in by_user.into_iter().enumerate() {
            if !config.keep_invalid_features && data.info.user_problem.get(u).is_some_and(Option::is_some) {
                problems += usize::from(cold_start[u]);
            } else if ratings.len() < config.min_ratings {
                few += usize::from(cold_start[u]);
            } else if cold_start[u] {
                users.push((u as u32, ratings));
            } else {
                existing.push((u as u32, ratings));
            }
        }
        if !config.keep_invalid_features {
            report.steps.push(("dropped: invalid features".into(), problems));
        }
        report.steps.push((format!("dropped: fewer than {} ratings", config.min_ratings), few));
        if users.len() < 10 {
            bail!("only {} users are left after the PAML protocol's filters; need at least 10 to split", users.len());
        }
        users.shuffle(&mut rng);
        let n = users.len();
        let n_train = (n as f64 * train_share).round() as usize;
        let n_valid = if valid_share > 0.0 { ((n as f64 * valid_share).round() as usize).max(1) } else { 0 };
        let mut split = Split::default();
        for (position, (user, ratings)) in users.into_iter().enumerate() {
            let (support, query) = cut_share(ratings, config.support_share, &mut rng);
            let task = Task { user, support, query };
            match position {
                p if p < n_train => split.train.push(task),
                p if p < n_train + n_valid => split.valid.push(task),
                _ => split.test.push(task),
            }
        }
        let mut rng = warm_rng(seed);
        for (user, ratings) in existing {
            let (support, query) = cut_share(ratings, config.support_share, &mut rng);
            split.warm.push(Task { user, support, query });
        }
        for part in Part::ALL {
            report.steps.push((format!("{} users", part.name()), split.part(part).len()));
        }
        Ok((split, report))
    }

    /// Tasks of one part.
    pub fn part(&self, part: Part) -> &[Task] {
        match part {
            Part::Train => &self.train,
            Part::Valid => &self.valid,
            Part::Test => &self.test,
            Part::Warm => &self.warm,
        }
    }

    /// The split the trainer and the baselines learn from: with `use_warm`, the existing users'
    /// tasks join the training tasks (after them, so the cold-start users keep their order);
    /// without it they are set aside. Either way the warm part is empty afterwards.
    pub fn with_warm_users(mut self, use_warm: bool) -> Split {
        let warm = core::mem::take(&mut self.warm);
        if use_warm {
            self.train.extend(warm);
        }
        self
    }

    /// The split file's bytes: `part,user_id,item_id,role,rating` rows in task order.
    pub fn to_csv(&self, data: &Dataset) -> String {
        let mut out = Vec::new();
        self.write_csv(data, &mut out).expect("writing to memory cannot fail");
        String::from_utf8(out).expect("ids are strings")
    }

    /// Streams the split file's rows to `out` (a split of a large dataset is never held as text).
    fn write_csv(&self, data: &Dataset, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(out, "{}", SPLIT_HEADER.join(","))?;
        for part in Part::ALL {
            for task in self.part(part) {
                for (role, ratings) in [("support", &task.support), ("query", &task.query)] {
                    for r in ratings {
                        writeln!(
                            out,
                            "{},{},{},{role},{}",
                            part.name(),
                            csv_field(&data.users[r.user as usize].id),
                            csv_field(&data.items[r.item as usize].id),
                            r.value
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the split file atomically, streamed.
    pub fn write(&self, data: &Dataset, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic_with(path, |out| Ok(self.write_csv(data, out)?))
    }

    /// Reads a split written by [`Split::write`] against the same dataset.
    pub fn read(data: &Dataset, path: &Path) -> Result<Split> {
        let users: std::collections::HashMap<&str, u32> =
            data.users.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();
        let items: std::collections::HashMap<&str, u32> =
            data.items.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();
        // Each row must be a rating of this dataset, as `trainer data split` wrote it.
        let ratings: PairMap<f32> = data.ratings.iter().map(|r| (pair_key(r), r.value)).collect();
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
        let header = reader.headers().with_context(|| format!("{}:1: malformed header", path.display()))?;
        if header.iter().ne(SPLIT_HEADER) {
            bail!(
                "{}:1: header is '{}', expected '{}' (a split file written by `trainer data split`)",
                path.display(),
                header.iter().collect::<Vec<_>>().join(","),
                SPLIT_HEADER.join(",")
            );
        }
        let mut split = Split::default();
        let mut record = csv::StringRecord::new();
        for line in 2usize.. {
            // One record buffer for every row: a large split has tens of millions.
            if !reader.read_record(&mut record).with_context(|| format!("{}:{line}: malformed row", path.display()))? {
                break;
            }
            let get = |i: usize| record.get(i).unwrap_or("");
            let part =
                Part::parse(get(0)).with_context(|| format!("{}:{line}: bad part '{}'", path.display(), get(0)))?;
            let user = *users
                .get(get(1))
                .with_context(|| format!("{}:{line}: user '{}' not in dataset", path.display(), get(1)))?;
            let item = *items
                .get(get(2))
                .with_context(|| format!("{}:{line}: item '{}' not in dataset", path.display(), get(2)))?;
            let value: f32 =
                get(4).parse().with_context(|| format!("{}:{line}: bad rating '{}'", path.display(), get(4)))?;
            match ratings.get(&pair_key(&Rating { user, item, value })) {
                Some(&rated) if rated == value => {}
                Some(rated) => bail!(
                    "{}:{line}: user '{}' rated item '{}' {rated} in this dataset, not {} (is the split of another \
                     dataset?)",
                    path.display(),
                    get(1),
                    get(2),
                    get(4)
                ),
                None => bail!(
                    "{}:{line}: user '{}' did not rate item '{}' in this dataset (is the split of another dataset?)",
                    path.display(),
                    get(1),
                    get(2)
                ),
            }
            let tasks = match part {
                Part::Train => &mut split.train,
                Part::Valid => &mut split.valid,
                Part::Test => &mut split.test,
                Part::Warm => &mut split.warm,
            };
            if tasks.last().map(|t| t.user) != Some(user) {
                tasks.push(Task { user, support: Vec::new(), query: Vec::new() });
            }
            let Some(task) = tasks.last_mut() else { unreachable!("a task was pushed above") };
            let rating = Rating { user, item, value };
            match get(3) {
                "support" => task.support.push(rating),
                "query" => task.query.push(rating),
                other => bail!("{}:{line}: bad role '{other}'", path.display()),
            }
        }
        for part in Part::ALL {
            if let Some(task) = split.part(part).iter().find(|t| t.query.is_empty()) {
                bail!(
                    "{}: {} user '{}' has no query rating (the query ratings are what a task is scored on)",
                    path.display(),
                    part.name(),
                    data.users[task.user as usize].id
                );
            }
        }
        Ok(split)
    }
}

/// Quotes an id that contains a comma, quote or line break (CSV).
pub(crate) fn csv_field(id: &str) -> std::borrow::Cow<'_, str> {
    if id.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", id.replace('"', "\"\"")).into()
    } else {
        id.into()
    }
}

/// The four states of the MeLU protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Existing users × existing items.
    Warm,
    /// New users × existing items.
    UserCold,
    /// Existing users × new items.
    ItemCold,
    /// New users × new items.
    UserItemCold,
}

impl State {
    /// All states.
    pub const ALL: [State; 4] = [State::Warm, State::UserCold, State::ItemCold, State::UserItemCold];

    /// File stem and display name.
    pub fn name(self) -> &'static str {
        match self {
            State::Warm => "warm",
            State::UserCold => "user_cold",
            State::ItemCold => "item_cold",
            State::UserItemCold => "user_item_cold",
        }
    }
}

/// Settings of the MeLU protocol.
#[derive(Debug, Clone, clap::Args)]
pub struct MeluConfig {
    /// Fewest ratings a user needs in a state to be a task there.
    #[arg(long, default_value_t = 13, value_parser = crate::config::count_or_zero, allow_hyphen_values = true)]
    pub min_ratings: usize,
    /// Most ratings a user may have in a state to be a task there.
    #[arg(long, default_value_t = 100, value_parser = crate::config::count_or_zero, allow_hyphen_values = true)]
    pub max_ratings: usize,
    /// Query ratings per task.
    #[arg(long, default_value_t = 10, value_parser = crate::config::count_or_zero, allow_hyphen_values = true)]
    pub query: usize,
    /// Share of users that are existing users.
    #[arg(long, default_value_t = 0.8, allow_hyphen_values = true)]
    pub existing_users: f64,
    /// Share of existing users used for validation.
    #[arg(long, default_value_t = 0.125, allow_hyphen_values = true)]
    pub valid_share: f64,
    /// Last release year of an existing item.
    #[arg(long, default_value_t = 1997, allow_hyphen_values = true)]
    pub last_existing_year: i32,
}

impl Default for MeluConfig {
    fn default() -> MeluConfig {
        MeluConfig {
            min_ratings: 13,
            max_ratings: 100,
            query: 10,
            existing_users: 0.8,
            valid_share: 0.125,
            last_existing_year: 1997,
        }
    }
}

/// The MeLU protocol's four states, each a complete [`Split`] (see the module documentation).
#[derive(Debug, Clone)]
pub struct MeluSplit {
    /// One split per state, in [`State::ALL`] order.
    pub states: Vec<(State, Split)>,
}

impl MeluSplit {
    /// The split of one state.
    pub fn state(&self, state: State) -> &Split {
        &self.states.iter().find(|(s, _)| *s == state).expect("every state is present").1
    }

    /// Writes `dir/<state>.csv` for every state.
    pub fn write(&self, data: &Dataset, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (state, split) in &self.states {
            split.write(data, &dir.join(format!("{}.csv", state.name())))?;
        }
        Ok(())
    }
}

/// The MeLU protocol (see the module documentation).
pub fn melu(data: &Dataset, config: &MeluConfig, seed: u64) -> Result<(MeluSplit, ProtocolReport)> {
    ensure!(config.query >= 1 && config.min_ratings > config.query, "--min-ratings must exceed --query");
    ensure!(config.max_ratings >= config.min_ratings, "--max-ratings must be at least --min-ratings");
    ensure!(config.existing_users > 0.0 && config.existing_users < 1.0, "--existing-users must be in (0, 1)");
    ensure!(config.valid_share > 0.0 && config.valid_share < 1.0, "--valid-share must be in (0, 1)");
    let mut report = ProtocolReport::default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let new_item = melu_new_items(data, config, &mut report)?;
    let (users, role) = melu_user_roles(data, config, &mut rng, &mut report);
    let by_user = data.ratings_by_user();
    let mut tasks = melu_state_tasks(&by_user, config, &users, &role, &new_item, &mut rng);
    let (train, valid) = melu_warm_train_valid(&mut tasks, config, &mut report)?;
    let warm = melu_warm_users(&by_user, config, &role, &new_item, seed);
    let window = format!("{}..{}", config.min_ratings, config.max_ratings);
    report.steps.push((format!("warm users (training users outside {window} ratings)"), warm.len()));
    let mut states = Vec::new();
    for state in State::ALL {
        let test: Vec<Task> = match state {
            State::Warm => train.clone(),
            // Item-cold is evaluated on the training users (their new-item ratings).
            State::ItemCold => tasks[state as usize].iter().filter(|(r, _)| *r == 0).map(|(_, t)| t.clone()).collect(),
            _ => tasks[state as usize].iter().map(|(_, t)| t.clone()).collect(),
        };
        report.steps.push((format!("{} test tasks", state.name()), test.len()));
        if test.is_empty() {
            bail!(
                "the MeLU protocol's {} state has no task (no user has {}..{} ratings there)",
                state.name(),
                config.min_ratings,
                config.max_ratings
            );
        }
        states.push((state, Split { train: train.clone(), valid: valid.clone(), test, warm: warm.clone() }));
    }
    Ok((MeluSplit { states }, report))
}

/// Which items are new (released after `--last-existing-year`); an error when none is, as the
/// item-cold states would be empty.
fn melu_new_items(data: &Dataset, config: &MeluConfig, report: &mut ProtocolReport) -> Result<Vec<bool>> {
    let new_item: Vec<bool> = (0..data.items.len())
        .map(|i| data.info.item_year.get(i).copied().flatten().is_some_and(|y| y > config.last_existing_year))
        .collect();
    let new_items = new_item.iter().filter(|&&n| n).count();
    report.steps.push((
        format!("existing items (up to {} or unknown year)", config.last_existing_year),
        data.items.len() - new_items,
    ));
    report.steps.push(("new items".into(), new_items));
    if new_items == 0 {
        let known = data.info.item_year.iter().filter(|y| y.is_some()).count();
        let why = if known > 0 {
            format!(
                "the {known} items with a known year are all from {} or earlier (--last-existing-year moves the boundary)",
                config.last_existing_year
            )
        } else if matches!(data.info.format, Some(Format::Plain) | None) {
            "no item has a known release year: a plain dataset declares its items' year column in schema.toml, \
             `[items] year = \"COLUMN\"` (see the README's \"Dataset layout\")"
                .to_string()
        } else {
            "no item has a known release year".to_string()
        };
        bail!("no item is released after {}: the item-cold states would be empty ({why})", config.last_existing_year);
    }
    Ok(new_item)
}

/// The users in shuffled order, and each user's role: 0 = train, 1 = valid, 2 = new.
fn melu_user_roles(
    data: &Dataset,
    config: &MeluConfig,
    rng: &mut ChaCha8Rng,
    report: &mut ProtocolReport,
) -> (Vec<u32>, Vec<u8>) {
    let mut users: Vec<u32> = (0..data.users.len() as u32).collect();
    users.shuffle(rng);
    let n_existing = (users.len() as f64 * config.existing_users).round() as usize;
    let n_valid = ((n_existing as f64 * config.valid_share).round() as usize).max(1).min(n_existing);
    // 0 = train, 1 = valid, 2 = new.
    let mut role = vec![2u8; data.users.len()];
    for (position, &u) in users.iter().enumerate() {
        role[u as usize] = match position {
            p if p < n_existing - n_valid => 0,
            p if p < n_existing => 1,
            _ => 2,
        };
    }
    report.steps.push(("existing users (train + valid)".into(), n_existing));
    report.steps.push(("new users".into(), users.len() - n_existing));
    (users, role)
}

/// Per state (indexed by [`State`]), the tasks of the users with `--min-ratings..=--max-ratings`
/// ratings there, each with its user's role.
fn melu_state_tasks(
    by_user: &[Vec<Rating>],
    config: &MeluConfig,
    users: &[u32],
    role: &[u8],
    new_item: &[bool],
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<(u8, Task)>> {
    let mut tasks: Vec<Vec<(u8, Task)>> = vec![Vec::new(); State::ALL.len()];
    // Users in shuffled order, so the task order within a part is random but seeded.
    for &u in users {
        let user_new = role[u as usize] == 2;
        let (existing, new): (Vec<Rating>, Vec<Rating>) =
            by_user[u as usize].iter().partition(|r| !new_item[r.item as usize]);
        for (item_new, ratings) in [(false, existing), (true, new)] {
            let state = match (user_new, item_new) {
                (false, false) => State::Warm,
                (true, false) => State::UserCold,
                (false, true) => State::ItemCold,
                (true, true) => State::UserItemCold,
            };
            if !(config.min_ratings..=config.max_ratings).contains(&ratings.len()) {
                continue;
            }
            let support = ratings.len() - config.query;
            let (support, query) = cut(ratings, support, rng);
            tasks[state as usize].push((role[u as usize], Task { user: u, support, query }));
        }
    }
    tasks
}

/// The existing users' part that the protocol's rating-count window leaves out: every training
/// user (role 0) with at least 2 but not `--min-ratings..=--max-ratings` ratings of existing
/// items, those ratings cut like the PAML protocol's (80/20, a generator of its own, so the
/// states' tasks are what they were without it). New items never enter it.
fn melu_warm_users(
    by_user: &[Vec<Rating>],
    config: &MeluConfig,
    role: &[u8],
    new_item: &[bool],
    seed: u64,
) -> Vec<Task> {
    let mut rng = warm_rng(seed);
    let mut warm = Vec::new();
    for (u, ratings) in by_user.iter().enumerate() {
        if role[u] != 0 {
            continue;
        }
        let existing: Vec<Rating> = ratings.iter().filter(|r| !new_item[r.item as usize]).copied().collect();
        if existing.len() < 2 || (config.min_ratings..=config.max_ratings).contains(&existing.len()) {
            continue;
        }
        let (support, query) = cut_share(existing, PamlConfig::default().support_share, &mut rng);
        warm.push(Task { user: u as u32, support, query });
    }
    warm
}

/// The warm tasks, taken out of `tasks`, as the training and validation tasks; an error when
/// either is empty.
fn melu_warm_train_valid(
    tasks: &mut [Vec<(u8, Task)>],
    config: &MeluConfig,
    report: &mut ProtocolReport,
) -> Result<(Vec<Task>, Vec<Task>)> {
    let warm = core::mem::take(&mut tasks[State::Warm as usize]);
    let (train, valid): (Vec<_>, Vec<_>) = warm.into_iter().partition(|(r, _)| *r == 0);
    let train: Vec<Task> = train.into_iter().map(|(_, t)| t).collect();
    let valid: Vec<Task> = valid.into_iter().map(|(_, t)| t).collect();
    report.steps.push((
        format!("warm tasks ({}..{} ratings): train users", config.min_ratings, config.max_ratings),
        train.len(),
    ));
    report.steps.push(("warm tasks: validation users".into(), valid.len()));
    if train.is_empty() || valid.is_empty() {
        bail!(
            "the MeLU protocol left no warm training or validation task (users need {}..{} ratings of existing items)",
            config.min_ratings,
            config.max_ratings
        );
    }
    Ok((train, valid))
}
