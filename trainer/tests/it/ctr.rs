//! The click task: AUC and normalised entropy on hand-computed cases, the meta-gradient through a
//! binary cross-entropy inner loop, and a click run end to end.

use metarec_trainer::eval::{auc, click_metrics, UserPredictions};
use metarec_trainer::method::Method;
use metarec_trainer::objective::{Objective, TaskKind};

use crate::methods::check_gradient_for;

#[test]
fn auc_counts_ordered_pairs_and_halves_ties() {
    assert_eq!(auc(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.2, 0.8, 0.9]), Some(1.0));
    assert_eq!(auc(&[1.0, 1.0, 0.0, 0.0], &[0.1, 0.2, 0.8, 0.9]), Some(0.0));
    assert_eq!(auc(&[0.0, 1.0], &[0.5, 0.5]), Some(0.5));
    // Positives at 0.4 and 0.8, negatives at 0.1, 0.4, 0.9: pairs won (0.8>0.1, 0.8>0.4,
    // 0.4>0.1) = 3, tied (0.4=0.4) = 1 half, lost 2: (3 + 0.5) / 6.
    let got = auc(&[1.0, 0.0, 1.0, 0.0, 0.0], &[0.4, 0.1, 0.8, 0.4, 0.9]).unwrap();
    assert!((got - 3.5 / 6.0).abs() < 1e-12, "{got}");
    assert_eq!(auc(&[1.0, 1.0], &[0.1, 0.2]), None, "one class only");
}

#[test]
fn normalised_entropy_is_one_for_the_base_rate_and_lower_for_better() {
    let truth = vec![1.0, 0.0, 0.0, 0.0];
    let constant = [UserPredictions { user: 0, truth: truth.clone(), predicted: vec![0.25; 4] }];
    let m = click_metrics(&constant);
    assert!((m.normalized_entropy - 1.0).abs() < 1e-6, "{m:?}");
    let expected_log_loss = -(0.25f64.ln() + 3.0 * 0.75f64.ln()) / 4.0;
    assert!((m.log_loss - expected_log_loss).abs() < 1e-6);
    assert_eq!(m.auc, 0.5);
    let better = [UserPredictions { user: 0, truth, predicted: vec![0.7, 0.1, 0.2, 0.1] }];
    let m = click_metrics(&better);
    assert!(m.normalized_entropy < 0.5 && m.auc == 1.0 && m.user_auc == 1.0, "{m:?}");
}

#[test]
fn click_meta_gradient_matches_finite_differences() {
    let click = Objective::Click { threshold: 4.0 };
    check_gradient_for(Method::Melu, click, "item_embedding_0", &[1, 2]);
    check_gradient_for(Method::Paml, click, "lr_net_b2", &[0]);
    check_gradient_for(Method::RegPaml, click, "layer1_bias", &[0]);
}

/// Trains MeLU on clicks of the synthetic data, evaluates and exports: the split file keeps the
/// raw ratings, the model ranks far better than chance and than the item click rate, and the
/// export is a click model with the threshold and a 0..1 scale.
#[test]
fn click_run_trains_evaluates_and_exports() {
    use metarec_trainer::data::synth::{self, SynthConfig};
    use metarec_trainer::eval::{method_rows, Baselines};
    use metarec_trainer::run::RunDir;
    use metarec_trainer::train::{train, TrainConfig};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = SynthConfig { minor_share: 0.15, ..crate::common::population(7, 400, 120, 10..=60) };
    synth::generate(&config, &data_dir).unwrap();
    let out = dir.path().join("run");
    let mut train_config = TrainConfig::new(&data_dir, &out);
    train_config.task = TaskKind::Click;
    train_config.epochs = 4;
    train_config.device = "cpu".into();
    let info = train(&train_config).unwrap();
    assert_eq!(info.spec.objective, Objective::Click { threshold: 4.0 });
    assert!(info.global_mean > 0.05 && info.global_mean < 0.95, "click rate {}", info.global_mean);

    let split_file = std::fs::read_to_string(out.join("split.csv")).unwrap();
    assert!(split_file.lines().skip(1).any(|l| l.ends_with(",5") || l.ends_with(",3")), "raw ratings kept");

    let (info, data, split, model) = RunDir(out).load(tch::Device::Cpu).unwrap();
    assert!(split.test.iter().flat_map(|t| &t.query).all(|r| r.value == 0.0 || r.value == 1.0));
    let rows = method_rows(&model, &split.test);
    let adapted = click_metrics(&rows[0].1);
    let baselines = Baselines::fit(data.items.len(), &split.train, &split.valid).for_objective(info.spec.objective);
    let item_rate = baselines.predict_all(&split.test).into_iter().find(|(name, _)| name == "item mean").unwrap().1;
    let item_rate = click_metrics(&item_rate);
    assert!(adapted.auc > 0.75 && adapted.auc > item_rate.auc, "{adapted:?} vs item rate {item_rate:?}");
    assert!(adapted.normalized_entropy < 0.9, "{adapted:?}");
    assert!(rows[0].1.iter().flat_map(|u| &u.predicted).all(|p| *p > 0.0 && *p < 1.0));

    let body = metarec_trainer::export::meta_body(&info, &data, &model).unwrap();
    assert_eq!(body.task, metarec_runtime::format::Task::Click { threshold: 4.0 });
    assert_eq!((body.rating.min, body.rating.max), (0.0, 1.0));
    let bytes = metarec_runtime::format::encode(&body).unwrap();
    assert!(metarec_runtime::Model::from_bytes(&bytes).unwrap().is_click());
}

/// A threshold outside the scale leaves one class only: refused with the reason.
#[test]
fn click_threshold_outside_the_scale_is_refused() {
    use metarec_trainer::data::synth;
    use metarec_trainer::train::{train, TrainConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::population(3, 60, 40, 4..=20);
    synth::generate(&config, dir.path()).unwrap();
    let mut train_config = TrainConfig::new(dir.path(), dir.path().join("run"));
    train_config.task = TaskKind::Click;
    train_config.click_threshold = 9.0;
    train_config.device = "cpu".into();
    let error = format!("{:#}", train(&train_config).unwrap_err());
    assert!(error.contains("every training label is 0") && error.contains("--click-threshold 9"), "{error}");
}
