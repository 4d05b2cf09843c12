//! The plain layout: `schema.toml` plus UTF-8 CSV files with headers (see [`super::schema`]).
//! Every row has as many columns as its file's header (quoted fields may hold commas); the items
//! table may name a release-year column (`[items] year = "year"`) for the MeLU protocol.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::schema::{Schema, Table};
use super::text::{column_count, csv_records, header_row, Encoding, Issues, Reason, TextFile};
use super::{assemble, parse_rating, Dataset, LoadReport, Rating, RatingsBuilder, RawTable};

/// Loads a plain-CSV dataset described by `DIR/schema.toml`.
pub fn load(dir: &Path, issues: &mut Issues) -> Result<Dataset> {
    let schema = Schema::read(dir)?;
    let mut report = LoadReport::default();
    let users = read_table(dir, &schema.users, issues, &mut report)?;
    let items = read_table(dir, &schema.items, issues, &mut report)?;

    let file = TextFile::read(&dir.join(&schema.ratings.file), Encoding::Utf8, issues)?;
    report.files.push((schema.ratings.file.clone(), file.encoding));
    let path = file.path.clone();
    let file_headers = header_row(&file, b',', None)?;
    let column = |name: &str| column_index(&file_headers, name, &path);
    let cols = (column(&schema.ratings.user)?, column(&schema.ratings.item)?, column(&schema.ratings.rating)?);
    let mut ratings = RatingsBuilder::default();
    csv_records(&file, b',', None, true, issues, |line, record, issues| {
        if !columns_match(&file, line, record, &file_headers, issues)? {
            return Ok(());
        }
        let (user_col, item_col, rating_col) = cols;
        let field = |col: usize| record.get(col).unwrap_or("");
        let Some(user) = users.get(field(user_col)) else {
            return issues.bad(&path, line, Reason::UnknownUser, format_args!("unknown user id '{}'", field(user_col)));
        };
        let Some(item) = items.get(field(item_col)) else {
            return issues.bad(&path, line, Reason::UnknownItem, format_args!("unknown item id '{}'", field(item_col)));
        };
        let Some(value) = parse_rating(field(rating_col), schema.rating_min, schema.rating_max) else {
            return issues.bad(
                &path,
                line,
                Reason::BadRating,
                format_args!(
                    "rating '{}' is not a number in [{}, {}]",
                    field(rating_col),
                    schema.rating_min,
                    schema.rating_max
                ),
            );
        };
        ratings.push(Rating { user, item, value }, issues, &path, line)
    })?;
    if ratings.ratings.is_empty() {
        bail!("{}: no ratings", path.display());
    }
    assemble(users, items, ratings.ratings, (schema.rating_min, schema.rating_max), report)
}

fn column_index(headers: &csv::StringRecord, name: &str, path: &Path) -> Result<usize> {
    headers.iter().position(|h| h == name).with_context(|| format!("{}: no column '{name}' in header", path.display()))
}

/// Checks that a row has as many columns as the header; a row with more or fewer goes through
/// `issues` as malformed (its values cannot be told apart).
fn columns_match(
    file: &TextFile,
    line: usize,
    record: &csv::StringRecord,
    headers: &csv::StringRecord,
    issues: &mut Issues,
) -> Result<bool> {
    if record.len() == headers.len() {
        return Ok(true);
    }
    let names = headers.iter().collect::<Vec<_>>().join(",");
    issues.bad(
        &file.path,
        line,
        Reason::Malformed,
        format_args!("{} as the header has ({names})", column_count(record.len(), headers.len())),
    )?;
    Ok(false)
}

/// A release year: empty is unknown, anything else must be a whole number.
fn parse_year(text: &str) -> core::result::Result<Option<i32>, ()> {
    match text.trim() {
        "" => Ok(None),
        year => year.parse().map(Some).map_err(|_| ()),
    }
}

/// Reads a users or items table.
fn read_table(dir: &Path, table: &Table, issues: &mut Issues, report: &mut LoadReport) -> Result<RawTable> {
    let file = TextFile::read(&dir.join(&table.file), Encoding::Utf8, issues)?;
    report.files.push((table.file.clone(), file.encoding));
    let path = file.path.clone();
    let headers = header_row(&file, b',', None)?;
    let id_col = column_index(&headers, &table.id, &path)?;
    let group_col = table.group.as_deref().map(|g| column_index(&headers, g, &path)).transpose()?;
    let year_col = table.year.as_deref().map(|y| column_index(&headers, y, &path)).transpose()?;
    let field_cols = table.fields.iter().map(|f| column_index(&headers, &f.name, &path)).collect::<Result<Vec<_>>>()?;
    let fields = table
        .fields
        .iter()
        .map(|f| Ok((f.name.clone(), f.kind()?)))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("in {}", path.display()))?;
    let mut out = RawTable::new(fields);
    let mut groups = Vec::new();
    let mut lines = Vec::new();
    csv_records(&file, b',', None, true, issues, |line, record, issues| {
        if !columns_match(&file, line, record, &headers, issues)? {
            return Ok(());
        }
        let id = record.get(id_col).unwrap_or("");
        if id.is_empty() {
            return issues.bad(&path, line, Reason::EmptyId, format_args!("empty id in column '{}'", table.id));
        }
        let year = match year_col.map(|c| (c, parse_year(record.get(c).unwrap_or("")))) {
            None => None,
            Some((_, Ok(year))) => year,
            Some((c, Err(()))) => {
                return issues.bad(
                    &path,
                    line,
                    Reason::BadYear,
                    format_args!(
                        "year '{}' in column '{}' is not a whole number (leave it empty when unknown)",
                        record.get(c).unwrap_or(""),
                        &headers[c]
                    ),
                );
            }
        };
        let raw = field_cols.iter().map(|&c| record.get(c).unwrap_or("").to_string()).collect();
        match out.push(id, raw) {
            Ok(position) => {
                out.year[position as usize] = year;
                lines.push(line);
                if let Some(c) = group_col {
                    groups.push(record.get(c).unwrap_or("").to_string());
                }
                Ok(())
            }
            Err(first) => issues.bad(
                &path,
                line,
                Reason::DuplicateId,
                format_args!("duplicate id '{id}' (first on line {})", lines[first as usize]),
            ),
        }
    })?;
    if out.len() == 0 {
        bail!("{}: no rows", path.display());
    }
    if group_col.is_some() {
        out.group = Some(groups);
    }
    Ok(out)
}
