//! examples/c/personalize.c, built with sanitizers and run on the fixture model and user.

use std::path::Path;

use metarec_tests::{UserFile, ITEM_COUNT};

use crate::support::{self, Sanitize};

fn build(dir: &Path) -> std::path::PathBuf {
    let source = support::repo_root().join("examples/c/personalize.c");
    support::compile_c(&source, dir, "personalize", Sanitize::AddressUndefined)
}

#[test]
fn personalize_adapts_and_prints_a_top_ten() {
    let dir = support::scratch_dir("personalize");
    let exe = build(&dir);
    let model = support::write_fixture_model(&dir);
    let user_file = UserFile::fixture();
    let user = dir.join("user.tsv");
    std::fs::write(&user, user_file.to_tsv()).unwrap();

    let output = support::run_sanitized(&exe, &[&model, &user]);
    let report = support::describe(&output);
    assert!(output.status.success(), "personalize failed\n{report}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");

    let before = figure(&stdout, "query MSE before adaptation:");
    let after = figure(&stdout, "query MSE after adaptation:");
    assert!(before.is_finite() && after.is_finite() && before >= 0.0 && after >= 0.0);
    assert_ne!(before, after, "adaptation changed nothing\n{report}");

    let mut lines = stdout.lines().skip_while(|line| !line.starts_with("top 10 recommendations"));
    assert!(lines.next().is_some(), "no top-10 header\n{report}");
    let ranked: Vec<(String, f32)> = lines
        .map(|line| {
            let (rank, rest) = line.trim_start().split_once(". ").expect("`N. id\\tscore`");
            let (id, score) = rest.split_once('\t').expect("`id\\tscore`");
            assert!(rank.parse::<usize>().is_ok(), "bad rank in `{line}`");
            (id.to_owned(), score.parse().expect("score"))
        })
        .collect();
    assert_eq!(ranked.len(), 10, "{report}");
    let rated: Vec<&str> = user_file.support.iter().map(|(id, _)| id.as_str()).collect();
    for pair in ranked.windows(2) {
        assert!(pair[0].1 >= pair[1].1, "not sorted by score\n{report}");
    }
    for (id, _) in &ranked {
        assert!(!rated.contains(&id.as_str()), "rated item {id} recommended\n{report}");
        let index: usize = id[1..4].parse().expect("fixture ids are mNNN…");
        assert!((1..=ITEM_COUNT).contains(&index), "{id}");
    }
}

/// The number after `label` on the line starting with it.
fn figure(stdout: &str, label: &str) -> f64 {
    let line = stdout.lines().find(|line| line.starts_with(label)).unwrap_or_else(|| {
        panic!("no `{label}` line in\n{stdout}");
    });
    line[label.len()..].trim().parse().unwrap_or_else(|_| panic!("bad figure in `{line}`"))
}

/// A click model reads labels and reports the log loss of its click probabilities (the fixture's
/// weights are not meta-trained, so adaptation changes the loss without promising to lower it).
#[test]
fn personalize_reports_log_loss_for_a_click_model() {
    let dir = support::scratch_dir("personalize-click");
    let exe = build(&dir);
    support::write_fixture_model(&dir);
    let model = dir.join("click.mrec");
    // The fixture user's ratings as clicks (the click fixture's threshold is 4).
    let mut user_file = UserFile::fixture();
    for (_, value) in user_file.support.iter_mut().chain(&mut user_file.query) {
        *value = if *value >= 4.0 { 1.0 } else { 0.0 };
    }
    let user = dir.join("user.tsv");
    std::fs::write(&user, user_file.to_tsv()).unwrap();
    let output = support::run_sanitized(&exe, &[&model, &user]);
    let report = support::describe(&output);
    assert!(output.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("MSE"), "{report}");
    let before = figure(&stdout, "query log loss before adaptation:");
    let after = figure(&stdout, "query log loss after adaptation:");
    assert!(before.is_finite() && after.is_finite() && after > 0.0, "{report}");
    assert_ne!(before, after, "adaptation changed nothing\n{report}");
    let top = support::top_block(&stdout);
    assert_eq!(top.len(), 11, "{report}");
    for line in &top[1..] {
        let probability: f32 = line.rsplit('\t').next().unwrap().parse().expect("score");
        assert!(probability > 0.0 && probability < 1.0, "not a probability: `{line}`");
    }
}

