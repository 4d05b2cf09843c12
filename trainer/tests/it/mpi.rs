//! Data-parallel training under `mpirun` (the `mpi` feature; scripts/test.sh runs these with
//! `cargo test -p metarec-trainer --features mpi --test it mpi`): 2 ranks take the steps one
//! process takes, to 1e-5, with every method state that is summed or gathered (the gradients of
//! every trainable variable, AT-PAML's memory, HML's initialisations, Meta-SGD's rates), with
//! lazy Adam (the default: its rows found in the summed gradients; of a large catalogue's tables
//! only the rows the ranks reached are summed) and dense Adam, and with uneven shards (7 users a
//! batch) and per-user dropout; a rank killed mid-epoch stops the job with an error naming it,
//! and `--resume` on another rank count ends where the uninterrupted run ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{command as trainer, succeed_command as succeed, TRAINER};

/// `mpirun -np RANKS trainer ARGS` (as root, with Open MPI's consent).
fn mpirun(ranks: usize) -> Command {
    let mut command = Command::new("mpirun");
    command.args(["-np", &ranks.to_string(), "--oversubscribe", "--bind-to", "none", TRAINER]);
    command.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    command.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    command
}

fn synth(dir: &Path, users: usize) -> PathBuf {
    synth_items(dir, users, 40)
}

fn synth_items(dir: &Path, users: usize, items: usize) -> PathBuf {
    let data = dir.join(format!("data-{items}"));
    let (users, items) = (users.to_string(), items.to_string());
    succeed(
        trainer()
            .args(["data", "synth", "--users", &users, "--items", &items, "--max-ratings", "25", "--out"])
            .arg(&data),
    );
    data
}

/// `train` flags of a small, uneven (7 users a batch) run of `method` with dropout on.
fn train_args(data: &Path, out: &Path, method: &[&str], epochs: usize) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--data"].map(String::from).to_vec();
    args.push(data.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.extend(method.iter().map(|s| s.to_string()));
    let rest = [
        "--device",
        "cpu",
        "--embedding-dim",
        "8",
        "--hidden",
        "16,16",
        "--batch-users",
        "7",
        "--inner-steps",
        "2",
        "--dropout",
        "0.2",
        "--seed",
        "5",
        "--patience",
        "100",
        "--quiet",
        "--epochs",
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args.push(epochs.to_string());
    args
}

/// run.json's per-epoch losses and the best epoch's.
fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("run.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = vec![info["best_valid_loss"].as_f64().unwrap()];
    for epoch in info["history"].as_array().unwrap() {
        out.push(epoch["train_loss"].as_f64().unwrap());
        out.push(epoch["valid_loss"].as_f64().unwrap());
    }
    out
}

/// Every variable of the final checkpoint, flattened, by name.
fn variables(run: &Path) -> Vec<(String, Vec<f32>)> {
    let mut named = metarec_trainer::run::load_tensors(&run.join("checkpoint.ot")).unwrap();
    named.retain(|(name, _)| name.starts_with("var.") || name == "memory.keys" || name == "memory.alphas");
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(name, t)| (name, metarec_trainer::model::tensor_values(&t))).collect()
}

fn assert_same_runs(a: &Path, b: &Path, what: &str) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{what}: epochs differ");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5, "{what}: losses differ: {la:?} against {lb:?}");
    }
    let (va, vb) = (variables(a), variables(b));
    assert_eq!(va.len(), vb.len(), "{what}: variables differ");
    assert!(!va.is_empty());
    for ((name, x), (_, y)) in va.iter().zip(&vb) {
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{what}: {name} differs by up to {worst}");
    }
}

