//! Book-Crossing (Ziegler et al. 2005), read as distributed: three `;`-separated files with
//! every field in double quotes, written by a MySQL dump (so `\"` is an escaped quote),
//! Latin-1/cp1252 text with HTML character references (`&amp;`).
//!
//! - `BX-Users.csv` `"User-ID";"Location";"Age"`: `Age` is `NULL` when not given. Features:
//!   `age` (in buckets; NULL is the unknown row) and `country` (the last comma-separated part of
//!   the location, lower-cased). An age below 10 or above 100, or a location whose country part
//!   is empty, `n/a` or not made of letters, is recorded as a feature problem: the PAML protocol
//!   drops such users, other protocols keep them (their value maps to the unknown row).
//! - `BX-Books.csv` `"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";` and
//!   three image URLs. Features: `author`, `year` (in buckets; 0 and years after 2025 are
//!   unknown), `publisher`.
//! - `BX-Book-Ratings.csv` `"User-ID";"ISBN";"Book-Rating"`: 1..10 explicit; 0 is an implicit
//!   interaction and is dropped; ratings of ISBNs missing from `BX-Books.csv` are dropped (both
//!   counted in the load report).

use std::path::Path;

use anyhow::{bail, Result};
use metarec_runtime::format::FieldKind;

use super::text::{check_header, csv_records, decode_entities, expect_columns, Encoding, Issues, Reason, TextFile};
use super::{
    age_problem, assemble, parse_rating, Dataset, LoadReport, Rating, RatingsBuilder, RawTable, AGE_BOUNDS, YEAR_BOUNDS,
};

const DELIMITER: u8 = b';';
const ESCAPE: Option<u8> = Some(b'\\');
/// Latest plausible publication year (the data were collected in 2004).
const LAST_YEAR: i32 = 2025;

fn read(dir: &Path, name: &str, issues: &mut Issues, report: &mut LoadReport, header: &[&str]) -> Result<TextFile> {
    let file = TextFile::read(&dir.join(name), Encoding::Legacy, issues)?;
    report.files.push((name.to_string(), file.encoding));
    check_header(&file, DELIMITER, ESCAPE, header)?;
    Ok(file)
}

/// The country of a `city, state, country` location, or why there is none.
pub fn country(location: &str) -> Result<String, String> {
    let country = location.rsplit(',').next().unwrap_or("").trim().to_lowercase();
    let letters = country.chars().filter(|c| c.is_alphabetic()).count();
    let clean = country.chars().all(|c| c.is_alphabetic() || " .-&'()".contains(c));
    if letters < 2 || !clean || ["n/a", "na", "none", "unknown", "null"].contains(&country.as_str()) {
        return Err(format!("garbled location '{location}'"));
    }
    Ok(country)
}

/// Loads `BX-Users.csv`, `BX-Books.csv` and `BX-Book-Ratings.csv`.
pub fn load(dir: &Path, issues: &mut Issues) -> Result<Dataset> {
    let mut report = LoadReport::default();
    let users = load_users(dir, issues, &mut report)?;
    let items = load_books(dir, issues, &mut report)?;
    let ratings = load_ratings(dir, issues, &mut report, &users, &items)?;
    assemble(users, items, ratings.ratings, (1.0, 10.0), report)
}

/// `BX-Users.csv`: age and country per user; a garbled location or implausible age is the
/// user's problem.
fn load_users(dir: &Path, issues: &mut Issues, report: &mut LoadReport) -> Result<RawTable> {
    let file = read(dir, "BX-Users.csv", issues, report, &["User-ID", "Location", "Age"])?;
    let mut users = RawTable::new(vec![
        ("age".into(), FieldKind::Numeric { bounds: AGE_BOUNDS.to_vec() }),
        ("country".into(), FieldKind::Categorical),
    ]);
    csv_records(&file, DELIMITER, ESCAPE, true, issues, |line, record, issues| {
        if !expect_columns(&file, line, record, 3, issues)? {
            return Ok(());
        }
        let id = record[0].trim();
        if id.is_empty() {
            return issues.bad(&file.path, line, Reason::EmptyId, "empty User-ID");
        }
        let age = match record[2].trim() {
            "NULL" | "" => "",
            age => age,
        };
        let location = decode_entities(&record[1]);
        let (country, garbled) = match country(&location) {
            Ok(country) => (country, None),
            Err(why) => (String::new(), Some(why)),
        };
        match users.push(id, vec![age.to_string(), country]) {
            Ok(user) => {
                users.problem[user as usize] = age_problem(age).or(garbled);
                Ok(())
            }
            Err(_) => issues.bad(&file.path, line, Reason::DuplicateId, format_args!("duplicate User-ID '{id}'")),
        }
    })?;
    if users.len() == 0 {
        bail!("{}: no valid rows", file.path.display());
    }
    Ok(users)
}

