//! examples/kotlin: the JNI shim (compiled with the C compiler against the JDK's headers) and
//! the Kotlin/JVM example (compiled with kotlinc), run on the fixture model and user and
//! compared with the C example's output. Skipped, with a note, only when kotlinc is missing
//! (scripts/setup.sh installs Debian's `kotlin`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metarec_tests::UserFile;

use crate::support::{self, Sanitize};

/// The JDK home of the `java` on PATH (its `java.home` property), or `$JAVA_HOME` when that
/// holds the JNI headers.
fn java_home() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if home.join("include/jni.h").is_file() {
            return home;
        }
    }
    let output = Command::new("java").args(["-XshowSettings:properties", "-version"]).output().expect("run java");
    let settings = String::from_utf8_lossy(&output.stderr);
    let home = settings
        .lines()
        .find_map(|line| line.trim().strip_prefix("java.home = "))
        .unwrap_or_else(|| panic!("`java -XshowSettings:properties` printed no java.home:\n{settings}"));
    let home = PathBuf::from(home.trim());
    assert!(home.join("include/jni.h").is_file(), "{} has no include/jni.h (a JRE, not a JDK?)", home.display());
    home
}

/// Compiles examples/kotlin/metarec_jni.c into `dir/libmetarec_jni.so`.
fn build_shim(dir: &Path) -> PathBuf {
    let home = java_home();
    let lib_dir = support::library_dir();
    let out = dir.join("libmetarec_jni.so");
    let mut command = Command::new(support::c_compiler());
    command
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1", "-shared", "-fPIC"])
        .arg("-I")
        .arg(support::repo_root().join("include"))
        .arg("-I")
        .arg(home.join("include"))
        .arg("-I")
        .arg(home.join("include/linux"))
        .arg(support::repo_root().join("examples/kotlin/metarec_jni.c"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lmetarec")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&out);
    let output = command.output().expect("run the C compiler");
    assert!(output.status.success(), "compiling the JNI shim failed: {command:?}\n{}", support::describe(&output));
    out
}

/// Compiles the Kotlin sources into `dir/personalize.jar` (with the Kotlin runtime).
fn build_jar(dir: &Path) -> PathBuf {
    let jar = dir.join("personalize.jar");
    let sources = support::repo_root().join("examples/kotlin");
    let output = Command::new("kotlinc")
        .arg(sources.join("Metarec.kt"))
        .arg(sources.join("Personalize.kt"))
        .args(["-include-runtime", "-d"])
        .arg(&jar)
        .output()
        .expect("run kotlinc");
    assert!(output.status.success() && jar.is_file(), "kotlinc failed\n{}", support::describe(&output));
    jar
}

fn run_jar(jar: &Path, shim: &Path, model: &Path, user: &Path) -> Output {
    // -Xcheck:jni: the JVM checks every JNI call of the shim and reports misuse.
    Command::new("java")
        .args(["-Xcheck:jni", "-jar"])
        .arg(jar)
        .arg(shim)
        .arg(model)
        .arg(user)
        .output()
        .expect("run java")
}

#[test]
fn kotlin_example_personalizes_like_the_c_example() {
    // Debian's kotlinc 1.3 refuses `--version` (support::have_program's probe) and takes `-version`.
    let have_kotlinc = Command::new("kotlinc").arg("-version").output().is_ok_and(|out| out.status.success());
    if !have_kotlinc {
        eprintln!(
            "note: kotlinc is not installed; skipping the Kotlin/JNI test (scripts/setup.sh installs Debian's kotlin)"
        );
        return;
    }
    let dir = support::scratch_dir("kotlin");
    let shim = build_shim(&dir);
    let jar = build_jar(&dir);
    let model = support::write_fixture_model(&dir);
    let user = dir.join("user.tsv");
    std::fs::write(&user, UserFile::fixture().to_tsv()).unwrap();

    let output = run_jar(&jar, &shim, &model, &user);
    let report = support::describe(&output);
    assert!(output.status.success(), "the Kotlin example failed\n{report}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("WARNING in native method"), "-Xcheck:jni complained\n{report}");
    assert!(stdout.contains("(melu)") && stdout.contains("user fields: gender, age"), "{report}");
    // The example prints the size of the user's federated contribution: the runtime's.
    let device_model = metarec_runtime::Model::from_bytes(&std::fs::read(&model).unwrap()).unwrap();
    let blob_len = metarec_runtime::Session::new(&device_model).contribution_len();
    assert!(stdout.contains(&format!("\ncontribution: {blob_len} bytes (clip norm 1)\n")), "{report}");

    let c_example =
        support::compile_c(&support::repo_root().join("examples/c/personalize.c"), &dir, "personalize", Sanitize::None);
    let c_output = Command::new(&c_example).arg(&model).arg(&user).output().expect("run the C example");
    assert!(c_output.status.success(), "{}", support::describe(&c_output));
    let want = support::top_block(&String::from_utf8_lossy(&c_output.stdout));
    assert_eq!(want.len(), 11, "C example: a header and 10 items");
    assert_eq!(support::top_block(&stdout), want, "Kotlin and C disagree\n{report}");

    // One support rating gives no contribution (METAREC_ERR_TOO_FEW_RATINGS): the example says
    // so and still personalizes.
    let mut one = UserFile::fixture();
    one.support.truncate(1);
    std::fs::write(&user, one.to_tsv()).unwrap();
    let output = run_jar(&jar, &shim, &model, &user);
    let report = support::describe(&output);
    assert!(output.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\ncontribution: none (error 209: "), "{report}");
    assert_eq!(support::top_block(&stdout).len(), 11, "{report}");

    // A failing call surfaces as MetarecException with the C code.
    let mut unknown = UserFile::fixture();
    unknown.support[0].0 = "not-in-the-catalogue".to_owned();
    std::fs::write(&user, unknown.to_tsv()).unwrap();
    let output = run_jar(&jar, &shim, &model, &user);
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("personalize: metarec failed: error 200: "), "{}", support::describe(&output));

    // So does a model that fails to load.
    let output = run_jar(&jar, &shim, &dir.join("missing.mrec"), &user);
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error 3: "), "{}", support::describe(&output));

    // A bad user file (a non-finite rating, a wrong field count) is refused as by the C example:
    // its line and value named, exit status 2, before the library is loaded.
    for (tsv, message) in crate::personalize::refused_user_files() {
        std::fs::write(&user, &tsv).unwrap();
        let output = run_jar(&jar, &shim, &model, &user);
        let report = format!("{message}\n{}", support::describe(&output));
        assert_eq!(output.status.code(), Some(2), "{report}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("user.tsv:{message}\n")), "{report}");
        assert!(output.stdout.is_empty(), "{report}");
    }
}
