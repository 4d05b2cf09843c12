//! What every loader does with rows of the wrong width, files in UTF-16 (with and without a
//! byte-order mark), the plain format's item years (and the MeLU protocol on the synthetic data),
//! and the two groupings `trainer data stats` prints. Errors name the file and line, the CLI
//! exits with 2 and changes no file.

use std::path::Path;

use metarec_trainer::data::stats::DataStats;
use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::text::Reason;
use metarec_trainer::data::{Dataset, LoadOptions};
use metarec_trainer::split::{self, MeluConfig};

use crate::common::{command, copy_fixture, fixture, output, text, top_files as snapshot};

/// A small synthetic plain dataset (50 users, 30 items).
fn synthetic() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::population(3, 50, 30, 3..=12);
    synth::generate(&config, dir.path()).unwrap();
    dir
}

fn append(dir: &Path, file: &str, bytes: &[u8]) {
    let path = dir.join(file);
    let mut contents = std::fs::read(&path).unwrap();
    contents.extend_from_slice(bytes);
    std::fs::write(&path, contents).unwrap();
}

fn lines_of(dir: &Path, file: &str) -> usize {
    std::fs::read(dir.join(file)).unwrap().iter().filter(|&&b| b == b'\n').count()
}

fn load(dir: &Path, skip_invalid: bool) -> anyhow::Result<Dataset> {
    Dataset::load_with(dir, &LoadOptions { format: None, skip_invalid })
}

fn error_of(dir: &Path) -> String {
    format!("{:#}", load(dir, false).unwrap_err())
}

fn skipped_of(dir: &Path) -> Vec<(String, Reason, usize)> {
    load(dir, true).unwrap().info.report.skipped.iter().map(|(f, r, n, _)| (f.clone(), *r, *n)).collect()
}

/// Runs the real binary: exit code, stdout and stderr.
fn trainer(args: &[&str], data: &Path) -> (Option<i32>, String, String) {
    let output = output(command().args(args).arg("--data").arg(data));
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// A bad row appended to `file`: a strict load fails naming the file, the line and
/// `message`; a skipping load counts it as malformed and keeps every other row.
fn check_bad_row(name: &str, dir: &Path, file: &str, row: &[u8], message: &str) {
    let good = load(dir, false).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let line = lines_of(dir, file) + 1;
    append(dir, file, row);
    let error = error_of(dir);
    let at = format!("{file}:{line}: malformed row: ");
    assert!(error.contains(&at) && error.contains(message), "{name}: {error}");
    assert!(error.contains("--skip-invalid"), "{name}: {error}");
    assert_eq!(skipped_of(dir), [(file.to_string(), Reason::Malformed, 1)], "{name}");
    let skipped = load(dir, true).unwrap();
    assert_eq!(skipped.ratings, good.ratings, "{name}: the other rows are all kept");
}

#[test]
fn plain_rows_must_have_as_many_columns_as_the_header() {
    let cases: [(&str, &[u8], &str); 5] = [
        ("ratings.csv", b"u00000,i0010,1,extra,more\n", "found 5 columns, expected 3"),
        ("ratings.csv", b"u00000,i0010\n", "found 2 columns, expected 3 as the header has (user_id,item_id,rating)"),
        ("ratings.csv", b"u00000\n", "found 1 column, expected 3"),
        ("users.csv", b"u99999,F,30,occ01,r1,major,surplus\n", "found 7 columns, expected 6"),
        ("items.csv", b"i9999,\"Item 9999, 1990\",drama\n", "found 3 columns, expected 4"),
    ];
    for (file, row, message) in cases {
        let dir = synthetic();
        check_bad_row(file, dir.path(), file, row, message);
    }
    // Quoted fields may hold the separator: a title with a comma is one column.
    let dir = synthetic();
    let data = load(dir.path(), false).unwrap();
    assert!(data.info.report.skipped.is_empty());
    append(dir.path(), "items.csv", b"i9999,\"Item, with, commas\",drama,1990\n");
    load(dir.path(), false).unwrap();
}

#[test]
fn every_delimited_format_checks_its_rows_width() {
    let cases: [(&str, &str, &[u8], &str); 13] = [
        ("ml-1m", "ratings.dat", b"1::5::3::978300760::extra\n", "found 5 '::'-separated columns, expected 4"),
        ("ml-1m", "ratings.dat", b"1::5\n", "found 2 '::'-separated columns, expected 4"),
        ("ml-1m", "users.dat", b"9::M::25::4::55117::extra\n", "found 6 '::'-separated columns, expected 5"),
        ("ml-1m", "movies.dat", b"9::Extra (1999)\n", "found 2 '::'-separated columns, expected 3"),
        ("ml-100k", "u.data", b"1\t5\t3\t874965758\textra\n", "found 5 '\t'-separated columns, expected 4"),
        ("ml-100k", "u.data", b"1\t5\n", "found 2 '\t'-separated columns, expected 4"),
        ("ml-100k", "u.user", b"9|30|F|writer|10001|extra\n", "found 6 '|'-separated columns, expected 5"),
        ("ml-latest", "ratings.csv", b"1,5,4.0,964982703,extra,more\n", "found 6 columns, expected 4"),
        ("ml-latest", "ratings.csv", b"1,5\n", "found 2 columns, expected 4"),
        ("ml-latest", "movies.csv", b"9,\"Quoted, Title (1999)\",Drama,extra\n", "found 4 columns, expected 3"),
        ("book-crossing", "BX-Book-Ratings.csv", b"\"7\";\"0393045218\"\n", "found 2 columns, expected 3"),
        ("book-crossing", "BX-Book-Ratings.csv", b"\"7\";\"0393045218\";\"4\";\"x\"\n", "found 4 columns, expected 3"),
        ("book-crossing", "BX-Users.csv", b"\"9\";\"oslo, norway\"\n", "found 2 columns, expected 3"),
    ];
    for (format, file, row, message) in cases {
        let dir = copy_fixture(format);
        if format == "book-crossing" {
            // The fixture's own broken row (line 8, checked in formats.rs) is left out here.
            let books = std::fs::read(dir.path().join("BX-Books.csv")).unwrap();
            let clean: Vec<&[u8]> =
                books.split_inclusive(|&b| b == b'\n').enumerate().filter(|(i, _)| *i != 7).map(|(_, l)| l).collect();
            std::fs::write(dir.path().join("BX-Books.csv"), clean.concat()).unwrap();
        }
        check_bad_row(&format!("{format} {file}"), dir.path(), file, row, message);
    }
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut bytes = if big_endian { vec![0xFE, 0xFF] } else { vec![0xFF, 0xFE] };
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&if big_endian { unit.to_be_bytes() } else { unit.to_le_bytes() });
    }
    bytes
}

