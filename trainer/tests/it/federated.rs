//! Federated learning's server side: the RDP accountant against dp-accounting 0.6.0's figures
//! (the federated anchors' §4.2/§4.3), adaptive clipping's sign, and `trainer federated`.

use metarec_trainer::federated::accountant::{self, poisson_gaussian_rdp, RdpAccountant};
use metarec_trainer::federated::adaptive_clip::AdaptiveClip;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, LogNormal};

use crate::common;

fn assert_rel(actual: f64, expected: f64, rtol: f64, what: &str) {
    let rel = (actual - expected).abs() / expected.abs();
    assert!(rel <= rtol, "{what}: {actual} vs {expected} (relative {rel:.2e})");
}

#[test]
fn one_round_rdp_at_integer_orders_matches_dp_accounting() {
    // q = 0.01, σ = 1.1, one step (anchors §4.2).
    for (order, expected) in [
        (2.0, 1.285100816052e-04),
        (4.0, 2.667183146271e-04),
        (8.0, 5.840703355203e-04),
        (16.0, 1.699826727753e+00),
        (32.0, 8.469416433676e+00),
    ] {
        assert_rel(poisson_gaussian_rdp(0.01, 1.1, order).unwrap(), expected, 1e-9, &format!("order {order}"));
    }
}

#[test]
fn fractional_orders_match_dp_accountings_test_vector() {
    // dp-accounting's own test: q = 0.01, z = 2.5, 50 steps.
    let orders = vec![1.5, 2.5, 5.0, 50.0, 100.0, f64::INFINITY];
    let mut acc = RdpAccountant::new(orders).unwrap();
    acc.compose_poisson_gaussian(0.01, 2.5, 50).unwrap();
    let expected = [6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e+02];
    for (r, e) in acc.rdp().iter().zip(expected) {
        assert_rel(*r, e, 1e-7, "rdp");
    }
    assert_eq!(acc.rdp()[5], f64::INFINITY);
    // dp-accounting's upper bound at α = 1.5 (exact integration gives 9.5545285719e-05).
    assert_rel(poisson_gaussian_rdp(0.01, 1.1, 1.5).unwrap(), 9.8587569680e-05, 1e-8, "alpha 1.5");
}

#[test]
fn epsilon_matches_the_reference_table_with_default_orders() {
    // Anchors §4.3: dp-accounting RDP, default orders, (ε, optimal order).
    for (q, z, steps, delta, eps, order) in [
        (0.01, 1.1, 10_000, 1e-5, 5.632011, 4.7),
        (0.01, 1.0, 1000, 1e-5, 2.101367, 7.8),
        (256.0 / 60000.0, 1.1, 14040, 1e-5, 2.594363, 8.1),
        (0.05, 1.0, 100, 1e-5, 4.038913, 4.6),
        (1.0, 1.0, 1, 1e-5, 4.728507, 5.4),
    ] {
        let (e, o) = accountant::poisson_gaussian_epsilon(q, z, steps, delta).unwrap();
        assert_rel(e, eps, 1e-6, &format!("q {q} z {z} T {steps}"));
        assert_eq!(o, order, "optimal order of q {q} z {z} T {steps}");
    }
    let (e, o) = accountant::poisson_gaussian_epsilon(0.001, 1.0, 1000, 1e-6).unwrap();
    assert!((e - 0.870).abs() < 5e-4 && o == 13.0, "{e} {o}");
}

#[test]
fn epsilon_matches_the_reference_table_with_integer_orders() {
    let orders: Vec<f64> = (2..=64).map(f64::from).chain([128.0, 256.0]).collect();
    for (q, z, steps, delta, eps, order) in [
        (0.01, 1.1, 10_000, 1e-5, 5.654308, 5.0),
        (0.01, 1.0, 1000, 1e-5, 2.107753, 8.0),
        (0.05, 1.0, 100, 1e-5, 4.111652, 5.0),
        (0.001, 1.0, 1000, 1e-6, 0.869708, 13.0),
    ] {
        let mut acc = RdpAccountant::new(orders.clone()).unwrap();
        acc.compose_poisson_gaussian(q, z, steps).unwrap();
        let (e, o) = acc.epsilon(delta).unwrap();
        assert_rel(e, eps, 1e-6, &format!("q {q} z {z} T {steps}"));
        assert_eq!(o, order);
    }
}

#[test]
fn conversion_matches_dp_accountings_test_vectors() {
    // q = 1, z = 4.530877117: exactly (1, 1e-6).
    let (e, _) = accountant::poisson_gaussian_epsilon(1.0, 4.530877117, 1, 1e-6).unwrap();
    assert_rel(e, 1.0, 1e-6, "q = 1");
    // A constant RDP of 1.1 on orders 2..32 at δ = 1e-5: ε = 1.32783806176 at order 32.
    let orders: Vec<f64> = (2..=32).map(f64::from).collect();
    let (e, o) = accountant::epsilon(&orders, &vec![1.1; orders.len()], 1e-5).unwrap();
    assert_rel(e, 1.32783806176, 1e-10, "constant RDP");
    assert_eq!(o, 32.0);
}

