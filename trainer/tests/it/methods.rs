//! The methods' math: outer gradients against finite differences, AT-PAML's neighbour weights
//! and eviction, HML's assignment, Meta-SGD's learned rates, and exact resume.

use std::collections::HashMap;

use metarec_trainer::data::synth;
use metarec_trainer::data::Dataset;
use metarec_trainer::memory::{Memory, KEY_DIM};
use metarec_trainer::method::{InitChoice, Method, MethodConfig};
use metarec_trainer::model::{MetaModel, ModelOptions, ModelShape, ModelSpec, Order, TaskBatch};
use metarec_trainer::objective::{Loss as _, Objective};
use metarec_trainer::split::Split;
use metarec_trainer::train::{train, TrainConfig};
use tch::{Device, Kind, Tensor};

fn tiny() -> (tempfile::TempDir, Dataset, Split) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::common::population(12, 40, 25, 4..=10);
    synth::generate(&cfg, dir.path()).unwrap();
    let data = Dataset::load(dir.path()).unwrap();
    let split = Split::new(&data, 3).unwrap();
    (dir, data, split)
}

fn spec(method: Method) -> ModelSpec {
    ModelSpec {
        shape: ModelShape { embedding_dim: 4, hidden: vec![8] },
        method,
        config: MethodConfig { gamma: 0.5, warmup: 4, memory_size: 16, ..MethodConfig::default() },
        inner_lr: 0.1,
        inner_steps: 2,
        objective: Objective::Rating,
        options: ModelOptions::default(),
    }
}

/// The product model: item biases, item-id dropout, hidden dropout and the fold-in with item
/// factors (set to small non-zero values, so every part of the solve carries a gradient).
fn product_spec(method: Method, objective: Objective) -> ModelSpec {
    let options = ModelOptions {
        item_bias: true,
        adapt: metarec_runtime::format::Adapt::FoldIn,
        item_factors: true,
        fold_in_lambda: 2.0,
        ..ModelOptions::default()
    };
    ModelSpec { objective, options, config: MethodConfig { mf_factors: 3, ..spec(method).config }, ..spec(method) }
}

fn variables(model: &MetaModel) -> HashMap<String, Tensor> {
    model.vs.variables()
}

/// Central finite difference of the outer loss in one scalar entry of a variable, against
/// the autograd gradient of the same entry (second-order MAML, the default).
fn check_gradient(method: Method, variable: &str, index: &[i64]) {
    check_gradient_for(method, Objective::Rating, variable, index);
}

/// [`check_gradient`] for either task (click: labels `rating >= 4`, binary cross-entropy in
/// the inner and the outer loop).
pub(crate) fn check_gradient_for(method: Method, objective: Objective, variable: &str, index: &[i64]) {
    check_gradient_of(&ModelSpec { objective, ..spec(method) }, variable, index);
}

/// [`check_gradient`] for any model.
fn check_gradient_of(spec: &ModelSpec, variable: &str, index: &[i64]) {
    let (method, objective) = (spec.method, spec.objective);
    let (_dir, data, mut split) = tiny();
    objective.apply(&mut split);
    let model = MetaModel::new_seeded(&data, spec, if objective.is_click() { 0.4 } else { 3.5 }, Device::Cpu, 5);
    let k = spec.config.mf_factors;
    model.set_item_factors(&(0..data.items.len() * k).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect::<Vec<_>>());
    model.set_item_bias(&(0..data.items.len()).map(|i| ((i * 3 % 5) as f32 - 2.0) * 0.1).collect::<Vec<_>>());
    let batch = TaskBatch::new(&split.train[..8], Device::Cpu);
    // A negative row: the first query item of the batch (an item the loss depends on).
    let index: Vec<i64> = match index.split_first() {
        Some((&row, rest)) if row < 0 => {
            [i64::from(split.train[0].query[0].item)].into_iter().chain(rest.iter().copied()).collect()
        }
        _ => index.to_vec(),
    };
    let index = index.as_slice();
    let gamma = if method == Method::RegPaml { 0.5 } else { 0.0 };
    let loss = |model: &MetaModel| model.forward(&batch, 2, Order::Second, false).outer_loss(gamma);

    let vars = variables(&model);
    let target = vars.get(variable).unwrap_or_else(|| panic!("no variable {variable}")).shallow_clone();
    let value = loss(&model);
    let grad = Tensor::run_backward(&[value], &[&target], false, false).remove(0);
    let analytic = grad.double_value(index);

    let eps = 1e-2;
    let original = target.double_value(index);
    let set = |v: f64| {
        tch::no_grad(|| {
            let mut element = index.iter().fold(target.shallow_clone(), |t, &i| t.get(i));
            let _ = element.fill_(v);
        })
    };
    set(original);
    set(original + eps);
    let up = loss(&model).double_value(&[]);
    set(original - eps);
    let down = loss(&model).double_value(&[]);
    set(original);
    let numeric = (up - down) / (2.0 * eps);
    let scale = analytic.abs().max(numeric.abs()).max(1e-3);
    assert!(
        (analytic - numeric).abs() / scale < 0.05,
        "{method:?} d loss / d {variable}{index:?}: autograd {analytic}, finite difference {numeric}"
    );
    assert!(analytic.abs() > 1e-6, "{variable} must receive a gradient");
}