#[test]
fn mpi_two_ranks_train_what_one_process_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 90);
    let methods: [(&str, &[&str]); 5] = [
        ("reg-paml", &["--method", "reg-paml"]),
        ("reg-paml-dense-adam", &["--method", "reg-paml", "--lazy-adam", "false"]),
        ("at-paml", &["--method", "at-paml", "--memory-size", "64", "--warmup", "4"]),
        ("hml", &["--method", "hml", "--inits", "2", "--adapt", "all"]),
        ("meta-sgd", &["--method", "meta-sgd", "--adapt", "head"]),
    ];
    for (name, method) in methods {
        let one = dir.path().join(format!("{name}-1"));
        let two = dir.path().join(format!("{name}-2"));
        succeed(mpirun(1).args(train_args(&data, &one, method, 2)));
        let output = succeed(mpirun(2).args(train_args(&data, &two, method, 2)));
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(log.contains("2 MPI ranks"), "{name}: not a 2-rank run:\n{log}");
        // Rank 0 alone prints: one log line per epoch.
        assert_eq!(log.matches("epoch 1:").count(), 1, "{name}: every rank logs:\n{log}");
        assert_same_runs(&one, &two, name);
    }
}

/// In a large catalogue a batch reaches few rows of the item tables (item ids, biases, factors,
/// Wide&Deep's wide weights), so lazy Adam's gradients travel as the union of the rows the ranks
/// reached (`dist::Layout::Rows`) instead of whole tables: 2 ranks still take one process's
/// steps. (With 40 items the union holds most rows and the tables travel whole.)
#[test]
fn mpi_two_ranks_sum_the_rows_a_batch_reached_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_items(dir.path(), 90, 3000);
    let methods: [(&str, &[&str]); 2] = [
        ("reg-paml-item-id", &["--method", "reg-paml", "--item-id", "true"]),
        ("wide-deep", &["--method", "wide-deep"]),
    ];
    for (name, method) in methods {
        let one = dir.path().join(format!("{name}-1"));
        let two = dir.path().join(format!("{name}-2"));
        succeed(mpirun(1).args(train_args(&data, &one, method, 2)));
        let output = succeed(mpirun(2).args(train_args(&data, &two, method, 2)));
        assert!(String::from_utf8_lossy(&output.stderr).contains("2 MPI ranks"), "{name}: not a 2-rank run");
        assert_same_runs(&one, &two, name);
    }
}

/// The process ids of `mpirun`'s ranks, by rank.
fn ranks_of(mpirun: u32) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let parent: Option<u32> = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)?.parse().ok());
        if parent != Some(mpirun) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let rank = environ
            .split(|&b| b == 0)
            .find_map(|v| String::from_utf8_lossy(v).strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok());
        if let Some(rank) = rank {
            found.push((rank, pid));
        }
    }
    found.sort();
    found
}

#[test]
fn mpi_a_killed_rank_stops_the_job_and_resume_on_another_rank_count_ends_where_it_would() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 400);
    let method: &[&str] = &["--method", "reg-paml"];
    let epochs = 3;
    let straight = dir.path().join("straight");
    succeed(mpirun(2).args(train_args(&data, &straight, method, epochs)));

    let killed = dir.path().join("killed");
    let mut job = mpirun(2)
        .args(train_args(&data, &killed, method, epochs))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = killed.join("checkpoint.json");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(job.try_wait().unwrap().is_none(), "training ended before its first checkpoint");
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ranks = ranks_of(job.id());
    assert_eq!(ranks.len(), 2, "ranks of mpirun: {ranks:?}");
    assert!(job.try_wait().unwrap().is_none(), "training finished before a rank could be killed");
    let status = Command::new("kill").args(["-KILL", &ranks[1].1.to_string()]).status().unwrap();
    assert!(status.success());
    let output = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the job went on without rank 1:\n{stderr}");
    assert!(stderr.contains("rank 1") && stderr.contains("signal 9"), "no error naming the killed rank:\n{stderr}");
    assert!(!killed.join("run.json").exists(), "the run was killed before it finished");

    // One process continues the 2-rank run.
    let mut resume = train_args(&data, &killed, method, epochs);
    resume.push("--resume".into());
    let output = succeed(mpirun(1).args(&resume));
    assert!(String::from_utf8_lossy(&output.stderr).contains("resuming after epoch"));
    assert_same_runs(&straight, &killed, "resumed after a killed rank");
}
