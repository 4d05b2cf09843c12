//! The command line under bad input, as a table (issue 19: "the rest of the class"): every
//! subcommand with missing flags, unknown enum values, numbers that do not parse or break their
//! rule, datasets, splits, runs, model and config files that are not what they should be. Each
//! case must exit with code 2 (clap's usage errors too), say what is wrong (a fragment of the
//! message), print no panic or libtorch stack trace, and leave the working directory as it was:
//! every file byte-identical, nothing created. Then a property: 140 seeded random invocations
//! with random flag values never panic and exit with 0 or 2.
//!
//! Every case runs in its own copy of [`tiny_workspace`] (built once per test binary run), all
//! of them in parallel; the failures are collected and reported together.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{changes, copy_dir, snapshot, tiny_workspace, trainer_with_limit, TINY_MODEL};

/// A change to the case's copy of the workspace before the command runs.
#[derive(Debug)]
enum Step {
    /// Writes a file (its directory created), `<long>` in the text replaced by 5000 x's.
    Write(&'static str, &'static str),
    /// Writes bytes to a file.
    Bytes(&'static str, &'static [u8]),
    /// Copies a file or a directory.
    Copy(&'static str, &'static str),
    /// Keeps the first bytes of a file.
    Truncate(&'static str, usize),
    /// Replaces every occurrence of a text in a file.
    Replace(&'static str, &'static str, &'static str),
    /// Keeps the lines of a file that do not start with a prefix.
    DropLines(&'static str, &'static str),
    /// Creates an empty directory.
    Dir(&'static str),
    /// Rewrites a text file.
    Edit(&'static str, fn(&str) -> String),
}

/// The rating of every support row of a split file replaced by `nan`.
fn nan_support_ratings(text: &str) -> String {
    let row = |line: &str| match line.rsplit_once(',') {
        Some((head, _)) if line.contains(",support,") => format!("{head},nan\n"),
        _ => format!("{line}\n"),
    };
    text.lines().map(row).collect()
}

/// One command and what it must do.
#[derive(Debug)]
struct Case {
    name: &'static str,
    /// The arguments, split at spaces; `'…'` quotes one argument (`''`: an empty one), `<long>`
    /// becomes 5000 x's and `<ff>` the non-UTF-8 byte 0xFF.
    command: &'static str,
    setup: &'static [Step],
    code: i32,
    fragment: &'static str,
    /// Paths the command may create or change (a case that succeeds).
    creates: &'static [&'static str],
}

/// A command that must be refused with exit code 2 and a message containing `fragment`.
const fn refused(name: &'static str, command: &'static str, fragment: &'static str) -> Case {
    Case { name, command, setup: &[], code: 2, fragment, creates: &[] }
}

impl Case {
    /// The same case after `setup`.
    const fn after(self, setup: &'static [Step]) -> Case {
        Case { setup, ..self }
    }
}

/// A command that must succeed (exit 0) and change nothing but `creates`.
const fn works(name: &'static str, command: &'static str, creates: &'static [&'static str]) -> Case {
    Case { name, command, setup: &[], code: 0, fragment: "", creates }
}

/// The table. The workspace holds `data`, `other`, `split.csv` (of data), `other-split.csv`,
/// the runs `run` (MeLU), `at` (AT-PAML), `mf`, and `model.mrec` (exported from `run`).
static CASES: &[Case] = &[
    // Usage: clap's errors exit with 2 as well.
    refused("no subcommand", "", "Usage: trainer <COMMAND>"),
    refused("unknown subcommand", "nope", "unrecognized subcommand 'nope'"),
    refused("train without flags", "train", "the following required arguments were not provided"),
    refused("eval without --run", "eval", "--run <RUN>"),
    refused("misspelt flag", "train --data data --out new --epoch 1", "similar argument exists: '--epochs'"),
    refused(
        "flag without its value",
        "train --data data --out new --epochs",
        "a value is required for '--epochs <EPOCHS>'",
    ),
    refused("non-UTF-8 --device", "train --data data --out new --device <ff>", "invalid UTF-8"),
    // Enums.
    refused(
        "--method nope",
        "train --data data --out new --method nope",
        "invalid value 'nope' for '--method <METHOD>'",
    ),
    refused("--format nope", "data stats --data data --format nope", "invalid value 'nope' for '--format <FORMAT>'"),
    refused(
        "train --device nope",
        "train --data data --out new --device nope",
        "--device 'nope': expected cpu, cuda or auto",
    ),
    refused(
        "--embeddings nope",
        "export --run run --out new.mrec --embeddings nope",
        "invalid value 'nope' for '--embeddings <EMBEDDINGS>'",
    ),
    refused(
        "--methods with an unknown one",
        "compare --data data --out new --methods melu,nope",
        "invalid value 'nope' for '--methods <METHODS>'",
    ),
    refused(
        "report --methods mf",
        "report --data data --out new --no-figures --methods mf",
        "--methods mf: matrix factorisation with fold-in is a baseline row",
    ),
    // Numbers: not numbers, out of range, out of the type's range.
    refused(
        "--epochs abc",
        "train --data data --out new --epochs abc",
        "abc is not a valid count: expected a whole number >= 1",
    ),
    refused(
        "--seed -1",
        "train --data data --out new --seed -1",
        "-1 is not a valid seed: expected a whole number in 0..=18446744073709551615",
    ),
    refused(
        "--threads i32::MAX",
        "train --data data --out new --threads 2147483647",
        "2147483647 is not a valid thread count: expected a whole number in 1..=1024",
    ),
    refused(
        "--embedding-dim 5000",
        "train --data data --out new --embedding-dim 5000",
        "5000 is not a valid width: expected a whole number in 1..=4096",
    ),
    refused(
        "--hidden i64::MAX",
        "train --data data --out new --hidden 9223372036854775807",
        "9223372036854775807 is not a valid width",
    ),
    refused(
        "--inits 65",
        "train --data data --out new --inits 65",
        "65 is not a valid count: expected a whole number in 1..=64",
    ),
    refused(
        "--memory-size 1e12",
        "train --data data --out new --memory-size 1000000000000",
        "1000000000000 is not a valid count: expected a whole number in 1..=1048576",
    ),
    refused(
        "--neighbours 17",
        "train --data data --out new --method at-paml --neighbours 17",
        "17 is not a valid count: expected a whole number in 1..=16 (the on-device runtime's limit)",
    ),
    refused("--delta -inf", "train --data data --out new --delta -inf", "-inf is not a valid kernel width"),
    refused(
        "--adapt sideways",
        "train --data data --out new --adapt sideways",
        "'sideways' is not a scope: expected one of fold-in, all, head, user",
    ),
    refused("--dropout 1", "train --data data --out new --dropout 1", "1 is not a valid share"),
    refused("--preset newest", "train --data data --out new --preset newest", "invalid value 'newest' for '--preset"),
    refused(
        "--mf-lambda below the runtime's floor",
        "train --data data --out new --mf-lambda 1e-300",
        "1e-300 is not a valid ridge weight: expected a finite number >= 1e-5 and < 1e30 (the on-device",
    ),
    refused(
        "--warmup past i128",
        "train --data data --out new --warmup 999999999999999999999999999999999999999999",
        "is not a valid count: expected a whole number >= 0",
    ),
    refused(
        "report seeds past u64",
        "report --data data --out new --no-figures --seed 18446744073709551615 --seeds 3",
        "the last seed would be above 18446744073709551615",
    ),
    // data synth.
    refused(
        "synth: --users 1e12",
        "data synth --out new --users 1000000000000",
        "1000000000000 is not a valid count: expected a whole number in 0..=10000000",
    ),
    refused(
        "synth: --min-ratings above --max-ratings",
        "data synth --out new --min-ratings 30 --max-ratings 10",
        "need 2 <= --min-ratings <= --max-ratings <= --items",
    ),
    refused(
        "synth: too many ratings",
        "data synth --out new --users 1000000 --items 1000 --max-ratings 1000",
        "--users 1000000 × --max-ratings 1000 is more than 100000000 ratings",
    ),
    refused("synth: --out name too long", "data synth --out <long>", "File name too long"),
    refused(
        "synth: config with a bad value",
        "data synth --out new --config exp.toml",
        "exp.toml: key 'users': invalid value '-1'",
    )
    .after(&[Step::Write("exp.toml", "users = -1\n")]),
    // data split.
    refused(
        "paml: --cold-share -1",
        "data split paml --data data --out new.csv --cold-share -1",
        "--cold-share must be in (0, 1]",
    ),
    refused(
        "paml: no validation share",
        "data split paml --data data --out new.csv --train-valid 0.7,0",
        "--train-valid shares must be above 0",
    ),
    refused(
        "paml: --min-ratings -1",
        "data split paml --data data --out new.csv --min-ratings -1",
        "-1 is not a valid count: expected a whole number >= 0",
    ),
    refused("melu: --query 0", "data split melu --data data --out new --query 0", "--min-ratings must exceed --query"),
    refused(
        "melu: no existing user left",
        "data split melu --data data --out new --existing-users 0.001",
        "the MeLU protocol left no warm training or validation task",
    ),
    refused(
        "melu: no new item",
        "data split melu --data data --out new --last-existing-year 3000",
        "no item is released after 3000",
    ),
    // bench.
    refused(
        "bench device --steps 1001",
        "bench device --steps 1001",
        "1001 is not a valid step count: expected a whole number in 1..=1000 (the on-device runtime's limit)",
    ),
    refused(
        "bench device --items 2e6",
        "bench device --items 2000000",
        "2000000 is not a valid count: expected a whole number in 1..=1048576 (the on-device runtime's limit)",
    ),
    refused(
        "bench neighbours --key-dim 1e11",
        "bench neighbours --key-dim 100000000000",
        "100000000000 is not a valid key width: expected a whole number in 1..=256",
    ),
    refused(
        "bench neighbours --spread NaN",
        "bench neighbours --spread NaN",
        "NaN is not a valid standard deviation: expected a finite number >= 0",
    ),
    refused(
        "bench neighbours --run of MeLU",
        "bench neighbours --run run",
        "--run run holds no memory.ot: it takes the directory of an AT-PAML run",
    ),
    refused(
        "bench neighbours --run with a corrupted memory",
        "bench neighbours --run at",
        "loading at/memory.ot (an AT-PAML run's memory): Internal torch error",
    )
    .after(&[Step::Write("at/memory.ot", "not a zip archive")]),
    // Datasets.
    refused(
        "--data is a file",
        "train --data split.csv --out new",
        "dataset directory split.csv is a file, not a directory",
    ),
    refused("--data is empty", "data stats --data empty", "empty: no known dataset format")
        .after(&[Step::Dir("empty")]),
    refused(
        "--data with spaces, missing",
        "train --data 'my data' --out new",
        "dataset directory my data does not exist",
    ),
    refused("--data in unicode, missing", "data stats --data données", "dataset directory données does not exist"),
    refused("schema.toml malformed", "train --data bad --out new", "parsing bad/schema.toml: TOML parse error")
        .after(&[Step::Copy("data", "bad"), Step::Write("bad/schema.toml", "rating_min = [\n")]),
    refused(
        "schema names a missing column",
        "data split paml --data bad --out new.csv",
        "bad/ratings.csv: no column 'score' in header",
    )
    .after(&[Step::Copy("data", "bad"), Step::Replace("bad/schema.toml", "rating = \"rating\"", "rating = \"score\"")]),
    refused("rating_min >= rating_max", "train --data bad --out new", "rating_min (5) must be below rating_max (1)")
        .after(&[
            Step::Copy("data", "bad"),
            Step::Replace("bad/schema.toml", "rating_min = 1\nrating_max = 5", "rating_min = 5\nrating_max = 1"),
        ]),
    // Split files.
    refused(
        "--split of another dataset",
        "train --data data --out new --split other-split.csv",
        "in this dataset (is the split of another dataset?)",
    ),
    refused(
        "compare --split of another dataset",
        "compare --data data --out new --methods melu --split other-split.csv",
        "(is the split of another dataset?)",
    ),
    refused("--split truncated mid-row", "train --data data --out new --split split.csv", "malformed row")
        .after(&[Step::Truncate("split.csv", 300)]),
    refused("--split empty", "train --data data --out new --split empty.csv", "empty.csv:1: header is ''")
        .after(&[Step::Write("empty.csv", "")]),
    refused(
        "--split header only",
        "train --data data --out new --split split.csv",
        "--split split.csv has no training users",
    )
    .after(&[Step::Write("split.csv", "part,user_id,item_id,role,rating\n")]),
    refused(
        "--split without validation users",
        "train --data data --out new --split split.csv",
        "--split split.csv has no validation users",
    )
    .after(&[Step::DropLines("split.csv", "valid,")]),
    refused(
        "--split with a NaN rating",
        "train --data data --out new --method mf --split split.csv",
        "not nan (is the split of another dataset?)",
    )
    .after(&[Step::Edit("split.csv", nan_support_ratings)]),
    refused("--split without query ratings", "train --data data --out new --split split.csv", "has no query rating")
        .after(&[Step::Replace("split.csv", ",query,", ",support,")]),
    // Run directories.
    refused(
        "eval --run of a dataset",
        "eval --run data",
        "reading data/run.json (is this a run directory written by `trainer train`?)",
    ),
    refused("eval: corrupted run.json", "eval --run run --device cpu", "parsing run/run.json")
        .after(&[Step::Write("run/run.json", "{\"data\": ")]),
    refused("eval: truncated weights", "eval --run run --device cpu", "loading run/weights.safetensors")
        .after(&[Step::Truncate("run/weights.safetensors", 100)]),
    refused("eval: run split of another dataset", "eval --run run --device cpu", "(is the split of another dataset?)")
        .after(&[Step::Copy("other-split.csv", "run/split.csv")]),
    refused("eval: corrupted factors.json", "eval --run mf --device cpu", "parsing mf/factors.json")
        .after(&[Step::Write("mf/factors.json", "{\"mean\": 1}")]),
    refused(
        "eval: corrupted AT-PAML memory",
        "eval --run at --device cpu",
        "loading at/memory.ot: Internal torch error",
    )
    .after(&[Step::Bytes("at/memory.ot", b"\x00\x01garbage")]),
    refused("export: corrupted weights", "export --run run --out new.mrec", "loading run/weights.safetensors")
        .after(&[Step::Write("run/weights.safetensors", "garbage")]),
    refused(
        "export: unknown example user",
        "export --run run --out new.mrec --example-user u.tsv --example-user-id ユーザー",
        "--example-user-id 'ユーザー' is not a test user of this run",
    ),
    refused(
        "resume: corrupted checkpoint.json",
        "train --data data --out run --resume --device cpu",
        "parsing run/checkpoint.json",
    )
    .after(&[Step::Write("run/checkpoint.json", "{")]),
    // Model files.
    refused(
        "eval --model is not a model",
        "eval --run run --device cpu --model data/schema.toml",
        "not a metarec model file (bad magic bytes)",
    ),
    refused("eval --model truncated", "eval --run run --device cpu --model model.mrec", "model file is truncated")
        .after(&[Step::Truncate("model.mrec", 30)]),
    // Config files.
    refused("config: bad TOML", "train --data data --out new --config exp.toml", "parsing exp.toml: TOML parse error")
        .after(&[Step::Write("exp.toml", "epochs = \n")]),
    refused("config: number past i64", "train --data data --out new --config exp.toml", "parsing exp.toml")
        .after(&[Step::Write("exp.toml", "epochs = 99999999999999999999\n")]),
    refused("config: empty method", "train --data data --out new --config exp.toml", "exp.toml: key 'method'")
        .after(&[Step::Write("exp.toml", "method = \"\"\n")]),
    refused(
        "config: a date",
        "train --data data --out new --config exp.toml",
        "exp.toml: key 'epochs': unsupported value 1970-01-01 (a date or time)",
    )
    .after(&[Step::Write("exp.toml", "epochs = 1970-01-01\n")]),
    refused("config: very long string", "train --data data --out new --config exp.toml", "expected cpu, cuda or auto")
        .after(&[Step::Write("exp.toml", "device = \"<long>\"\n")]),
    refused("config: UTF-16", "train --data data --out new --config exp.toml", "reading experiment config exp.toml")
        .after(&[Step::Bytes("exp.toml", b"\xff\xfee\x00p\x00")]),
    // What must work: paths with spaces, a huge batch (users per step are clamped).
    works(
        "synth into a path with spaces",
        "data synth --out 'my data' --users 20 --items 10 --max-ratings 10",
        &["my data"],
    ),
    works(
        "train with --batch-users u64::MAX",
        "train --data data --out 'new dir' --epochs 1 --hidden 8 --quiet --batch-users 18446744073709551615",
        &["new dir"],
    ),
];

/// The arguments of a [`Case::command`].
fn arguments(command: &str) -> Vec<OsString> {
    let mut words = Vec::new();
    let (mut word, mut started, mut quoted) = (String::new(), false, false);
    for c in command.chars() {
        match c {
            '\'' => (quoted, started) = (!quoted, true),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    let expand = |word: String| match word.as_str() {
        "<ff>" => OsString::from_vec(vec![0xFF]),
        _ => OsString::from(word.replace("<long>", &"x".repeat(5000))),
    };
    words.into_iter().map(expand).collect()
}

fn apply(dir: &Path, step: &Step) {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    match *step {
        Step::Write(file, text) => {
            std::fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
            std::fs::write(dir.join(file), text.replace("<long>", &"x".repeat(5000))).unwrap();
        }
        Step::Bytes(file, bytes) => std::fs::write(dir.join(file), bytes).unwrap(),
        Step::Copy(from, to) if dir.join(from).is_dir() => copy_dir(&dir.join(from), &dir.join(to)),
        Step::Copy(from, to) => drop(std::fs::copy(dir.join(from), dir.join(to)).unwrap()),
        Step::Truncate(file, len) => {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            assert!(bytes.len() > len, "{file} is only {} bytes", bytes.len());
            std::fs::write(dir.join(file), &bytes[..len]).unwrap();
        }
        Step::Replace(file, from, to) => {
            let text = read(file);
            assert!(text.contains(from), "no '{from}' in {file}");
            std::fs::write(dir.join(file), text.replace(from, to)).unwrap();
        }
        Step::DropLines(file, prefix) => {
            let text = read(file);
            let kept: String = text.split_inclusive('\n').filter(|l| !l.starts_with(prefix)).collect();
            assert_ne!(kept, text, "no line of {file} starts with '{prefix}'");
            std::fs::write(dir.join(file), kept).unwrap();
        }
        Step::Dir(path) => std::fs::create_dir_all(dir.join(path)).unwrap(),
        Step::Edit(file, edit) => std::fs::write(dir.join(file), edit(&read(file))).unwrap(),
    }
}

/// What a panic or a libtorch failure prints: never in the output of a refused command.
const CRASH_SIGNS: [&str; 4] = ["panicked", "RUST_BACKTRACE", "Exception raised from", "frame #0"];

/// The longest any one command may take (a command that hangs is a failure, not a hung test).
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `args` in a fresh copy of the tiny workspace (after `setup`); returns the exit code,
/// stderr, the paths the command changed, and whether it ran past [`LIMIT`].
fn run_in_copy(args: &[OsString], setup: impl FnOnce(&Path)) -> (Option<i32>, String, Vec<String>, bool) {
    let scratch = tempfile::tempdir().unwrap();
    let (work, logs) = (scratch.path().join("work"), scratch.path().join("logs"));
    copy_dir(tiny_workspace(), &work);
    std::fs::create_dir(&logs).unwrap();
    setup(&work);
    let before = snapshot(&work);
    let ran = trainer_with_limit(&work, args, &logs, LIMIT);
    let after = snapshot(&work);
    let changed = changes(&before, &after).iter().map(|p| p.display().to_string()).collect();
    (ran.code, ran.stderr, changed, ran.timed_out)
}

/// Runs `job` over `items` on a few threads; returns the non-`None` results in item order.
fn in_parallel<T: Sync>(items: &[T], job: impl Fn(&T) -> Option<String> + Sync) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 6);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let Some(failure) = job(item) {
                    found.lock().unwrap().push((i, failure));
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap();
    found.sort();
    found.into_iter().map(|(_, failure)| failure).collect()
}

fn shorten(text: &str) -> String {
    const KEEP: usize = 1500;
    match text.char_indices().nth(KEEP) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn check_case(case: &Case) -> Option<String> {
    let args = arguments(case.command);
    let (code, stderr, changed, timed_out) = run_in_copy(&args, |dir| case.setup.iter().for_each(|s| apply(dir, s)));
    let mut problems = Vec::new();
    if timed_out {
        problems.push(format!("ran past {LIMIT:?}"));
    }
    if code != Some(case.code) {
        problems.push(format!("exit code {code:?}, expected {}", case.code));
    }
    if !stderr.contains(case.fragment) {
        problems.push(format!("no '{}' in the message", case.fragment));
    }
    if let Some(sign) = CRASH_SIGNS.iter().find(|s| stderr.contains(*s)) {
        problems.push(format!("'{sign}' in the message"));
    }
    let unexpected: Vec<&String> =
        changed.iter().filter(|p| !case.creates.iter().any(|c| Path::new(p).starts_with(c))).collect();
    if !unexpected.is_empty() {
        problems.push(format!("changed or created {unexpected:?}"));
    }
    if case.code == 0 && !case.creates.iter().all(|c| changed.iter().any(|p| Path::new(p).starts_with(c))) {
        problems.push(format!("did not write {:?}", case.creates));
    }
    (!problems.is_empty()).then(|| {
        format!("[{}] trainer {}\n  {}\n  stderr: {}", case.name, case.command, problems.join("\n  "), shorten(&stderr))
    })
}

#[test]
fn bad_input_exits_with_2_names_the_problem_and_changes_no_file() {
    assert!(CASES.len() >= 60, "{} cases", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names are unique");
    let started = Instant::now();
    let failures = in_parallel(CASES, check_case);
    eprintln!("{} cases in {:.1} s", CASES.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), CASES.len(), failures.join("\n\n"));
}

/// A subcommand of the property test: the arguments every invocation starts with (required
/// flags and a tiny model), the flags drawn at random with values that are valid and cheap,
/// and caps: flags that, when drawn, are given again at the end (the random value is still
/// parsed and checked, the cap bounds the work: a valid `--epochs 9223372036854775807` would
/// train until early stopping).
struct Template {
    weight: u32,
    prefix: &'static [&'static str],
    flags: &'static [(&'static str, &'static [&'static str])],
    caps: &'static [(&'static str, &'static str)],
    /// Arguments every invocation ends with.
    suffix: &'static [&'static str],
}