#[test]
fn lr_network_gradient_matches_finite_differences() {
    check_gradient(Method::Paml, "lr_net_b2", &[0]);
    check_gradient(Method::Paml, "lr_net_w2", &[0, 3]);
}

#[test]
fn fold_in_gradient_matches_finite_differences() {
    for objective in [Objective::Rating, Objective::Click { threshold: 4.0 }] {
        let melu = product_spec(Method::Melu, objective);
        check_gradient_of(&melu, "item_factors", &[-1, 1]);
        check_gradient_of(&melu, "fold_in_log_lambda", &[11]);
        check_gradient_of(&melu, "fold_in_log_lambda", &[9]);
        check_gradient_of(&melu, "item_bias", &[-1]);
        check_gradient_of(&melu, "item_embedding_0", &[1, 2]);
        check_gradient_of(&product_spec(Method::Paml, objective), "lr_net_b2", &[0]);
        check_gradient_of(&product_spec(Method::MetaSgd, objective), "meta_sgd_lr_b1", &[0]);
        check_gradient_of(&product_spec(Method::RegPaml, objective), "lr_net_b2", &[0]);
    }
}

/// REG-PAML's regularizer under the fold-in: `support_gradient_sqnorm` is the squared norm of
/// the support loss's gradient over the solved weights δ at δ = 0 (autograd), for both tasks.
#[test]
fn fold_in_support_gradient_norm_matches_autograd() {
    tch::manual_seed(3);
    let (b, s, w) = (3, 5, 4);
    let z = Tensor::randn([b, s, w], (Kind::Float, Device::Cpu));
    let start = Tensor::randn([b, s], (Kind::Float, Device::Cpu)) * 0.5;
    let mask = Tensor::from_slice(&[1f32, 1., 1., 0., 0., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.]).view([b, s]);
    for objective in [Objective::Rating, Objective::Click { threshold: 4.0 }] {
        let values = match objective {
            Objective::Rating => Tensor::randn([b, s], (Kind::Float, Device::Cpu)),
            Objective::Click { .. } => Tensor::randn([b, s], (Kind::Float, Device::Cpu)).gt(0.0).to_kind(Kind::Float),
        };
        let delta = Tensor::zeros([b, w, 1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let outputs = &start + z.bmm(&delta).squeeze_dim(-1);
        let loss = objective.per_user_loss(&outputs, &values, &mask).sum(Kind::Float);
        let grad = Tensor::run_backward(&[loss], &[&delta], false, false).remove(0);
        let expected = grad.square().sum_dim_intlist([1, 2].as_slice(), false, Kind::Float);
        let residual = match objective {
            Objective::Rating => &values - &start,
            Objective::Click { .. } => &values - start.sigmoid(),
        };
        let z_residual = z.transpose(1, 2).bmm(&(residual * &mask).unsqueeze(-1));
        let got = objective.support_gradient_sqnorm(&z_residual, &mask);
        let diff = (&got - &expected).abs().max().double_value(&[]);
        assert!(diff <= 1e-5 * expected.abs().max().double_value(&[]).max(1.0), "{objective:?}: {got} vs {expected}");
        assert!(expected.min().double_value(&[]) > 0.0, "every user has support entries");
    }
}

/// Under the fold-in, REG-PAML's outer objective carries its regularizer (it is PAML's plus
/// γ · mean ‖∇ support loss‖² · |α|), so REG-PAML differs from PAML.
#[test]
fn reg_paml_regularizes_the_fold_in() {
    let (_dir, data, split) = tiny();
    let model = MetaModel::new_seeded(&data, &product_spec(Method::RegPaml, Objective::Rating), 3.5, Device::Cpu, 5);
    let batch = TaskBatch::new(&split.train[..8], Device::Cpu);
    let forward = model.forward(&batch, 1, Order::First, false);
    let regularizer = forward.regularizer.as_ref().expect("REG-PAML's fold-in has a regularizer");
    assert_eq!(regularizer.size(), [8]);
    assert!(regularizer.min().double_value(&[]) > 0.0);
    let (plain, regularized) = (forward.outer_loss(0.0).double_value(&[]), forward.outer_loss(0.5).double_value(&[]));
    assert!(regularized > plain, "{regularized} vs {plain}");
}

/// `--unadapted-loss w`: in training, each user's outer term gains w × the query loss of the
/// initialisation itself (the prediction without adaptation); evaluation never carries it.
#[test]
fn unadapted_loss_adds_the_initialisations_query_loss() {
    let (_dir, data, split) = tiny();
    let mut spec = product_spec(Method::Melu, Objective::Rating);
    spec.options.unadapted_loss = 0.5;
    let model = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 5);
    let batch = TaskBatch::new(&split.train[..8], Device::Cpu);
    let training = model.forward(&batch, 1, Order::First, true);
    let unadapted = training.unadapted.as_ref().expect("training carries the unadapted loss");
    let without_adaptation = model.forward(&batch, 0, Order::First, false).query_loss;
    let gap = (unadapted - &without_adaptation * 0.5).abs().max().double_value(&[]);
    assert!(gap < 1e-6, "unadapted term vs 0.5 × the unadapted query loss: {gap}");
    let with = training.outer_loss(0.0).double_value(&[]);
    let plain = training.query_loss.mean(Kind::Double).double_value(&[]);
    let expected = without_adaptation.mean(Kind::Double).double_value(&[]) * 0.5;
    assert!((with - plain - expected).abs() < 1e-5, "{with} - {plain} vs {expected}");
    assert!(model.forward(&batch, 1, Order::First, false).unadapted.is_none(), "evaluation has no such term");
    spec.options.unadapted_loss = 0.0;
    let off = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 5);
    assert!(off.forward(&batch, 1, Order::First, true).unadapted.is_none(), "weight 0: off");
}

