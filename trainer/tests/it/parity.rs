//! The device must adapt exactly as the trainer does: the runtime's adapted predictions equal
//! libtorch's for the same model and support set.

use metarec_runtime::Model;
use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::Dataset;
use metarec_trainer::eval::{device_predictions, predict_tasks};
use metarec_trainer::export::meta_body as model_body;
use metarec_trainer::model::{MetaModel, ModelShape, ModelSpec};
use metarec_trainer::run::RunInfo;
use metarec_trainer::split::{Split, Task};
use tch::Device;

const TOLERANCE: f32 = 1e-4;

fn small_dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SynthConfig { seed: 3, users: 60, items: 40, minor_share: 0.2, min_ratings: 4, max_ratings: 20 };
    synth::generate(&config, dir.path()).expect("synthetic data");
    let data = Dataset::load(dir.path()).expect("dataset loads");
    (dir, data)
}

fn run_info(data: &Dataset, spec: &ModelSpec) -> RunInfo {
    RunInfo {
        data: "unused".into(),
        fingerprint: metarec_trainer::run::fingerprint(data),
        format: None,
        skip_invalid: false,
        item_id: false,
        seed: 0,
        spec: spec.clone(),
        first_order: false,
        global_mean: 3.5,
        best_epoch: 1,
        best_valid_mse: 0.0,
        history: Vec::new(),
        train_seconds: 0.0,
        device: "Cpu".into(),
    }
}

/// Replays each task on the device (`trainer eval --model`'s replay) and returns the query
/// predictions, task by task. The model's own inner step count is used.
fn runtime_predictions(model: &Model, data: &Dataset, tasks: &[Task], steps: u32) -> Vec<Vec<f32>> {
    assert_eq!(model.body().adaptation.inner_steps, steps);
    device_predictions(model, data, tasks).expect("replays").into_iter().map(|u| u.predicted).collect()
}

fn assert_parity(shape: ModelShape, inner_lr: f64, steps: u32) {
    let (_dir, data) = small_dataset();
    let split = Split::new(&data, 5).expect("split");
    let spec = ModelSpec::melu(shape, inner_lr, steps);
    let model = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 11);
    let body = model_body(&run_info(&data, &spec), &data, &model).expect("exports");
    let device_model = Model::from_body(body).expect("exported model validates");

    // Batched and padded on the trainer side (users of different support sizes in one batch).
    let tasks = &split.test;
    let trainer = predict_tasks(&model, tasks, steps, 7);
    let device = runtime_predictions(&device_model, &data, tasks, steps);
    let unadapted = predict_tasks(&model, tasks, 0, 7);
    let mut worst = 0f32;
    let mut moved = 0f32;
    for ((t, d), u) in trainer.iter().zip(&device).zip(&unadapted) {
        assert_eq!(t.predicted.len(), d.len());
        for ((a, b), c) in t.predicted.iter().zip(d).zip(&u.predicted) {
            worst = worst.max((a - b).abs());
            moved = moved.max((a - c).abs());
        }
    }
    assert!(worst <= TOLERANCE, "runtime and trainer differ by {worst} (> {TOLERANCE})");
    if steps > 0 && inner_lr > 0.0 {
        // The comparison is only meaningful when adaptation actually changes predictions.
        assert!(moved > 1e-2, "adaptation changed predictions by at most {moved}");
    }
}

#[test]
fn adapted_predictions_match_libtorch() {
    assert_parity(ModelShape { embedding_dim: 8, hidden: vec![16, 12] }, 0.1, 5);
}

#[test]
fn one_hidden_layer_and_many_steps_match() {
    assert_parity(ModelShape { embedding_dim: 4, hidden: vec![10] }, 0.05, 20);
}

#[test]
fn unadapted_predictions_match() {
    assert_parity(ModelShape { embedding_dim: 8, hidden: vec![16, 12] }, 0.1, 0);
}

/// Every exportable method, trained briefly: the device's adapted predictions (with its own
/// learning-rate network, neighbour scan, per-parameter rates or initialisation choice) equal
/// the trainer's.
#[test]
fn every_method_matches_libtorch_after_training() {
    every_method_matches(metarec_trainer::objective::TaskKind::Rating);
}

/// The click task: the device's adapted click probabilities (binary cross-entropy inner loop,
/// σ output) equal the trainer's for every method.
#[test]
fn every_click_method_matches_libtorch_after_training() {
    every_method_matches(metarec_trainer::objective::TaskKind::Ctr);
}

fn every_method_matches(task: metarec_trainer::objective::TaskKind) {
    use metarec_trainer::method::Method;
    use metarec_trainer::run::RunDir;
    use metarec_trainer::train::{train, TrainConfig};
    let (dir, _) = small_dataset();
    for method in Method::ALL.into_iter().filter(|m| m.adapts()) {
        let out = dir.path().join(format!("{method:?}-{task:?}"));
        let mut config = TrainConfig::new(dir.path(), &out);
        config.method = method;
        config.task = task;
        config.embedding_dim = 6;
        config.hidden = vec![12, 8];
        config.inner_lr = 0.1;
        config.inner_steps = 3;
        config.epochs = 2;
        config.batch_users = 8;
        config.device = "cpu".into();
        config.method_config.warmup = 8;
        config.method_config.memory_size = 24;
        config.method_config.inits = 3;
        train(&config).unwrap();
        let (info, data, split, model) = RunDir(out).load(Device::Cpu).unwrap();
        let body = model_body(&info, &data, &model).unwrap();
        if method == Method::AtPaml {
            assert!(body.neighbours.is_some(), "the memory is past its warm-up and exported");
        }
        let device_model = Model::from_bytes(&metarec_runtime::format::encode(&body).unwrap()).unwrap();
        assert_eq!(device_model.is_click(), task == metarec_trainer::objective::TaskKind::Ctr);
        let tasks = &split.test;
        let trainer = predict_tasks(&model, tasks, 3, 5);
        let device = runtime_predictions(&device_model, &data, tasks, 3);
        let worst = trainer
            .iter()
            .zip(&device)
            .flat_map(|(t, d)| t.predicted.iter().zip(d).map(|(a, b)| (a - b).abs()))
            .fold(0f32, f32::max);
        assert!(worst <= TOLERANCE, "{method:?} ({task:?}): runtime and trainer differ by {worst}");
    }
}
