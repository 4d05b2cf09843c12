//! Datasets in memory: users and items with their feature rows, and ratings.
//!
//! Every format has its own loader ([`plain`] for CSV + `schema.toml`, [`movielens`] for
//! MovieLens-1M, -100K and latest, [`bookcrossing`]); each produces the same [`Dataset`], so the
//! protocols ([`crate::split`]), the model and the export never see a file format. Raw string
//! values are mapped to embedding rows by the runtime's own [`FieldSpec::rows_of`], so the
//! trainer and the device can never disagree on a mapping.
//!
//! Users and items without any (kept) rating are left out: they cannot form a task, and the
//! catalogue holds only items the model saw or can be evaluated on. Each loader reports what it
//! dropped and why in [`LoadReport`].

pub mod bench;
pub mod bookcrossing;
pub mod groups;
pub mod mlgen;
pub mod movielens;
pub mod plain;
pub mod schema;
pub mod stats;
pub mod synth;
pub mod text;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use anyhow::{bail, Result};
use metarec_runtime::format::{FieldKind, FieldSpec};

use text::{Issues, Reason};

/// A user or an item: id, raw field values and their embedding rows.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Id as the dataset spells it.
    pub id: String,
    /// Raw value per field (as read).
    pub raw: Vec<String>,
    /// Embedding rows per field.
    pub rows: Vec<Vec<u32>>,
    /// Known group label, if the dataset has one; otherwise the major/minor label of the PAML paper
    /// rule ([`groups`]) when the dataset has user fields.
    pub group: Option<String>,
}

/// One rating, by user and item position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Index into [`Dataset::users`].
    pub user: u32,
    /// Index into [`Dataset::items`].
    pub item: u32,
    /// The rating.
    pub value: f32,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// User fields with vocabularies (embeddings empty). May be empty (MovieLens latest has no
    /// demographics: the user is then described by their ratings alone).
    pub user_fields: Vec<FieldSpec>,
    /// Item fields with vocabularies (embeddings empty).
    pub item_fields: Vec<FieldSpec>,
    /// Users.
    pub users: Vec<Entity>,
    /// Items.
    pub items: Vec<Entity>,
    /// Ratings, in file order.
    pub ratings: Vec<Rating>,
    /// Lowest valid rating.
    pub rating_min: f32,
    /// Highest valid rating.
    pub rating_max: f32,
    /// What the protocols need beyond features: item years, users' feature problems, and what
    /// loading dropped.
    pub info: DataInfo,
}

/// Facts about a dataset beyond its features.
#[derive(Debug, Clone, Default)]
pub struct DataInfo {
    /// The format it was read from.
    pub format: Option<Format>,
    /// Release (or publication) year of each item, when known; the MeLU protocol splits items
    /// into existing (up to 1997) and new (1998 on) by it.
    pub item_year: Vec<Option<i32>>,
    /// Title of each item as decoded (empty when the format has none).
    pub item_title: Vec<String>,
    /// Per user, a feature problem the PAML protocol filters on (age below 10 or above 100,
    /// garbled location); `None` when the profile is fine.
    pub user_problem: Vec<Option<String>>,
    /// Whether the users' [`Entity::group`] labels come from the dataset's own group column
    /// (plain format, `[users] group = ...`) rather than the major/minor rule ([`groups`]).
    pub group_column: bool,
    /// What loading read, skipped and dropped.
    pub report: LoadReport,
}

/// What loading read, skipped and dropped.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Files read, with the encoding each was decoded from.
    pub files: Vec<(String, &'static str)>,
    /// Rows skipped under `--skip-invalid`, by file and reason (count, first occurrence).
    pub skipped: Vec<(String, Reason, usize, String)>,
    /// Rows or entities left out by the format's documented rules (implicit ratings, ratings of
    /// books missing from the catalogue, users without ratings ...), with counts.
    pub dropped: Vec<(String, usize)>,
}

