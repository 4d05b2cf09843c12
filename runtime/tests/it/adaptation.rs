//! The inner loop against an independent f64 reference with finite-difference gradients.

use metarec_runtime::{Model, Session};

use crate::fixture::{
    all_scores, fd_adapt, fd_gradient, forward, input, loss, params_of, session, tiny_body, user_rows, SUPPORT,
};

fn support_xs() -> (Vec<Vec<f64>>, Vec<f64>) {
    let body = tiny_body();
    let xs = SUPPORT.iter().map(|&(i, _)| input(&body, &user_rows(), i as usize)).collect();
    let rs = SUPPORT.iter().map(|&(_, r)| r as f64).collect();
    (xs, rs)
}

/// Session loss on the support set with its current weights.
fn session_loss(session: &mut Session<&Model>) -> f64 {
    let n = SUPPORT.len() as f64;
    SUPPORT.iter().map(|&(i, r)| (session.predict(i).unwrap() as f64 - r as f64).powi(2)).sum::<f64>() / n
}

/// The finite-difference gradient is well defined here: no pre-activation sits at a ReLU kink.
#[test]
fn finite_differences_are_smooth_here() {
    let (xs, rs) = support_xs();
    let params = params_of(&tiny_body());
    let g1 = fd_gradient(&params, &xs, &rs);
    assert!(g1.iter().flat_map(|(w, b)| w.iter().chain(b)).any(|v| v.abs() > 1e-3));
}

fn check_steps(lr: f32, steps: u32) {
    let mut body = tiny_body();
    body.adaptation.inner_lr = lr;
    let model = Model::from_body(body.clone()).unwrap();
    let mut s = session(&model);
    s.adapt_steps(steps).unwrap();
    assert!(s.is_adapted());
    let actual = all_scores(&mut s);

    let (xs, rs) = support_xs();
    let adapted = fd_adapt(&params_of(&body), &xs, &rs, lr as f64, steps);
    for (i, a) in actual.iter().enumerate() {
        let expected = forward(&adapted, &input(&body, &user_rows(), i));
        assert!((*a as f64 - expected).abs() < 1e-4, "lr {lr} steps {steps} item {i}: {a} vs {expected}");
    }
}

/// One step with a large learning rate magnifies any gradient error into the scores.
#[test]
fn one_step_matches_finite_difference_descent() {
    check_steps(1.0, 1);
    check_steps(0.05, 1);
}

#[test]
fn several_steps_match_finite_difference_descent() {
    check_steps(0.05, 3);
    check_steps(0.02, 10);
}

#[test]
fn adapt_uses_the_model_step_count() {
    let model = Model::from_body(tiny_body()).unwrap();
    let mut a = session(&model);
    a.adapt().unwrap();
    let mut b = session(&model);
    b.adapt_steps(model.body().adaptation.inner_steps).unwrap();
    assert_eq!(all_scores(&mut a), all_scores(&mut b));
}

#[test]
fn one_small_step_lowers_the_support_loss() {
    let mut body = tiny_body();
    body.adaptation.inner_lr = 0.01;
    let model = Model::from_body(body).unwrap();
    let mut s = session(&model);
    let before = session_loss(&mut s);
    let (xs, rs) = support_xs();
    assert!((before - loss(&params_of(&tiny_body()), &xs, &rs)).abs() < 1e-4);
    s.adapt_steps(1).unwrap();
    let after = session_loss(&mut s);
    assert!(after < before, "{after} >= {before}");
    s.adapt_steps(20).unwrap();
    assert!(session_loss(&mut s) < after);
}

#[test]
fn no_ratings_or_no_steps_keep_meta_weights() {
    let model = Model::from_body(tiny_body()).unwrap();
    let mut s = session(&model);
    let meta = all_scores(&mut s);
    s.adapt_steps(0).unwrap();
    assert!(!s.is_adapted());
    assert_eq!(all_scores(&mut s), meta);
    s.clear_ratings();
    s.adapt().unwrap();
    assert!(!s.is_adapted());
    assert_eq!(all_scores(&mut s), meta);
}

#[test]
fn zero_learning_rate_changes_nothing() {
    let mut body = tiny_body();
    body.adaptation.inner_lr = 0.0;
    let model = Model::from_body(body).unwrap();
    let mut s = session(&model);
    let meta = all_scores(&mut s);
    s.adapt().unwrap();
    assert_eq!(all_scores(&mut s), meta);
}

#[test]
fn re_adapting_is_idempotent() {
    let model = Model::from_body(tiny_body()).unwrap();
    let mut s = session(&model);
    s.adapt().unwrap();
    let first = all_scores(&mut s);
    s.adapt().unwrap();
    let second = all_scores(&mut s);
    assert_eq!(
        first.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        second.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    s.reset_adaptation();
    s.adapt().unwrap();
    assert_eq!(all_scores(&mut s), first);
}
