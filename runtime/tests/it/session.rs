//! Profile, support set and scoring: semantics, errors, determinism.

use std::sync::Arc;

use metarec_runtime::{Error, Model, Session, MAX_SUPPORT_RATINGS};

use crate::fixture::{forward, input, params_of, tiny_body, unset_user};

fn model() -> Model {
    Model::from_body(tiny_body()).unwrap()
}

fn all_items(model: &Model) -> Vec<u32> {
    (0..model.item_count() as u32).collect()
}

fn scores<M: core::borrow::Borrow<Model>>(session: &mut Session<M>) -> Vec<f32> {
    let items = all_items(session.model());
    let mut out = vec![0.0; items.len()];
    session.score_indices(&items, &mut out).unwrap();
    out
}

fn reference_scores(user_rows: &[Vec<u32>]) -> Vec<f64> {
    let body = tiny_body();
    let params = params_of(&body);
    (0..body.items.len()).map(|i| forward(&params, &input(&body, user_rows, i))).collect()
}

fn assert_close(actual: &[f32], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((*a as f64 - e).abs() <= tolerance, "item {i}: {a} vs {e}");
    }
}

#[test]
fn fresh_session_is_the_unknown_user() {
    let model = model();
    let mut session = Session::new(&model);
    assert!(!session.is_adapted());
    assert_eq!(session.support_len(), 0);
    assert_close(&scores(&mut session), &reference_scores(&unset_user()), 1e-5);
}

#[test]
fn profile_maps_raw_values() {
    let model = model();
    let mut session = Session::new(&model);
    session.set_profile("gender", "M").unwrap();
    session.set_profile("age", "29").unwrap(); // 18, 25 <= 29 → row 3
    assert_close(&scores(&mut session), &reference_scores(&[vec![2], vec![3]]), 1e-5);
    // Setting again replaces; unknown values map to row 0.
    session.set_profile("gender", "X").unwrap();
    session.set_profile("age", "not a number").unwrap();
    assert_close(&scores(&mut session), &reference_scores(&unset_user()), 1e-5);
    session.set_profile("age", "50").unwrap(); // all four bounds <= 50 → row 5
    assert_close(&scores(&mut session), &reference_scores(&[vec![0], vec![5]]), 1e-5);
    assert_eq!(session.set_profile("rated", "PG").unwrap_err(), Error::UnknownField);
    assert_eq!(session.set_profile("", "F").unwrap_err(), Error::UnknownField);
}

#[test]
fn score_entry_points_agree() {
    let model = model();
    let mut session = Session::new(&model);
    session.set_profile("gender", "F").unwrap();
    let by_index = scores(&mut session);
    let ids: Vec<&str> = (0..model.item_count() as u32).map(|i| model.item_id(i).unwrap()).collect();
    let mut by_id = vec![0.0; ids.len()];
    session.score_ids(&ids, &mut by_id).unwrap();
    assert_eq!(by_index, by_id);
    for (i, s) in by_index.iter().enumerate() {
        assert_eq!(session.predict(i as u32).unwrap(), *s);
    }
    // Reverse order and repeats.
    let mut out = [0.0; 3];
    session.score_indices(&[5, 0, 5], &mut out).unwrap();
    assert_eq!(out, [by_index[5], by_index[0], by_index[5]]);
}

#[test]
fn scoring_errors_leave_output_untouched() {
    let model = model();
    let mut session = Session::new(&model);
    let mut out = [7.0f32; 2];
    assert_eq!(session.score_indices(&[0, 1, 2], &mut out).unwrap_err(), Error::LengthMismatch);
    assert_eq!(session.score_ids(&["m1"], &mut out).unwrap_err(), Error::LengthMismatch);
    assert_eq!(session.score_indices(&[0, 6], &mut out).unwrap_err(), Error::UnknownItem);
    assert_eq!(session.score_indices(&[u32::MAX, 0], &mut out).unwrap_err(), Error::UnknownItem);
    assert_eq!(session.score_ids(&["m1", "nope"], &mut out).unwrap_err(), Error::UnknownItem);
    assert_eq!(out, [7.0; 2]);
    assert_eq!(session.predict(6).unwrap_err(), Error::UnknownItem);
    session.score_indices(&[], &mut []).unwrap();
}

#[test]
fn rating_errors() {
    let model = model();
    let mut session = Session::new(&model);
    assert_eq!(session.add_rating("nope", 3.0).unwrap_err(), Error::UnknownItem);
    assert_eq!(session.add_rating_by_index(6, 3.0).unwrap_err(), Error::UnknownItem);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.999, 5.001, -3.0] {
        assert_eq!(session.add_rating("m1", bad).unwrap_err(), Error::InvalidRating, "{bad}");
    }
    assert_eq!(session.support_len(), 0);
    session.add_rating("m1", 1.0).unwrap();
    session.add_rating("m7", 5.0).unwrap();
    session.add_rating_by_index(0, 3.5).unwrap();
    assert_eq!(session.support(), &[(1, 1.0), (4, 5.0), (0, 3.5)]);
    session.clear_ratings();
    assert!(session.support().is_empty());
}

#[test]
fn too_many_ratings() {
    let model = model();
    let mut session = Session::new(&model);
    for i in 0..MAX_SUPPORT_RATINGS {
        session.add_rating_by_index((i % 6) as u32, 3.0).unwrap();
    }
    assert_eq!(session.add_rating("m1", 3.0).unwrap_err(), Error::TooManyRatings);
    assert_eq!(session.support_len(), MAX_SUPPORT_RATINGS);
}

#[test]
fn sessions_are_deterministic_and_independent() {
    let model = Arc::new(model());
    let run = |model: Arc<Model>| {
        let mut session = Session::new(model);
        session.set_profile("gender", "F").unwrap();
        session.add_rating("m2", 4.0).unwrap();
        session.add_rating("m10", 1.5).unwrap();
        session.adapt().unwrap();
        scores(&mut session)
    };
    let a = run(model.clone());
    let b = run(model.clone());
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    // Another session on the same model is unaffected.
    let mut fresh = Session::new(&*model);
    assert_close(&scores(&mut fresh), &reference_scores(&unset_user()), 1e-5);
    // Owned model works too.
    let mut owned = Session::new(Model::from_body(tiny_body()).unwrap());
    assert_eq!(scores(&mut owned), scores(&mut fresh));
}

#[test]
fn changes_after_adapt_drop_the_adaptation() {
    let model = model();
    let mut session = Session::new(&model);
    session.add_rating("m3", 5.0).unwrap();
    session.add_rating("m1", 1.0).unwrap();
    let meta = scores(&mut session);
    session.adapt().unwrap();
    assert!(session.is_adapted());
    let adapted = scores(&mut session);
    assert_ne!(meta, adapted);

    session.add_rating("m7", 2.0).unwrap();
    assert!(!session.is_adapted());
    assert_eq!(scores(&mut session), meta);

    session.adapt().unwrap();
    session.clear_ratings();
    assert!(!session.is_adapted());
    assert_eq!(scores(&mut session), meta);

    session.add_rating("m3", 5.0).unwrap();
    session.adapt().unwrap();
    session.set_profile("gender", "F").unwrap();
    assert!(!session.is_adapted());
    let mut plain = Session::new(&model);
    plain.set_profile("gender", "F").unwrap();
    assert_eq!(scores(&mut session), scores(&mut plain));

    session.adapt().unwrap();
    session.reset_adaptation();
    assert!(!session.is_adapted());
    assert_eq!(scores(&mut session), scores(&mut plain));
    assert_eq!(session.support_len(), 1);
}
