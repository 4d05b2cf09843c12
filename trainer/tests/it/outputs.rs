//! The real `trainer` binary under a newcomer's hands (issue 19): an output that exists is never
//! replaced without `--force`, nothing is created before the inputs are validated, `--resume`
//! names every setting that differs, flags are checked against their ranges when the command
//! line is parsed, `--config` files are checked against the subcommand's flags, and `eval
//! --model` refuses a model of another run. Every refusal exits with code 2, names what and
//! where, and leaves every file of the working directory byte-identical (and creates none).

use std::path::Path;

use crate::common::{changes, snapshot, succeed, succeed_command, trainer, SMALL_MODEL};

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", data, "--out", out];
    args.extend(SMALL_MODEL);
    args.extend(["--epochs", "2", "--threads=1"]);
    args.extend(extra);
    args
}

/// Runs a command that must be refused: exit code 2 (not a panic's 101 or a signal), a message
/// that contains `fragment`, and not one byte of `dir` changed, no file or directory created.
fn refused(dir: &Path, args: &[&str], fragment: &str) -> String {
    let before = snapshot(dir);
    let output = trainer(dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {:?}\n{stderr}", output.status);
    assert!(stderr.starts_with("error: ") && stderr.contains(fragment), "{args:?}: no '{fragment}' in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
    let after = snapshot(dir);
    let changed = changes(&before, &after);
    assert!(changed.is_empty(), "{args:?} changed {changed:?}\n{stderr}");
    stderr
}

/// A working directory with a dataset (`data`, 60 users, 30 items) and a trained run (`run`).
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), "data", "7");
    succeed(dir.path(), &train_args("data", "run", &["--seed", "3"]));
    dir
}

fn synth(dir: &Path, out: &str, seed: &str) {
    let args = ["data", "synth", "--users", "60", "--items", "30", "--max-ratings", "20", "--seed", seed, "--out", out];
    succeed(dir, &args);
}

#[test]
fn existing_outputs_are_refused_without_force() {
    let work = workspace();
    let dir = work.path();
    std::fs::write(dir.join("split.csv"), "the user's own split\n").unwrap();
    std::fs::create_dir_all(dir.join("melu")).unwrap();
    std::fs::write(dir.join("melu/warm.csv"), "the user's own split\n").unwrap();
    std::fs::write(dir.join("model.mrec"), "the user's own model").unwrap();
    std::fs::write(dir.join("user.tsv"), "the user's own user").unwrap();
    std::fs::create_dir_all(dir.join("cmp/paml")).unwrap();
    std::fs::write(dir.join("cmp/paml/run.json"), "{}").unwrap();
    std::fs::create_dir_all(dir.join("rep")).unwrap();
    std::fs::write(dir.join("rep/report.md"), "the user's report").unwrap();
    std::fs::create_dir_all(dir.join("own")).unwrap();
    std::fs::write(dir.join("own/ratings.csv"), "user_id,item_id,rating\n").unwrap();

    let pass_force = "pass --force to replace it";
    for (args, fragment) in [
        (train_args("data", "run", &[]), "--out run already holds an earlier run (run.json, split.csv"),
        (vec!["data", "synth", "--out", "data"], "--out data already holds a dataset (schema.toml, users.csv"),
        (vec!["data", "synth", "--out", "own"], "--out own already holds a dataset (ratings.csv)"),
        (vec!["data", "split", "paml", "--data", "data", "--out", "split.csv"], "--out split.csv already exists"),
        (
            vec!["data", "split", "melu", "--data", "data", "--out", "melu"],
            "--out melu already holds split files (warm.csv)",
        ),
        (vec!["export", "--run", "run", "--out", "model.mrec"], "--out model.mrec already exists"),
        (
            vec!["export", "--run", "run", "--out", "new.mrec", "--example-user", "user.tsv"],
            "--example-user user.tsv already exists",
        ),
        (
            vec!["compare", "--data", "data", "--out", "cmp", "--methods", "melu,paml"],
            "--out cmp/paml already holds an earlier run (run.json)",
        ),
        (
            vec!["report", "--data", "data", "--out", "rep", "--no-figures"],
            "--out rep already holds an earlier report (report.md)",
        ),
    ] {
        let message = refused(dir, &args, fragment);
        assert!(message.contains(pass_force), "{message}");
    }
    // Files and directories in the wrong place.
    refused(dir, &train_args("data", "model.mrec", &[]), "--out model.mrec is a file, not a directory");
    refused(dir, &train_args("data", "model.mrec", &["--resume"]), "--out model.mrec is a file, not a directory");
    refused(dir, &["data", "synth", "--out", "model.mrec"], "--out model.mrec is a file, not a directory");
    refused(dir, &["compare", "--data", "data", "--out", "model.mrec"], "--out model.mrec is a file, not a directory");
    refused(dir, &["export", "--run", "run", "--out", "melu"], "--out melu is a directory, not a file");
    refused(
        dir,
        &train_args("data", "run", &["--resume", "--force"]),
        "--resume continues the run in run, --force would replace it",
    );
}

