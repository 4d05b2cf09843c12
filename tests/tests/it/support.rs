//! Finding the library, compiling C programs against it and running them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A fresh scratch directory for one test (under cargo's per-target temporary directory).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("metarec-tests-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// The directory holding the `libmetarec.so` built for this test run.
///
/// This crate depends on `metarec-ffi`, so cargo builds the library before the tests: as a
/// dependency it lands in `<target>/<profile>/deps/`, and `cargo build -p metarec-ffi` puts it in
/// `<target>/<profile>/`. The profile directory is found from the test binary's own location
/// (`<target>/<profile>/deps/it-…`), which follows `CARGO_TARGET_DIR`, `--release` and
/// `--target`. The newest of the two copies wins. `METAREC_LIB_DIR` overrides the search.
pub fn library_dir() -> PathBuf {
    const LIB: &str = "libmetarec.so";
    if let Some(dir) = std::env::var_os("METAREC_LIB_DIR") {
        let dir = PathBuf::from(dir);
        assert!(dir.join(LIB).is_file(), "METAREC_LIB_DIR={} has no {LIB}", dir.display());
        return dir;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary lies in <target>/<profile>/deps");
    let profile = deps.parent().expect("<target>/<profile>");
    let modified = |dir: &Path| -> Option<(SystemTime, PathBuf)> {
        let time = std::fs::metadata(dir.join(LIB)).ok()?.modified().ok()?;
        Some((time, dir.to_path_buf()))
    };
    [deps, profile].into_iter().filter_map(modified).max().map(|(_, dir)| dir).unwrap_or_else(|| {
        panic!(
            "no {LIB} in {} or {}: build it with `cargo build -p metarec-ffi` (same profile and \
                 target directory as the tests), or point METAREC_LIB_DIR at its directory",
            profile.display(),
            deps.display()
        )
    })
}

/// The C compiler: `$CC`, else `cc`.
pub fn c_compiler() -> String {
    std::env::var("CC").ok().filter(|cc| !cc.trim().is_empty()).unwrap_or_else(|| "cc".to_owned())
}

/// Whether a program can be started (`NAME --version` runs, whatever its exit status).
///
/// Under `scripts/test.sh` (which runs `scripts/setup.sh` first and sets
/// `METAREC_REQUIRE_TOOLS=1`) a missing tool fails the test instead of skipping it, so a check
/// cannot silently stop running in CI.
pub fn have_program(name: &str) -> bool {
    // Some tools answer only `-version` (Debian's kotlinc); spawning at all is what counts.
    let found = Command::new(name).arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("METAREC_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
        "{name} is not installed, and METAREC_REQUIRE_TOOLS=1 asks for every check (scripts/setup.sh installs it)"
    );
    found
}

/// Sanitizers to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanitize {
    /// `-fsanitize=address,undefined`.
    AddressUndefined,
    /// `-fsanitize=thread` (ThreadSanitizer).
    Thread,
    /// None (for valgrind).
    None,
}

/// Compiles one C file into `out_dir/<name>` against include/ and libmetarec, with every warning
/// an error and the library directory as rpath. Panics with the compiler's output on failure.
pub fn compile_c(source: &Path, out_dir: &Path, name: &str, sanitize: Sanitize) -> PathBuf {
    compile_c_against(&library_dir(), source, out_dir, name, sanitize)
}

/// [`compile_c`] against the `libmetarec.so` in `lib_dir`.
pub fn compile_c_against(lib_dir: &Path, source: &Path, out_dir: &Path, name: &str, sanitize: Sanitize) -> PathBuf {
    let exe = out_dir.join(name);
    let cc = c_compiler();
    let mut command = Command::new(&cc);
    command
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe);
    match sanitize {
        Sanitize::AddressUndefined => {
            command.args([
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=undefined",
                "-fno-omit-frame-pointer",
            ]);
        }
        Sanitize::Thread => {
            command.args(["-fsanitize=thread", "-fno-omit-frame-pointer"]);
        }
        Sanitize::None => {}
    }
    command
        .arg("-L")
        .arg(lib_dir)
        .arg("-lmetarec")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-lm", "-pthread"]);
    let output = command.output().unwrap_or_else(|error| panic!("cannot run the C compiler `{cc}` ($CC): {error}"));
    assert!(
        output.status.success(),
        "compiling {} failed: {command:?}\n{}{}",
        source.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Runs a program built with [`Sanitize::Thread`]: any report is an error (exit code 66).
pub fn run_thread_sanitized(exe: &Path, args: &[&Path]) -> Output {
    Command::new(exe)
        .args(args)
        .env("TSAN_OPTIONS", "halt_on_error=1:exitcode=66:second_deadlock_stack=1")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", exe.display()))
}

/// Runs a program built with [`Sanitize::AddressUndefined`], leak detection on (no suppressions:
/// neither the Rust standard library nor the runtime leaks anything LeakSanitizer reports).
pub fn run_sanitized(exe: &Path, args: &[&Path]) -> Output {
    Command::new(exe)
        .args(args)
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", exe.display()))
}

/// Formats a finished program's status and output for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes the fixture model to `dir/fixture.mrec` (returned), its click variant to
/// `dir/click.mrec` and the matrix-factorisation fixture to `dir/mf.mrec` (which
/// tests/c/api_test.c finds beside it).
pub fn write_fixture_model(dir: &Path) -> PathBuf {
    let path = dir.join("fixture.mrec");
    std::fs::write(&path, metarec_tests::model_bytes(false)).expect("write the fixture model");
    std::fs::write(dir.join("click.mrec"), metarec_tests::click_model_bytes()).expect("write the click fixture");
    std::fs::write(dir.join("mf.mrec"), metarec_tests::factor_model_bytes()).expect("write the factor fixture");
    std::fs::write(dir.join("aligned.mrec"), metarec_tests::aligned_model_bytes()).expect("write the aligned fixture");
    path
}

/// The lines of a personalize run from "top N recommendations" on.
pub fn top_block(stdout: &str) -> Vec<String> {
    stdout.lines().skip_while(|line| !line.starts_with("top ")).map(str::to_owned).collect()
}

/// Runs a command to completion, panicking with its output unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(output.status.success(), "{command:?} failed\n{}", describe(&output));
    output
}