#[test]
fn edge_cases_and_bad_arguments() {
    assert_eq!(poisson_gaussian_rdp(0.0, 1.0, 2.0).unwrap(), 0.0);
    assert_eq!(poisson_gaussian_rdp(0.1, 0.0, 2.0).unwrap(), f64::INFINITY);
    assert_eq!(poisson_gaussian_rdp(1.0, 2.0, 4.0).unwrap(), 0.5);
    assert_eq!(accountant::poisson_gaussian_epsilon(0.0, 1.0, 100, 1e-5).unwrap().0, 0.0);
    assert_eq!(accountant::poisson_gaussian_epsilon(0.01, 1.0, 0, 1e-5).unwrap().0, 0.0);
    assert_eq!(accountant::poisson_gaussian_epsilon(0.01, 0.0, 10, 1e-5).unwrap().0, f64::INFINITY);
    for (q, z, order) in [(-0.1, 1.0, 2.0), (1.1, 1.0, 2.0), (f64::NAN, 1.0, 2.0), (0.1, -1.0, 2.0), (0.1, 1.0, 1.0)] {
        assert!(poisson_gaussian_rdp(q, z, order).is_err(), "{q} {z} {order}");
    }
    assert!(accountant::poisson_gaussian_epsilon(0.01, 1.0, 10, 1.5).is_err());
    assert!(accountant::poisson_gaussian_epsilon(0.01, 1.0, 10, -1e-5).is_err());
    assert!(RdpAccountant::new(vec![]).is_err());
    assert!(RdpAccountant::new(vec![0.5]).is_err());
    // More rounds never cost less.
    let mut last = 0.0;
    for steps in [1, 10, 100, 1000] {
        let (e, _) = accountant::poisson_gaussian_epsilon(0.01, 1.0, steps, 1e-5).unwrap();
        assert!(e > last);
        last = e;
    }
}

/// Noise-free rounds over log-normal update norms with median 1, starting from C = 0.1.
fn track_median(flower_sign: bool) -> f64 {
    let rule = AdaptiveClip { count_stddev: 0.0, ..AdaptiveClip::with_defaults(1000.0) };
    let norms = LogNormal::new(0.0, 1.0).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut clip = 0.1;
    for _ in 0..60 {
        let fits: Vec<bool> = (0..1000).map(|_| norms.sample(&mut rng) <= clip).collect();
        let unclipped = rule.noisy_unclipped_fraction(&fits, 1000.0, &mut rng).unwrap();
        // Flower counts clipped updates and feeds that fraction to the same formula.
        clip = rule.next_clip(clip, if flower_sign { 1.0 - unclipped } else { unclipped });
    }
    clip
}

#[test]
fn adaptive_clipping_tracks_the_median_norm_and_flowers_sign_collapses() {
    let clip = track_median(false);
    assert!((clip - 1.0).abs() < 0.15, "the clip should reach the median norm 1, got {clip}");
    let flower = track_median(true);
    assert!(flower < 1e-2, "Flower's sign should shrink the clip towards 0, got {flower}");
}

#[test]
fn adaptive_clipping_shares_the_budget_with_the_count() {
    let rule = AdaptiveClip::with_defaults(100.0);
    assert_eq!(rule.count_stddev, 5.0);
    // z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), slightly above z.
    let z_delta = rule.update_noise_multiplier(1.0).unwrap();
    assert_rel(z_delta, (1.0f64 - 0.01).powf(-0.5), 1e-12, "z_delta");
    let tight = AdaptiveClip { count_stddev: 0.4, ..rule };
    assert!(tight.update_noise_multiplier(1.0).is_err());
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let f = rule.noisy_unclipped_fraction(&[true; 100], 100.0, &mut rng).unwrap();
    assert!((0.0..=1.0).contains(&f));
}

#[test]
fn the_epsilon_command_prints_one_line_per_round_count_and_delta() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["federated", "epsilon", "--q", "0.01", "--noise-multiplier", "1.1", "--steps", "1000,10000"];
    let out = common::succeed(dir.path(), &[&args[..], &["--delta", "1e-5"]].concat());
    let text = common::text(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with("epsilon 5.6320") && lines[1].contains("order 4.7"), "{text}");
    let bad = common::trainer(dir.path(), &[&args[..], &["--delta", "2"]].concat());
    assert!(!bad.status.success());
    assert!(common::text(&bad.stderr).contains("delta"), "{}", common::text(&bad.stderr));
}

// ---- trainer federated aggregate ----

use metarec_runtime::contribution;
use metarec_runtime::{Model, Session};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A MeLU model of the tiny workspace's data trained with `--preset paper` (every MLP weight
/// adapted by gradient steps: a model devices can contribute to), exported once per test run.
fn paper_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("federated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = common::tiny_workspace().join("data");
        let train = ["train", "--data", data.to_str().unwrap(), "--out", "run", "--preset", "paper"];
        common::succeed(&dir, &[&train[..], &common::TINY_MODEL].concat());
        common::succeed(&dir, &["export", "--run", "run", "--out", "model.mrec"]);
        dir.join("model.mrec")
    })
}

/// A fresh directory holding a copy of [`paper_model`] as `model.mrec`.
fn round_dir() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(paper_model(), work.path().join("model.mrec")).unwrap();
    work
}

/// The decision MLP's parameters in the flat layout (per layer: weights, then biases).
fn flat_params(model: &Model) -> Vec<f32> {
    model.body().layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias).copied()).collect()
}

/// Contributions of `users` devices with different ratings, written to `dir` as `uK.bin`;
/// returns the decoded updates.
fn write_contributions(model: &Model, dir: &Path, users: usize, clip: f32) -> Vec<Vec<f32>> {
    std::fs::create_dir_all(dir).unwrap();
    let items = model.item_count() as u32;
    let scale = model.body().rating;
    (0..users)
        .map(|u| {
            let mut session = Session::new(model);
            for k in 0..5u32 {
                let item = (u as u32 * 3 + k * 7) % items;
                let rating = scale.min + (scale.max - scale.min) * ((u as u32 + k) % 5) as f32 / 4.0;
                session.add_rating_by_index(item, rating).unwrap();
            }
            let blob = session.contribute(clip).unwrap();
            std::fs::write(dir.join(format!("u{u}.bin")), &blob).unwrap();
            contribution::decode(&blob).unwrap().update
        })
        .collect()
}

fn aggregate(dir: &Path, extra: &[&str]) -> std::process::Output {
    let base = ["federated", "aggregate", "--model", "model.mrec", "--updates", "updates", "--out", "next.mrec"];
    common::trainer(dir, &[&base[..], extra].concat())
}