/// A switch: a flag without values.
const SWITCH: &[&str] = &[];

const TRAIN_FLAGS: &[(&str, &[&str])] = &[
    ("--data", &["data", "other", "nowhere", "split.csv", "run", "my data"]),
    ("--out", &["new", "run", "split.csv", "new/deeper", "data"]),
    ("--format", &["plain", "ml-1m", "ml-latest", "book-crossing"]),
    ("--skip-invalid", SWITCH),
    ("--split", &["split.csv", "other-split.csv", "run/split.csv", "nowhere.csv", "data"]),
    ("--item-id", SWITCH),
    ("--warm-users", SWITCH),
    ("--lazy-adam", &["true", "false"]),
    ("--epoch-steps", &["1", "2"]),
    ("--item-bias", &["true", "false"]),
    ("--item-factors", &["true", "false"]),
    ("--adapt", &["fold-in", "all", "head", "user", "sideways"]),
    ("--fold-in-lambda", &["0.5", "5"]),
    ("--proximal", &["0", "0.5"]),
    ("--dropout", &["0", "0.3", "1"]),
    ("--item-id-dropout", &["0", "0.2"]),
    ("--embedding-decay", &["0", "0.01"]),
    ("--unadapted-loss", &["0", "0.5"]),
    ("--init-choice", &["support", "query", "best"]),
    ("--preset", &["product", "paper", "newest"]),
    ("--method", &["melu", "meta-sgd", "paml", "reg-paml", "at-paml", "hml", "transfer", "wide-deep", "deep-fm", "mf"]),
    ("--task", &["rating", "click", "ctr"]),
    ("--click-threshold", &["1", "3", "4.5", "5"]),
    ("--gamma", &["0", "0.01", "1"]),
    ("--rate-penalty", &["0", "0.5"]),
    ("--lr-hidden", &["1", "4"]),
    ("--memory-size", &["1", "8", "64"]),
    ("--neighbours", &["1", "4", "16"]),
    ("--delta", &["0.1", "1", "100"]),
    ("--warmup", &["0", "4", "100"]),
    ("--inits", &["1", "2", "4"]),
    ("--shared-layers", &["0", "1", "2", "3"]),
    ("--mf-factors", &["0", "1", "4"]),
    ("--mf-lambda", &["0.1", "5", "1e3"]),
    ("--mf-bias-lambda", &["0.1", "3"]),
    ("--mf-sweeps", &["1", "2"]),
    ("--seed", &["0", "1", "18446744073709551615"]),
    ("--embedding-dim", &["1", "2", "4"]),
    ("--hidden", &["1", "8", "4,4", "2,2,2"]),
    ("--inner-lr", &["0", "0.01", "0.5"]),
    ("--inner-steps", &["1", "2", "3"]),
    ("--first-order", SWITCH),
    ("--outer-lr", &["0.001", "0.1"]),
    ("--batch-users", &["1", "8", "18446744073709551615"]),
    ("--epochs", &["1", "2"]),
    ("--patience", &["1", "3"]),
    ("--device", &["cpu", "auto", "cuda", "gpu"]),
    ("--threads", &["1", "2"]),
    ("--resume", SWITCH),
    ("--force", SWITCH),
    ("--quiet", SWITCH),
];

