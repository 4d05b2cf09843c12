//! tests/c/api_test.c: every C function, misuse included, under ASan/UBSan and valgrind.

use crate::support::{self, Sanitize};

#[test]
fn c_api_test_passes_under_sanitizers() {
    let dir = support::scratch_dir("api-test-asan");
    let source = support::repo_root().join("tests/c/api_test.c");
    let exe = support::compile_c(&source, &dir, "api_test", Sanitize::AddressUndefined);
    let model = support::write_fixture_model(&dir);
    let output = support::run_sanitized(&exe, &[&model, &dir]);
    let report = support::describe(&output);
    assert!(output.status.success(), "api_test failed\n{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(", 0 failed"), "{report}");
}

#[test]
fn c_api_test_is_clean_under_valgrind() {
    if !support::have_program("valgrind") {
        eprintln!("note: valgrind is not installed; skipping the valgrind run (scripts/setup.sh installs it)");
        return;
    }
    let dir = support::scratch_dir("api-test-valgrind");
    let source = support::repo_root().join("tests/c/api_test.c");
    let exe = support::compile_c(&source, &dir, "api_test", Sanitize::None);
    let model = support::write_fixture_model(&dir);
    let output = std::process::Command::new("valgrind")
        .args(["--error-exitcode=1", "--leak-check=full", "--quiet"])
        .arg(&exe)
        .arg(&model)
        .arg(&dir)
        .output()
        .expect("run valgrind");
    let report = support::describe(&output);
    assert!(output.status.success(), "api_test failed under valgrind\n{report}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(", 0 failed"), "{report}");
}
