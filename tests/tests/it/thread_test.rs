//! tests/c/thread_test.c: many threads, one shared model, one session each; every result must
//! equal the single-threaded run's. Under ASan/UBSan, ThreadSanitizer and helgrind.

use std::path::Path;
use std::process::Output;

use crate::support::{self, Sanitize};

/// Threads and rounds of every run (more threads than cores on purpose).
const THREADS: &str = "8";
const ROUNDS: &str = "2";

/// Checks the program's verdict and its summary line: 8 threads, 48 users × 2 rounds × `phases`.
fn assert_all_matched(output: &Output, tool: &str, phases: usize) {
    let report = support::describe(output);
    assert!(output.status.success(), "thread_test failed under {tool}\n{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let want = format!(
        "8 threads, 48 users x 2 rounds x {phases} phases, {} results, 0 mismatches, 0 failed calls",
        48 * 2 * phases
    );
    assert!(stdout.contains(&want), "unexpected summary under {tool} (want `{want}`)\n{report}");
}

fn build(dir: &Path, sanitize: Sanitize) -> std::path::PathBuf {
    let source = support::repo_root().join("tests/c/thread_test.c");
    support::compile_c(&source, dir, "thread_test", sanitize)
}

#[test]
fn threads_sharing_a_model_match_the_single_threaded_run_under_asan() {
    let dir = support::scratch_dir("thread-test-asan");
    let exe = build(&dir, Sanitize::AddressUndefined);
    let model = support::write_fixture_model(&dir);
    let output = support::run_sanitized(&exe, &[&model, Path::new(THREADS), Path::new(ROUNDS)]);
    assert_all_matched(&output, "AddressSanitizer/UBSan", 2);
}

#[test]
fn threads_sharing_a_model_are_race_free_under_thread_sanitizer() {
    let dir = support::scratch_dir("thread-test-tsan");
    let exe = build(&dir, Sanitize::Thread);
    let model = support::write_fixture_model(&dir);
    // Phase 1 only: see the comment at the top of thread_test.c (TSan cannot see the reference
    // count's atomics inside the uninstrumented Rust library; helgrind checks phase 2).
    let args = [&*model, Path::new(THREADS), Path::new(ROUNDS), Path::new("1")];
    let output = support::run_thread_sanitized(&exe, &args);
    assert_all_matched(&output, "ThreadSanitizer", 1);
}

#[test]
fn threads_sharing_a_model_are_race_free_under_helgrind() {
    if !support::have_program("valgrind") {
        eprintln!("note: valgrind is not installed; skipping the helgrind run (scripts/setup.sh installs it)");
        return;
    }
    let dir = support::scratch_dir("thread-test-helgrind");
    let exe = build(&dir, Sanitize::None);
    let model = support::write_fixture_model(&dir);
    let output = std::process::Command::new("valgrind")
        .args(["--tool=helgrind", "--error-exitcode=1", "--quiet"])
        .arg(&exe)
        .arg(&model)
        .args([THREADS, ROUNDS])
        .output()
        .expect("run valgrind");
    assert_all_matched(&output, "helgrind", 2);
}

/// Stress: four times as many threads as the other runs (16 per core here), each running many
/// sessions one after another (48 users × 6 rounds), under AddressSanitizer/UBSan; every result
/// must still equal the single-threaded run's, bit for bit.
#[test]
fn many_threads_and_sessions_under_stress_match_the_single_threaded_run() {
    let dir = support::scratch_dir("thread-test-stress");
    let exe = build(&dir, Sanitize::AddressUndefined);
    let model = support::write_fixture_model(&dir);
    let output = support::run_sanitized(&exe, &[&model, Path::new("32"), Path::new("6")]);
    let report = support::describe(&output);
    assert!(output.status.success(), "thread_test failed under stress\n{report}");
    let want =
        format!("32 threads, 48 users x 6 rounds x 2 phases, {} results, 0 mismatches, 0 failed calls", 48 * 6 * 2);
    assert!(String::from_utf8_lossy(&output.stdout).contains(&want), "unexpected summary (want `{want}`)\n{report}");
}