#[test]
fn personalize_reports_failures_with_code_and_message() {
    let dir = support::scratch_dir("personalize-errors");
    let exe = build(&dir);
    let model = support::write_fixture_model(&dir);

    // A missing model file.
    let user = dir.join("user.tsv");
    std::fs::write(&user, UserFile::fixture().to_tsv()).unwrap();
    let output = support::run_sanitized(&exe, &[&dir.join("missing.mrec"), &user]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    assert!(stderr.contains("metarec_model_load failed: error 3:"), "{stderr}");

    // A rating off the model's 1–5 scale and an unknown item: the runtime's codes (a NaN rating
    // never reaches the runtime: see personalize_refuses_bad_user_files_before_the_library).
    let mut off_scale = UserFile::fixture();
    off_scale.support[2].1 = 9.0;
    std::fs::write(&user, off_scale.to_tsv()).unwrap();
    let output = support::run_sanitized(&exe, &[&model, &user]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    assert!(stderr.contains("metarec_session_add_rating failed: error 202:"), "{stderr}");

    let mut unknown = UserFile::fixture();
    unknown.query[0].0 = "not-in-the-catalogue".to_owned();
    std::fs::write(&user, unknown.to_tsv()).unwrap();
    let output = support::run_sanitized(&exe, &[&model, &user]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", support::describe(&output));
    assert!(stderr.contains("metarec_session_score failed: error 200:"), "{stderr}");

    // A malformed user file and a wrong command line.
    std::fs::write(&user, "user\tu1\nrating\tm001\n").unwrap();
    let output = support::run_sanitized(&exe, &[&model, &user]);
    assert_eq!(output.status.code(), Some(2), "{}", support::describe(&output));
    let output = support::run_sanitized(&exe, &[&model]);
    assert_eq!(output.status.code(), Some(2), "{}", support::describe(&output));
}

/// The fixture user file with its first `kind` line passed through `edit`, and that line's number.
fn edited_fixture(kind: &str, edit: impl Fn(&str) -> String) -> (String, usize) {
    let mut lines: Vec<String> = UserFile::fixture().to_tsv().lines().map(str::to_owned).collect();
    let index =
        lines.iter().position(|line| line.split('\t').next() == Some(kind)).expect("a fixture line of that kind");
    lines[index] = edit(&lines[index]);
    (lines.join("\n") + "\n", index + 1)
}

/// User files that the examples (C, Kotlin) refuse before calling the library, with exit status 2:
/// each file's text and the message that follows `user.tsv:` on stderr (line number and value).
pub(crate) fn refused_user_files() -> Vec<(String, String)> {
    let mut cases = Vec::new();
    let ratings = [
        ("query", "nan"),
        ("query", "inf"),
        ("support", "-inf"),
        ("support", "1e999"),
        ("query", "4.5x"),
        ("support", ""),
        ("support", "NaN"),
        ("query", "Infinity"),
    ];
    for (kind, value) in ratings {
        let (tsv, line) = edited_fixture(kind, |text| {
            let (head, _) = text.rsplit_once('\t').expect("a rating line has tabs");
            format!("{head}\t{value}")
        });
        cases.push((tsv, format!("{line}: {kind} rating '{value}' is not a finite number")));
    }
    let shapes = [
        ("support", "support\tm001", "a support line has 2 tab-separated fields, want 3"),
        ("query", "query\tm005\t5\textra", "a query line has 4 tab-separated fields, want 3"),
        ("profile", "profile\tage", "a profile line has 2 tab-separated fields, want 3"),
        ("user", "user\tu42\textra", "a user line has 3 tab-separated fields, want 2"),
        ("support", "rating\tm001\t4", "unknown line kind 'rating'"),
        ("support", "support m001 4", "unknown line kind 'support m001 4'"),
    ];
    for (kind, replacement, message) in shapes {
        let (tsv, line) = edited_fixture(kind, |_| replacement.to_owned());
        let message = if message.starts_with("unknown") {
            format!("{message} (want user, profile, support or query)")
        } else {
            message.to_owned()
        };
        cases.push((tsv, format!("{line}: {message}")));
    }
    cases
}

/// A user file with a non-finite or malformed rating, or a line with the wrong number of fields,
/// is refused with its line and value, exit status 2, before the library prints anything.
#[test]
fn personalize_refuses_bad_user_files_before_the_library() {
    let dir = support::scratch_dir("personalize-refused");
    let exe = build(&dir);
    let model = support::write_fixture_model(&dir);
    let user = dir.join("user.tsv");
    for (tsv, message) in refused_user_files() {
        std::fs::write(&user, &tsv).unwrap();
        let output = support::run_sanitized(&exe, &[&model, &user]);
        let report = format!("{message}\n{}", support::describe(&output));
        assert_eq!(output.status.code(), Some(2), "{report}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("user.tsv:{message}\n")), "{report}");
        assert!(output.stdout.is_empty(), "{report}");
    }
}

#[test]
fn personalize_handles_users_without_query_ratings() {
    let dir = support::scratch_dir("personalize-no-query");
    let exe = build(&dir);
    let model = support::write_fixture_model(&dir);
    let mut user_file = UserFile::fixture();
    user_file.query.clear();
    let user = dir.join("user.tsv");
    std::fs::write(&user, user_file.to_tsv()).unwrap();
    let output = support::run_sanitized(&exe, &[&model, &user]);
    assert!(output.status.success(), "{}", support::describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("top 10 recommendations"), "{stdout}");
}