/// What a load gives, comparable across encodings.
#[allow(clippy::type_complexity)]
fn contents(data: &Dataset) -> (Vec<(String, Vec<String>, Option<String>)>, Vec<(String, Vec<String>)>, Vec<String>) {
    (
        data.users.iter().map(|u| (u.id.clone(), u.raw.clone(), u.group.clone())).collect(),
        data.items.iter().map(|i| (i.id.clone(), i.raw.clone())).collect(),
        data.info.item_title.clone(),
    )
}

#[test]
fn utf16_with_a_byte_order_mark_loads_like_its_utf8_twin() {
    for (name, files, latin1) in [
        ("synthetic", &["users.csv", "items.csv", "ratings.csv"][..], false),
        ("ml-1m", &["users.dat", "movies.dat", "ratings.dat"][..], true),
    ] {
        let original = if name == "synthetic" { synthetic() } else { copy_fixture(name) };
        let twin = load(original.path(), false).unwrap();
        for (big_endian, encoding) in [(false, "utf-16le"), (true, "utf-16be")] {
            let dir = tempfile::tempdir().unwrap();
            for (file, bytes) in snapshot(original.path()) {
                let converted = if files.contains(&file.as_str()) {
                    let text = if latin1 {
                        encoding_rs::WINDOWS_1252.decode(&bytes).0.into_owned()
                    } else {
                        String::from_utf8(bytes).unwrap()
                    };
                    // Windows line ends too, as Notepad writes them.
                    utf16(&text.replace('\n', "\r\n"), big_endian)
                } else {
                    bytes
                };
                std::fs::write(dir.path().join(&file), converted).unwrap();
            }
            let data = load(dir.path(), false).unwrap_or_else(|e| panic!("{name} {encoding}: {e:#}"));
            assert_eq!(contents(&data), contents(&twin), "{name} {encoding}");
            assert_eq!(data.ratings, twin.ratings, "{name} {encoding}");
            assert_eq!(data.info.item_year, twin.info.item_year, "{name} {encoding}");
            assert!(data.info.report.files.iter().all(|(_, e)| *e == encoding), "{:?}", data.info.report.files);
        }
    }
    // A UTF-8 byte-order mark is skipped.
    let dir = synthetic();
    let twin = load(dir.path(), false).unwrap();
    for file in ["users.csv", "items.csv", "ratings.csv"] {
        let path = dir.path().join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, [b"\xEF\xBB\xBF".as_slice(), &bytes].concat()).unwrap();
    }
    let data = load(dir.path(), false).unwrap();
    assert_eq!((contents(&data), data.ratings), (contents(&twin), twin.ratings));
}