/// `BX-Books.csv`: author, year and publisher per ISBN, with the title.
fn load_books(dir: &Path, issues: &mut Issues, report: &mut LoadReport) -> Result<RawTable> {
    let header = [
        "ISBN",
        "Book-Title",
        "Book-Author",
        "Year-Of-Publication",
        "Publisher",
        "Image-URL-S",
        "Image-URL-M",
        "Image-URL-L",
    ];
    let file = read(dir, "BX-Books.csv", issues, report, &header)?;
    let mut items = RawTable::new(vec![
        ("author".into(), FieldKind::Categorical),
        ("year".into(), FieldKind::Numeric { bounds: YEAR_BOUNDS.to_vec() }),
        ("publisher".into(), FieldKind::Categorical),
    ]);
    csv_records(&file, DELIMITER, ESCAPE, true, issues, |line, record, issues| {
        if !expect_columns(&file, line, record, header.len(), issues)? {
            return Ok(());
        }
        let isbn = record[0].trim();
        if isbn.is_empty() {
            return issues.bad(&file.path, line, Reason::EmptyId, "empty ISBN");
        }
        let year = record[3].trim().parse::<i32>().ok().filter(|y| (1..=LAST_YEAR).contains(y));
        let raw = vec![
            decode_entities(record[2].trim()),
            year.map(|y| y.to_string()).unwrap_or_default(),
            decode_entities(record[4].trim()),
        ];
        match items.push(isbn, raw) {
            Ok(item) => {
                items.year[item as usize] = year;
                items.title[item as usize] = decode_entities(record[1].trim());
                Ok(())
            }
            Err(_) => issues.bad(&file.path, line, Reason::DuplicateId, format_args!("duplicate ISBN '{isbn}'")),
        }
    })?;
    if items.len() == 0 {
        bail!("{}: no valid rows", file.path.display());
    }
    Ok(items)
}

/// `BX-Book-Ratings.csv`: the explicit ratings (1 to 10) of known users and books; implicit
/// ratings (0) and ratings of books missing from `BX-Books.csv` are counted as dropped.
fn load_ratings(
    dir: &Path,
    issues: &mut Issues,
    report: &mut LoadReport,
    users: &RawTable,
    items: &RawTable,
) -> Result<RatingsBuilder> {
    let file = read(dir, "BX-Book-Ratings.csv", issues, report, &["User-ID", "ISBN", "Book-Rating"])?;
    let (mut implicit, mut missing_books) = (0, 0);
    let mut ratings = RatingsBuilder::default();
    csv_records(&file, DELIMITER, ESCAPE, true, issues, |line, record, issues| {
        if !expect_columns(&file, line, record, 3, issues)? {
            return Ok(());
        }
        let Some(user) = users.get(record[0].trim()) else {
            return issues.bad(&file.path, line, Reason::UnknownUser, format_args!("unknown User-ID '{}'", &record[0]));
        };
        if record[2].trim() == "0" {
            implicit += 1;
            return Ok(());
        }
        let Some(value) = parse_rating(&record[2], 1.0, 10.0) else {
            return issues.bad(
                &file.path,
                line,
                Reason::BadRating,
                format_args!("rating '{}' is not 0 (implicit) or a number in [1, 10]", &record[2]),
            );
        };
        let Some(item) = items.get(record[1].trim()) else {
            missing_books += 1;
            return Ok(());
        };
        ratings.push(Rating { user, item, value }, issues, &file.path, line)
    })?;
    report.dropped.push(("implicit ratings (0)".into(), implicit));
    report.dropped.push(("ratings of ISBNs missing from BX-Books.csv".into(), missing_books));
    Ok(ratings)
}