/// `--rate-penalty k` (PAML family): in training, each user's outer term gains
/// k × (ln(α_u / α))², α_u the user's learning rate and α `--inner-lr`; evaluation, methods
/// without per-user rates and k = 0 carry no such term.
#[test]
fn rate_penalty_pulls_each_users_rate_toward_the_inner_rate() {
    let (_dir, data, split) = tiny();
    let batch = TaskBatch::new(&split.train[..8], Device::Cpu);
    let mut spec = product_spec(Method::Paml, Objective::Rating);
    spec.config.rate_penalty = 0.5;
    let model = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 5);
    // softplus(0) = ln 2: every rate about 6.9 × --inner-lr 0.1.
    let _ = tch::no_grad(|| variables(&model).get_mut("lr_net_b2").expect("PAML's rate network").fill_(0.0));
    let training = model.forward(&batch, 1, Order::First, true);
    let rates = training.alpha.as_ref().expect("PAML has per-user rates");
    let penalty = training.rate_penalty.as_ref().expect("training carries the rate penalty");
    let expected = (rates / 0.1).log().square() * 0.5;
    let gap = (penalty - &expected).abs().max().double_value(&[]);
    assert!(gap < 1e-6, "penalty vs 0.5 · ln(α_u/α)²: {gap}");
    assert!(expected.min().double_value(&[]) > 1.0, "the rates are far from the inner rate");
    let (with, unadapted) =
        (training.outer_loss(0.0), training.unadapted.as_ref().map_or(0.0, |u| u.mean(Kind::Double).double_value(&[])));
    let plain = training.query_loss.mean(Kind::Double).double_value(&[]) + unadapted;
    let expected_mean = expected.mean(Kind::Double).double_value(&[]);
    assert!((with.double_value(&[]) - plain - expected_mean).abs() < 1e-4, "outer loss adds the mean penalty");
    // Its gradient lowers the rates: the output bias of the rate network goes down.
    with.backward();
    assert!(variables(&model)["lr_net_b2"].grad().double_value(&[0]) > 0.0);
    assert!(model.forward(&batch, 1, Order::First, false).rate_penalty.is_none(), "evaluation has no such term");
    let melu = MetaModel::new_seeded(&data, &ModelSpec { method: Method::Melu, ..spec.clone() }, 3.5, Device::Cpu, 5);
    assert!(melu.forward(&batch, 1, Order::First, true).rate_penalty.is_none(), "MeLU has one rate");
    spec.config.rate_penalty = 0.0;
    let off = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 5);
    assert!(off.forward(&batch, 1, Order::First, true).rate_penalty.is_none(), "weight 0: off");
}