/// The dataset formats `trainer` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `schema.toml` plus CSV files (the synthetic generator's layout).
    Plain,
    /// MovieLens-1M: users.dat, movies.dat, ratings.dat (`::`-separated, Latin-1).
    #[value(name = "ml-1m")]
    Ml1m,
    /// MovieLens-100K: u.user, u.item (pipe-separated, Latin-1), u.data (tab-separated).
    #[value(name = "ml-100k")]
    Ml100k,
    /// MovieLens latest / latest-small: movies.csv, ratings.csv (no demographics).
    #[value(name = "ml-latest")]
    MlLatest,
    /// Book-Crossing: BX-Users.csv, BX-Books.csv, BX-Book-Ratings.csv.
    BookCrossing,
}

impl Format {
    /// Every format, in detection order.
    pub const ALL: [Format; 5] = [Format::Plain, Format::Ml1m, Format::Ml100k, Format::MlLatest, Format::BookCrossing];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Ml1m => "ml-1m",
            Format::Ml100k => "ml-100k",
            Format::MlLatest => "ml-latest",
            Format::BookCrossing => "book-crossing",
        }
    }

    /// The files that identify the format in a directory.
    pub fn marker_files(self) -> &'static [&'static str] {
        match self {
            Format::Plain => &[schema::SCHEMA_FILE],
            Format::Ml1m => &["users.dat", "movies.dat", "ratings.dat"],
            Format::Ml100k => &["u.user", "u.item", "u.data"],
            Format::MlLatest => &["movies.csv", "ratings.csv"],
            Format::BookCrossing => &["BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"],
        }
    }

    /// The format of `dir`, when exactly one format's files are all there.
    pub fn detect(dir: &Path) -> Result<Format> {
        if dir.is_file() {
            bail!("dataset directory {} is a file, not a directory", dir.display());
        }
        if !dir.is_dir() {
            bail!("dataset directory {} does not exist", dir.display());
        }
        let found: Vec<Format> =
            Format::ALL.into_iter().filter(|f| f.marker_files().iter().all(|m| dir.join(m).is_file())).collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                let expected: Vec<String> =
                    Format::ALL.iter().map(|f| format!("{} ({})", f.name(), f.marker_files().join(", "))).collect();
                bail!("{}: no known dataset format; expected one of: {}", dir.display(), expected.join("; "))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|f| f.name()).collect();
                bail!("{}: ambiguous format (files of {} are present); pass --format", dir.display(), names.join(", "))
            }
        }
    }
}

/// How to load a dataset directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The format; detected from the files when `None`.
    pub format: Option<Format>,
    /// Skip malformed rows and count them by reason instead of failing at the first.
    pub skip_invalid: bool,
}

impl Dataset {
    /// Adds the item id as one more categorical item field (an embedding per item), so the
    /// model can learn what item features do not say — as the bias baseline's item bias does.
    pub fn add_item_id_field(&mut self) {
        let mut ids: Vec<String> = self.items.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        let field =
            FieldSpec { name: "item_id".into(), kind: FieldKind::Categorical, vocabulary: ids, embedding: Vec::new() };
        for item in &mut self.items {
            item.raw.push(item.id.clone());
            item.rows.push(vec![field.row_of(&item.id)]);
        }
        self.item_fields.push(field);
    }

    /// Loads a dataset directory in any known format (detected from its files), strictly.
    pub fn load(dir: &Path) -> Result<Dataset> {
        Dataset::load_with(dir, &LoadOptions::default())
    }

    /// Loads a dataset directory with explicit options.
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Dataset> {
        let format = match options.format {
            Some(format) => format,
            None => Format::detect(dir)?,
        };
        let mut issues = Issues::new(options.skip_invalid);
        let mut data = match format {
            Format::Plain => plain::load(dir, &mut issues)?,
            Format::Ml1m => movielens::load_1m(dir, &mut issues)?,
            Format::Ml100k => movielens::load_100k(dir, &mut issues)?,
            Format::MlLatest => movielens::load_latest(dir, &mut issues)?,
            Format::BookCrossing => bookcrossing::load(dir, &mut issues)?,
        };
        data.info.format = Some(format);
        data.info.report.skipped =
            issues.skipped.into_iter().map(|((file, reason), (count, first))| (file, reason, count, first)).collect();
        Ok(data)
    }

