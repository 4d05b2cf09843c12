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
//!
//! Whatever the format, a byte-order mark decides first: a UTF-8 BOM is skipped, a UTF-16 file
//! with a BOM (little- or big-endian, as Windows editors save "Unicode") is decoded and loads like
//! its UTF-8 twin (an unpaired surrogate is an encoding error on its line), and UTF-32 is refused
//! by name. A file without a BOM whose first bytes are full of NULs is UTF-16 (or UTF-32) that
//! cannot be decoded safely: it is refused by name rather than read as garbled text.

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
    /// A release year that is not a whole number.
    BadYear,
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
            Reason::BadYear => "bad year",
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
    /// The encoding it was decoded from ("utf-8", "windows-1252", "utf-16le" or "utf-16be").
    pub encoding: &'static str,
    /// 1-based lines that did not decode (skipped under `--skip-invalid`; empty when strict).
    pub bad_lines: BTreeSet<usize>,
}

impl TextFile {
    /// Reads and decodes `path`; undecodable lines go through `issues`.
    pub fn read(path: &Path, encoding: Encoding, issues: &mut Issues) -> Result<TextFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if bytes.starts_with(b"\xFF\xFE\0\0") || bytes.starts_with(b"\0\0\xFE\xFF") {
            bail!("{} looks like UTF-32 (its byte-order mark says so); save it as UTF-8", path.display());
        }
        for (bom, big_endian, name) in [(b"\xFF\xFE", false, "utf-16le"), (b"\xFE\xFF", true, "utf-16be")] {
            if let Some(body) = bytes.strip_prefix(bom) {
                let (text, bad_lines) = decode_utf16(path, body, big_endian, issues)?;
                return Ok(TextFile { path: path.to_path_buf(), text, encoding: name, bad_lines });
            }
        }
        let mut bytes = bytes;
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        match nul_pattern(&bytes) {
            NulPattern::None => {}
            NulPattern::Utf16 => bail!(
                "{} looks like UTF-16 without a byte-order mark; save it as UTF-8 (or UTF-16 with a BOM)",
                path.display()
            ),
            NulPattern::Everywhere => bail!(
                "{} is not text (NUL bytes throughout its start: UTF-32 or a binary file?); save it as UTF-8",
                path.display()
            ),
        }
        let mut bad_lines = BTreeSet::new();
        // Valid UTF-8 (the usual case) becomes the text without a copy: a large ratings file is
        // held once.
        let (text, name) = match String::from_utf8(bytes) {
            Ok(text) => (text, "utf-8"),
            Err(error) if encoding == Encoding::Legacy => {
                let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(error.as_bytes());
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
            Err(error) => {
                let bytes = error.as_bytes();
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

/// How NUL bytes are spread over the start of a file without a byte-order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NulPattern {
    /// Few or none: text in a byte encoding.
    None,
    /// In every other byte: UTF-16 (mostly ASCII text, one zero byte per code unit).
    Utf16,
    /// In both byte positions of the code units: UTF-32 or not text at all.
    Everywhere,
}

/// Bytes of a file's start looked at by [`nul_pattern`].
const NUL_SAMPLE: usize = 512;

/// Classifies the NUL bytes in the first [`NUL_SAMPLE`] bytes: UTF-16 when at least a quarter of
/// the two-byte units have a zero in the same position and few a zero in the other. Text in
/// UTF-8 or a single-byte encoding has no NULs at all.
fn nul_pattern(bytes: &[u8]) -> NulPattern {
    let sample = &bytes[..bytes.len().min(NUL_SAMPLE)];
    let units = sample.len() / 2;
    if units == 0 {
        return NulPattern::None;
    }
    let nuls = |parity: usize| sample.chunks_exact(2).filter(|unit| unit[parity] == 0).count();
    let (even, odd) = (nuls(0), nuls(1));
    let many = |n: usize| n * 4 >= units;
    let few = |n: usize| n * 8 < units;
    match (many(even), many(odd)) {
        (true, true) => NulPattern::Everywhere,
        (true, false) | (false, true) if few(even.min(odd)) => NulPattern::Utf16,
        (true, false) | (false, true) => NulPattern::Everywhere,
        (false, false) => NulPattern::None,
    }
}

/// Decodes UTF-16 (the byte-order mark already removed) line by line: a line with an unpaired
/// surrogate, or a last line cut in half a code unit, goes through `issues` as an encoding error.
fn decode_utf16(path: &Path, body: &[u8], big_endian: bool, issues: &mut Issues) -> Result<(String, BTreeSet<usize>)> {
    let units: Vec<u16> =
        body.chunks_exact(2)
            .map(|pair| {
                if big_endian {
                    u16::from_be_bytes([pair[0], pair[1]])
                } else {
                    u16::from_le_bytes([pair[0], pair[1]])
                }
            })
            .collect();
    let mut text = String::with_capacity(units.len());
    let mut bad_lines = BTreeSet::new();
    let mut lines = 0;
    for (index, line) in units.split(|&u| u == u16::from(b'\n')).enumerate() {
        lines = index + 1;
        if index > 0 {
            text.push('\n');
        }
        match char::decode_utf16(line.iter().copied()).collect::<core::result::Result<String, _>>() {
            Ok(decoded) => text.push_str(&decoded),
            Err(error) => {
                let column = line.iter().position(|&u| u == error.unpaired_surrogate()).map_or(0, |p| p + 1);
                issues.bad(
                    path,
                    index + 1,
                    Reason::Encoding,
                    format_args!(
                        "invalid UTF-16 (unpaired surrogate 0x{:04X} at character {column})",
                        error.unpaired_surrogate()
                    ),
                )?;
                bad_lines.insert(index + 1);
            }
        }
    }
    if body.len() % 2 == 1 {
        issues.bad(
            path,
            lines,
            Reason::Encoding,
            "invalid UTF-16 (the file ends in half a character: an odd number of bytes)",
        )?;
        bad_lines.insert(lines);
    }
    Ok((text, bad_lines))
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
    issues.bad(&file.path, line, Reason::Malformed, column_count(record.len(), expected))?;
    Ok(false)
}

/// "found 5 columns, expected 3": what a row with the wrong number of columns is told.
pub(crate) fn column_count(found: usize, expected: usize) -> String {
    let plural = if found == 1 { "" } else { "s" };
    format!("found {found} column{plural}, expected {expected}")
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