/// A noise-free round of six clients out of sixty, clipped at 10.
const NOISE_FREE_ROUND: [&str; 8] =
    ["--clip", "10", "--noise-multiplier", "0", "--expected-clients", "6", "--population", "60"];

/// `aggregate --model M --updates U --out O` with [`NOISE_FREE_ROUND`] and `flags`, in `dir`.
fn aggregate_round(dir: &Path, [model, updates, out]: [&str; 3], flags: &[&str]) -> std::process::Output {
    let paths = ["federated", "aggregate", "--model", model, "--updates", updates, "--out", out];
    common::trainer(dir, &[&paths[..], &NOISE_FREE_ROUND[..], flags].concat())
}

#[test]
fn a_noise_free_round_with_every_client_is_the_mean_meta_gradient_step() {
    let work = round_dir();
    let model = Model::from_path(work.path().join("model.mrec")).unwrap();
    let updates = write_contributions(&model, &work.path().join("updates"), 6, 10.0);
    let args = ["--clip", "10", "--noise-multiplier", "0", "--expected-clients", "6", "--population", "60"];
    let out = aggregate(work.path(), &[&args[..], &["--server-lr", "0.5", "--seed", "1"]].concat());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).contains("6 accepted"), "{}", common::text(&out.stdout));
    let next = Model::from_path(work.path().join("next.mrec")).unwrap();
    let (before, after) = (flat_params(&model), flat_params(&next));
    let mut moved = 0.0f64;
    for (k, (b, a)) in before.iter().zip(&after).enumerate() {
        let mean = updates.iter().map(|u| u[k] as f64).sum::<f64>() / 6.0;
        let expected = *b as f64 - 0.5 * mean;
        assert!((*a as f64 - expected).abs() < 1e-6, "parameter {k}: {a} vs {expected}");
        moved += (*a as f64 - *b as f64).abs();
    }
    assert!(moved > 1e-4, "the round moved nothing");
    assert_ne!(contribution::model_id(&next), contribution::model_id(&model), "a new model id");
    // The ledger holds the round and the ε the accountant gives for one round at q = 6/60.
    let ledger = std::fs::read_to_string(work.path().join("privacy-ledger.tsv")).unwrap();
    assert_eq!(ledger.lines().count(), 2, "{ledger}");
    assert!(ledger.lines().nth(1).unwrap().ends_with("inf"), "z = 0 gives no privacy: {ledger}");
}

/// `--server-optimizer adam` (FedAdam): the first round steps β·g/(|g| + τ) per coordinate of
/// the mean g, keeps the moments in `server-state.json` bound to the model it wrote, and the
/// next round continues them (the step `ServerAdam` gives for the two means in turn); a state
/// that belongs to another model is refused, and `--server-state` needs Adam.
#[test]
fn fedadam_rounds_keep_their_moments_in_the_server_state() {
    use metarec_trainer::federated::aggregate::ServerAdam;
    let work = round_dir();
    let dir = work.path();
    let model = Model::from_path(dir.join("model.mrec")).unwrap();
    let fixed = NOISE_FREE_ROUND;
    let round = |model: &str, updates: &str, out: &str| {
        aggregate_round(dir, [model, updates, out], &["--server-optimizer", "adam", "--server-lr", "0.01"])
    };
    let mut adam = ServerAdam::default();
    let mut before = model;
    for (k, (m, u, out)) in
        [("model.mrec", "updates", "next.mrec"), ("next.mrec", "updates2", "next2.mrec")].into_iter().enumerate()
    {
        let updates = write_contributions(&before, &dir.join(u), 6, 10.0);
        let ran = round(m, u, out);
        assert!(ran.status.success(), "round {k}: {}", common::text(&ran.stderr));
        let mean: Vec<f64> =
            (0..updates[0].len()).map(|i| updates.iter().map(|u| f64::from(u[i])).sum::<f64>() / 6.0).collect();
        let step = adam.step(&mean).unwrap();
        let after = Model::from_path(dir.join(out)).unwrap();
        for (i, (b, a)) in flat_params(&before).iter().zip(flat_params(&after)).enumerate() {
            let expected = f64::from(*b) - 0.01 * step[i];
            assert!((f64::from(a) - expected).abs() < 1e-6, "round {k}, parameter {i}: {a} vs {expected}");
        }
        let state = std::fs::read_to_string(dir.join("server-state.json")).unwrap();
        assert!(state.contains(&format!("\"model\":{}", contribution::model_id(&after))), "{state}");
        before = after;
    }
    // The state now belongs to next2.mrec: a round on model.mrec again is refused, nothing written.
    let ran = round("model.mrec", "updates", "again.mrec");
    common::assert_refused(&ran, "--server-state");
    assert!(!dir.join("again.mrec").exists());
    let sgd = aggregate(dir, &[&fixed[..], &["--server-state", "s.json", "--force"]].concat());
    common::assert_refused(&sgd, "--server-optimizer adam");
}