    /// Ratings grouped by user, in file order.
    pub fn ratings_by_user(&self) -> Vec<Vec<Rating>> {
        // Exact capacities: the lists hold the ratings once, without growth slack.
        let mut by_user: Vec<Vec<Rating>> = self.ratings_per_user().into_iter().map(Vec::with_capacity).collect();
        for r in &self.ratings {
            by_user[r.user as usize].push(*r);
        }
        by_user
    }

    /// Number of ratings of each user.
    pub fn ratings_per_user(&self) -> Vec<usize> {
        let mut counts = vec![0; self.users.len()];
        for r in &self.ratings {
            counts[r.user as usize] += 1;
        }
        counts
    }
}

/// A users or items table as read, before vocabularies are built.
#[derive(Debug, Clone)]
pub(crate) struct RawTable {
    /// Field names and kinds, in model input order.
    pub fields: Vec<(String, FieldKind)>,
    pub ids: Vec<String>,
    pub raw: Vec<Vec<String>>,
    /// Known group labels (plain CSV with a group column).
    pub group: Option<Vec<String>>,
    /// Items: release year and title. Users: feature problem.
    pub year: Vec<Option<i32>>,
    pub title: Vec<String>,
    pub problem: Vec<Option<String>>,
    index: HashMap<String, u32>,
    /// Positions of the ids that are plain numbers below [`DENSE_IDS`], by number
    /// ([`NO_POSITION`] where none): the ids of MovieLens and most exports, looked up per
    /// rating without hashing a string.
    by_number: Vec<u32>,
}

/// Numeric ids below this are also indexed densely ([`RawTable::get`]); 4 bytes each, so at
/// most 64 MiB for a table whose largest id is this big.
const DENSE_IDS: usize = 1 << 24;
const NO_POSITION: u32 = u32::MAX;

/// The number an id spells in canonical decimal (no sign, no leading zero), when below
/// [`DENSE_IDS`].
fn dense_number(id: &str) -> Option<usize> {
    let bytes = id.as_bytes();
    if bytes.is_empty() || bytes.len() > 8 || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    let mut n = 0usize;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + usize::from(b - b'0');
    }
    (n < DENSE_IDS).then_some(n)
}

impl RawTable {
    pub fn new(fields: Vec<(String, FieldKind)>) -> RawTable {
        RawTable {
            fields,
            ids: Vec::new(),
            raw: Vec::new(),
            group: None,
            year: Vec::new(),
            title: Vec::new(),
            problem: Vec::new(),
            index: HashMap::new(),
            by_number: Vec::new(),
        }
    }

    /// Adds an entity; returns its position, or the position of the earlier entity with this id.
    pub fn push(&mut self, id: &str, raw: Vec<String>) -> core::result::Result<u32, u32> {
        if let Some(&existing) = self.index.get(id) {
            return Err(existing);
        }
        let position = self.ids.len() as u32;
        self.index.insert(id.to_owned(), position);
        if let Some(n) = dense_number(id) {
            if n >= self.by_number.len() {
                self.by_number.resize(n + 1, NO_POSITION);
            }
            self.by_number[n] = position;
        }
        self.ids.push(id.to_owned());
        self.raw.push(raw);
        self.year.push(None);
        self.title.push(String::new());
        self.problem.push(None);
        Ok(position)
    }

    /// Position of an id.
    pub fn get(&self, id: &str) -> Option<u32> {
        match dense_number(id).and_then(|n| self.by_number.get(n)) {
            Some(&position) if position != NO_POSITION => Some(position),
            _ => self.index.get(id).copied(),
        }
    }