const TRAIN_CAPS: &[(&str, &str)] = &[("--epochs", "2"), ("--patience", "2"), ("--mf-sweeps", "2")];

const RUN_FLAGS: &[(&str, &[&str])] = &[
    ("--run", &["run", "at", "mf", "data", "nowhere", "model.mrec"]),
    ("--data", &["data", "other", "nowhere", "split.csv"]),
];

const DATA_FLAGS: &[(&str, &[&str])] = &[
    ("--data", &["data", "other", "run", "nowhere", "split.csv"]),
    ("--format", &["plain", "ml-1m", "ml-100k", "book-crossing"]),
    ("--skip-invalid", SWITCH),
    ("--force", SWITCH),
    ("--seed", &["0", "5"]),
];

const TEMPLATES: &[Template] = &[
    Template {
        weight: 8,
        prefix: &["train", "--data", "data", "--out", "new"],
        flags: TRAIN_FLAGS,
        caps: TRAIN_CAPS,
        suffix: &[],
    },
    Template {
        weight: 2,
        prefix: &["compare", "--data", "data", "--out", "new", "--methods", "melu,mf", "--mf-sweeps", "2"],
        flags: &[("--methods", &["melu", "mf", "paml,mf", "nope"]), ("--method", &["paml"])],
        caps: TRAIN_CAPS,
        suffix: &[],
    },
    Template {
        weight: 2,
        prefix: &["report", "--data", "data", "--out", "new", "--no-figures", "--seeds", "1", "--methods", "melu"],
        flags: &[
            ("--protocol", &["paml", "melu"]),
            ("--seeds", &["1", "2"]),
            ("--methods", &["melu", "paml", "mf"]),
            ("--gammas", &["0", "1e-3,1e-2"]),
            ("--no-ablation", SWITCH),
            ("--no-figures", SWITCH),
        ],
        caps: &[("--seeds", "1"), ("--epochs", "2"), ("--patience", "2"), ("--mf-sweeps", "2")],
        suffix: &[],
    },
    Template {
        weight: 4,
        prefix: &["eval", "--run", "run", "--device", "cpu"],
        flags: &[
            RUN_FLAGS[0],
            RUN_FLAGS[1],
            ("--device", &["cpu", "auto", "cuda", "nope"]),
            ("--model", &["model.mrec", "data/schema.toml", "nowhere.mrec", "run"]),
        ],
        caps: &[],
        suffix: &[],
    },
    Template {
        weight: 4,
        prefix: &["export", "--run", "run", "--out", "new.mrec"],
        flags: &[
            RUN_FLAGS[0],
            RUN_FLAGS[1],
            ("--out", &["new.mrec", "model.mrec", "run", "nodir/new.mrec"]),
            ("--example-user", &["u.tsv", "model.mrec", "run"]),
            ("--example-user-id", &["u00001", "nobody"]),
            ("--embeddings", &["f32", "f16", "int8"]),
            ("--force", SWITCH),
        ],
        caps: &[],
        suffix: &[],
    },
    Template {
        weight: 4,
        prefix: &["data", "synth", "--out", "new", "--users", "30", "--items", "20", "--max-ratings", "15"],
        flags: &[
            ("--out", &["new", "data", "split.csv"]),
            ("--force", SWITCH),
            ("--seed", &["0", "5"]),
            ("--users", &["10", "30"]),
            ("--items", &["10", "20"]),
            ("--minor-share", &["0", "0.25", "0.5"]),
            ("--min-ratings", &["2", "10"]),
            ("--max-ratings", &["2", "15", "20"]),
        ],
        caps: &[("--users", "30"), ("--items", "20")],
        suffix: &[],
    },
    Template { weight: 2, prefix: &["data", "stats", "--data", "data"], flags: DATA_FLAGS, caps: &[], suffix: &[] },
    Template {
        weight: 4,
        prefix: &["data", "split", "paml", "--data", "data", "--out", "new.csv"],
        flags: &[
            DATA_FLAGS[0],
            DATA_FLAGS[1],
            DATA_FLAGS[3],
            DATA_FLAGS[4],
            ("--out", &["new.csv", "split.csv", "data"]),
            ("--cold-share", &["0.5", "1"]),
            ("--train-valid", &["0.7,0.1", "0.5,0.2"]),
            ("--min-ratings", &["2", "5"]),
            ("--support-share", &["0.5", "0.8"]),
            ("--keep-invalid-features", SWITCH),
        ],
        caps: &[],
        suffix: &[],
    },
    Template {
        weight: 4,
        prefix: &["data", "split", "melu", "--data", "data", "--out", "new"],
        flags: &[
            DATA_FLAGS[0],
            DATA_FLAGS[3],
            DATA_FLAGS[4],
            ("--out", &["new", "data", "split.csv"]),
            ("--min-ratings", &["2", "13"]),
            ("--max-ratings", &["15", "100"]),
            ("--query", &["1", "10"]),
            ("--existing-users", &["0.001", "0.8"]),
            ("--valid-share", &["0.125", "0.5"]),
            ("--last-existing-year", &["1990", "1997"]),
        ],
        caps: &[],
        suffix: &[],
    },
    Template {
        weight: 1,
        prefix: &["bench", "device", "--repeat", "1", "--items", "10", "--support", "2"],
        flags: &[("--items", &["1", "10"]), ("--support", &["1", "2"]), ("--steps", &["1", "2"]), ("--repeat", &["1"])],
        caps: &[],
        // Whatever the values, the benchmark is refused after them (a run takes seconds).
        suffix: &["--steps", "0"],
    },
    Template {
        weight: 3,
        prefix: &["bench", "neighbours", "--entries", "32", "--queries", "10", "--passes", "1", "--clusters", "2"],
        flags: &[
            ("--entries", &["0", "16", "32,64"]),
            ("--key-dim", &["1", "4", "16"]),
            ("--neighbours", &["1", "4", "16"]),
            ("--queries", &["1", "10"]),
            ("--passes", &["1", "2"]),
            ("--clusters", &["1", "2"]),
            ("--spread", &["0", "0.05", "1"]),
            ("--run", &["at", "run", "nowhere"]),
            ("--seed", &["0", "3"]),
        ],
        caps: &[("--passes", "1")],
        suffix: &[],
    },
];