/// `aggregate --server-average d`: the averaged model (`next-average.mrec` beside --out) is the
/// first round's model after one round, then d·average + (1 − d)·θ (with d capped at 1 − 1/t:
/// here 0.5 in round 2, so the plain mean of the two models); the average travels in the server
/// state, an existing averaged model is refused without --force, and --average-out needs
/// --server-average.
#[test]
fn aggregate_serves_the_moving_average_of_the_rounds_models() {
    let work = round_dir();
    let dir = work.path();
    let fixed = NOISE_FREE_ROUND;
    let round = |model: &str, updates: &str, out: &str| {
        aggregate_round(dir, [model, updates, out], &["--server-lr", "0.5", "--server-average", "0.9"])
    };
    let mut models = Vec::new();
    for (k, (m, u, out)) in
        [("model.mrec", "updates", "next.mrec"), ("next.mrec", "updates2", "next2.mrec")].into_iter().enumerate()
    {
        write_contributions(&Model::from_path(dir.join(m)).unwrap(), &dir.join(u), 6, 10.0);
        let ran = round(m, u, out);
        assert!(ran.status.success(), "round {k}: {}", common::text(&ran.stderr));
        models.push(flat_params(&Model::from_path(dir.join(out)).unwrap()));
        let served = format!("{}-average.mrec", out.trim_end_matches(".mrec"));
        let served = flat_params(&Model::from_path(dir.join(served)).unwrap());
        for (i, s) in served.iter().enumerate() {
            let expected = models.iter().map(|m| f64::from(m[i])).sum::<f64>() / models.len() as f64;
            assert!((f64::from(*s) - expected).abs() < 1e-6, "round {k}, parameter {i}: {s} vs {expected}");
        }
    }
    assert_ne!(models[0], models[1], "the second round moved nothing");
    let state = std::fs::read_to_string(dir.join("server-state.json")).unwrap();
    assert!(state.contains("\"rounds\":2"), "{state}");
    // A third round onto an existing averaged model is refused and writes nothing.
    std::fs::write(dir.join("next3-average.mrec"), b"kept").unwrap();
    write_contributions(&Model::from_path(dir.join("next2.mrec")).unwrap(), &dir.join("updates3"), 6, 10.0);
    let ran = round("next2.mrec", "updates3", "next3.mrec");
    common::assert_refused(&ran, "--average-out");
    assert_eq!(std::fs::read(dir.join("next3-average.mrec")).unwrap(), b"kept");
    assert!(!dir.join("next3.mrec").exists());
    let ran = aggregate(dir, &[&fixed[..], &["--average-out", "a.mrec", "--force"]].concat());
    common::assert_refused(&ran, "--server-average");
}

/// `aggregate --adaptive-clip γ`: a round whose updates all fit under the clip (no noise: the
/// count is exact) sets the next clip to exp(−0.2·(1 − γ)) times this one, prints it and keeps it
/// in the server state; the next round refuses another --clip and takes that one.
#[test]
fn aggregate_adaptive_clipping_sets_the_next_rounds_clip() {
    let work = round_dir();
    let dir = work.path();
    let model = Model::from_path(dir.join("model.mrec")).unwrap();
    write_contributions(&model, &dir.join("updates"), 6, 1000.0);
    let fixed = ["--noise-multiplier", "0", "--expected-clients", "6", "--population", "60", "--adaptive-clip", "0.5"];
    let ran = aggregate(dir, &[&fixed[..], &["--clip", "1000"]].concat());
    assert!(ran.status.success(), "{}", common::text(&ran.stderr));
    let expected = 1000.0 * (-0.1f64).exp();
    let stdout = common::text(&ran.stdout);
    let printed: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("next round's clip: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no next clip in {stdout}"))
        .parse()
        .unwrap();
    assert!((printed / expected - 1.0).abs() < 1e-12, "{printed} vs {expected}");
    let state = std::fs::read_to_string(dir.join("server-state.json")).unwrap();
    assert!(state.contains("\"adam\":null") && state.contains("\"clip\":"), "plain steps keep no moments: {state}");
    let next = Model::from_path(dir.join("next.mrec")).unwrap();
    write_contributions(&next, &dir.join("updates2"), 6, printed as f32);
    let second = |clip: &str| {
        let paths = ["federated", "aggregate", "--model", "next.mrec", "--updates", "updates2", "--out", "next2.mrec"];
        common::trainer(dir, &[&paths[..], &fixed[..], &["--clip", clip]].concat())
    };
    let wrong = second("1000");
    common::assert_refused(&wrong, "this round's clip");
    let right = second(&printed.to_string());
    assert!(right.status.success(), "{}", common::text(&right.stderr));
    assert!(common::text(&right.stdout).contains("6 accepted"), "{}", common::text(&right.stdout));
    let ledger = std::fs::read_to_string(dir.join("privacy-ledger.tsv")).unwrap();
    let clips: Vec<f64> = ledger.lines().skip(1).map(|l| l.split('\t').nth(8).unwrap().parse().unwrap()).collect();
    assert_eq!(clips.len(), 2, "{ledger}");
    assert!(clips[0] == 1000.0 && (clips[1] / printed - 1.0).abs() < 1e-6, "the ledger's clips: {ledger}");
}

/// Two poisoned updates (all of the clip on one coordinate) move a plain mean but not the
/// coordinate-wise median or trimmed mean, whose step stays within the honest updates' range.
#[test]
fn robust_aggregates_resist_poisoned_updates() {
    let work = round_dir();
    let model = Model::from_path(work.path().join("model.mrec")).unwrap();
    let dir = work.path().join("updates");
    let honest = write_contributions(&model, &dir, 5, 10.0);
    let schema = metarec_runtime::format::schema_hash(model.body());
    for (k, sign) in [(0usize, 1.0f32), (1, -1.0)] {
        let mut poison = vec![0f32; honest[0].len()];
        poison[k] = 10.0 * sign;
        let blob = contribution::encode(contribution::model_id(&model), schema, 10.0, &poison);
        std::fs::write(dir.join(format!("poison{k}.bin")), blob).unwrap();
    }
    let before = flat_params(&model);
    let base = ["--clip", "10", "--expected-clients", "7", "--population", "70", "--noise-multiplier", "0"];
    for (rule, extra) in [("median", &[][..]), ("trimmed-mean", &["--trim", "0.3"][..])] {
        let out = aggregate(work.path(), &[&base[..], &["--robust", rule, "--force"], extra].concat());
        assert!(out.status.success(), "{rule}: {}", common::text(&out.stderr));
        assert!(common::text(&out.stdout).contains("7 accepted"), "{}", common::text(&out.stdout));
        let after = flat_params(&Model::from_path(work.path().join("next.mrec")).unwrap());
        for k in 0..before.len() {
            let step = f64::from(before[k]) - f64::from(after[k]);
            let column = honest.iter().map(|u| f64::from(u[k]));
            let (lo, hi) = column.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
            assert!(step >= lo - 1e-5 && step <= hi + 1e-5, "{rule}, parameter {k}: step {step} outside [{lo}, {hi}]");
        }
    }
    // The plain mean moves by the poison: 10/7 on the first coordinate beyond the honest mean.
    let mean = aggregate(work.path(), &[&base[..], &["--force"]].concat());
    assert!(mean.status.success(), "{}", common::text(&mean.stderr));
    let after = flat_params(&Model::from_path(work.path().join("next.mrec")).unwrap());
    let honest_sum: f64 = honest.iter().map(|u| f64::from(u[0])).sum();
    let step = f64::from(before[0]) - f64::from(after[0]);
    assert!((step - (honest_sum + 10.0) / 7.0).abs() < 1e-4, "mean step {step}");
    // Robust aggregation has no DP guarantee: with noise it is refused.
    let noisy = ["--clip", "10", "--expected-clients", "7", "--population", "70", "--noise-multiplier", "1"];
    let refused = aggregate(work.path(), &[&noisy[..], &["--robust", "median", "--force"]].concat());
    assert!(!refused.status.success());
    assert!(common::text(&refused.stderr).contains("--noise-multiplier 0"), "{}", common::text(&refused.stderr));
}