#[test]
fn regularizer_gradient_matches_finite_differences() {
    check_gradient(Method::RegPaml, "lr_net_b2", &[0]);
    check_gradient(Method::RegPaml, "layer1_bias", &[0]);
    check_gradient(Method::RegPaml, "item_embedding_0", &[1, 2]);
}

#[test]
fn regularizer_is_grad_norm_times_rate() {
    let (_dir, data, split) = tiny();
    let model = MetaModel::new_seeded(&data, &spec(Method::RegPaml), 3.5, Device::Cpu, 5);
    let batch = TaskBatch::new(&split.train[..6], Device::Cpu);
    let forward = model.forward(&batch, 2, Order::Second, false);
    let reg = forward.regularizer.as_ref().expect("REG-PAML has a regularizer");
    let alpha = forward.alpha.as_ref().expect("REG-PAML has per-user rates");
    assert_eq!(reg.size(), [6]);
    assert!(bool::try_from(reg.ge(0.0).all()).unwrap());
    let with = forward.outer_loss(0.5).double_value(&[]);
    let without = forward.outer_loss(0.0).double_value(&[]);
    let expected = reg.mean(Kind::Double).double_value(&[]) * 0.5;
    assert!((with - without - expected).abs() < 1e-6);
    assert!(alpha.min().double_value(&[]) > 0.0, "softplus rates are positive");
}

fn unit_key(hot: usize) -> Tensor {
    let mut v = vec![0f32; KEY_DIM];
    v[hot] = 1.0;
    Tensor::from_slice(&v).view([1, KEY_DIM as i64])
}

#[test]
fn memory_neighbour_weights_follow_the_gaussian_kernel() {
    let mut memory = Memory::new(KEY_DIM as i64, 8, 2, 1.0, 2, Device::Cpu);
    memory.insert(&Tensor::cat(&[unit_key(0), unit_key(1), unit_key(2)], 0), &Tensor::from_slice(&[0.1f32, 0.3, 0.9]));
    memory.rebuild();
    assert!(memory.ready());
    // A query between keys 0 and 1, nearer 0.
    let mut q = vec![0f32; KEY_DIM];
    q[0] = 0.8;
    q[1] = 0.6;
    let query = Tensor::from_slice(&q).view([1, KEY_DIM as i64]);
    let neighbours = memory.nearest(&query, false);
    let mut found = neighbours[0].clone();
    found.sort();
    assert_eq!(found, [0, 1], "the two nearest stored keys");
    let term = memory.neighbour_term(&query, &neighbours).double_value(&[0]);
    let d0: f64 = 0.2f64.powi(2) + 0.6f64.powi(2);
    let d1: f64 = 0.8f64.powi(2) + 0.4f64.powi(2);
    let (s0, s1) = ((-d0).exp(), (-d1).exp());
    let expected = (s0 * 0.1 + s1 * 0.3) / (s0 + s1 + 1e-5);
    assert!((term - expected).abs() < 1e-5, "{term} vs {expected}");
}

#[test]
fn memory_evicts_the_least_recently_used_entry() {
    let mut memory = Memory::new(KEY_DIM as i64, 3, 1, 1.0, 1, Device::Cpu);
    memory.insert(&Tensor::cat(&[unit_key(0), unit_key(1), unit_key(2)], 0), &Tensor::from_slice(&[0.1f32, 0.2, 0.3]));
    memory.rebuild();
    // Use entry 0 (touch), so entry 1 becomes the least recently used: the training step marks
    // the neighbours its users (on every MPI rank) were given.
    let used = memory.nearest(&unit_key(0), true);
    assert_eq!(used[0], [0]);
    let touched = memory.take_touched();
    assert_eq!(touched, [0]);
    memory.touch(&touched);
    memory.insert(&unit_key(3), &Tensor::from_slice(&[0.4f32]));
    let (_, alphas) = memory.entries();
    assert_eq!(memory.len(), 3);
    let mut alphas: Vec<i32> = alphas.iter().map(|a| (a * 10.0).round() as i32).collect();
    alphas.sort();
    assert_eq!(alphas, [1, 3, 4], "entry with rate 0.2 was evicted");
    // An evaluation lookup does not change the order.
    memory.rebuild();
    let _ = memory.nearest(&unit_key(3), false);
    assert!(memory.take_touched().is_empty());
    memory.insert(&unit_key(4), &Tensor::from_slice(&[0.5f32]));
    let (_, alphas) = memory.entries();
    assert!(!alphas.iter().any(|a| (a - 0.1).abs() < 1e-6) || !alphas.iter().any(|a| (a - 0.3).abs() < 1e-6));
}

