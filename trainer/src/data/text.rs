//! Reading data files as distributed: decoding (UTF-8 or a legacy single-byte encoding),
//! HTML entities, and the bookkeeping of `--skip-invalid`.
//!
//! Decoding never guesses silently and never replaces bytes. A file that is valid UTF-8 is read
//! as UTF-8 (re-encoded copies of the classic datasets circulate). Otherwise a format whose files
//! are distributed in Latin-1/cp1252 (MovieLens-1M and -100K, Book-Crossing) is decoded as
//! windows-1252, the superset browsers use for both labels; the five bytes that windows-1252
//! leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) are reported as an encoding error on their
//! line. A format that must be UTF-8 (MovieLens latest, plain CSV) reports invalid UTF-8 on its
//! line. With `--skip-invalid` such a line is skipped and counted instead.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Why a row was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Bytes that do not decode in the file's encoding.
    Encoding,
    /// Wrong number of columns, or a row the CSV parser rejects.
    Malformed,
    /// An empty id.
    EmptyId,
    /// An id seen before in the same table.
    DuplicateId,
    /// A rating that is not a number in the dataset's scale.
    BadRating,
    /// A rating for a user the users table does not have.
    UnknownUser,
    /// A rating for an item the items table does not have.
    UnknownItem,
    /// A second rating of the same item by the same user.
    DuplicateRating,
}

impl Reason {
    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Encoding => "undecodable bytes",
            Reason::Malformed => "malformed row",
            Reason::EmptyId => "empty id",
            Reason::DuplicateId => "duplicate id",
            Reason::BadRating => "bad rating",
            Reason::UnknownUser => "unknown user",
            Reason::UnknownItem => "unknown item",
            Reason::DuplicateRating => "duplicate rating",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Invalid rows: an error at the first one (strict), or skipped and counted by file and reason.
#[derive(Debug, Clone, Default)]
pub struct Issues {
    skip_invalid: bool,
    /// Skipped rows by (file name, reason): count and the first occurrence.
    pub skipped: BTreeMap<(String, Reason), (usize, String)>,
}

impl Issues {
    /// Strict (`skip_invalid == false`) or skipping.
    pub fn new(skip_invalid: bool) -> Issues {
        Issues { skip_invalid, skipped: BTreeMap::new() }
    }

    /// Records an invalid row of `path` at `line`: an error naming file and line when strict,
    /// counted otherwise.
    pub fn bad(&mut self, path: &Path, line: usize, reason: Reason, detail: impl fmt::Display) -> Result<()> {
        let message = format!("{}:{line}: {reason}: {detail}", path.display());
        if !self.skip_invalid {
            bail!("{message} (--skip-invalid skips such rows and counts them)");
        }
        let entry = self.skipped.entry((file_name(path), reason)).or_insert((0, message));
        entry.0 += 1;
        Ok(())
    }

    /// Total skipped rows.
    pub fn total(&self) -> usize {
        self.skipped.values().map(|(n, _)| n).sum()
    }
}

/// The last component of a path, for reports.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// How a file's bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 only: invalid UTF-8 is an error.
    Utf8,
    /// UTF-8 when the whole file is valid UTF-8, else windows-1252 (Latin-1 as browsers read it).
    Legacy,
}

/// A decoded text file.
#[derive(Debug, Clone)]
pub struct TextFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The decoded text (a leading byte-order mark removed).
    pub text: String,
    /// The encoding it was decoded from ("utf-8" or "windows-1252").
    pub encoding: &'static str,
    /// 1-based lines that did not decode (skipped under `--skip-invalid`; empty when strict).
    pub bad_lines: BTreeSet<usize>,
}

