//! What the tests that run the real `trainer` binary share: running it and capturing its
//! output, the fixtures (tests/fixtures/), a snapshot of a directory tree to assert "every file
//! byte-identical and nothing created", and a tiny workspace (datasets, runs, a model file)
//! built once per test binary run for the command-line tests to copy.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binary under test.
pub const TRAINER: &str = env!("CARGO_BIN_EXE_trainer");

/// A small and fast model (~0.1 s per epoch on one CPU core): the flags every test run of
/// `trainer train` shares (tests add their epochs and seeds).
pub const SMALL_MODEL: [&str; 10] =
    ["--device", "cpu", "--embedding-dim", "8", "--hidden", "16,16", "--batch-users", "8", "--quiet", "--first-order"];

/// A `trainer` command without arguments.
pub fn command() -> Command {
    Command::new(TRAINER)
}

/// Runs `command` with no input, capturing its output.
pub fn output(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run trainer")
}

/// Runs `command`, which must succeed.
pub fn succeed_command(command: &mut Command) -> Output {
    let output = output(command);
    assert!(output.status.success(), "{command:?} failed:\n{}", text(&output.stderr));
    output
}

/// Runs `trainer ARGS` in `dir`.
pub fn trainer<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    output(command().current_dir(dir).args(args))
}

/// Runs `trainer ARGS` in `dir`, which must succeed.
pub fn succeed<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    succeed_command(command().current_dir(dir).args(args))
}

/// Asserts that a run failed with `naming` in its error output.
pub fn assert_refused(ran: &Output, naming: &str) {
    assert!(
        !ran.status.success() && text(&ran.stderr).contains(naming),
        "expected a refusal naming {naming:?}: {}",
        text(&ran.stderr)
    );
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How a command with a time limit ended.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// Whether it ran past the limit (and was killed).
    pub timed_out: bool,
}

/// Runs `trainer ARGS` in `dir` for at most `limit`; its output goes to files in `logs` (a
/// directory outside `dir`, so that the output is no change to the working directory).
pub fn trainer_with_limit<S: AsRef<OsStr>>(dir: &Path, args: &[S], logs: &Path, limit: Duration) -> Ran {
    let (out, err) = (logs.join("stdout"), logs.join("stderr"));
    let mut child = command()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start trainer");
    let started = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran { code: status.code(), stderr: text(&std::fs::read(&err).unwrap()), timed_out }
}

/// A fixture directory of tests/fixtures/.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Copies a fixture into a temporary directory so a test can change (or break) its files.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    dir
}

/// Copies the tree under `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Every file and directory under a directory (relative paths), with the bytes of the files
/// (`None`: a directory).
pub type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

/// The [`Tree`] under `dir`.
pub fn snapshot(dir: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, into: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                into.insert(relative, None);
                walk(root, &path, into);
            } else {
                into.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Tree::new();
    walk(dir, dir, &mut files);
    files
}

/// The paths created, removed or changed between two snapshots.
pub fn changes<'a>(before: &'a Tree, after: &'a Tree) -> Vec<&'a PathBuf> {
    let paths: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.into_iter().filter(|path| before.get(*path) != after.get(*path)).collect()
}

/// The files directly in `dir` (not its subdirectories) with their bytes, sorted by name.
pub fn top_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// The tiny training flags of the command-line tests: one epoch of a 4-wide model.
pub const TINY_MODEL: [&str; 13] = [
    "--epochs",
    "1",
    "--embedding-dim",
    "4",
    "--hidden",
    "8",
    "--batch-users",
    "8",
    "--device",
    "cpu",
    "--quiet",
    "--first-order",
    "--threads=1",
];

/// The AT-PAML run `at` of [`tiny_workspace`] (its memory holds every training user).
pub const TINY_AT_PAML: [&str; 6] = ["--method", "at-paml", "--memory-size", "64", "--warmup", "4"];

/// A working directory for command-line tests, built once per test binary run (tests copy it
/// with [`copy_dir`] and change their copy): datasets `data` (60 users, 20 items) and `other`
/// (another seed, the same ids), their PAML splits `split.csv` and `other-split.csv`, tiny
/// runs on `data` (`run`: MeLU, `at`: AT-PAML with [`TINY_AT_PAML`], `mf`: matrix
/// factorisation), and `model.mrec`, exported from `run`.
///
/// It lives in Cargo's temporary directory for integration tests, named by this process; a
/// later test binary run removes the directories of processes that are gone.
pub fn tiny_workspace() -> &'static Path {
    static WORKSPACE: OnceLock<PathBuf> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(parent).unwrap();
        for entry in std::fs::read_dir(parent).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("cli-workspace-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        let dir = parent.join(format!("cli-workspace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let synth = ["data", "synth", "--users", "60", "--items", "20", "--max-ratings", "15", "--out"];
        succeed(&dir, &[&synth[..], &["data", "--seed", "1"]].concat());
        succeed(&dir, &[&synth[..], &["other", "--seed", "2"]].concat());
        succeed(&dir, &["data", "split", "paml", "--data", "data", "--out", "split.csv"]);
        succeed(&dir, &["data", "split", "paml", "--data", "other", "--out", "other-split.csv"]);
        let train = ["train", "--data", "data", "--out"];
        succeed(&dir, &[&train[..], &["run"], &TINY_MODEL].concat());
        succeed(&dir, &[&train[..], &["at"], &TINY_MODEL, &TINY_AT_PAML].concat());
        succeed(&dir, &[&train[..], &["mf", "--method", "mf", "--mf-sweeps", "2", "--quiet"]].concat());
        succeed(&dir, &["export", "--run", "run", "--out", "model.mrec"]);
        dir
    })
}

/// A generated population for a test: `users` users over `items` items with `ratings` ratings
/// each, a fifth of them in the minor group (`SynthConfig { minor_share, ..population(…) }` for
/// another share).
pub fn population(
    seed: u64,
    users: usize,
    items: usize,
    ratings: std::ops::RangeInclusive<usize>,
) -> metarec_trainer::data::synth::SynthConfig {
    let (min_ratings, max_ratings) = ratings.into_inner();
    metarec_trainer::data::synth::SynthConfig { seed, users, items, minor_share: 0.2, min_ratings, max_ratings }
}
