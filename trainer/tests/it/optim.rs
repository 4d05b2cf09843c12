//! The outer optimizer: lazy (row-sparse) Adam steps the rows a batch reached exactly as dense
//! Adam does, leaves the other rows (and their moments) alone, leaves no gradient behind, and
//! resumes exactly from its checkpointed state.

use std::collections::HashMap;

use metarec_trainer::optim::Adam;
use tch::{nn, Device, Kind, Tensor};

/// A store with a lookup table `table` [6, 3] and a dense vector `dense` [4], at fixed values
/// (not from libtorch's process-wide generator, which tests running in parallel share).
fn store() -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    for (name, shape) in [("table", vec![6i64, 3]), ("dense", vec![4])] {
        let mut t = root.var(name, &shape, nn::Init::Const(0.0));
        let n = shape.iter().product::<i64>();
        let start = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 1.7 + 0.3).sin() * 1.5;
        tch::no_grad(|| t.copy_(&start.view(shape.as_slice())));
    }
    vs
}

fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()[name].shallow_clone()
}

/// A loss on the table's `rows` and the dense vector, different at every step.
fn loss(vs: &nn::VarStore, rows: &[i64], step: usize) -> Tensor {
    let (table, dense) = (var(vs, "table"), var(vs, "dense"));
    let picked = table.index_select(0, &Tensor::from_slice(rows));
    let target = Tensor::from_slice(&[1.0f32, -2.0, 0.5]) * (step as f64 + 1.0);
    (picked - target).square().sum(Kind::Float) + (dense * (step as f64 + 2.0)).sin().sum(Kind::Float)
}

fn values(t: &Tensor) -> Vec<f32> {
    metarec_trainer::model::tensor_values(t)
}

fn row(vs: &nn::VarStore, r: i64) -> Vec<f32> {
    values(&var(vs, "table").get(r))
}

/// Whether `a` and `b` agree to rounding (the same arithmetic, perhaps other vector lanes).
fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + x.abs()))
}

/// Steps `adam` over `schedule` (the table rows each step reaches).
fn run(vs: &nn::VarStore, adam: &mut Adam, schedule: &[&[i64]]) {
    for (step, rows) in schedule.iter().enumerate() {
        adam.backward_step(&loss(vs, rows, step));
    }
}

fn adams(decay: f64) -> (nn::VarStore, Adam, nn::VarStore, Adam) {
    let (dense_vs, lazy_vs) = (store(), store());
    let dense = Adam::new(&dense_vs, 0.05).with_decay(decay, |name| name == "table");
    let lazy = Adam::new(&lazy_vs, 0.05).with_decay(decay, |name| name == "table").with_lazy_rows(|n| n == "table");
    (dense_vs, dense, lazy_vs, lazy)
}

#[test]
fn lazy_adam_equals_dense_adam_on_rows_reached_every_step_and_leaves_the_others() {
    for decay in [0.0, 0.1] {
        let (dense_vs, mut dense, lazy_vs, mut lazy) = adams(decay);
        let start = row(&lazy_vs, 5);
        // Rows 0 and 2 every step, row 1 at the first step only, row 5 never.
        let schedule: [&[i64]; 5] = [&[0, 1, 2], &[0, 2], &[2, 0], &[0, 2, 2], &[0, 2]];
        run(&dense_vs, &mut dense, &schedule[..1]);
        run(&lazy_vs, &mut lazy, &schedule[..1]);
        let after_first = row(&lazy_vs, 1);
        assert!(close(&after_first, &row(&dense_vs, 1)), "decay {decay}: row 1 after the step that reached it");
        for (step, rows) in schedule.iter().enumerate().skip(1) {
            dense.backward_step(&loss(&dense_vs, rows, step));
            lazy.backward_step(&loss(&lazy_vs, rows, step));
        }
        for r in [0, 2] {
            assert!(close(&row(&lazy_vs, r), &row(&dense_vs, r)), "decay {decay}: row {r}, reached every step");
        }
        let (lazy_dense, dense_dense) = (values(&var(&lazy_vs, "dense")), values(&var(&dense_vs, "dense")));
        assert_eq!(lazy_dense, dense_dense, "decay {decay}: the variable stepped densely by both");
        assert_eq!(row(&lazy_vs, 1), after_first, "decay {decay}: lazy Adam moved row 1 no later step reached");
        assert!(!close(&row(&dense_vs, 1), &after_first), "decay {decay}: dense Adam's moments move row 1 on");
        assert_eq!(row(&lazy_vs, 5), start, "decay {decay}: a row never reached");
        if decay > 0.0 {
            assert_ne!(row(&dense_vs, 5), start, "dense Adam decays every row");
        }
        // Row 1's moments stay as the step that reached it left them: a later step that reaches
        // it again continues from there.
        let state: HashMap<String, Tensor> = lazy.state().into_iter().collect();
        let dense_state: HashMap<String, Tensor> = dense.state().into_iter().collect();
        let (lazy_m, dense_m) = (values(&state["adam.m.table"].get(1)), values(&dense_state["adam.m.table"].get(1)));
        assert!(lazy_m.iter().all(|m| *m != 0.0) && !close(&lazy_m, &dense_m), "decay {decay}: {lazy_m:?} {dense_m:?}");
    }
}