#[test]
fn utf16_without_a_byte_order_mark_is_refused_by_name() {
    for big_endian in [false, true] {
        let dir = synthetic();
        let path = dir.path().join("ratings.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &utf16(&text, big_endian)[2..]).unwrap();
        let error = error_of(dir.path());
        let expected = format!(
            "{} looks like UTF-16 without a byte-order mark; save it as UTF-8 (or UTF-16 with a BOM)",
            path.display()
        );
        assert!(error.contains(&expected), "{error}");
        // --skip-invalid cannot skip a whole file's encoding.
        let error = format!("{:#}", load(dir.path(), true).unwrap_err());
        assert!(error.contains(&expected), "{error}");
    }
    // The same for a Latin-1 format.
    let dir = copy_fixture("ml-1m");
    let path = dir.path().join("users.dat");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &utf16(&text, false)[2..]).unwrap();
    assert!(error_of(dir.path()).contains("users.dat looks like UTF-16 without a byte-order mark"));
    // UTF-32 is refused by name, with or without its mark.
    let mut utf32 = vec![0xFF, 0xFE, 0, 0];
    utf32.extend(text.chars().flat_map(|c| (c as u32).to_le_bytes()));
    std::fs::write(&path, &utf32).unwrap();
    assert!(error_of(dir.path()).contains("users.dat looks like UTF-32"), "{}", error_of(dir.path()));
    std::fs::write(&path, &utf32[4..]).unwrap();
    assert!(error_of(dir.path()).contains("users.dat is not text"), "{}", error_of(dir.path()));
}

#[test]
fn broken_utf16_is_an_encoding_error_on_its_line() {
    let dir = synthetic();
    let path = dir.path().join("ratings.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().count();
    let mut bytes = utf16(&text, false);
    // A lone high surrogate in a new last row, then that row's end.
    bytes.extend_from_slice(&[0x00, 0xD8]);
    bytes.extend(utf16("u00000,i0001,4\n", false).into_iter().skip(2));
    std::fs::write(&path, &bytes).unwrap();
    let error = error_of(dir.path());
    assert!(
        error.contains(&format!(
            "ratings.csv:{}: undecodable bytes: invalid UTF-16 (unpaired surrogate 0xD800",
            lines + 1
        )),
        "{error}"
    );
    assert_eq!(skipped_of(dir.path()), [("ratings.csv".to_string(), Reason::Encoding, 1)]);
    // Half a code unit at the end.
    let mut bytes = utf16(&text, false);
    bytes.push(b'x');
    std::fs::write(&path, &bytes).unwrap();
    let error = error_of(dir.path());
    assert!(error.contains("ratings.csv:") && error.contains("odd number of bytes"), "{error}");
}

#[test]
fn plain_items_declare_their_release_year() {
    let dir = synthetic();
    let schema = std::fs::read_to_string(dir.path().join("schema.toml")).unwrap();
    assert!(schema.contains("[items]\nfile = \"items.csv\"\nid = \"item_id\"\nyear = \"year\"\n"), "{schema}");
    let data = load(dir.path(), false).unwrap();
    // Every item's year is the items.csv column's.
    let items = std::fs::read_to_string(dir.path().join("items.csv")).unwrap();
    for line in items.lines().skip(1) {
        let (id, year) = (line.split(',').next().unwrap(), line.rsplit(',').next().unwrap());
        if let Some(i) = data.items.iter().position(|item| item.id == id) {
            assert_eq!(data.info.item_year[i], Some(year.parse().unwrap()), "{line}");
        }
    }
    assert!(data.info.item_year.iter().any(|y| y.is_some_and(|y| y > 1997)));

    // Without the declaration the MeLU protocol says how to make one.
    std::fs::write(dir.path().join("schema.toml"), schema.replace("year = \"year\"\n", "")).unwrap();
    let data = load(dir.path(), false).unwrap();
    assert!(data.info.item_year.iter().all(Option::is_none));
    let error = format!("{:#}", split::melu(&data, &MeluConfig::default(), 1).unwrap_err());
    assert!(error.contains("no item is released after 1997"), "{error}");
    assert!(error.contains("[items] year = \"COLUMN\"") && error.contains("schema.toml"), "{error}");

    // An empty year is unknown; a year that is not a whole number is an error on its line.
    std::fs::write(dir.path().join("schema.toml"), &schema).unwrap();
    let line = lines_of(dir.path(), "items.csv") + 1;
    append(dir.path(), "items.csv", b"i9998,\"Item 9998\",drama,\n");
    load(dir.path(), false).unwrap();
    append(dir.path(), "items.csv", b"i9999,\"Item 9999\",drama,soon\n");
    let error = error_of(dir.path());
    assert!(error.contains(&format!("items.csv:{}: bad year: year 'soon' in column 'year'", line + 1)), "{error}");
    assert_eq!(skipped_of(dir.path()), [("items.csv".to_string(), Reason::BadYear, 1)]);

    // Years belong to items.
    let misplaced = schema.replace("group = \"group\"\n", "group = \"group\"\nyear = \"age\"\n");
    std::fs::write(dir.path().join("schema.toml"), misplaced).unwrap();
    let error = error_of(dir.path());
    assert!(error.contains("[users] year") && error.contains("[items]"), "{error}");
    // A declared column must exist.
    std::fs::write(dir.path().join("schema.toml"), schema.replace("year = \"year\"\n", "year = \"released\"\n"))
        .unwrap();
    assert!(error_of(dir.path()).contains("items.csv: no column 'released' in header"));
}

#[test]
fn the_melu_protocol_runs_on_the_synthetic_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig { minor_share: 0.15, ..crate::common::population(7, 300, 120, 10..=60) };
    synth::generate(&config, dir.path()).unwrap();
    let data = load(dir.path(), false).unwrap();
    let (states, report) = split::melu(&data, &MeluConfig::default(), 1).unwrap();
    assert!(states.states.iter().all(|(_, split)| !split.test.is_empty()), "{report}");
}