/// Values no flag takes, or takes only at a boundary: signs, infinities, NaN, numbers past
/// every integer type, other notations, separators, flags as values, scripts and emoji.
const GARBAGE: &[&str] = &[
    "",
    " ",
    "-1",
    "-0",
    "0",
    "-inf",
    "inf",
    "+inf",
    "NaN",
    "-nan",
    "1e309",
    "-1e309",
    "1e-320",
    "4097",
    "257",
    "17",
    "65",
    "1001",
    "1048577",
    "10000001",
    "0x10",
    "1_000",
    "1,000",
    "1.5",
    "-.5",
    ".",
    "e",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "--",
    "-",
    "=",
    "--quiet",
    "-h",
    "½",
    "٣",
    "日本語",
    "🙂",
    "\u{202e}12",
    "\t1",
    "1\n",
    "null",
    "true",
    ",",
    "1,,2",
    "a,b",
    "../../..",
    "/",
];

/// A line of a random `--config` file: keys of the subcommand and others, TOML values of every
/// kind, and text that is not TOML.
const TOML_VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "1.5",
    "nan",
    "-inf",
    "\"x\"",
    "\"\"",
    "true",
    "false",
    "[1, 2]",
    "[]",
    "[[1]]",
    "{ a = 1 }",
    "1979-05-27",
    "9223372036854775807",
    "\"日本\"",
    "'🙂'",
    "",
    "[",
];

