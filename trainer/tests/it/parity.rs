//! The device must adapt exactly as the trainer does: the runtime's adapted predictions equal
//! libtorch's for the same model and support set.

use metarec_runtime::Model;
use metarec_trainer::config::Preset;
use metarec_trainer::data::synth;
use metarec_trainer::data::Dataset;
use metarec_trainer::eval::{device_predictions, predict_tasks};
use metarec_trainer::export::meta_body as model_body;
use metarec_trainer::model::{MetaModel, ModelShape, ModelSpec};
use metarec_trainer::run::RunInfo;
use metarec_trainer::split::{Split, Task};
use tch::Device;

const TOLERANCE: f32 = 1e-4;

pub(crate) fn small_dataset() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = crate::common::population(3, 60, 40, 4..=20);
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
        warm_users: false,
        lazy_adam: false,
        seed: 0,
        spec: spec.clone(),
        first_order: false,
        global_mean: 3.5,
        best_epoch: 1,
        best_valid_loss: 0.0,
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

/// Every exportable method as its paper has it (`--preset paper`: every weight adapted by
/// gradient steps), trained briefly: the device's adapted predictions (with its own
/// learning-rate network, neighbour scan, per-parameter rates or initialisation choice) equal
/// the trainer's.
#[test]
fn every_method_matches_libtorch_after_training() {
    every_method_matches(Preset::Paper, metarec_trainer::objective::TaskKind::Rating);
}

/// The click task: the device's adapted click probabilities (binary cross-entropy inner loop,
/// σ output) equal the trainer's for every method.
#[test]
fn every_click_method_matches_libtorch_after_training() {
    every_method_matches(Preset::Paper, metarec_trainer::objective::TaskKind::Click);
}

/// The default model (`--preset product`: item identity and biases, the output layer and a
/// user factor vector over item factors warm-started from matrix factorisation, solved by the
/// fold-in), every exportable method: the device's one ridge solve (with the method's rates
/// dividing the ridge weights, HML's choice of initialisation by fold-in) equals the trainer's.
#[test]
fn fold_in_models_match_libtorch_after_training() {
    every_method_matches(Preset::Product, metarec_trainer::objective::TaskKind::Rating);
}

/// The default model on the click task: the fold-in's logistic (IRLS) step.
#[test]
fn fold_in_click_models_match_libtorch_after_training() {
    every_method_matches(Preset::Product, metarec_trainer::objective::TaskKind::Click);
}

/// Fold-in models without item factors (the output layer alone, over the last hidden layer):
/// the head has no factors, and still matches.
#[test]
fn fold_in_models_without_item_factors_match_libtorch() {
    use metarec_trainer::method::Method;
    use metarec_trainer::objective::TaskKind;
    let (dir, _) = small_dataset();
    let cases = [
        (Method::Melu, TaskKind::Rating),
        (Method::MetaSgd, TaskKind::Click),
        (Method::Paml, TaskKind::Rating),
        (Method::AtPaml, TaskKind::Click),
        (Method::Hml, TaskKind::Rating),
    ];
    for (method, task) in cases {
        let body = train_and_compare(dir.path(), Preset::Product, method, task, |config| config.item_factors = false);
        let head = body.product.fold_in.as_ref().expect("a fold-in head");
        assert_eq!((head.factors, head.item_factors.len()), (0, 0), "{method:?} ({task:?})");
    }
}

fn every_method_matches(preset: Preset, task: metarec_trainer::objective::TaskKind) {
    use metarec_runtime::format::{required, Adapt};
    let (dir, _) = small_dataset();
    for method in metarec_trainer::method::trained().into_iter().filter(|m| m.adapts()) {
        let body = train_and_compare(dir.path(), preset, method, task, |_| {});
        let what = format!("{method:?} ({task:?}, {preset:?})");
        let flags = u32::from_le_bytes(metarec_runtime::format::encode(&body).unwrap()[16..20].try_into().unwrap());
        match preset {
            Preset::Paper => {
                assert_eq!(body.product, metarec_runtime::format::ProductModel::default(), "{what}");
                assert_eq!(flags & (required::ADAPT_SCOPE | required::FOLD_IN), 0, "{what}");
            }
            Preset::Product => {
                assert_eq!(body.product.adapt, Adapt::FoldIn, "{what}");
                let head = body.product.fold_in.as_ref().expect("a fold-in head");
                assert!(head.factors > 0, "{what}: item factors");
                assert_eq!(flags & required::FOLD_IN, required::FOLD_IN, "{what}");
            }
        }
    }
}

