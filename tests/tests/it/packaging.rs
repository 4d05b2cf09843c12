//! scripts/package.sh: the install layout and pkg-config file (the C example built from them,
//! dynamically and statically), and the arm64 build: libmetarec.so cross-compiled with Debian's
//! aarch64 gcc, its LOAD segments aligned to 16 KB, and the C example cross-compiled and run
//! under qemu-aarch64, giving the host's recommendations; each for the std library and the
//! std-free one (`--minimal`).

use std::path::{Path, PathBuf};
use std::process::Command;

use metarec_tests::UserFile;

use crate::support::{self, Sanitize};

const ARM64: &str = "aarch64-unknown-linux-gnu";

/// Runs scripts/package.sh with `args`; returns the prefix it printed.
fn package(args: &[&std::ffi::OsStr]) -> PathBuf {
    let output = support::run_ok(Command::new(support::repo_root().join("scripts/package.sh")).args(args));
    let prefix = String::from_utf8(output.stdout).expect("UTF-8 prefix");
    let prefix = PathBuf::from(prefix.trim());
    for file in ["lib/libmetarec.so", "lib/libmetarec.a", "lib/pkgconfig/metarec.pc", "include/metarec.h"] {
        assert!(prefix.join(file).is_file(), "{} lacks {file}", prefix.display());
    }
    prefix
}

/// `pkg-config ARGS metarec` against the prefix's metarec.pc, split into words.
fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let output = support::run_ok(
        Command::new("pkg-config").env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")).args(args).arg("metarec"),
    );
    String::from_utf8(output.stdout).unwrap().split_whitespace().map(str::to_owned).collect()
}

/// Writes the fixture model and user; returns their paths.
fn fixture_files(dir: &Path) -> (PathBuf, PathBuf) {
    let model = support::write_fixture_model(dir);
    let user = dir.join("user.tsv");
    std::fs::write(&user, UserFile::fixture().to_tsv()).unwrap();
    (model, user)
}

/// The C example's top-10 block on the host (built against the tested library).
fn host_top_ten(dir: &Path, model: &Path, user: &Path) -> Vec<String> {
    let source = support::repo_root().join("examples/c/personalize.c");
    let exe = support::compile_c(&source, dir, "personalize-host", Sanitize::None);
    let output = support::run_ok(Command::new(exe).arg(model).arg(user));
    let block = support::top_block(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(block.len(), 11, "a header and 10 items: {block:?}");
    block
}

const C_FLAGS: [&str; 6] = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"];

#[test]
fn install_layout_and_pkg_config_build_the_c_example() {
    if !support::have_program("pkg-config") {
        eprintln!("note: pkg-config is not installed; skipping (scripts/setup.sh installs it)");
        return;
    }
    let dir = support::scratch_dir("package-host");
    let lib_dir = support::library_dir();
    let prefix =
        package(&["--lib-dir".as_ref(), lib_dir.as_os_str(), "--prefix".as_ref(), dir.join("prefix").as_os_str()]);
    assert_eq!(pkg_config(&prefix, &["--modversion"]), [env!("CARGO_PKG_VERSION")]);
    let cflags = pkg_config(&prefix, &["--cflags"]);
    let libs = pkg_config(&prefix, &["--libs"]);
    assert_eq!(cflags, [format!("-I{}", prefix.join("include").display())]);
    assert_eq!(libs, [format!("-L{}", prefix.join("lib").display()), "-lmetarec".to_owned()]);
    let installed = std::fs::read(prefix.join("lib/libmetarec.so")).unwrap();
    assert_eq!(installed, std::fs::read(lib_dir.join("libmetarec.so")).unwrap(), "not the tested library");

    let (model, user) = fixture_files(&dir);
    let want = host_top_ten(&dir, &model, &user);
    let source = support::repo_root().join("examples/c/personalize.c");

    // Dynamic: exactly the flags pkg-config gives, plus an rpath.
    let exe = dir.join("personalize-pc");
    support::run_ok(
        Command::new(support::c_compiler())
            .args(C_FLAGS)
            .args(&cflags)
            .arg(&source)
            .args(&libs)
            .arg("-lm") // the example's own log()
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
            .arg("-o")
            .arg(&exe),
    );
    let output = support::run_ok(Command::new(&exe).arg(&model).arg(&user));
    assert_eq!(support::top_block(&String::from_utf8_lossy(&output.stdout)), want);

    // Static: libmetarec.a plus Libs.private; no rpath, so it only runs if nothing is missing.
    let exe = static_example(&prefix, &dir.join("personalize-static"));
    let output = support::run_ok(Command::new(&exe).arg(&model).arg(&user));
    assert_eq!(support::top_block(&String::from_utf8_lossy(&output.stdout)), want);
}

/// Builds the C example at `exe` against the prefix's libmetarec.a with `pkg-config --static`.
fn static_example(prefix: &Path, exe: &Path) -> PathBuf {
    let static_libs: Vec<String> = pkg_config(prefix, &["--static", "--libs"])
        .into_iter()
        .map(|flag| if flag == "-lmetarec" { "-l:libmetarec.a".to_owned() } else { flag })
        .collect();
    support::run_ok(
        Command::new(support::c_compiler())
            .args(C_FLAGS)
            .args(pkg_config(prefix, &["--cflags"]))
            .arg(support::repo_root().join("examples/c/personalize.c"))
            .args(&static_libs)
            .arg("-lm") // the example's own log()
            .arg("-o")
            .arg(exe),
    );
    exe.to_path_buf()
}

/// The std-free library (`package.sh --minimal`) serves the same C API: the API suite passes
/// under ASan/UBSan and the example gives the std library's recommendations, linked
/// dynamically and statically (its own Libs.private).
#[test]
fn minimal_library_passes_the_c_api_suite_and_runs_the_example() {
    let dir = support::scratch_dir("package-minimal");
    let prefix = package(&["--minimal".as_ref(), "--prefix".as_ref(), dir.join("prefix").as_os_str()]);
    let lib_dir = prefix.join("lib");
    // The symbol table (the package is not stripped): std's panic machinery, the bulk of the
    // std library's size, must be absent (`3std9panicking` in v0 mangling).
    let symbols = support::run_ok(Command::new("nm").arg(lib_dir.join("libmetarec.so")));
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    assert!(symbols.contains("metarec_session_adapt"), "nm listed no symbols:\n{symbols}");
    assert!(!symbols.contains("3std9panicking"), "the minimal library links std's panic runtime");

    let (model, user) = fixture_files(&dir);
    let api_test = support::repo_root().join("tests/c/api_test.c");
    let exe = support::compile_c_against(&lib_dir, &api_test, &dir, "api_test", Sanitize::AddressUndefined);
    let output = support::run_sanitized(&exe, &[&model, &dir]);
    let report = support::describe(&output);
    assert!(output.status.success() && String::from_utf8_lossy(&output.stdout).contains(", 0 failed"), "{report}");

    let want = host_top_ten(&dir, &model, &user);
    let example = support::repo_root().join("examples/c/personalize.c");
    let exe = support::compile_c_against(&lib_dir, &example, &dir, "personalize-minimal", Sanitize::None);
    let output = support::run_ok(Command::new(&exe).arg(&model).arg(&user));
    assert_eq!(support::top_block(&String::from_utf8_lossy(&output.stdout)), want);

    if support::have_program("pkg-config") {
        let exe = static_example(&prefix, &dir.join("personalize-minimal-static"));
        let output = support::run_ok(Command::new(&exe).arg(&model).arg(&user));
        assert_eq!(support::top_block(&String::from_utf8_lossy(&output.stdout)), want);
    }
}

/// Whether the arm64 tool chain is present (scripts/setup.sh installs it).
fn have_arm64_tools() -> bool {
    let target_installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|line| line.trim() == ARM64));
    let sysroot = Path::new("/usr/aarch64-linux-gnu/lib").is_dir();
    target_installed
        && sysroot
        && support::have_program("aarch64-linux-gnu-gcc")
        && support::have_program("qemu-aarch64")
        && support::have_program("readelf")
}

