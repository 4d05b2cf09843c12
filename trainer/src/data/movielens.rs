//! MovieLens, read exactly as GroupLens distributes it.
//!
//! | format | users | items | ratings | scale |
//! |---|---|---|---|---|
//! | 1M | `users.dat` `UserID::Gender::Age::Occupation::Zip-code` | `movies.dat` `MovieID::Title::Genres` (Latin-1) | `ratings.dat` `UserID::MovieID::Rating::Timestamp` | 1..5 |
//! | 100K | `u.user` `id\|age\|gender\|occupation\|zip` | `u.item` `id\|title\|release date\|video date\|URL\|` 19 genre flags (Latin-1; names from `u.genre`) | `u.data` tab-separated `user item rating time` | 1..5 |
//! | latest | none (ids from ratings) | `movies.csv` `movieId,title,genres` (quoted titles with commas) | `ratings.csv` `userId,movieId,rating,timestamp` | 0.5..5 |
//!
//! Features follow the papers: users `gender`, `age` (1M: the age code; 100K: the age in
//! buckets), `occupation`, `zip_prefix` (the first [`ZIP_PREFIX`] characters, as MeLU); items
//! `genres` (multi-valued, `|`) and `year` (release year in buckets, from the title's trailing
//! `(YYYY)` or 100K's release date). MovieLens latest has no demographics: no user fields.

use std::path::Path;

use anyhow::{bail, Result};
use metarec_runtime::format::FieldKind;

use super::text::{check_header, csv_records, expect_columns, Encoding, Issues, Reason, TextFile};
use super::{
    age_problem, assemble, parse_rating, Dataset, LoadReport, Rating, RatingsBuilder, RawTable, AGE_BOUNDS, YEAR_BOUNDS,
};

/// Characters of the zip code kept as the `zip_prefix` feature (MeLU keeps five).
pub const ZIP_PREFIX: usize = 5;

/// MovieLens-1M's age codes (README: 1 = under 18, 18 = 18-24, ..., 56 = 56+).
const ML1M_AGE_CODES: [&str; 7] = ["1", "18", "25", "35", "45", "50", "56"];

/// MovieLens-100K's genres in flag order, used when `u.genre` is absent.
pub(crate) const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

fn user_fields(age: FieldKind) -> Vec<(String, FieldKind)> {
    vec![
        ("gender".into(), FieldKind::Categorical),
        ("age".into(), age),
        ("occupation".into(), FieldKind::Categorical),
        ("zip_prefix".into(), FieldKind::Categorical),
    ]
}

fn item_fields() -> Vec<(String, FieldKind)> {
    vec![
        ("genres".into(), FieldKind::MultiCategorical { separator: '|' }),
        ("year".into(), FieldKind::Numeric { bounds: YEAR_BOUNDS.to_vec() }),
    ]
}