#[test]
fn force_replaces_outputs_and_resume_needs_no_force() {
    let work = workspace();
    let dir = work.path();
    succeed(dir, &["export", "--run", "run", "--out", "model.mrec", "--example-user", "user.tsv"]);
    std::fs::write(dir.join("model.mrec"), "stale").unwrap();
    succeed(dir, &["export", "--run", "run", "--out", "model.mrec", "--example-user", "user.tsv", "--force"]);
    assert_eq!(&std::fs::read(dir.join("model.mrec")).unwrap()[..8], b"METAREC\x1a");

    // --resume continues the run in place; --force starts it over (the earlier run's files go).
    let output = succeed(dir, &train_args("data", "run", &["--seed", "3", "--epochs", "3", "--resume"]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("resuming after epoch 2"));
    succeed(dir, &train_args("data", "run", &["--method", "mf", "--force"]));
    assert!(dir.join("run/factors.json").exists() && !dir.join("run/weights.safetensors").exists());
    assert!(!dir.join("run/checkpoint.ot").exists(), "the earlier run's checkpoint was removed");

    let synth =
        ["data", "synth", "--users", "60", "--items", "30", "--max-ratings", "20", "--seed", "8", "--out", "data"];
    refused(dir, &synth, "--out data already holds a dataset");
    succeed(dir, &[&synth[..], &["--force"]].concat());
    succeed(dir, &["data", "split", "paml", "--data", "data", "--out", "split.csv"]);
    refused(dir, &["data", "split", "paml", "--data", "data", "--out", "split.csv"], "--out split.csv already exists");
    succeed(dir, &["data", "split", "paml", "--data", "data", "--out", "split.csv", "--force"]);
}

#[test]
fn nothing_is_created_before_the_inputs_are_validated() {
    let work = workspace();
    let dir = work.path();
    for (args, fragment) in [
        (train_args("data", "new/run", &["--resume"]), "--resume: new/run does not exist"),
        (train_args("data", "new/run", &["--split", "missing.csv"]), "--split missing.csv"),
        (train_args("no-such-data", "new/run", &[]), "dataset directory no-such-data does not exist"),
        (train_args("data", "new/run", &["--task", "ctr", "--click-threshold", "9"]), "every training label is 0"),
        (
            train_args("data", "run", &["--resume", "--split", "missing.csv"]),
            "--resume continues on the run's own split",
        ),
        (
            vec!["data", "split", "paml", "--data", "no-such-data", "--out", "new/split.csv"],
            "dataset directory no-such-data does not exist",
        ),
        (vec!["data", "split", "melu", "--data", "no-such-data", "--out", "new"], "no-such-data does not exist"),
        (vec!["compare", "--data", "no-such-data", "--out", "new"], "no-such-data does not exist"),
        (vec!["report", "--data", "no-such-data", "--out", "new", "--no-figures"], "no-such-data does not exist"),
        (
            vec![
                "export",
                "--run",
                "run",
                "--out",
                "new.mrec",
                "--example-user",
                "u.tsv",
                "--example-user-id",
                "nobody",
            ],
            "--example-user-id 'nobody' is not a test user of this run",
        ),
    ] {
        refused(dir, &args, fragment);
    }
    // A directory that holds something else than a run is not touched by a refused run.
    std::fs::create_dir_all(dir.join("mine")).unwrap();
    std::fs::write(dir.join("mine/notes.txt"), "keep").unwrap();
    refused(dir, &train_args("data", "mine", &["--split", "missing.csv"]), "--split missing.csv");
}

#[test]
fn resume_names_every_setting_that_differs() {
    let work = workspace();
    let dir = work.path();
    // Before any tensor is loaded: a different --hidden panicked in libtorch (exit 101).
    for (extra, fragment) in [
        (vec!["--hidden", "32"], "--hidden: the run has 16,16, given 32"),
        (vec!["--embedding-dim", "4"], "--embedding-dim: the run has 8, given 4"),
        (vec!["--method", "paml"], "--method: the run has melu, given paml"),
        (vec!["--inner-lr", "0.1"], "--inner-lr: the run has 0.05, given 0.1"),
        (vec!["--inner-steps", "3"], "--inner-steps: the run has 5, given 3"),
        (vec!["--task", "ctr"], "--task: the run has rating, given click"),
        (vec!["--item-id", "true"], "--item-id: the run has off, given on"),
        (vec!["--warm-users", "false"], "--warm-users: the run has on, given off"),
        (vec!["--adapt", "all"], "--adapt: the run has fold-in, given all"),
        (vec!["--preset", "paper"], "--item-bias: the run has on, given off"),
        (vec!["--gamma", "0.5"], "--gamma: the run has 0.001, given 0.5"),
        (vec!["--inits", "2"], "--inits: the run has 3, given 2"),
        (vec!["--init-choice", "query"], "--init-choice: the run has support, given query"),
        (vec!["--shared-layers", "0"], "--shared-layers: the run has 1, given 0"),
        (vec!["--unadapted-loss", "0"], "--unadapted-loss: the run has 0.3, given 0"),
        (vec!["--mf-factors", "4"], "--mf-factors: the run has 8, given 4"),
        (vec!["--seed", "4"], "--seed: the run has 3, given 4"),
    ] {
        let mut args = train_args("data", "run", &["--seed", "3", "--resume"]);
        args.extend(extra);
        let message = refused(dir, &args, fragment);
        assert!(message.contains("--resume: the run in run was trained with other settings"), "{message}");
    }
    // Several at once, one line each.
    let mut args: Vec<&str> = vec!["train", "--data", "data", "--out", "run", "--resume", "--device", "cpu", "--quiet"];
    args.extend(["--hidden", "32", "--embedding-dim", "4", "--seed", "3"]);
    let message =
        refused(dir, &args, "--embedding-dim: the run has 8, given 4\n  --hidden: the run has 16,16, given 32");
    assert!(message.contains("--first-order: the run has on, given off"), "{message}");
    // Another dataset under the same flags.
    synth(dir, "other", "11");
    refused(dir, &train_args("other", "run", &["--seed", "3", "--resume"]), "--resume: the run in run was trained on");
    // A run directory without a checkpoint or run.json.
    std::fs::create_dir_all(dir.join("bare")).unwrap();
    std::fs::write(dir.join("bare/split.csv"), "").unwrap();
    refused(dir, &train_args("data", "bare", &["--resume"]), "--resume: bare holds no checkpoint.json or run.json");
}

#[test]
fn flags_are_checked_against_their_ranges_when_parsed() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::create_dir(dir.join("data")).unwrap();
    let count = "is not a valid count: expected a whole number >= 1";
    for (flag, value, fragment) in [
        ("--epochs", "-1", format!("invalid value '-1' for '--epochs <EPOCHS>': -1 {count}")),
        ("--epochs", "0", format!("0 {count}")),
        ("--patience", "0", format!("invalid value '0' for '--patience <PATIENCE>': 0 {count}")),
        ("--inner-steps", "0", "0 is not a valid step count: expected a whole number in 1..=1000".into()),
        (
            "--inner-steps",
            "1001",
            "1001 is not a valid step count: expected a whole number in 1..=1000 (the on-device runtime's limit)"
                .into(),
        ),
        ("--gamma", "-1", "-1 is not a valid weight: expected a finite number >= 0".into()),
        ("--gamma", "inf", "inf is not a valid weight: expected a finite number >= 0".into()),
        ("--inner-lr", "-0.1", "-0.1 is not a valid learning rate: expected a finite number >= 0".into()),
        ("--inner-lr", "nan", "nan is not a valid learning rate".into()),
        ("--outer-lr", "0", "0 is not a valid learning rate: expected a finite number > 0".into()),
        ("--batch-users", "0", format!("0 {count}")),
        ("--embedding-dim", "0", "0 is not a valid width: expected a whole number >= 1".into()),
        ("--hidden", "32,0", "0 is not a valid width: expected a whole number >= 1".into()),
        ("--hidden", "-1,2", "-1 is not a valid width: expected a whole number >= 1".into()),
        ("--lr-hidden", "0", "0 is not a valid width".into()),
        ("--click-threshold", "inf", "inf is not a valid rating: expected a finite number".into()),
        ("--memory-size", "0", format!("0 {count}")),
        ("--neighbours", "0", format!("0 {count}")),
        ("--warmup", "-1", "-1 is not a valid count: expected a whole number >= 0".into()),
        ("--inits", "0", format!("0 {count}")),
        ("--delta", "0", "0 is not a valid kernel width: expected a finite number > 0".into()),
        ("--delta", "nan", "nan is not a valid kernel width".into()),
        ("--threads", "0", "0 is not a valid thread count: expected a whole number in 1..=".into()),
        ("--mf-factors", "257", "257 is not a valid factor count: expected a whole number in 0..=256".into()),
        ("--mf-lambda", "0", "0 is not a valid ridge weight: expected a finite number > 0 and < 1e30".into()),
        ("--mf-bias-lambda", "-1", "-1 is not a valid ridge weight".into()),
        ("--mf-sweeps", "0", format!("0 {count}")),
    ] {
        refused(dir, &["train", "--data", "data", "--out", "new", flag, value], &fragment);
        refused(dir, &["compare", "--data", "data", "--out", "new", flag, value], &fragment);
    }
    refused(dir, &["report", "--data", "data", "--out", "new", "--seeds", "0"], &format!("0 {count}"));
    refused(dir, &["report", "--data", "data", "--out", "new", "--gammas", "1e-3,-1"], "-1 is not a valid weight");
    // The AT-PAML memory must hold its neighbours and its warm-up (a rule between two flags).
    refused(
        dir,
        &["train", "--data", "data", "--out", "new", "--method", "at-paml", "--memory-size", "8", "--warmup", "16"],
        "AT-PAML needs --memory-size >= max(--neighbours, --warmup)",
    );
    // HML's initialisations need a layer of their own above the shared ones.
    refused(
        dir,
        &["train", "--data", "data", "--out", "new", "--method", "hml", "--hidden", "8", "--shared-layers", "2"],
        "--shared-layers 2: HML's initialisations need a layer of their own, and --hidden 8 makes 2 layers \
         (the output layer included): at most 1",
    );
}