#[test]
fn bad_stale_foreign_oversized_and_duplicate_blobs_are_refused_and_counted() {
    let work = round_dir();
    let model = Model::from_path(work.path().join("model.mrec")).unwrap();
    let dir = work.path().join("updates");
    let updates = write_contributions(&model, &dir, 3, 1.0);
    let good = std::fs::read(dir.join("u0.bin")).unwrap();
    std::fs::write(dir.join("dup.bin"), &good).unwrap();
    let mut tampered = good.clone();
    tampered[40] ^= 1;
    std::fs::write(dir.join("tampered.bin"), &tampered).unwrap();
    std::fs::write(dir.join("short.bin"), &good[..20]).unwrap();
    let schema = metarec_runtime::format::schema_hash(model.body());
    let foreign = contribution::encode(contribution::model_id(&model) ^ 1, schema, 1.0, &updates[0]);
    std::fs::write(dir.join("foreign.bin"), foreign).unwrap();
    let big: Vec<f32> = updates[0].iter().map(|v| v * 100.0 + 0.01).collect();
    let oversized = contribution::encode(contribution::model_id(&model), schema, 1.0, &big);
    std::fs::write(dir.join("oversized.bin"), oversized).unwrap();
    let args = ["--clip", "1", "--noise-multiplier", "0", "--expected-clients", "3", "--population", "60"];
    let out = aggregate(work.path(), &args);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let text = common::text(&out.stdout);
    assert!(
        text.contains("3 accepted, refused 2 malformed, 1 stale or foreign, 1 above the clip, 1 duplicates"),
        "{text}"
    );
    // The next round: last round's blobs are stale against the new model.
    let next = ["federated", "aggregate", "--model", "next.mrec", "--updates", "updates", "--out", "third.mrec"];
    let out = common::trainer(work.path(), &[&next[..], &args[..]].concat());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).contains("round 2: 0 accepted"), "{}", common::text(&out.stdout));
    // An existing --out is refused without --force, and nothing changes.
    let again = aggregate(work.path(), &args);
    assert!(!again.status.success());
    assert!(common::text(&again.stderr).contains("--force"), "{}", common::text(&again.stderr));
}