#[test]
fn lazy_adam_leaves_no_gradient_behind() {
    let (_, _, vs, mut lazy) = adams(0.0);
    lazy.backward_step(&loss(&vs, &[1, 4], 0));
    let grad = var(&vs, "table").grad();
    assert!(grad.abs().sum(Kind::Float).double_value(&[]) > 0.0, "the step saw a gradient");
    lazy.zero_grad();
    let grad = var(&vs, "table").grad();
    assert_eq!(grad.abs().sum(Kind::Float).double_value(&[]), 0.0, "rows 1 and 4 cleared");
    // The next step sees its own rows only.
    lazy.backward(&loss(&vs, &[3], 1));
    let grad = var(&vs, "table").grad();
    let reached: Vec<bool> = (0..6).map(|r| grad.get(r).abs().sum(Kind::Float).double_value(&[]) > 0.0).collect();
    assert_eq!(reached, [false, false, false, true, false, false]);
}

#[test]
fn lazy_adam_resumes_from_its_state_exactly() {
    let schedule: [&[i64]; 6] = [&[0, 1], &[2], &[1, 3], &[0], &[4, 1], &[2, 3]];
    let (_, _, straight_vs, mut straight) = adams(0.05);
    run(&straight_vs, &mut straight, &schedule);

    let (_, _, first_vs, mut first) = adams(0.05);
    run(&first_vs, &mut first, &schedule[..3]);
    let state: HashMap<String, Tensor> = first.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
    let (_, _, resumed_vs, mut resumed) = adams(0.05);
    {
        let _guard = tch::no_grad_guard();
        for (name, mut t) in resumed_vs.variables() {
            t.copy_(&first_vs.variables()[&name]);
        }
    }
    resumed.load_state(&state).unwrap();
    for (step, rows) in schedule.iter().enumerate().skip(3) {
        resumed.backward_step(&loss(&resumed_vs, rows, step));
    }
    for name in ["table", "dense"] {
        assert_eq!(values(&var(&resumed_vs, name)), values(&var(&straight_vs, name)), "{name}");
    }
}

/// A data-parallel step hands the lazy step the rows its gradient sum carried
/// (`Adam::step_rows`): with those rows known, no scan, the step is the scanning one; the
/// variables not stepped lazily ignore them, and so does a step whose rows are unknown.
#[test]
fn lazy_adam_with_its_rows_known_steps_as_when_it_scans_for_them() {
    let schedule: [&[i64]; 4] = [&[0, 4], &[2], &[4, 1, 4], &[0, 2]];
    let (_, _, scanning_vs, mut scanning) = adams(0.05);
    let (_, _, known_vs, mut known) = adams(0.05);
    for (step, rows) in schedule.iter().enumerate() {
        scanning.backward_step(&loss(&scanning_vs, rows, step));
        known.backward(&loss(&known_vs, rows, step));
        let mut unique = rows.to_vec();
        unique.sort_unstable();
        unique.dedup();
        // In `parameters` (name) order: "dense", then "table"; the dense one's entry is ignored.
        let hint = [Some(Tensor::from_slice(&[0i64])), Some(Tensor::from_slice(&unique))];
        known.step_rows(if step == 1 { &[] } else { &hint });
    }
    for name in ["table", "dense"] {
        assert_eq!(values(&var(&known_vs, name)), values(&var(&scanning_vs, name)), "{name}");
    }
    known.zero_grad();
    assert_eq!(var(&known_vs, "table").grad().abs().sum(Kind::Float).double_value(&[]), 0.0, "no gradient left");
}
