//! `--method mf`: alternating least squares, the sweep kept on validation users, fold-in of new
//! users, and the exported model replayed on the device (parity with the trainer).

use metarec_trainer::data::synth;
use metarec_trainer::eval::{device_predictions, UserPredictions};
use metarec_trainer::export;
use metarec_trainer::method::Method;
use metarec_trainer::objective::TaskKind;
use metarec_trainer::run::{RunDir, Trained};
use metarec_trainer::train::{train, TrainConfig};

fn dataset(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let cfg = crate::common::population(5, 150, 40, 5..=20);
    synth::generate(&cfg, &data).unwrap();
    data
}

fn config(data: &std::path::Path, out: &std::path::Path) -> TrainConfig {
    let mut config = TrainConfig::new(data, out);
    config.method = Method::Mf;
    config.method_config.mf_factors = 4;
    config.method_config.mf_lambda = 5.0;
    config.method_config.mf_bias_lambda = 2.0;
    config.method_config.mf_sweeps = 6;
    config.device = "cpu".into();
    config
}

fn largest_difference(a: &[UserPredictions], b: &[UserPredictions]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.user, y.user);
            x.predicted.iter().zip(&y.predicted).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn mf_trains_keeps_the_best_validation_sweep_and_replays_on_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("mf");
    let info = train(&config(&data, &out)).unwrap();
    assert_eq!(info.history.len(), 6);
    let best = info.history.iter().min_by(|a, b| a.valid_loss.total_cmp(&b.valid_loss)).unwrap();
    assert_eq!((info.best_epoch, info.best_valid_loss), (best.epoch, best.valid_loss));
    assert!(info.history.last().unwrap().train_loss < info.history[0].train_loss, "{:?}", info.history);
    // Deterministic: the same settings give the same run.
    let again = train(&config(&data, &dir.path().join("mf-again"))).unwrap();
    assert_eq!(again.best_valid_loss, info.best_valid_loss);

    let error = format!("{:#}", RunDir(out.clone()).load(tch::Device::Cpu).unwrap_err());
    assert!(error.contains("--method mf"), "{error}");
    let (info, data, split, trained) = RunDir(out.clone()).load_trained(tch::Device::Cpu).unwrap();
    let Trained::Factors(model) = &trained else { panic!("an MF run loads as factors") };
    let rows = trained.rows(&split.test);
    assert_eq!(rows[0].0, "MF fold-in (k = 4)");
    assert_eq!(rows[1].0, "MF fold-in without adaptation");
    // Without ratings the fold-in is the bias-only prediction.
    for (user, task) in rows[1].1.iter().zip(&split.test) {
        for (p, r) in user.predicted.iter().zip(&task.query) {
            assert_eq!(*p, model.mean + model.factors.item_bias[r.item as usize]);
        }
    }

    let body = export::model_body(&info, &data, &trained).unwrap();
    for (embeddings, tolerance) in [
        (metarec_runtime::format::EmbeddingPrecision::F32, 1e-4),
        (metarec_runtime::format::EmbeddingPrecision::F16, 2e-2),
        (metarec_runtime::format::EmbeddingPrecision::Int8, 5e-2),
    ] {
        let path = out.join(format!("{embeddings:?}.mrec"));
        export::write_model_with(&body, &path, embeddings).unwrap();
        let device = metarec_runtime::Model::from_path(&path).unwrap();
        assert_eq!(device.body().method, metarec_runtime::format::Method::Mf);
        let replayed = device_predictions(&device, &data, &split.test).unwrap();
        let difference = largest_difference(&rows[0].1, &replayed);
        assert!(difference <= tolerance, "{embeddings:?}: device differs by {difference}");
    }
}

#[test]
fn mf_clicks_are_probabilities_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let out = dir.path().join("mf-ctr");
    let mut config = config(&data, &out);
    config.task = TaskKind::Click;
    train(&config).unwrap();
    let (info, data, split, trained) = RunDir(out.clone()).load_trained(tch::Device::Cpu).unwrap();
    let rows = trained.rows(&split.test);
    let floor = metarec_runtime::CLICK_FACTOR_FLOOR;
    assert!(rows[0].1.iter().flat_map(|u| &u.predicted).all(|p| (floor..=1.0 - floor).contains(p)));
    let body = export::model_body(&info, &data, &trained).unwrap();
    let path = out.join("model.mrec");
    export::write_model(&body, &path).unwrap();
    let device = metarec_runtime::Model::from_path(&path).unwrap();
    assert!(device.is_click());
    let replayed = device_predictions(&device, &data, &split.test).unwrap();
    assert!(largest_difference(&rows[0].1, &replayed) <= 1e-4);
}

#[test]
fn mf_knobs_are_checked_and_zero_factors_is_the_bias_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let mut bad = config(&data, &dir.path().join("bad"));
    bad.method_config.mf_lambda = 0.0;
    let error = format!("{:#}", train(&bad).unwrap_err());
    assert!(error.contains("--mf-lambda"), "{error}");
    bad.method_config.mf_lambda = 1.0;
    bad.method_config.mf_factors = 257;
    let error = format!("{:#}", train(&bad).unwrap_err());
    assert!(error.contains("--mf-factors 257"), "{error}");

    let mut biases = config(&data, &dir.path().join("k0"));
    biases.method_config.mf_factors = 0;
    let info = train(&biases).unwrap();
    assert!(info.best_valid_loss.is_finite());
    let (info, data, split, trained) = RunDir(biases.out.clone()).load_trained(tch::Device::Cpu).unwrap();
    let body = export::model_body(&info, &data, &trained).unwrap();
    export::write_model_with(&body, &biases.out.join("k0.mrec"), metarec_runtime::format::EmbeddingPrecision::Int8)
        .unwrap();
    let device = metarec_runtime::Model::from_path(biases.out.join("k0.mrec")).unwrap();
    let replayed = device_predictions(&device, &data, &split.test).unwrap();
    assert!(largest_difference(&trained.rows(&split.test)[0].1, &replayed) <= 1e-4);
}