/// HML's init 0 predicts 1 for everything, init 1 predicts 5 (last layer weight 0, bias set).
fn constant_inits(model: &MetaModel) {
    tch::no_grad(|| {
        let vars = variables(model);
        for (prefix, value) in [("", 1.0), ("init1_", 5.0)] {
            let _ = vars[&format!("{prefix}layer1_weight")].shallow_clone().fill_(0.0);
            let _ = vars[&format!("{prefix}layer1_bias")].shallow_clone().fill_(value);
        }
    });
}

#[test]
fn hml_picks_the_initialisation_that_fits() {
    let (_dir, data, split) = tiny();
    let mut spec = spec(Method::Hml);
    spec.config.inits = 2;
    let model = MetaModel::new(&data, &spec, 3.0, Device::Cpu);
    constant_inits(&model);
    let mut tasks: Vec<_> = split.train[..6].to_vec();
    for (k, task) in tasks.iter_mut().enumerate() {
        let rating = if k % 2 == 0 { 1.0 } else { 5.0 };
        for r in task.support.iter_mut().chain(task.query.iter_mut()) {
            r.value = rating;
        }
    }
    let batch = TaskBatch::new(&tasks, Device::Cpu);
    for training in [true, false] {
        let chosen = model.forward(&batch, 1, Order::Detached, training).chosen_init.expect("HML chooses");
        assert_eq!(chosen, [0, 1, 0, 1, 0, 1], "training = {training}");
    }
}

/// `--init-choice`: with `support` (the default) training chooses as evaluation does, from the
/// support set; with `query` (the paper's Algorithm 1) by the query set's labels.
#[test]
fn hml_init_choice_reads_the_support_set_or_the_query_set() {
    let (_dir, data, split) = tiny();
    let mut spec = spec(Method::Hml);
    spec.config.inits = 2;
    assert_eq!(spec.config.init_choice, InitChoice::Support, "the default");
    let mut tasks: Vec<_> = split.train[..4].to_vec();
    // The support says 1 (init 0), the query says 5 (init 1).
    for task in &mut tasks {
        task.support.iter_mut().for_each(|r| r.value = 1.0);
        task.query.iter_mut().for_each(|r| r.value = 5.0);
    }
    let batch = TaskBatch::new(&tasks, Device::Cpu);
    for (choice, expected) in [(InitChoice::Support, 0), (InitChoice::Query, 1)] {
        spec.config.init_choice = choice;
        let model = MetaModel::new(&data, &spec, 3.0, Device::Cpu);
        constant_inits(&model);
        let training = model.forward(&batch, 1, Order::Detached, true).chosen_init.expect("HML chooses");
        assert_eq!(training, [expected; 4], "{choice:?} in training");
        let evaluation = model.forward(&batch, 1, Order::Detached, false).chosen_init.expect("HML chooses");
        assert_eq!(evaluation, [0; 4], "{choice:?} in evaluation");
    }
}

/// `--shared-layers`: HML's initialisations past the first reuse its lowest layers (the same
/// variables: one gradient, and every exported initialisation holds their values), own the
/// layers above, and start apart when the output layer is all they own.
#[test]
fn hml_initialisations_share_their_first_layers() {
    let (_dir, data, _) = tiny();
    let model = |shared: usize, hidden: Vec<i64>| {
        let mut spec = product_spec(Method::Hml, Objective::Rating);
        spec.shape.hidden = hidden;
        spec.config.inits = 3;
        spec.config.shared_layers = shared;
        MetaModel::new(&data, &spec, 3.0, Device::Cpu)
    };
    let two = model(1, vec![8, 8]);
    let vars = variables(&two);
    for k in 1..3 {
        assert!(!vars.contains_key(&format!("init{k}_layer0_weight")), "layer 0 is shared");
        for l in 1..3 {
            assert!(vars.contains_key(&format!("init{k}_layer{l}_weight")), "init {k} owns layer {l}");
        }
        let (first, other) = (two.init_values(0), two.init_values(k));
        assert_eq!(first[0], other[0], "init {k} exports the shared layer's values");
        assert_ne!(first[1].2, other[1].2, "init {k}'s own hidden layer starts apart");
    }
    // The output layer alone of their own: it starts at zero for the first, apart for the others.
    let one = model(1, vec![8]);
    let output = |k: usize| one.init_values(k)[1].2.clone();
    assert!(output(0).iter().all(|&w| w == 0.0), "the first starts at μ + b_item");
    assert!(output(1).iter().any(|&w| w != 0.0) && output(1) != output(2), "the others start apart");
    // 0: every layer separate (the paper's model).
    assert!(variables(&model(0, vec![8, 8])).contains_key("init2_layer0_weight"));
}