/// The bias-aware product model (format 2.3): item biases, each adaptation scope and the
/// proximal term, with a fixed rate, per-parameter rates, the learning-rate network (with and
/// without the neighbour table) and HML's choice of initialisation; the device's adapted
/// predictions equal the trainer's.
#[test]
fn product_models_match_libtorch_after_training() {
    use metarec_runtime::format::Adapt;
    use metarec_trainer::method::Method;
    use metarec_trainer::objective::TaskKind;
    let (dir, _) = small_dataset();
    let cases = [
        (Method::Melu, TaskKind::Rating, Adapt::All, 0.5),
        (Method::Melu, TaskKind::Rating, Adapt::Head, 0.0),
        (Method::Melu, TaskKind::Rating, Adapt::User, 0.3),
        (Method::Melu, TaskKind::Click, Adapt::Head, 0.2),
        (Method::MetaSgd, TaskKind::Rating, Adapt::User, 0.2),
        (Method::Paml, TaskKind::Rating, Adapt::Head, 0.4),
        (Method::AtPaml, TaskKind::Click, Adapt::User, 0.1),
        (Method::Hml, TaskKind::Rating, Adapt::User, 0.6),
        (Method::Hml, TaskKind::Rating, Adapt::Head, 0.0),
    ];
    for (method, task, adapt, proximal) in cases {
        let body = train_and_compare(dir.path(), Preset::Product, method, task, |config| {
            config.item_bias = true;
            config.adapt = adapt;
            config.proximal = proximal;
        });
        let what = format!("{method:?} ({task:?}, {adapt:?}, proximal {proximal})");
        assert_eq!(body.product.item_bias.len(), body.items.len(), "{what}: one bias per item");
        assert_eq!((body.product.adapt, body.product.proximal), (adapt, proximal as f32), "{what}");
        assert_eq!(&metarec_runtime::format::encode(&body).unwrap()[8..12], &[2, 0, 3, 0], "{what}: format 2.3");
    }
    // Without the product model's parts the file is what it was (no flag, no trailer).
    let body = train_and_compare(dir.path(), Preset::Paper, Method::Melu, TaskKind::Rating, |_| {});
    assert_eq!(body.product, metarec_runtime::format::ProductModel::default());
}

/// Replaces the run's best weights (and AT-PAML memory) in `model` with its last epoch's, from
/// the checkpoint `trainer train` writes after every epoch (`var.NAME` per variable): a run
/// this short may keep its starting point (epoch 0) as the best, and parity must hold for
/// meta-trained weights (learned ridge weights, a trained output layer, a filled memory).
pub(crate) fn load_last_epoch(run: &std::path::Path, model: &MetaModel) {
    let named: std::collections::HashMap<String, tch::Tensor> =
        metarec_trainer::run::load_tensors(&run.join("checkpoint.ot")).expect("the checkpoint").into_iter().collect();
    let _guard = tch::no_grad_guard();
    for (name, mut variable) in model.vs.variables() {
        let saved = named.get(&format!("var.{name}")).unwrap_or_else(|| panic!("the checkpoint lacks {name}"));
        variable.copy_(saved);
    }
    if let Some(memory) = &model.memory {
        memory.borrow_mut().load_state(&named).expect("the checkpoint's memory");
    }
}

/// Trains `method` briefly on the dataset in `data` (`preset`, with `configure`'s changes),
/// exports it, and checks that the device's adapted predictions (through the encoded file)
/// equal the trainer's. Returns the exported body.
fn train_and_compare(
    data: &std::path::Path,
    preset: Preset,
    method: metarec_trainer::method::Method,
    task: metarec_trainer::objective::TaskKind,
    configure: impl Fn(&mut metarec_trainer::train::TrainConfig),
) -> metarec_runtime::ModelBody {
    use metarec_trainer::method::Method;
    use metarec_trainer::run::RunDir;
    use metarec_trainer::train::{train, TrainConfig};
    let runs = tempfile::tempdir_in(data).expect("a directory for the run");
    let out = runs.path().join("run");
    let mut config = TrainConfig::with_preset(data, &out, preset);
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
    configure(&mut config);
    train(&config).unwrap();
    let (info, data, split, model) = RunDir(out.clone()).load(Device::Cpu).unwrap();
    load_last_epoch(&out, &model);
    let body = model_body(&info, &data, &model).unwrap();
    if method == Method::AtPaml {
        assert!(body.neighbours.is_some(), "the memory is past its warm-up and exported");
    }
    let device_model = Model::from_bytes(&metarec_runtime::format::encode(&body).unwrap()).unwrap();
    assert_eq!(device_model.is_click(), task == metarec_trainer::objective::TaskKind::Click);
    let tasks = &split.test;
    let trainer = predict_tasks(&model, tasks, 3, 5);
    let device = runtime_predictions(&device_model, &data, tasks, 3);
    let unadapted = predict_tasks(&model, tasks, 0, 5);
    let (mut worst, mut moved) = (0f32, 0f32);
    for ((t, d), u) in trainer.iter().zip(&device).zip(&unadapted) {
        for ((a, b), c) in t.predicted.iter().zip(d).zip(&u.predicted) {
            worst = worst.max((a - b).abs());
            moved = moved.max((a - c).abs());
        }
    }
    let what = format!("{method:?} ({task:?}, {:?})", body.product.adapt);
    assert!(worst <= TOLERANCE, "{what}: runtime and trainer differ by {worst}");
    assert!(moved > 1e-3, "{what}: adaptation changed predictions by at most {moved}");
    body
}