/// Splits `line` on the ASCII `separator` into exactly `N` parts. A byte scan: `str::split`
/// with a two-character pattern costs several times more over the 25 million lines of a large
/// `ratings.dat`.
fn split_exact<'a, const N: usize>(line: &'a str, separator: &str) -> Option<[&'a str; N]> {
    debug_assert!(separator.is_ascii() && !separator.is_empty());
    let (bytes, sep) = (line.as_bytes(), separator.as_bytes());
    let mut parts = [""; N];
    let (mut count, mut start, mut i) = (0, 0, 0);
    while i + sep.len() <= bytes.len() {
        if sep.iter().zip(&bytes[i..]).all(|(a, b)| a == b) {
            // An ASCII separator starts and ends on character boundaries.
            *parts.get_mut(count)? = &line[start..i];
            count += 1;
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    *parts.get_mut(count)? = &line[start..];
    (count + 1 == N).then_some(parts)
}

fn column_error(
    file: &TextFile,
    line: usize,
    text: &str,
    separator: &str,
    expected: usize,
    issues: &mut Issues,
) -> Result<()> {
    let found = text.split(separator).count();
    issues.bad(
        &file.path,
        line,
        Reason::Malformed,
        format_args!(
            "found {found} '{separator}'-separated column{}, expected {expected}",
            if found == 1 { "" } else { "s" }
        ),
    )
}

/// The year in a title's trailing `(1995)` (or `(2006-2007)`), if any.
pub fn title_year(title: &str) -> Option<i32> {
    let inner = title.trim_end().strip_suffix(')')?;
    let inner = &inner[inner.rfind('(')? + 1..];
    let first = inner.split(['-', '\u{2013}']).next()?.trim();
    (first.len() == 4 && first.bytes().all(|b| b.is_ascii_digit())).then(|| first.parse().ok()).flatten()
}

fn zip_prefix(zip: &str) -> String {
    zip.trim().chars().take(ZIP_PREFIX).collect()
}

fn year_string(year: Option<i32>) -> String {
    year.map(|y| y.to_string()).unwrap_or_default()
}

/// Reads `::`- or tab-separated ratings (1M's ratings.dat, 100K's u.data).
fn read_ratings(
    file: &TextFile,
    separator: &str,
    users: &RawTable,
    items: &RawTable,
    issues: &mut Issues,
) -> Result<Vec<Rating>> {
    let mut ratings = RatingsBuilder::default();
    for (line, text) in file.lines() {
        let Some([user, item, value, _time]) = split_exact::<4>(text, separator) else {
            column_error(file, line, text, separator, 4, issues)?;
            continue;
        };
        let Some(user) = users.get(user.trim()) else {
            issues.bad(&file.path, line, Reason::UnknownUser, format_args!("unknown user id '{user}'"))?;
            continue;
        };
        let Some(item) = items.get(item.trim()) else {
            issues.bad(&file.path, line, Reason::UnknownItem, format_args!("unknown movie id '{item}'"))?;
            continue;
        };
        let Some(value) = parse_rating(value, 1.0, 5.0) else {
            issues.bad(
                &file.path,
                line,
                Reason::BadRating,
                format_args!("rating '{value}' is not a number in [1, 5]"),
            )?;
            continue;
        };
        ratings.push(Rating { user, item, value }, issues, &file.path, line)?;
    }
    Ok(ratings.ratings)
}

fn push_entity(
    table: &mut RawTable,
    file: &TextFile,
    line: usize,
    id: &str,
    raw: Vec<String>,
    issues: &mut Issues,
) -> Result<Option<u32>> {
    let id = id.trim();
    if id.is_empty() {
        issues.bad(&file.path, line, Reason::EmptyId, "empty id")?;
        return Ok(None);
    }
    match table.push(id, raw) {
        Ok(position) => Ok(Some(position)),
        Err(_) => {
            issues.bad(&file.path, line, Reason::DuplicateId, format_args!("duplicate id '{id}'"))?;
            Ok(None)
        }
    }
}

fn read(dir: &Path, name: &str, encoding: Encoding, issues: &mut Issues, report: &mut LoadReport) -> Result<TextFile> {
    let file = TextFile::read(&dir.join(name), encoding, issues)?;
    report.files.push((name.to_string(), file.encoding));
    Ok(file)
}

fn non_empty(table: &RawTable, file: &TextFile) -> Result<()> {
    if table.len() == 0 {
        bail!("{}: no valid rows", file.path.display());
    }
    Ok(())
}

/// Loads MovieLens-1M (`users.dat`, `movies.dat`, `ratings.dat`).
pub fn load_1m(dir: &Path, issues: &mut Issues) -> Result<Dataset> {
    let mut report = LoadReport::default();
    let file = read(dir, "users.dat", Encoding::Legacy, issues, &mut report)?;
    let mut users = RawTable::new(user_fields(FieldKind::Categorical));
    for (line, text) in file.lines() {
        let Some([id, gender, age, occupation, zip]) = split_exact::<5>(text, "::") else {
            column_error(&file, line, text, "::", 5, issues)?;
            continue;
        };
        let raw =
            vec![gender.trim().to_string(), age.trim().to_string(), occupation.trim().to_string(), zip_prefix(zip)];
        if let Some(user) = push_entity(&mut users, &file, line, id, raw, issues)? {
            if !ML1M_AGE_CODES.contains(&age.trim()) {
                users.problem[user as usize] = Some(format!("age code '{age}' is not one of MovieLens-1M's"));
            }
        }
    }
    non_empty(&users, &file)?;

    let file = read(dir, "movies.dat", Encoding::Legacy, issues, &mut report)?;
    let mut items = RawTable::new(item_fields());
    for (line, text) in file.lines() {
        let Some([id, title, genres]) = split_exact::<3>(text, "::") else {
            column_error(&file, line, text, "::", 3, issues)?;
            continue;
        };
        let year = title_year(title);
        if let Some(item) =
            push_entity(&mut items, &file, line, id, vec![genres.trim().to_string(), year_string(year)], issues)?
        {
            items.year[item as usize] = year;
            items.title[item as usize] = title.to_string();
        }
    }
    non_empty(&items, &file)?;

    let file = read(dir, "ratings.dat", Encoding::Legacy, issues, &mut report)?;
    let ratings = read_ratings(&file, "::", &users, &items, issues)?;
    drop(file);
    assemble(users, items, ratings, (1.0, 5.0), report)
}

/// Loads MovieLens-100K (`u.user`, `u.item`, `u.data`; genre names from `u.genre` when present).
pub fn load_100k(dir: &Path, issues: &mut Issues) -> Result<Dataset> {
    let mut report = LoadReport::default();
    let file = read(dir, "u.user", Encoding::Legacy, issues, &mut report)?;
    let mut users = RawTable::new(user_fields(FieldKind::Numeric { bounds: AGE_BOUNDS.to_vec() }));
    for (line, text) in file.lines() {
        let Some([id, age, gender, occupation, zip]) = split_exact::<5>(text, "|") else {
            column_error(&file, line, text, "|", 5, issues)?;
            continue;
        };
        let raw =
            vec![gender.trim().to_string(), age.trim().to_string(), occupation.trim().to_string(), zip_prefix(zip)];
        if let Some(user) = push_entity(&mut users, &file, line, id, raw, issues)? {
            users.problem[user as usize] = age_problem(age);
        }
    }
    non_empty(&users, &file)?;

    let genres = genre_names(dir, issues, &mut report)?;
    let file = read(dir, "u.item", Encoding::Legacy, issues, &mut report)?;
    let mut items = RawTable::new(item_fields());
    for (line, text) in file.lines() {
        let columns: Vec<&str> = text.split('|').collect();
        if columns.len() != 5 + genres.len() {
            column_error(&file, line, text, "|", 5 + genres.len(), issues)?;
            continue;
        }
        let mut flagged = Vec::new();
        let mut bad_flag = None;
        for (name, flag) in genres.iter().zip(&columns[5..]) {
            match flag.trim() {
                "1" => flagged.push(name.as_str()),
                "0" => {}
                other => bad_flag = Some(other.to_string()),
            }
        }
        if let Some(flag) = bad_flag {
            issues.bad(&file.path, line, Reason::Malformed, format_args!("genre flag '{flag}' is not 0 or 1"))?;
            continue;
        }
        let date = columns[2].trim();
        let year = date
            .rsplit('-')
            .next()
            .filter(|y| y.len() == 4)
            .and_then(|y| y.parse().ok())
            .or_else(|| title_year(columns[1]));
        let raw = vec![flagged.join("|"), year_string(year)];
        if let Some(item) = push_entity(&mut items, &file, line, columns[0], raw, issues)? {
            items.year[item as usize] = year;
            items.title[item as usize] = columns[1].to_string();
        }
    }
    non_empty(&items, &file)?;

    let file = read(dir, "u.data", Encoding::Legacy, issues, &mut report)?;
    let ratings = read_ratings(&file, "\t", &users, &items, issues)?;
    assemble(users, items, ratings, (1.0, 5.0), report)
}

/// Genre names in flag order from `u.genre` (`name|index` lines), or the documented list.
fn genre_names(dir: &Path, issues: &mut Issues, report: &mut LoadReport) -> Result<Vec<String>> {
    if !dir.join("u.genre").is_file() {
        return Ok(ML100K_GENRES.iter().map(|g| g.to_string()).collect());
    }
    let file = read(dir, "u.genre", Encoding::Legacy, issues, report)?;
    let mut names = Vec::new();
    for (line, text) in file.lines() {
        let parsed =
            split_exact::<2>(text, "|").and_then(|[name, index]| Some((name, index.trim().parse::<usize>().ok()?)));
        match parsed {
            Some((name, index)) if index == names.len() && !name.is_empty() => names.push(name.to_string()),
            _ => bail!("{}:{line}: expected 'name|{}'", file.path.display(), names.len()),
        }
    }
    if names.is_empty() {
        bail!("{}: no genres", file.path.display());
    }
    Ok(names)
}

/// Loads MovieLens latest or latest-small (`movies.csv`, `ratings.csv`; UTF-8).
pub fn load_latest(dir: &Path, issues: &mut Issues) -> Result<Dataset> {
    let mut report = LoadReport::default();
    let file = read(dir, "movies.csv", Encoding::Utf8, issues, &mut report)?;
    let mut items = RawTable::new(item_fields());
    check_header(&file, b',', None, &["movieId", "title", "genres"])?;
    csv_records(&file, b',', None, true, issues, |line, record, issues| {
        if !expect_columns(&file, line, record, 3, issues)? {
            return Ok(());
        }
        let genres = match record[2].trim() {
            "(no genres listed)" => "",
            genres => genres,
        };
        let year = title_year(&record[1]);
        if let Some(item) =
            push_entity(&mut items, &file, line, &record[0], vec![genres.to_string(), year_string(year)], issues)?
        {
            items.year[item as usize] = year;
            items.title[item as usize] = record[1].to_string();
        }
        Ok(())
    })?;
    non_empty(&items, &file)?;

    let file = read(dir, "ratings.csv", Encoding::Utf8, issues, &mut report)?;
    let mut users = RawTable::new(Vec::new());
    let mut ratings = RatingsBuilder::default();
    check_header(&file, b',', None, &["userId", "movieId", "rating", "timestamp"])?;
    csv_records(&file, b',', None, true, issues, |line, record, issues| {
        if !expect_columns(&file, line, record, 4, issues)? {
            return Ok(());
        }
        let id = record[0].trim();
        if id.is_empty() {
            return issues.bad(&file.path, line, Reason::EmptyId, "empty user id");
        }
        let Some(item) = items.get(record[1].trim()) else {
            return issues.bad(
                &file.path,
                line,
                Reason::UnknownItem,
                format_args!("unknown movie id '{}'", &record[1]),
            );
        };
        let Some(value) = parse_rating(&record[2], 0.5, 5.0) else {
            return issues.bad(
                &file.path,
                line,
                Reason::BadRating,
                format_args!("rating '{}' is not a number in [0.5, 5]", &record[2]),
            );
        };
        let user = users.get_or_push(id);
        ratings.push(Rating { user, item, value }, issues, &file.path, line)
    })?;
    assemble(users, items, ratings.ratings, (0.5, 5.0), report)
}