#[test]
fn the_noise_spread_is_z_s_over_m_and_the_ledger_composes_rounds() {
    let work = round_dir();
    std::fs::create_dir(work.path().join("updates")).unwrap();
    let model = Model::from_path(work.path().join("model.mrec")).unwrap();
    let (z, s, m) = (1.5, 2.0, 10.0);
    let args = ["--clip", "2", "--noise-multiplier", "1.5", "--expected-clients", "10", "--population", "1000"];
    let mut deviations = Vec::new();
    let mut current = "model.mrec".to_string();
    for round in 0..3 {
        let out_name = format!("round{round}.mrec");
        let cmd = ["federated", "aggregate", "--model", &current, "--updates", "updates", "--out", &out_name];
        let seed = (round + 11).to_string();
        let out = common::trainer(work.path(), &[&cmd[..], &args[..], &["--seed", &seed]].concat());
        assert!(out.status.success(), "{}", common::text(&out.stderr));
        let before = flat_params(&Model::from_path(work.path().join(&current)).unwrap());
        let after = flat_params(&Model::from_path(work.path().join(&out_name)).unwrap());
        deviations.extend(before.iter().zip(&after).map(|(b, a)| *a as f64 - *b as f64));
        current = out_name;
    }
    let n = deviations.len() as f64;
    let std = (deviations.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
    let expected = z * s / m;
    // The sample std of n normal draws is within ±4·σ/√(2n) of σ.
    assert!((std - expected).abs() < 4.0 * expected / (2.0 * n).sqrt(), "noise std {std} vs zS/m {expected} (n {n})");
    assert!(flat_params(&model).len() > 50);
    let ledger = std::fs::read_to_string(work.path().join("privacy-ledger.tsv")).unwrap();
    let last: Vec<&str> = ledger.lines().last().unwrap().split('\t').collect();
    assert_eq!(last[0], "3");
    let (eps, _) = accountant::poisson_gaussian_epsilon(0.01, 1.5, 3, 1e-3).unwrap();
    let logged: f64 = last[10].parse().unwrap();
    assert!((logged - eps).abs() < 1e-6, "ledger ε {logged} vs accountant {eps}");
}

/// `trainer federated simulate` on the tiny workspace's data with a tiny central model.
fn simulate(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let data = common::tiny_workspace().join("data");
    let base = ["federated", "simulate", "--data", data.to_str().unwrap(), "--out", out];
    let central = ["--central-share", "0.3", "--central-epochs", "1", "--central-flags"];
    let flags = "--hidden 8 --embedding-dim 4 --batch-users 8 --threads=1 --inner-steps 2";
    common::trainer(dir, &[&base[..], &central[..], &[flags], extra].concat())
}

fn rounds_csv(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("rounds.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("round,clients,test_mse,epsilon,clip"));
    lines.map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn a_seeded_simulation_is_deterministic_and_charges_the_accountant() {
    let work = tempfile::tempdir().unwrap();
    let args =
        ["--clients-per-round", "5", "--clip", "1", "--noise-multiplier", "1.2", "--seed", "3", "--threads", "2"];
    let args = [&args[..], &["--rounds", "2"]].concat();
    for out in ["a", "b"] {
        let ran = simulate(work.path(), out, &args);
        assert!(ran.status.success(), "{}", common::text(&ran.stderr));
        assert!(common::text(&ran.stdout).contains("| round | sampled | clients | clip | test MSE | epsilon |"));
    }
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    for name in ["rounds.csv", "model.mrec", "initial.mrec", "devices.txt", "split.csv"] {
        assert_eq!(std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap(), "{name} differs");
    }
    for name in ["simulate.md", "privacy-ledger.tsv", "simulate.png"] {
        assert!(a.join(name).is_file(), "{name} missing");
    }
    assert_eq!(&std::fs::read(a.join("simulate.png")).unwrap()[1..4], b"PNG");
    let rows = rounds_csv(&a);
    assert_eq!(rows.len(), 3, "round 0 and two rounds: {rows:?}");
    let devices = std::fs::read_to_string(a.join("devices.txt")).unwrap().lines().count() as f64;
    for row in &rows[1..] {
        let round: u64 = row[0].parse().unwrap();
        let (eps, _) = accountant::poisson_gaussian_epsilon(5.0 / devices, 1.2, round, 1.0 / devices).unwrap();
        let logged: f64 = row[3].parse().unwrap();
        assert!((logged - eps).abs() < 1e-5, "round {round}: ε {logged} vs accountant {eps}");
        assert!(row[2].parse::<f64>().unwrap().is_finite());
    }
    assert_ne!(std::fs::read(a.join("model.mrec")).unwrap(), std::fs::read(a.join("initial.mrec")).unwrap());
    // Another seed samples other devices and draws other noise.
    let ran = simulate(work.path(), "c", &[&args[..6], &["--seed", "4", "--rounds", "2"]].concat());
    assert!(ran.status.success(), "{}", common::text(&ran.stderr));
    assert_ne!(std::fs::read(a.join("model.mrec")).unwrap(), std::fs::read(work.path().join("c/model.mrec")).unwrap());
    // Existing outputs are refused without --force.
    let again = simulate(work.path(), "a", &args);
    common::assert_refused(&again, "--force");
}

#[test]
fn a_noise_free_simulation_with_every_device_steps_by_the_mean_fomaml_update() {
    noise_free_simulation_steps_by_the_mean_update("paper");
}

/// The product model (the fold-in): the MLP moves by the mean update, each ridge weight by
/// exp(−β·mean) of its log's.
#[test]
fn a_noise_free_fold_in_simulation_with_every_device_steps_by_the_mean_update() {
    noise_free_simulation_steps_by_the_mean_update("product");
}

fn noise_free_simulation_steps_by_the_mean_update(preset: &str) {
    let work = tempfile::tempdir().unwrap();
    let preset = ["--preset", preset];
    let devices = {
        // Every device each round: K = the number of devices (known after the split).
        let args = ["--clients-per-round", "1", "--clip", "1", "--noise-multiplier", "0", "--rounds", "1"];
        let ran = simulate(work.path(), "probe", &[&args[..], &preset[..]].concat());
        assert!(ran.status.success(), "{}", common::text(&ran.stderr));
        std::fs::read_to_string(work.path().join("probe/devices.txt")).unwrap().lines().count()
    };
    let k = devices.to_string();
    let args = ["--clients-per-round", &k, "--clip", "50", "--noise-multiplier", "0", "--server-lr", "0.5"];
    let ran = simulate(work.path(), "out", &[&args[..], &["--rounds", "1"], &preset[..]].concat());
    assert!(ran.status.success(), "{}", common::text(&ran.stderr));
    let out = work.path().join("out");
    let rows = rounds_csv(&out);
    assert_eq!(rows[1][1], k, "every device contributes: {rows:?}");
    assert_eq!(rows[1][3], "inf", "z = 0 gives no privacy");
    // The mean FOMAML update, computed directly on the runtime for the same users and ratings.
    let data = metarec_trainer::data::Dataset::load(&common::tiny_workspace().join("data")).unwrap();
    let split = metarec_trainer::split::Split::read(&data, &out.join("split.csv")).unwrap();
    let ids: Vec<String> =
        std::fs::read_to_string(out.join("devices.txt")).unwrap().lines().map(String::from).collect();
    let initial = Model::from_path(out.join("initial.mrec")).unwrap();
    let layout = contribution::UpdateLayout::of(&initial);
    assert_eq!(layout.ridge > 0, preset[1] == "product", "{preset:?}");
    let mut mean = vec![0.0f64; layout.len()];
    for task in split.train.iter().filter(|t| ids.contains(&data.users[t.user as usize].id)) {
        let mut session = Session::new(&initial);
        let user = &data.users[task.user as usize];
        for (field, value) in data.user_fields.iter().zip(&user.raw) {
            session.set_profile(&field.name, value).unwrap();
        }
        for r in task.support.iter().chain(&task.query) {
            session.add_rating_by_index(initial.item_index(&data.items[r.item as usize].id).unwrap(), r.value).unwrap();
        }
        let update = contribution::decode(&session.contribute(50.0).unwrap()).unwrap().update;
        for (m, u) in mean.iter_mut().zip(update) {
            *m += f64::from(u) / devices as f64;
        }
    }
    let next = Model::from_path(out.join("model.mrec")).unwrap();
    let after = flat_params(&next);
    assert_eq!(after.len(), layout.mlp);
    for (k, ((b, a), m)) in flat_params(&initial).iter().zip(&after).zip(&mean).enumerate() {
        let expected = f64::from(*b) - 0.5 * m;
        assert!((f64::from(*a) - expected).abs() < 1e-6, "parameter {k}: {a} vs {expected}");
    }
    assert!(mean[..layout.mlp].iter().any(|m| m.abs() > 1e-6), "the update is not zero");
    if let (Some(before), Some(after)) = (initial.fold_in_head(), next.fold_in_head()) {
        for (m, (b, a)) in before.ridge.iter().zip(&after.ridge).enumerate() {
            let expected = f64::from(*b) * (-0.5 * mean[layout.mlp + m]).exp();
            assert!((f64::from(*a) - expected).abs() < 1e-6 * expected, "ridge weight {m}: {a} vs {expected}");
        }
        assert!(mean[layout.mlp..].iter().any(|m| m.abs() > 1e-9), "the ridge weights' update is not zero");
    }
}

#[test]
fn simulate_refuses_bad_flags_by_name() {
    let work = tempfile::tempdir().unwrap();
    for (flag, value, message) in [
        ("--clip", "0", "--clip"),
        ("--noise-multiplier", "-1", "--noise-multiplier"),
        ("--clients-per-round", "100000", "--clients-per-round"),
        ("--rounds", "0", "--rounds"),
        ("--adaptive-clip", "1.5", "--adaptive-clip"),
        ("--server-average", "1", "--server-average"),
    ] {
        let mut args = vec!["--clients-per-round", "3", "--clip", "1", "--noise-multiplier", "1", "--rounds", "1"];
        match args.iter().position(|a| *a == flag) {
            Some(at) => args[at + 1] = value,
            None => args.extend([flag, value]),
        }
        let ran = simulate(work.path(), "bad", &args);
        assert!(!ran.status.success(), "{flag} {value} accepted");
        assert!(common::text(&ran.stderr).contains(message), "{flag}: {}", common::text(&ran.stderr));
    }
}

/// `--server-average d`: the simulation writes the averaged model beside the last one (after
/// one round the two are the same model; after three they differ) and evaluates it.
#[test]
fn a_simulation_serves_and_evaluates_the_averaged_model() {
    let work = tempfile::tempdir().unwrap();
    let args = ["--clients-per-round", "5", "--clip", "1", "--noise-multiplier", "0", "--no-figures"];
    let average = ["--server-average", "0.5", "--server-lr", "0.5"];
    for rounds in ["1", "3"] {
        let ran = simulate(work.path(), rounds, &[&args[..], &average[..], &["--rounds", rounds]].concat());
        assert!(ran.status.success(), "{}", common::text(&ran.stderr));
        assert!(common::text(&ran.stdout).contains("the averaged model (decay 0.5) evaluated"));
        let out = work.path().join(rounds);
        let (last, served) =
            (Model::from_path(out.join("model.mrec")).unwrap(), Model::from_path(out.join("average.mrec")).unwrap());
        let same = flat_params(&last) == flat_params(&served);
        assert_eq!(same, rounds == "1", "{rounds} rounds");
    }
}

/// `--adaptive-clip γ` moves the clip geometrically by exp(−0.2 (fraction − γ)) each round,
/// the fraction `(Σ ±½)/K + ½` over the accepted updates (noise-free here: z = 0 noises no
/// count): a clip above every update norm shrinks, one below every norm grows, each by what the
/// round's accepted count gives; a fixed clip stays.
#[test]
fn adaptive_clipping_moves_the_simulations_clip_towards_the_quantile() {
    let work = tempfile::tempdir().unwrap();
    let args = ["--clients-per-round", "5", "--noise-multiplier", "0", "--rounds", "3", "--no-figures"];
    for (out, clip, sign) in [("above", "1000", 1.0f64), ("below", "1e-9", -1.0), ("fixed", "1", 0.0)] {
        let adaptive: &[&str] = if out == "fixed" { &[] } else { &["--adaptive-clip", "0.5"] };
        let ran = simulate(work.path(), out, &[&args[..], &["--clip", clip], adaptive].concat());
        assert!(ran.status.success(), "{}", common::text(&ran.stderr));
        let rows = rounds_csv(&work.path().join(out));
        let clips: Vec<f64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
        assert_eq!(clips[1], clip.parse::<f64>().unwrap(), "the first round's clip is --clip");
        for r in 1..rows.len() - 1 {
            let accepted: f64 = rows[r][1].parse().unwrap();
            let fraction = (0.5 + sign * 0.5 * accepted / 5.0).clamp(0.0, 1.0);
            let expected = clips[r] * if sign == 0.0 { 1.0 } else { (-0.2 * (fraction - 0.5)).exp() };
            assert!((clips[r + 1] / expected - 1.0).abs() < 1e-5, "{out}: round {} clip {clips:?}", r + 1);
            assert!(accepted > 0.0 || sign == 0.0, "{out}: round {r} accepted nothing: {rows:?}");
        }
    }
}

/// The server's Adam: the first step is m̂/(√v̂ + τ) = g/(|g| + τ) per coordinate (bias
/// corrected), a constant gradient keeps that step, the moments then follow the gradient's sign,
/// and an update of another length is refused.
#[test]
fn server_adam_steps_by_the_normalised_moments() {
    use metarec_trainer::federated::aggregate::ServerAdam;
    let mut adam = ServerAdam::default();
    let g = [0.5, -0.002, 0.0];
    let first = adam.step(&g).unwrap();
    for (s, g) in first.iter().zip(g) {
        assert!((s - g / (g.abs() + 1e-3)).abs() < 1e-12, "{s} vs {g}");
    }
    let second = adam.step(&g).unwrap();
    for (a, b) in first.iter().zip(&second) {
        assert!((a - b).abs() < 1e-12, "a constant gradient changes the step: {a} vs {b}");
    }
    let turned = adam.step(&[-0.5, 0.002, 0.0]).unwrap();
    assert!(turned[0] > 0.0 && turned[0] < second[0], "momentum: {turned:?}");
    assert!(adam.step(&[1.0]).is_err());
}

/// `--eval-on valid` evaluates the rounds on the split's validation users (for tuning), not on
/// the test users: same seed, same starting model, another round-0 MSE.
#[test]
fn a_simulation_can_be_evaluated_on_the_validation_users() {
    let work = tempfile::tempdir().unwrap();
    let args = ["--clients-per-round", "3", "--clip", "1", "--noise-multiplier", "1", "--rounds", "1", "--no-figures"];
    let mut mse = Vec::new();
    for on in ["valid", "test"] {
        let ran = simulate(work.path(), on, &[&args[..], &["--eval-on", on]].concat());
        assert!(ran.status.success(), "{}", common::text(&ran.stderr));
        mse.push(rounds_csv(&work.path().join(on))[0][2].clone());
    }
    let out = work.path().join("valid");
    let data = metarec_trainer::data::Dataset::load(&common::tiny_workspace().join("data")).unwrap();
    let split = metarec_trainer::split::Split::read(&data, &out.join("split.csv")).unwrap();
    let md = std::fs::read_to_string(out.join("simulate.md")).unwrap();
    assert!(md.contains(&format!("evaluated on {} validation users;", split.valid.len())), "{md}");
    assert_eq!(
        std::fs::read(out.join("initial.mrec")).unwrap(),
        std::fs::read(work.path().join("test/initial.mrec")).unwrap()
    );
    assert_ne!(mse[0], mse[1], "validation and test users give the same MSE");
}

/// The libtorch oracle of a device's contribution (issue 15, item 5): for a briefly trained
/// model of `preset`, each test user's contribution (no clipping, no noise) equals the trainer's
/// first-order meta-gradient for the same user, split and parameters (`MetaModel::
/// first_order_meta_gradient`) to 1e-4 relative: the MLP by FOMAML for the paper preset, the
/// MLP and the log ridge weights through the fold-in for the product model.
fn contributions_match_libtorch(preset: metarec_trainer::config::Preset) {
    use metarec_trainer::model::TaskBatch;
    use metarec_trainer::run::RunDir;
    use metarec_trainer::split::Task;
    use metarec_trainer::train::{train, TrainConfig};
    let (dir, _) = crate::parity::small_dataset();
    let out = dir.path().join("run");
    let mut config = TrainConfig::with_preset(dir.path(), &out, preset);
    config.embedding_dim = 6;
    config.hidden = vec![12, 8];
    config.inner_lr = 0.1;
    config.inner_steps = 2;
    config.epochs = 2;
    config.batch_users = 8;
    config.first_order = true;
    config.device = "cpu".into();
    train(&config).unwrap();
    let (info, data, split, model) = RunDir(out.clone()).load(tch::Device::Cpu).unwrap();
    crate::parity::load_last_epoch(&out, &model);
    let body = metarec_trainer::export::meta_body(&info, &data, &model).unwrap();
    let device_model = Model::from_bytes(&metarec_runtime::format::encode(&body).unwrap()).unwrap();
    let layout = contribution::UpdateLayout::of(&device_model);
    assert_eq!(layout.ridge > 0, preset == metarec_trainer::config::Preset::Product, "{preset:?}");
    let mut checked = 0;
    for task in split.test.iter().filter(|t| t.support.len() + t.query.len() >= 4).take(6) {
        let ratings: Vec<_> = task.support.iter().chain(&task.query).copied().collect();
        let mut session = Session::new(&device_model);
        let user = &data.users[task.user as usize];
        for (field, value) in data.user_fields.iter().zip(&user.raw) {
            session.set_profile(&field.name, value).unwrap();
        }
        for r in &ratings {
            let item = device_model.item_index(&data.items[r.item as usize].id).unwrap();
            session.add_rating_by_index(item, r.value).unwrap();
        }
        let device = contribution::decode(&session.contribute(1e9).unwrap()).unwrap().update;
        let salt = contribution::model_id(&device_model);
        let (adapt, score) = metarec_runtime::resample::split_salted(ratings.len(), salt);
        let pick = |mask: &[bool]| ratings.iter().zip(mask).filter(|(_, &m)| m).map(|(r, _)| *r).collect();
        let split_task = Task { user: task.user, support: pick(&adapt), query: pick(&score) };
        let batch = TaskBatch::new(&[split_task], tch::Device::Cpu);
        let oracle = model.first_order_meta_gradient(&batch, config.inner_steps);
        assert_eq!(device.len(), oracle.len(), "{preset:?}: the contribution's layout");
        let norm = oracle.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let error = device.iter().zip(&oracle).map(|(&a, &b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 1e-6, "{preset:?}: a vacuous gradient");
        assert!(error <= 1e-4 * norm, "{preset:?} user {}: relative error {:e}", user.id, error / norm);
        if layout.ridge > 0 {
            let ridge = |v: &[f32]| v[layout.mlp..].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            assert!(ridge(&oracle) > 1e-9, "{preset:?}: no gradient reaches the ridge weights");
            let error = device[layout.mlp..].iter().zip(&oracle[layout.mlp..]).map(|(&a, &b)| f64::from(a - b).powi(2));
            assert!(error.sum::<f64>().sqrt() <= 1e-4 * ridge(&oracle), "{preset:?}: the ridge part");
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} users checked");
}

#[test]
fn a_paper_model_contribution_equals_the_libtorch_fomaml_gradient() {
    contributions_match_libtorch(metarec_trainer::config::Preset::Paper);
}

#[test]
fn a_fold_in_model_contribution_equals_the_libtorch_first_order_gradient() {
    contributions_match_libtorch(metarec_trainer::config::Preset::Product);
}