impl TextFile {
    /// Reads and decodes `path`; undecodable lines go through `issues`.
    pub fn read(path: &Path, encoding: Encoding, issues: &mut Issues) -> Result<TextFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let mut bad_lines = BTreeSet::new();
        let (text, name) = match core::str::from_utf8(bytes) {
            Ok(text) => (text.to_owned(), "utf-8"),
            Err(_) if encoding == Encoding::Legacy => {
                let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes);
                // windows-1252 decodes every byte; the five it leaves undefined come out as C1
                // control characters, which no text in these datasets contains.
                for (index, line) in text.split('\n').enumerate() {
                    if let Some(c) = line.chars().find(|c| ('\u{80}'..='\u{9f}').contains(c)) {
                        issues.bad(
                            path,
                            index + 1,
                            Reason::Encoding,
                            format_args!("byte 0x{:02X} is not a character in Latin-1/windows-1252", c as u32),
                        )?;
                        bad_lines.insert(index + 1);
                    }
                }
                (text.into_owned(), "windows-1252")
            }
            Err(_) => {
                let mut text = String::with_capacity(bytes.len());
                for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
                    if index > 0 {
                        text.push('\n');
                    }
                    match core::str::from_utf8(line) {
                        Ok(line) => text.push_str(line),
                        Err(error) => {
                            let byte = line[error.valid_up_to()];
                            issues.bad(
                                path,
                                index + 1,
                                Reason::Encoding,
                                format_args!("invalid UTF-8 (byte 0x{byte:02X} at column {})", error.valid_up_to() + 1),
                            )?;
                            bad_lines.insert(index + 1);
                        }
                    }
                }
                (text, "utf-8")
            }
        };
        Ok(TextFile { path: path.to_path_buf(), text, encoding: name, bad_lines })
    }

    /// Non-blank lines with their 1-based numbers, undecodable lines left out.
    pub fn lines(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        self.text
            .split('\n')
            .enumerate()
            .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
            .filter(|(n, line)| !line.trim().is_empty() && !self.bad_lines.contains(n))
    }
}

/// Decodes HTML character references (`&amp;`, `&#233;`, `&eacute;` ...), as Book-Crossing
/// stores some characters; text without `&` is returned as is.
pub fn decode_entities(text: &str) -> String {
    if text.contains('&') {
        html_escape::decode_html_entities(text).into_owned()
    } else {
        text.to_owned()
    }
}

/// Parses `file` as delimited text and calls `each(line, record, issues)` for every record whose
/// line decoded; returns the header row when `has_headers`. Rows the parser rejects go through
/// `issues` as malformed.
pub(crate) fn csv_records(
    file: &TextFile,
    delimiter: u8,
    escape: Option<u8>,
    has_headers: bool,
    issues: &mut Issues,
    mut each: impl FnMut(usize, &csv::StringRecord, &mut Issues) -> Result<()>,
) -> Result<Option<csv::StringRecord>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .escape(escape)
        .has_headers(false)
        .flexible(true)
        .from_reader(file.text.as_bytes());
    let mut headers = None;
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line() as usize);
                if file.bad_lines.contains(&line) {
                    continue;
                }
                if has_headers && headers.is_none() {
                    headers = Some(record.clone());
                    continue;
                }
                each(line, &record, issues)?;
            }
            Err(error) => {
                let line = error.position().map_or(line, |p| p.line() as usize);
                if has_headers && headers.is_none() {
                    bail!("{}:{line}: unreadable header: {error}", file.path.display());
                }
                issues.bad(&file.path, line, Reason::Malformed, error)?;
            }
        }
    }
    if has_headers && headers.is_none() {
        bail!("{}: empty file (no header row)", file.path.display());
    }
    Ok(headers)
}

/// Checks a record's column count.
pub(crate) fn expect_columns(
    file: &TextFile,
    line: usize,
    record: &csv::StringRecord,
    expected: usize,
    issues: &mut Issues,
) -> Result<bool> {
    if record.len() == expected {
        return Ok(true);
    }
    issues.bad(&file.path, line, Reason::Malformed, format_args!("{} columns, expected {expected}", record.len()))?;
    Ok(false)
}

/// The first row of a delimited file (its header).
pub(crate) fn header_row(file: &TextFile, delimiter: u8, escape: Option<u8>) -> Result<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .escape(escape)
        .has_headers(true)
        .flexible(true)
        .from_reader(file.text.as_bytes());
    let headers = reader.headers().with_context(|| format!("{}:1: unreadable header", file.path.display()))?.clone();
    if headers.is_empty() {
        bail!("{}: empty file (no header row)", file.path.display());
    }
    Ok(headers)
}

/// Checks that a header row names exactly `expected`.
pub(crate) fn check_header(file: &TextFile, delimiter: u8, escape: Option<u8>, expected: &[&str]) -> Result<()> {
    let headers = header_row(file, delimiter, escape)?;
    if headers.iter().map(str::trim).ne(expected.iter().copied()) {
        bail!(
            "{}:1: header is '{}', expected '{}'",
            file.path.display(),
            headers.iter().collect::<Vec<_>>().join(","),
            expected.join(",")
        );
    }
    Ok(())
}