fn config(data: &std::path::Path, out: &std::path::Path, method: Method, epochs: usize) -> TrainConfig {
    let mut config = TrainConfig::new(data, out);
    config.method = method;
    config.embedding_dim = 4;
    config.hidden = vec![8];
    config.inner_steps = 2;
    config.epochs = epochs;
    config.patience = 100;
    config.batch_users = 8;
    config.device = "cpu".into();
    config.method_config.warmup = 4;
    config.method_config.memory_size = 16;
    config
}

#[test]
fn meta_sgd_learning_rates_change_in_training() {
    let (dir, data, _) = tiny();
    let out = dir.path().join("run");
    let paper = TrainConfig::with_preset(dir.path(), &out, metarec_trainer::config::Preset::Paper);
    let config = config(dir.path(), &out, Method::MetaSgd, 2);
    train(&TrainConfig { adapt: paper.adapt, item_bias: paper.item_bias, item_id: paper.item_id, ..config }).unwrap();
    let (_, _, _, model) = metarec_trainer::run::RunDir(out).load(Device::Cpu).unwrap();
    let (mean, min, max) = model.per_parameter_lr_summary().expect("Meta-SGD has rates");
    assert!(max - min > 1e-4, "rates moved apart from their common start: [{min}, {max}]");
    assert!((mean - 0.05).abs() > 1e-6 || max - min > 1e-4);
    drop(data);
}

#[test]
fn every_method_trains_and_evaluates() {
    let (dir, _, _) = tiny();
    for method in metarec_trainer::method::trained() {
        let out = dir.path().join(format!("{method:?}"));
        let info = train(&config(dir.path(), &out, method, 2)).unwrap();
        assert!(info.best_valid_loss.is_finite(), "{method:?}");
        assert_eq!(info.history.len(), 2);
    }
}

#[test]
fn resumed_training_equals_uninterrupted() {
    let (dir, _, _) = tiny();
    // With dense Adam and with lazy Adam (the default): the checkpoint holds the moments the lazy
    // steps left.
    for (method, lazy_adam) in [(Method::Melu, false), (Method::AtPaml, true), (Method::RegPaml, true)] {
        let config =
            |out: &std::path::Path, epochs| TrainConfig { lazy_adam, ..config(dir.path(), out, method, epochs) };
        let straight = dir.path().join(format!("straight-{method:?}"));
        let first = train(&config(&straight, 4)).unwrap();
        let resumed = dir.path().join(format!("resumed-{method:?}"));
        train(&config(&resumed, 2)).unwrap();
        let mut again = config(&resumed, 4);
        again.resume = true;
        let second = train(&again).unwrap();
        let a: Vec<f64> = first.history.iter().map(|e| e.valid_loss).collect();
        let b: Vec<f64> = second.history.iter().map(|e| e.valid_loss).collect();
        assert_eq!(a, b, "{method:?}: validation curve of the resumed run");
        assert_eq!(
            std::fs::read(straight.join("weights.safetensors")).unwrap(),
            std::fs::read(resumed.join("weights.safetensors")).unwrap()
        );
    }
}

#[test]
fn memory_keys_of_zero_embeddings_have_finite_gradients() {
    // A user with no profile fields and equal support ratings has h = 0.
    let memory = Memory::new(8, 16, 2, 1.0, 2, Device::Cpu);
    let h = Tensor::zeros([3, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let key = memory.key(&h);
    let grad = Tensor::run_backward(&[key.sum(Kind::Float)], &[&h], false, false).remove(0);
    assert!(bool::try_from(grad.isfinite().all()).unwrap(), "gradient of the key at h = 0 must be finite");
    assert!(bool::try_from(key.isfinite().all()).unwrap());
}