/// `--preset` belongs to the subcommands that train: elsewhere clap names it, not a flag of the
/// preset's.
#[test]
fn preset_is_refused_where_nothing_trains() {
    let work = tempfile::tempdir().unwrap();
    for args in
        [&["eval", "--run", "run", "--preset", "paper"][..], &["export", "--run", "r", "--out", "m", "--preset=paper"]]
    {
        refused(work.path(), args, "unexpected argument '--preset");
    }
}

#[test]
fn config_files_are_checked_against_the_subcommand() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::create_dir(dir.join("data")).unwrap();
    for (text, fragment) in [
        ("hiden = [32]\n", "exp.toml: unknown key 'hiden' (did you mean 'hidden'?)"),
        ("inner_stpes = 3\n", "exp.toml: unknown key 'inner_stpes' (did you mean 'inner_steps'?)"),
        ("epochs = \"ten\"\n", "exp.toml: key 'epochs': invalid value 'ten' for '--epochs <EPOCHS>'"),
        ("epochs = 0\n", "exp.toml: key 'epochs': invalid value '0' for '--epochs <EPOCHS>': 0 is not a valid count"),
        ("hidden = 32.5\n", "exp.toml: key 'hidden': invalid value '32.5'"),
        ("first_order = 1\n", "exp.toml: key 'first_order' is a switch: expected true or false, got 1"),
        ("method = [\"paml\"]\n", "exp.toml: key 'method' takes one value, not a list"),
        ("task = \"clicks\"\n", "exp.toml: key 'task': invalid value 'clicks'"),
    ] {
        std::fs::write(dir.join("exp.toml"), text).unwrap();
        refused(dir, &["train", "--data", "data", "--out", "new", "--config", "exp.toml"], fragment);
    }
    // Keys are the flags of the subcommand the file is given to.
    std::fs::write(dir.join("exp.toml"), "methods = [\"melu\"]\n").unwrap();
    refused(dir, &["train", "--config", "exp.toml"], "exp.toml: unknown key 'methods' (did you mean 'method'?)");
    std::fs::write(dir.join("exp.toml"), "seeds = 0\n").unwrap();
    refused(dir, &["report", "--config", "exp.toml"], "exp.toml: key 'seeds'");
    std::fs::write(dir.join("exp.toml"), "method = \"paml\"\n").unwrap();
    refused(dir, &["compare", "--data", "data", "--out", "new", "--config", "exp.toml"], "compare takes --methods");
}

