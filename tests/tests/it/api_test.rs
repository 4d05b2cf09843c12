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

/// Every function the header declares is called by tests/c/api_test.c (so a new function
/// cannot ship without C coverage).
#[test]
fn c_api_test_calls_every_declared_function() {
    let root = support::repo_root();
    let header = std::fs::read_to_string(root.join("include/metarec.h")).expect("read include/metarec.h");
    let test = std::fs::read_to_string(root.join("tests/c/api_test.c")).expect("read tests/c/api_test.c");
    let declared: Vec<&str> = header
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with('#') && !line.starts_with('*'))
        .filter_map(|line| {
            let start = line.find("metarec_")?;
            let name = &line[start..];
            let end = name.find('(')?;
            Some(&name[..end])
        })
        .collect();
    assert!(declared.len() >= 20, "found only {declared:?} in the header");
    // A call `name(` or a use as a function pointer (`name,` / `name)`), not a longer name.
    let used = |name: &str| {
        test.match_indices(name).any(|(at, _)| matches!(test[at + name.len()..].chars().next(), Some('(' | ',' | ')')))
    };
    let missing: Vec<&&str> = declared.iter().filter(|name| !used(name)).collect();
    assert!(missing.is_empty(), "tests/c/api_test.c never calls {missing:?}");
}
