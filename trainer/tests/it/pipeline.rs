//! train → run directory → export, on a tiny dataset.

use metarec_trainer::data::synth;
use metarec_trainer::export;
use metarec_trainer::run::RunDir;
use metarec_trainer::train::{train, TrainConfig};

fn config(data: &std::path::Path, out: &std::path::Path, first_order: bool) -> TrainConfig {
    let mut config = TrainConfig::new(data, out);
    config.seed = 2;
    config.embedding_dim = 4;
    config.hidden = vec![8, 8];
    config.inner_steps = 2;
    config.first_order = first_order;
    config.outer_lr = 5e-3;
    config.batch_users = 16;
    config.epochs = 3;
    config.device = "cpu".into();
    config
}

#[test]
fn train_export_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = crate::common::population(8, 80, 30, 4..=15);
    synth::generate(&cfg, &data).unwrap();
    for first_order in [false, true] {
        let out = dir.path().join(format!("run-{first_order}"));
        let info = train(&config(&data, &out, first_order)).unwrap();
        assert!(info.best_epoch >= 1 && info.best_valid_loss.is_finite());
        let (info, data_back, split, model) = RunDir(out.clone()).load(tch::Device::Cpu).unwrap();
        let body = export::meta_body(&info, &data_back, &model).unwrap();
        let path = out.join("model.mrec");
        let size = export::write_model(&body, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, size);
        let loaded = metarec_runtime::Model::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(loaded.item_count(), 30);
        export::write_example_user(&data_back, &split.test[0], &out.join("user.tsv")).unwrap();
    }
    // A run is refused against a dataset whose feature space changed.
    let users = std::fs::read_to_string(data.join("users.csv")).unwrap();
    std::fs::write(data.join("users.csv"), users.replacen("occ00,r", "occ99,r", 1)).unwrap();
    let error = format!("{:#}", RunDir(dir.path().join("run-false")).load(tch::Device::Cpu).unwrap_err());
    assert!(error.contains("changed since the run was trained"), "{error}");
}

/// Exports with compact embedding tables: the file shrinks, and replaying the test users
/// through the runtime (`trainer eval --model`) scores as libtorch does for f32 and within the
/// tables' rounding for f16 and int8.
#[test]
fn compact_exports_replay_close_to_libtorch() {
    use metarec_trainer::eval::{device_predictions, metrics, predict_tasks};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = crate::common::population(9, 90, 40, 4..=15);
    synth::generate(&cfg, &data).unwrap();
    let out = dir.path().join("run");
    let mut train_config = config(&data, &out, false);
    train_config.item_id = true;
    train_config.embedding_dim = 16;
    train(&train_config).unwrap();
    let (info, data, split, model) = RunDir(out.clone()).load(tch::Device::Cpu).unwrap();
    let body = export::meta_body(&info, &data, &model).unwrap();
    let libtorch = predict_tasks(&model, &split.test, info.spec.inner_steps, 16);
    let mut sizes = Vec::new();
    for (embeddings, tolerance) in [
        (metarec_runtime::format::EmbeddingPrecision::F32, 1e-4),
        (metarec_runtime::format::EmbeddingPrecision::F16, 2e-2),
        (metarec_runtime::format::EmbeddingPrecision::Int8, 5e-2),
    ] {
        let path = out.join(format!("{embeddings:?}.mrec"));
        sizes.push(export::write_model_with(&body, &path, embeddings).unwrap());
        let device_model = metarec_runtime::Model::from_path(&path).unwrap();
        let device = device_predictions(&device_model, &data, &split.test).unwrap();
        let worst = libtorch
            .iter()
            .zip(&device)
            .flat_map(|(t, d)| t.predicted.iter().zip(&d.predicted).map(|(a, b)| (a - b).abs()))
            .fold(0f32, f32::max);
        assert!(worst <= tolerance, "{embeddings:?}: worst difference {worst}");
        let (a, b) = (metrics(&libtorch).mse, metrics(&device).mse);
        assert!((a - b).abs() <= 10.0 * tolerance as f64, "{embeddings:?}: MSE {a} vs {b}");
    }
    assert!(sizes[2] < sizes[1] && sizes[1] < sizes[0], "{sizes:?}");
}