#[test]
fn compare_and_report_refuse_method() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::create_dir(dir.join("data")).unwrap();
    refused(
        dir,
        &["compare", "--data", "data", "--out", "new", "--method", "paml"],
        "compare takes --methods a,b,…; --method is for train",
    );
    refused(dir, &["report", "--data", "data", "--out", "new", "--method=paml"], "report takes --methods a,b,…");
}

#[test]
fn eval_refuses_a_model_of_another_run() {
    let work = workspace();
    let dir = work.path();
    synth(dir, "other", "11");
    succeed(dir, &train_args("other", "other-run", &[]));
    succeed(dir, &train_args("data", "paml-run", &["--seed", "3", "--method", "paml"]));
    succeed(dir, &train_args("data", "ctr-run", &["--seed", "3", "--task", "ctr"]));
    for (run, model) in
        [("run", "own.mrec"), ("other-run", "other.mrec"), ("paml-run", "paml.mrec"), ("ctr-run", "ctr.mrec")]
    {
        succeed(dir, &["export", "--run", run, "--out", model]);
    }
    let eval = |model: &'static str| vec!["eval", "--run", "run", "--device", "cpu", "--model", model];
    let output = succeed(dir, &eval("own.mrec"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("device: own.mrec"));
    let foreign = "does not belong to the run run:";
    let message = refused(dir, &eval("other.mrec"), &format!("--model other.mrec {foreign} schema hash"));
    assert!(message.contains("(other fields or vocabularies)"), "{message}");
    refused(dir, &eval("paml.mrec"), &format!("--model paml.mrec {foreign} method paml, the run's melu"));
    refused(dir, &eval("ctr.mrec"), &format!("--model ctr.mrec {foreign} task Click"));
    // One good model beside a foreign one: refused before anything is replayed.
    let mut both = eval("own.mrec");
    both.extend(["--model", "paml.mrec"]);
    refused(dir, &both, "--model paml.mrec does not belong to the run run");
}

#[test]
fn eval_and_export_take_data_when_the_dataset_moved() {
    let work = workspace();
    let dir = work.path();
    synth(dir, "other", "11");
    std::fs::rename(dir.join("data"), dir.join("moved")).unwrap();
    let message = refused(dir, &["eval", "--run", "run", "--device", "cpu"], "does not exist");
    assert!(message.contains("(recorded in run/run.json)") && message.contains("pass its new place with --data DIR"));
    refused(dir, &["export", "--run", "run", "--out", "m.mrec"], "pass its new place with --data DIR");
    refused(dir, &["eval", "--run", "run", "--data", "nowhere"], "--data nowhere: dataset directory does not exist");
    refused(
        dir,
        &["eval", "--run", "run", "--device", "cpu", "--data", "other"],
        "--data other is not the dataset the run was trained on",
    );
    succeed(dir, &["eval", "--run", "run", "--device", "cpu", "--data", "moved"]);
    succeed(dir, &["export", "--run", "run", "--out", "m.mrec", "--data", "moved"]);
    assert_eq!(&std::fs::read(dir.join("m.mrec")).unwrap()[..8], b"METAREC\x1a");
}

#[test]
fn export_help_says_what_compact_tables_shrink() {
    let output = succeed(Path::new("."), &["export", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(!help.contains("a quarter of the bytes"), "{help}");
    assert!(help.contains("Only the tables shrink"), "{help}");
    assert!(help.contains("--force") && help.contains("--data"), "{help}");
}

/// The figures after a row's name in a printed table (`name` itself, not `name without …`).
fn row_figures(text: &str, name: &str) -> Vec<f64> {
    let line = text.lines().find(|l| l.starts_with(name) && !l[name.len()..].starts_with(" without"));
    let line = line.unwrap_or_else(|| panic!("no row {name:?} in:\n{text}"));
    line[name.len()..].split_whitespace().map(|v| v.parse().unwrap()).collect()
}

/// `eval --predictions`: one line per row and query entry, the figures the table prints, and an
/// existing file kept unless --force.
#[test]
fn eval_writes_every_rows_predictions() {
    let work = workspace();
    let dir = work.path();
    succeed(dir, &train_args("data", "ctr-run", &["--seed", "3", "--task", "click"]));
    let args = ["eval", "--run", "ctr-run", "--device", "cpu", "--predictions", "p.csv"];
    let printed = String::from_utf8_lossy(&succeed(dir, &args).stdout).into_owned();
    let file = std::fs::read_to_string(dir.join("p.csv")).unwrap();
    let mut lines = file.lines();
    assert_eq!(lines.next(), Some(metarec_trainer::eval::PREDICTIONS_HEADER));
    let mut rows: std::collections::BTreeMap<String, (Vec<f32>, Vec<f32>)> = Default::default();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "{line}");
        let row = rows.entry(fields[0].to_string()).or_default();
        row.0.push(fields[3].parse().unwrap());
        row.1.push(fields[4].parse().unwrap());
    }
    let entries: usize = printed.split("query labels: ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
    for name in ["MeLU (5 steps)", "MeLU without adaptation", "global + item + user bias", "MF fold-in"] {
        let (labels, scores) = &rows[name];
        assert_eq!(labels.len(), entries, "{name}");
        // The file's predictions give the AUC the table printed for that row.
        let auc = metarec_trainer::eval::auc(labels, scores).unwrap();
        let shown = row_figures(&printed, name)[0];
        assert!((auc - shown).abs() <= 5e-5, "{name}: {auc} from the file, {shown} printed");
    }
    // scripts/click_ceiling.py reads the file: its AUC and per-user AUC (an independent
    // implementation) agree with the table, and its oracle's pooled AUC is an AUC.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/click_ceiling.py");
    let ceiling = succeed_command(std::process::Command::new("python3").arg(script).arg(dir.join("p.csv")));
    let ceiling = String::from_utf8_lossy(&ceiling.stdout).into_owned();
    for name in ["MeLU (5 steps)", "global + item + user bias"] {
        let (table, script) = (row_figures(&printed, name), row_figures(&ceiling, name));
        assert!((table[0] - script[0]).abs() <= 1e-4 && (table[1] - script[1]).abs() <= 1e-4, "{printed}\n{ceiling}");
        assert!((0.5..=1.0).contains(&script[2]), "{ceiling}");
    }
    let before = std::fs::read(dir.join("p.csv")).unwrap();
    refused(dir, &args, "--predictions p.csv already exists; pass --force");
    let mut forced = args.to_vec();
    forced.push("--force");
    succeed(dir, &forced);
    assert_eq!(std::fs::read(dir.join("p.csv")).unwrap(), before, "the same run writes the same predictions");
}