    /// Position of an id, adding it without fields when new (tables known only from ratings).
    pub fn get_or_push(&mut self, id: &str) -> u32 {
        match self.get(id) {
            Some(position) => position,
            None => self.push(id, Vec::new()).unwrap_or_else(|existing| existing),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Collects ratings, rejecting duplicates of a (user, item) pair, in time linear in the
/// ratings. While the ratings come grouped by user (MovieLens and most exports list each user's
/// ratings together) a user's earlier ratings are all in the current run, so one array indexed
/// by item, holding the last user to rate it, finds repeats with no hashing; the first time a
/// user's ratings resume after another user's, every pair seen so far goes into a hash set,
/// which checks the rest.
#[derive(Debug, Default)]
pub(crate) struct RatingsBuilder {
    pub ratings: Vec<Rating>,
    /// Per item, 1 + the last user who rated it (0: nobody yet).
    last_rater: Vec<u32>,
    /// Users whose run of ratings has ended.
    closed: Vec<bool>,
    /// The user of the current run.
    current: Option<u32>,
    /// Once the ratings are not grouped by user: the (user, item) pairs seen, as
    /// `user << 32 | item`.
    seen: Option<HashSet<u64, BuildHasherDefault<PairHasher>>>,
}

/// Hashes a (user, item) pair key: the splitmix64 finalizer, much faster than the default
/// SipHash and as well spread in every bit (the table indexes by the low bits). The keys are
/// the loader's own positions, not an adversary's choice.
#[derive(Debug, Default)]
pub(crate) struct PairHasher(u64);

/// A hash map keyed by a (user, item) pair ([`pair_key`]).
pub(crate) type PairMap<V> = HashMap<u64, V, BuildHasherDefault<PairHasher>>;

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A rating's (user, item) pair as one key, `user << 32 | item`.
pub(crate) fn pair_key(r: &Rating) -> u64 {
    u64::from(r.user) << 32 | u64::from(r.item)
}

impl RatingsBuilder {
    /// Adds a rating; a repeated (user, item) pair goes through `issues`.
    pub fn push(&mut self, rating: Rating, issues: &mut Issues, path: &Path, line: usize) -> Result<()> {
        if self.is_new(&rating) {
            self.ratings.push(rating);
            Ok(())
        } else {
            issues.bad(path, line, Reason::DuplicateRating, "this user rated this item before")
        }
    }

    /// Whether this user has not rated this item before (the pair is recorded either way).
    fn is_new(&mut self, rating: &Rating) -> bool {
        if self.current != Some(rating.user) && self.seen.is_none() {
            if let Some(previous) = self.current {
                self.closed[previous as usize] = true;
            }
            let user = rating.user as usize;
            if user >= self.closed.len() {
                self.closed.resize(user + 1, false);
            }
            if self.closed[user] {
                // Not grouped by user: from here on, a set of every pair.
                self.seen = Some(self.ratings.iter().map(pair_key).collect());
            }
            self.current = Some(rating.user);
        }
        if let Some(seen) = &mut self.seen {
            return seen.insert(pair_key(rating));
        }
        let item = rating.item as usize;
        if item >= self.last_rater.len() {
            self.last_rater.resize(item + 1, 0);
        }
        let new = self.last_rater[item] != rating.user + 1;
        self.last_rater[item] = rating.user + 1;
        new
    }
}

/// Parses a rating and checks it against the scale.
pub(crate) fn parse_rating(text: &str, min: f32, max: f32) -> Option<f32> {
    text.trim().parse::<f32>().ok().filter(|v| v.is_finite() && *v >= min && *v <= max)
}

/// Builds the dataset: drops users and items without ratings, builds vocabularies from the kept
/// entities, maps every raw value to rows, and labels major/minor users when no group is known.
pub(crate) fn assemble(
    users: RawTable,
    items: RawTable,
    ratings: Vec<Rating>,
    (rating_min, rating_max): (f32, f32),
    mut report: LoadReport,
) -> Result<Dataset> {
    if ratings.is_empty() {
        bail!("no ratings left to use (every rating was dropped or skipped)");
    }
    let mut user_used = vec![false; users.len()];
    let mut item_used = vec![false; items.len()];
    for r in &ratings {
        user_used[r.user as usize] = true;
        item_used[r.item as usize] = true;
    }
    let (user_map, unused_users) = renumber(&user_used);
    let (item_map, unused_items) = renumber(&item_used);
    if unused_users > 0 {
        report.dropped.push(("users without ratings".into(), unused_users));
    }
    if unused_items > 0 {
        report.dropped.push(("items without ratings".into(), unused_items));
    }
    let ratings: Vec<Rating> = ratings
        .into_iter()
        .map(|r| Rating { user: user_map[r.user as usize], item: item_map[r.item as usize], value: r.value })
        .collect();
    let has_group = users.group.is_some();
    let users = finish_table(users, &user_used);
    let items = finish_table(items, &item_used);
    let mut data = Dataset {
        user_fields: users.specs,
        item_fields: items.specs,
        users: users.entities,
        items: items.entities,
        ratings,
        rating_min,
        rating_max,
        info: DataInfo {
            format: None,
            item_year: items.year,
            item_title: items.title,
            user_problem: users.problem,
            group_column: has_group,
            report,
        },
    };
    if !has_group {
        if let Some(labels) = groups::MajorMinor::of(&data) {
            for (user, major) in data.users.iter_mut().zip(&labels.major) {
                user.group = Some(if *major { "major" } else { "minor" }.to_string());
            }
        }
    }
    Ok(data)
}

/// New positions of the used entries, and how many were unused.
fn renumber(used: &[bool]) -> (Vec<u32>, usize) {
    let mut next = 0u32;
    let map = used
        .iter()
        .map(|&u| {
            let position = next;
            next += u32::from(u);
            position
        })
        .collect();
    (map, used.len() - next as usize)
}

struct Finished {
    specs: Vec<FieldSpec>,
    entities: Vec<Entity>,
    year: Vec<Option<i32>>,
    title: Vec<String>,
    problem: Vec<Option<String>>,
}

fn finish_table(table: RawTable, used: &[bool]) -> Finished {
    let RawTable { fields, ids, raw, group, year, title, problem, .. } = table;
    let keep = |i: &usize| used[*i];
    let specs: Vec<FieldSpec> = fields
        .iter()
        .enumerate()
        .map(|(f, (name, kind))| {
            let values = (0..ids.len()).filter(keep).map(|i| raw[i][f].as_str());
            field_spec(name, kind, values)
        })
        .collect();
    let mut scratch = Vec::new();
    let mut group = group.map(Vec::into_iter);
    let mut entities = Vec::new();
    let mut years = Vec::new();
    let mut titles = Vec::new();
    let mut problems = Vec::new();
    let extra = year.into_iter().zip(title).zip(problem);
    for (i, ((id, raw), ((year, title), problem))) in ids.into_iter().zip(raw).zip(extra).enumerate() {
        let label = group.as_mut().and_then(Iterator::next);
        if !used[i] {
            continue;
        }
        let rows = specs
            .iter()
            .zip(&raw)
            .map(|(spec, value)| {
                spec.rows_of(value, &mut scratch);
                scratch.clone()
            })
            .collect();
        entities.push(Entity { id, raw, rows, group: label });
        years.push(year);
        titles.push(title);
        problems.push(problem);
    }
    Finished { specs, entities, year: years, title: titles, problem: problems }
}

/// Builds a field's vocabulary (sorted distinct values) from its column.
pub(crate) fn field_spec<'a>(name: &str, kind: &FieldKind, values: impl Iterator<Item = &'a str>) -> FieldSpec {
    let vocabulary: BTreeSet<&str> = match kind {
        FieldKind::Categorical => values.filter(|v| !v.is_empty()).collect(),
        FieldKind::MultiCategorical { separator } => {
            values.flat_map(|v| v.split(*separator)).filter(|v| !v.is_empty()).collect()
        }
        FieldKind::Numeric { .. } => BTreeSet::new(),
    };
    FieldSpec {
        name: name.to_string(),
        kind: kind.clone(),
        vocabulary: vocabulary.into_iter().map(String::from).collect(),
        embedding: Vec::new(),
    }
}

/// Year buckets of item release / publication years (numeric field bounds).
pub const YEAR_BOUNDS: [f32; 13] =
    [1930.0, 1940.0, 1950.0, 1960.0, 1970.0, 1980.0, 1985.0, 1990.0, 1995.0, 2000.0, 2005.0, 2010.0, 2015.0];

/// Age buckets (MovieLens-1M's age codes as boundaries) for formats that give exact ages.
pub const AGE_BOUNDS: [f32; 7] = [18.0, 25.0, 35.0, 45.0, 50.0, 56.0, 65.0];

/// The PAML protocol's age filter: a stated age below 10 or above 100 is invalid.
pub(crate) fn age_problem(age: &str) -> Option<String> {
    let age: f32 = age.trim().parse().ok()?;
    (!(10.0..=100.0).contains(&age)).then(|| format!("age {age} outside 10..100"))
}