/// A random value: a valid one of the flag, garbage, random characters, a long or a
/// non-UTF-8 one.
fn random_value(rng: &mut ChaCha8Rng, good: &[&str]) -> OsString {
    match rng.gen_range(0..20) {
        0..=7 => OsString::from(*good.choose(rng).unwrap()),
        8..=16 => OsString::from(*GARBAGE.choose(rng).unwrap()),
        17 => {
            let pools =
                ['0'..='9', 'a'..='z', '\u{80}'..='\u{2ff}', '\u{4e00}'..='\u{4eff}', '\u{1f600}'..='\u{1f64f}'];
            let length = rng.gen_range(1..12);
            let mut text = String::new();
            for _ in 0..length {
                let range = pools.choose(rng).unwrap().clone();
                text.push(rng.gen_range(range));
            }
            OsString::from(text)
        }
        18 => OsString::from(["9", "-", "x", "1,"].choose(rng).unwrap().repeat(rng.gen_range(100..5000))),
        _ => OsString::from_vec(vec![b'1', 0xFF, 0xFE, b'2']),
    }
}

/// One random invocation: its arguments and the text of `rand.toml` when it takes `--config`.
fn random_invocation(rng: &mut ChaCha8Rng) -> (Vec<OsString>, Option<String>) {
    let total: u32 = TEMPLATES.iter().map(|t| t.weight).sum();
    let mut pick = rng.gen_range(0..total);
    let template = TEMPLATES
        .iter()
        .find(|t| {
            let found = pick < t.weight;
            pick = pick.saturating_sub(t.weight);
            found
        })
        .unwrap();
    let mut args: Vec<OsString> = template.prefix.iter().map(OsString::from).collect();
    if ["train", "compare", "report"].contains(&template.prefix[0]) {
        args.extend(TINY_MODEL.iter().map(OsString::from));
    }
    let mut drawn: Vec<&str> = Vec::new();
    let flags: Vec<(&str, &[&str])> = match template.prefix[0] {
        "compare" | "report" => template.flags.iter().chain(TRAIN_FLAGS).copied().collect(),
        _ => template.flags.to_vec(),
    };
    for _ in 0..rng.gen_range(1..=3) {
        let &(flag, good) = flags.choose(rng).unwrap();
        drawn.push(flag);
        if good.is_empty() {
            args.push(match rng.gen_range(0..10) {
                0 => OsString::from(format!("{flag}={}", GARBAGE.choose(rng).unwrap())),
                _ => OsString::from(flag),
            });
            continue;
        }
        let value = random_value(rng, good);
        if rng.gen_bool(0.5) {
            args.extend([OsString::from(flag), value]);
        } else {
            let mut joined = OsString::from(format!("{flag}="));
            joined.push(value);
            args.push(joined);
        }
    }
    let config = rng.gen_bool(0.1).then(|| {
        let key = match rng.gen_range(0..3) {
            0 => "hiden".to_string(),
            _ => flags.choose(rng).unwrap().0.trim_start_matches("--").replace('-', "_"),
        };
        drawn.push(flags.iter().map(|f| f.0).find(|f| f[2..].replace('-', "_") == key).unwrap_or(""));
        args.extend([OsString::from("--config"), OsString::from("rand.toml")]);
        format!("{key} = {}\n", TOML_VALUES.choose(rng).unwrap())
    });
    if rng.gen_bool(0.05) {
        args.push(OsString::from(*["--nope", "extra", "-x", "--help", "--version"].choose(rng).unwrap()));
    }
    for &(flag, value) in template.caps {
        if drawn.contains(&flag) {
            args.extend([OsString::from(flag), OsString::from(value)]);
        }
    }
    args.extend(template.suffix.iter().map(OsString::from));
    (args, config)
}

