//! `trainer tune` on a tiny synthetic dataset: it writes a best.toml that `train --config`
//! accepts, trials.jsonl and the table hold the expected trials, the same command draws the same
//! trials, `--resume` trains only what is missing, and an earlier tune (or a bad flag) is refused
//! with every file left as it was.

use std::path::Path;

use crate::common::{changes, copy_dir, snapshot, succeed, text, tiny_workspace, trainer};

/// Three trials, three epochs (rungs of 1 and 3 epochs), two seeds.
const TUNE: [&str; 16] = [
    "tune", "--data", "data", "--budget", "3", "--epochs", "3", "--seeds", "1,2", "--device", "cpu", "--quiet",
    "--out", "tune", "--method", "melu",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    TUNE.iter().chain(extra).copied().collect()
}

/// The records of trials.jsonl (the settings line first).
fn records(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("tune/trials.jsonl")).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// A refusal: exit code 2, `fragment` in the message, no file changed or created.
fn refused(dir: &Path, args: &[&str], fragment: &str) {
    let before = snapshot(dir);
    let output = trainer(dir, args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}:\n{stderr}");
    assert!(stderr.contains(fragment) && !stderr.contains("panicked"), "{args:?}: no '{fragment}' in:\n{stderr}");
    assert!(changes(&before, &snapshot(dir)).is_empty(), "{args:?} changed files");
}

#[test]
fn tune_writes_a_best_config_is_seeded_and_resumes() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    copy_dir(&tiny_workspace().join("data"), &dir.join("data"));

    let output = succeed(dir, &TUNE);
    let stdout = text(&output.stdout);
    let rows = stdout.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| trial")).count();
    assert_eq!(rows, 3, "{stdout}");
    assert!(stdout.contains("best: trial ") && stdout.contains("best.toml"), "{stdout}");

    // The settings, three trials at one epoch, the best of them at three.
    let lines = records(dir);
    assert_eq!(lines[0]["record"], "settings");
    assert_eq!(lines[0]["settings"]["--budget"], "3");
    let trials = &lines[1..];
    let epochs: Vec<u64> = trials.iter().map(|r| r["epochs"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 1, 1, 3]);
    for record in trials {
        assert_eq!(record["seeds"].as_array().unwrap().len(), 2, "{record}");
        assert!(record["mean"].as_f64().unwrap().is_finite(), "{record}");
    }
    let best = trials[3]["trial"].as_u64().unwrap();
    let best_first =
        trials[..3].iter().min_by(|a, b| a["mean"].as_f64().unwrap().total_cmp(&b["mean"].as_f64().unwrap()));
    assert_eq!(best_first.unwrap()["trial"].as_u64(), Some(best), "the best third continues");
    assert!(dir.join(format!("tune/trials/{best}/seed-2/run.json")).is_file());
    assert!(std::fs::read_to_string(dir.join("tune/trials.md")).unwrap().contains("| trial"));

    // best.toml is a config train accepts.
    let config = std::fs::read_to_string(dir.join("tune/best.toml")).unwrap();
    assert!(config.contains("method = \"melu\"") && config.contains("epochs = 3"), "{config}");
    let train = ["train", "--config", "tune/best.toml", "--data", "data", "--out", "run", "--device", "cpu", "--quiet"];
    succeed(dir, &train);
    assert!(dir.join("run/run.json").is_file());

    // An earlier tune is refused without --force or --resume, and left as it was.
    refused(dir, &TUNE, "already holds an earlier tune");
    // --resume with other settings names them.
    let other: Vec<&str> = TUNE.iter().map(|&a| if a == "3" { "4" } else { a }).chain(["--resume"]).collect();
    refused(dir, &other, "--budget: the tune has 3, given 4");

    // The same command (replacing the tune) draws and scores the same trials.
    let jsonl = std::fs::read(dir.join("tune/trials.jsonl")).unwrap();
    succeed(dir, &with(&["--force"]));
    assert_eq!(std::fs::read(dir.join("tune/trials.jsonl")).unwrap(), jsonl, "same command, other trials");

    // --resume after the last record is lost trains only that (trial, rung) again.
    let kept = String::from_utf8(jsonl.clone()).unwrap();
    let without_last: String = kept.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("tune/trials.jsonl"), without_last).unwrap();
    let others: Vec<_> =
        (1..=3).filter(|&t| t != best).map(|t| snapshot(&dir.join(format!("tune/trials/{t}")))).collect();
    let output = succeed(dir, &with(&["--resume"]));
    let trained: Vec<String> =
        text(&output.stderr).lines().filter(|l| l.starts_with("[tune]")).map(String::from).collect();
    assert_eq!(trained.len(), 1, "{trained:?}");
    assert!(trained[0].starts_with(&format!("[tune] trial {best}, 3 epochs:")), "{trained:?}");
    assert_eq!(std::fs::read(dir.join("tune/trials.jsonl")).unwrap(), jsonl);
    let after: Vec<_> =
        (1..=3).filter(|&t| t != best).map(|t| snapshot(&dir.join(format!("tune/trials/{t}")))).collect();
    assert!(others == after, "--resume touched the runs of other trials");
}

#[test]
fn bad_tune_flags_are_refused_naming_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    copy_dir(&tiny_workspace().join("data"), &dir.join("data"));
    let base = ["tune", "--data", "data", "--out", "new", "--device", "cpu"];
    let case = |extra: &[&str], fragment: &str| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        refused(dir, &args, fragment);
    };
    case(&["--budget", "0"], "'--budget <BUDGET>': 0 is not a valid trial count");
    case(&["--budget", "2", "--seeds", ""], "'--seeds <SEEDS>'");
    case(&["--budget", "2", "--seeds", "1,1"], "--seeds: seed 1 is given twice");
    case(&["--budget", "2", "--split", "a.csv", "--split", "b.csv"], "--split is given 2 times for 3 seeds");
    case(&["--budget", "2", "--split", "missing.csv"], "--split missing.csv");
    let split = std::fs::read_to_string(tiny_workspace().join("split.csv")).unwrap();
    std::fs::write(dir.join("noval.csv"), split.replace("\nvalid,", "\ntrain,")).unwrap();
    case(&["--budget", "2", "--split", "noval.csv"], "--split noval.csv has no validation users");
    case(&["--budget", "2", "--resume"], "holds no trials.jsonl");
    case(&["--budget", "2", "--resume", "--force"], "pass one of them");
}