#[test]
fn stats_print_the_rule_and_the_group_column_labelled() {
    let dir = synthetic();
    let data = load(dir.path(), false).unwrap();
    let text = DataStats::of(&data).to_string();
    let minor = data.users.iter().filter(|u| u.group.as_deref() == Some("minor")).count();
    let major = data.users.len() - minor;
    let column = format!(
        "groups from the dataset's group column: major {major} ({:.1}%), minor {minor} ({:.1}%) [eval and report group by these]\n",
        100.0 * major as f64 / data.users.len() as f64,
        100.0 * minor as f64 / data.users.len() as f64,
    );
    assert!(text.contains(&column), "{text}");
    let rule = text.lines().find(|l| l.starts_with("major/minor by the paper's rule (top-30% field shares): major "));
    assert!(rule.is_some_and(|l| !l.contains("eval")), "{text}");

    // Without a group column only the rule's groups, which eval and report then use.
    let text = DataStats::of(&load(&fixture("ml-1m"), false).unwrap()).to_string();
    assert!(
        text.contains(
            "major/minor by the paper's rule (top-30% field shares): major 1 (16.7%), minor 5 (83.3%) \
             [major = at least 3 fields in top sets] [eval and report group by these]\n"
        ),
        "{text}"
    );
    assert!(!text.contains("group column"), "{text}");
}

#[test]
fn the_cli_exits_with_2_and_changes_no_file() {
    type BreakIt = Box<dyn Fn(&Path)>;
    let bad: [(&str, &str, BreakIt); 3] = [
        (
            "extra columns",
            "ratings.csv:",
            Box::new(|dir: &Path| append(dir, "ratings.csv", b"u00000,i0010,1,extra,more\n")),
        ),
        (
            "too few columns",
            "found 2 columns, expected 3",
            Box::new(|dir: &Path| append(dir, "ratings.csv", b"u00000,i0010\n")),
        ),
        (
            "UTF-16 without BOM",
            "looks like UTF-16 without a byte-order mark",
            Box::new(|dir: &Path| {
                let path = dir.join("users.csv");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, &utf16(&text, false)[2..]).unwrap();
            }),
        ),
    ];
    for (what, message, break_it) in bad {
        let dir = synthetic();
        break_it(dir.path());
        let before = snapshot(dir.path());
        let out = dir.path().join("split.csv");
        for command in [&["data", "stats"][..], &["data", "split", "paml", "--out", out.to_str().unwrap()][..]] {
            let (code, _, stderr) = trainer(command, dir.path());
            assert_eq!(code, Some(2), "{what} {command:?}: {stderr}");
            assert!(stderr.contains(message), "{what} {command:?}: {stderr}");
        }
        assert_eq!(snapshot(dir.path()), before, "{what}: no file changed");
    }
    // The synthetic data in UTF-16 with a BOM, through the CLI; the MeLU split runs.
    let dir = synthetic();
    for file in ["users.csv", "items.csv", "ratings.csv"] {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, utf16(&text, true)).unwrap();
    }
    let (code, stdout, stderr) = trainer(&["data", "stats"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("load: read ratings.csv (utf-16be)"), "{stdout}");
}
