//! Seeded user split (train / validation / test, 7:1:2) and per-user support/query split
//! (80/20), written to a CSV so every method and every later command sees the same tasks.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Rating};

/// Which part of the user split a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Meta-training users.
    Train,
    /// Validation users (model selection).
    Valid,
    /// Held-out test users (reported metrics).
    Test,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }

    fn parse(s: &str) -> Option<Part> {
        [Part::Train, Part::Valid, Part::Test].into_iter().find(|p| p.name() == s)
    }
}

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
}

/// Share of a user's ratings that goes to the support set.
const SUPPORT_SHARE: f64 = 0.8;

impl Split {
    /// Splits users 7:1:2 and each user's ratings 80/20, dropping users with fewer than 2 ratings.
    pub fn new(data: &Dataset, seed: u64) -> Result<Split> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut by_user: Vec<(u32, Vec<Rating>)> = data
            .ratings_by_user()
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.len() >= 2)
            .map(|(u, r)| (u as u32, r))
            .collect();
        if by_user.len() < 10 {
            bail!("only {} users have 2 or more ratings; need at least 10 to split", by_user.len());
        }
        by_user.shuffle(&mut rng);
        let n = by_user.len();
        let n_train = (n as f64 * 0.7).round() as usize;
        let n_valid = (n as f64 * 0.1).round().max(1.0) as usize;
        let mut split = Split::default();
        for (position, (user, mut ratings)) in by_user.into_iter().enumerate() {
            ratings.shuffle(&mut rng);
            let n_support = ((ratings.len() as f64 * SUPPORT_SHARE).round() as usize).clamp(1, ratings.len() - 1);
            let query = ratings.split_off(n_support);
            let task = Task { user, support: ratings, query };
            match position {
                p if p < n_train => split.train.push(task),
                p if p < n_train + n_valid => split.valid.push(task),
                _ => split.test.push(task),
            }
        }
        Ok(split)
    }

    /// Tasks of one part.
    pub fn part(&self, part: Part) -> &[Task] {
        match part {
            Part::Train => &self.train,
            Part::Valid => &self.valid,
            Part::Test => &self.test,
        }
    }

    /// Writes `part,user_id,item_id,role` rows (role = support|query) in task order.
    pub fn write(&self, data: &Dataset, path: &Path) -> Result<()> {
        let mut out = String::from("part,user_id,item_id,role,rating\n");
        for part in [Part::Train, Part::Valid, Part::Test] {
            for task in self.part(part) {
                for (role, ratings) in [("support", &task.support), ("query", &task.query)] {
                    for r in ratings {
                        writeln!(
                            out,
                            "{},{},{},{role},{}",
                            part.name(),
                            data.users[r.user as usize].id,
                            data.items[r.item as usize].id,
                            r.value
                        )?;
                    }
                }
            }
        }
        crate::fsutil::write_atomic(path, out.as_bytes())
    }

    /// Reads a split written by [`Split::write`] against the same dataset.
    pub fn read(data: &Dataset, path: &Path) -> Result<Split> {
        let users: std::collections::HashMap<&str, u32> =
            data.users.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();
        let items: std::collections::HashMap<&str, u32> =
            data.items.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
        let mut split = Split::default();
        for (row, record) in reader.records().enumerate() {
            let line = row + 2;
            let record = record.with_context(|| format!("{}:{line}: malformed row", path.display()))?;
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
            let tasks = match part {
                Part::Train => &mut split.train,
                Part::Valid => &mut split.valid,
                Part::Test => &mut split.test,
            };
            if tasks.last().map(|t| t.user) != Some(user) {
                tasks.push(Task { user, support: Vec::new(), query: Vec::new() });
            }
            let task = tasks.last_mut().expect("pushed above");
            let rating = Rating { user, item, value };
            match get(3) {
                "support" => task.support.push(rating),
                "query" => task.query.push(rating),
                other => bail!("{}:{line}: bad role '{other}'", path.display()),
            }
        }
        Ok(split)
    }
}