#[test]
fn random_flag_values_never_panic_and_exit_with_0_or_2() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let invocations: Vec<(Vec<OsString>, Option<String>)> = (0..140).map(|_| random_invocation(&mut rng)).collect();
    let started = Instant::now();
    let succeeded = AtomicUsize::new(0);
    let failures = in_parallel(&invocations, |(args, config)| {
        let (code, stderr, _, timed_out) = run_in_copy(args, |dir| {
            if let Some(text) = config {
                std::fs::write(dir.join("rand.toml"), text).unwrap();
            }
        });
        if code == Some(0) {
            succeeded.fetch_add(1, Ordering::Relaxed);
        }
        let crashed = CRASH_SIGNS.iter().find(|s| stderr.contains(*s));
        let fine = !timed_out && matches!(code, Some(0 | 2)) && crashed.is_none();
        (!fine).then(|| {
            let shown: Vec<String> = args.iter().map(|a| shorten(&a.to_string_lossy())).collect();
            format!(
                "trainer {shown:?} (config: {config:?})\n  exit code {code:?}{}{}\n  stderr: {}",
                if timed_out { format!(", ran past {LIMIT:?}") } else { String::new() },
                crashed.map_or(String::new(), |s| format!(", '{s}' in the message")),
                shorten(&stderr)
            )
        })
    });
    eprintln!(
        "{} random invocations in {:.1} s, {} of them succeeded",
        invocations.len(),
        started.elapsed().as_secs_f64(),
        succeeded.into_inner()
    );
    assert!(
        failures.is_empty(),
        "{} of {} invocations failed:\n\n{}",
        failures.len(),
        invocations.len(),
        failures.join("\n\n")
    );
}