#[test]
fn arm64_library_is_16k_aligned_and_runs_the_c_example_under_qemu() {
    if !have_arm64_tools() {
        eprintln!(
            "note: the arm64 tool chain (rust target {ARM64}, gcc-aarch64-linux-gnu, qemu-user, \
             readelf) is incomplete; skipping (scripts/setup.sh installs it)"
        );
        return;
    }
    let dir = support::scratch_dir("package-arm64");
    let (model, user) = fixture_files(&dir);
    let want = host_top_ten(&dir, &model, &user);
    // The std library and the std-free one (`--minimal`).
    for (name, minimal) in [("std", &[][..]), ("minimal", &["--minimal".as_ref()][..])] {
        let prefix_dir = dir.join(format!("prefix-{name}"));
        let args = [&["--target".as_ref(), ARM64.as_ref(), "--prefix".as_ref(), prefix_dir.as_os_str()][..], minimal];
        let prefix = package(&args.concat());
        check_arm64_library(&prefix, &dir.join(format!("personalize-arm64-{name}")), &model, &user, &want);
    }
}

/// Checks an installed arm64 library: 16 KB-aligned LOAD segments, and the C example built
/// against it (through pkg-config) gives `want` under qemu.
fn check_arm64_library(prefix: &Path, exe: &Path, model: &Path, user: &Path, want: &[String]) {
    let library = prefix.join("lib/libmetarec.so");

    // An arm64 ELF whose every LOAD segment is aligned to 16 KB.
    let header = support::run_ok(Command::new("readelf").arg("-hW").arg(&library));
    let header = String::from_utf8_lossy(&header.stdout);
    assert!(header.lines().any(|line| line.contains("Machine:") && line.contains("AArch64")), "{header}");
    let segments = support::run_ok(Command::new("readelf").arg("-lW").arg(&library));
    let segments = String::from_utf8_lossy(&segments.stdout);
    let aligns: Vec<&str> = segments
        .lines()
        .filter(|line| line.trim_start().starts_with("LOAD "))
        .map(|line| line.split_whitespace().last().unwrap_or(""))
        .collect();
    assert!(!aligns.is_empty(), "no LOAD segments\n{segments}");
    assert!(aligns.iter().all(|align| *align == "0x4000"), "LOAD alignments {aligns:?}, want 0x4000\n{segments}");

    // The C example, cross-compiled against the installed layout, run under qemu.
    let cflags = pkg_config(prefix, &["--cflags"]);
    let libs = pkg_config(prefix, &["--libs"]);
    support::run_ok(
        Command::new("aarch64-linux-gnu-gcc")
            .args(C_FLAGS)
            .args(&cflags)
            .arg(support::repo_root().join("examples/c/personalize.c"))
            .args(&libs)
            .arg("-lm") // the example's own log()
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
            .arg("-o")
            .arg(exe),
    );
    let output = support::run_ok(
        Command::new("qemu-aarch64").args(["-L", "/usr/aarch64-linux-gnu"]).arg(exe).arg(model).arg(user),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("query MSE after adaptation:"), "{stdout}");
    assert_eq!(support::top_block(&stdout), want, "arm64 ({}) and the host disagree", prefix.display());
}
