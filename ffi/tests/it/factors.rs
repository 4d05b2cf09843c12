//! Matrix factorisation with fold-in through the C functions: the same scores as the runtime's
//! `Session` on the same model bytes, to the bit, and `metarec_session_explain_fold_in`'s
//! answers and refusals.

use core::ptr;
use std::sync::Arc;

use metarec::*;
use metarec_runtime::{Model, Session};

use crate::fixture::{self, factor_item_bias, item_id, UserFile, ITEM_COUNT};
use crate::util::{assert_code, ModelHandle, SessionHandle};

fn factor_model() -> ModelHandle {
    ModelHandle::from_bytes(&fixture::factor_model_bytes()).expect("the factor fixture loads")
}

/// The fixture user's support ratings, plus a second rating of an already rated item and the
/// scale's minimum and maximum.
fn support() -> Vec<(String, f32)> {
    let mut support = UserFile::fixture().support;
    support.push((item_id(0), 4.5));
    support.push((item_id(11), 1.0));
    support.push((item_id(12), 5.0));
    support
}

/// `metarec_session_explain_fold_in`, or its error code.
fn explain_fold_in(session: &SessionHandle) -> Result<MetarecFoldIn, i32> {
    let mut out = MetarecFoldIn { adapted: -1, support_count: 99, ..MetarecFoldIn::default() };
    // SAFETY: a live session and a writable struct.
    let code = unsafe { metarec_session_explain_fold_in(session.0, &mut out) };
    if code == METAREC_OK {
        Ok(out)
    } else {
        assert_eq!((out.adapted, out.support_count), (-1, 99), "written on failure");
        Err(code)
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fold_in_matches_the_runtime_session_bit_for_bit() {
    let bytes = fixture::factor_model_bytes();
    let mut expected = Session::new(Arc::new(Model::from_bytes(&bytes).unwrap()));
    let model = ModelHandle::from_bytes(&bytes).unwrap();
    let mut session = model.session();
    let user = UserFile::fixture();
    for (field, value) in &user.profile {
        expected.set_profile(field, value).unwrap();
        assert_code(session.set_profile(field, value), METAREC_OK);
    }
    for (item, rating) in &support() {
        expected.add_rating(item, *rating).unwrap();
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    let ids: Vec<String> = (0..ITEM_COUNT).map(item_id).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut want = vec![0.0; ITEM_COUNT];

    // Before the fold-in: μ + b_i exactly.
    expected.score_ids(&ids, &mut want).unwrap();
    let bias_only: Vec<f32> = (0..ITEM_COUNT).map(|i| 3.5 + factor_item_bias(i)).collect();
    assert_eq!(bits(&want), bits(&bias_only));
    assert_eq!(bits(&session.score(&ids).unwrap()), bits(&want), "before adaptation");
    assert_eq!(bits(&session.score_all(ITEM_COUNT).unwrap()), bits(&want));

    for steps in [0, 1, 7] {
        if steps == 0 {
            expected.adapt().unwrap();
        } else {
            expected.adapt_steps(steps).unwrap();
        }
        assert_code(session.adapt(steps), METAREC_OK);
        expected.score_ids(&ids, &mut want).unwrap();
        assert_ne!(bits(&want), bits(&bias_only), "the fold-in changed nothing");
        assert_eq!(bits(&session.score(&ids).unwrap()), bits(&want), "after adapt({steps})");
        assert_eq!(bits(&session.score_all(ITEM_COUNT).unwrap()), bits(&want));
        let runtime = expected.explain().fold_in.expect("the runtime folded in");
        let c = explain_fold_in(&session).unwrap();
        assert_eq!(c.adapted, 1);
        assert_eq!(c.support_count, runtime.support);
        assert_eq!(c.support_count as usize, support().len());
        assert_eq!(c.regularisation, runtime.regularisation);
        assert_eq!(c.bias_regularisation, runtime.bias_regularisation);
        assert_eq!(c.user_bias.to_bits(), runtime.user_bias.to_bits());
    }

    // Top k follows the same scores.
    let mut order: Vec<usize> = (0..ITEM_COUNT).collect();
    order.sort_by(|a, b| want[*b].total_cmp(&want[*a]).then(a.cmp(b)));
    let top: Vec<(usize, f32)> = order.iter().take(8).map(|i| (*i, want[*i])).collect();
    assert_eq!(session.top_k(8, false).unwrap(), top);

    expected.clear_ratings();
    assert_code(session.clear_ratings(), METAREC_OK);
    expected.score_ids(&ids, &mut want).unwrap();
    assert_eq!(bits(&want), bits(&bias_only));
    assert_eq!(bits(&session.score(&ids).unwrap()), bits(&want), "after clearing");
}

/// The session's fold-in is the ridge solve of `metarec_runtime::factors` over the support in
/// insertion order, and its scores are `factors::predict` of the solved user.
#[test]
fn fold_in_is_the_runtimes_ridge_solve() {
    let body = fixture::factor_model_body();
    let factors = body.factors.as_ref().unwrap();
    let mean = body.rating.global_mean;
    let indexed: Vec<(u32, f32)> =
        support().iter().map(|(id, r)| ((0..ITEM_COUNT).find(|i| item_id(*i) == *id).unwrap() as u32, *r)).collect();
    let mut ridge = metarec_runtime::factors::Ridge::default();
    let mut user = vec![0.0; fixture::FACTOR_COUNT + 1];
    metarec_runtime::factors::fold_in(factors, mean, &indexed, &mut ridge, &mut user).unwrap();
    let want: Vec<f32> =
        (0..ITEM_COUNT as u32).map(|i| metarec_runtime::factors::predict(factors, mean, &user, i)).collect();

    let model = factor_model();
    let mut session = model.session();
    for (item, rating) in &support() {
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    assert_code(session.adapt(0), METAREC_OK);
    assert_eq!(bits(&session.score_all(ITEM_COUNT).unwrap()), bits(&want));
    assert_eq!(explain_fold_in(&session).unwrap().user_bias.to_bits(), user[0].to_bits());

    // The ridge optimum fits the support better than the bias-only prediction.
    let error =
        |scores: &[f32]| -> f64 { indexed.iter().map(|&(i, r)| f64::from(r - scores[i as usize]).powi(2)).sum() };
    let bias_only: Vec<f32> = (0..ITEM_COUNT).map(|i| mean + factor_item_bias(i)).collect();
    assert!(error(&want) < error(&bias_only), "{} !< {}", error(&want), error(&bias_only));
}

#[test]
fn explain_fold_in_reports_the_model_and_the_last_adaptation() {
    let model = factor_model();
    let mut session = model.session();
    let before = explain_fold_in(&session).unwrap();
    assert_eq!((before.adapted, before.support_count, before.user_bias), (0, 0, 0.0));
    assert_eq!(before.regularisation, fixture::FACTOR_REGULARISATION);
    assert_eq!(before.bias_regularisation, fixture::FACTOR_BIAS_REGULARISATION);

    // No ratings: nothing solved, with any step count.
    assert_code(session.adapt(0), METAREC_OK);
    assert_eq!(explain_fold_in(&session).unwrap().adapted, 0);
    assert_code(session.add_rating(&item_id(3), 5.0), METAREC_OK);
    // Zero steps of a model whose own count is 1 is one solve; a stale fold-in is dropped by a
    // new rating, a profile change and clearing.
    assert_code(session.adapt(0), METAREC_OK);
    let one = explain_fold_in(&session).unwrap();
    assert_eq!((one.adapted, one.support_count), (1, 1));
    assert!(one.user_bias > 0.0, "a 5 on an item scored {} pulls the bias up", 3.5 + factor_item_bias(3));
    assert_code(session.add_rating(&item_id(3), 5.0), METAREC_OK);
    assert_eq!(explain_fold_in(&session).unwrap().adapted, 0);
    assert_code(session.adapt(2), METAREC_OK);
    assert_eq!(explain_fold_in(&session).unwrap().support_count, 2);
    assert_code(session.set_profile("gender", "M"), METAREC_OK);
    assert_eq!(explain_fold_in(&session).unwrap().adapted, 0);
    assert_code(session.adapt(0), METAREC_OK);
    assert_code(session.clear_ratings(), METAREC_OK);
    let cleared = explain_fold_in(&session).unwrap();
    assert_eq!((cleared.adapted, cleared.support_count, cleared.user_bias), (0, 0, 0.0));
    assert_eq!(cleared.regularisation, fixture::FACTOR_REGULARISATION);

    // `metarec_session_explain` works on it too: adapted, no learning rate, no neighbours.
    assert_code(session.add_rating(&item_id(3), 1.0), METAREC_OK);
    assert_code(session.adapt(0), METAREC_OK);
    let mut explanation = MetarecExplanation::default();
    // SAFETY: a live session and a writable struct; no neighbour array with capacity 0.
    let code = unsafe { metarec_session_explain(session.0, &mut explanation, ptr::null_mut(), 0) };
    assert_code(code, METAREC_OK);
    assert_eq!((explanation.adapted, explanation.init, explanation.neighbour_count), (1, 0, 0));
    assert!(explanation.learning_rate.is_nan() && explanation.network_rate.is_nan(), "{explanation:?}");
}

#[test]
fn explain_fold_in_refuses_null_and_models_without_factors() {
    let model = factor_model();
    let session = model.session();
    let mut out = MetarecFoldIn::default();
    // SAFETY: NULL is refused before anything is read or written.
    unsafe {
        assert_code(metarec_session_explain_fold_in(ptr::null_mut(), &mut out), METAREC_ERR_NULL_POINTER);
        assert_code(metarec_session_explain_fold_in(session.0, ptr::null_mut()), METAREC_ERR_NULL_POINTER);
        assert_code(metarec_session_explain_fold_in(ptr::null_mut(), ptr::null_mut()), METAREC_ERR_NULL_POINTER);
    }
    // A misaligned output is refused like any other.
    let mut storage = [MetarecFoldIn::default(); 2];
    let misaligned = storage.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<MetarecFoldIn>();
    // SAFETY: the misaligned pointer is refused before any access.
    let code = unsafe { metarec_session_explain_fold_in(session.0, misaligned) };
    assert_code(code, METAREC_ERR_INVALID_ARGUMENT);

    // Models of other methods have no fold-in, adapted or not; nothing is written.
    for bytes in [fixture::model_bytes(false), fixture::model_bytes(true), fixture::click_model_bytes()] {
        let other = ModelHandle::from_bytes(&bytes).unwrap();
        let mut session = other.session();
        assert_eq!(explain_fold_in(&session).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
        assert_code(session.add_rating(&item_id(0), 1.0), METAREC_OK);
        assert_code(session.adapt(0), METAREC_OK);
        assert_eq!(explain_fold_in(&session).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
    }
}

#[test]
fn factor_model_info_and_profile_calls() {
    let model = factor_model();
    let mut buf = [0 as core::ffi::c_char; 16];
    let mut len = 0usize;
    // SAFETY: a live handle, 16 writable bytes and a writable length.
    assert_code(unsafe { metarec_model_method(model.0, buf.as_mut_ptr(), buf.len(), &mut len) }, METAREC_OK);
    assert_eq!(len, 3);
    assert_eq!(&buf[..3], &[b'm' as core::ffi::c_char, b'f' as core::ffi::c_char, 0]);
    // SAFETY: as above.
    assert_code(unsafe { metarec_model_task(model.0, buf.as_mut_ptr(), buf.len(), &mut len) }, METAREC_OK);
    assert_eq!(len, "rating".len() + 1);
    assert_eq!(model.item_count(), ITEM_COUNT);
    for i in [0, 7, ITEM_COUNT - 1] {
        assert_eq!(model.item_id(i).unwrap(), item_id(i));
    }
    // SAFETY: a live handle.
    unsafe {
        assert_eq!(metarec_model_field_count(model.0, METAREC_FIELDS_USER), 2);
        assert_eq!(metarec_model_field_count(model.0, METAREC_FIELDS_ITEM), 2);
    }

    // The profile is accepted (same fields as the MLP fixture) and does not enter the scores.
    let scores_with = |gender: &str, age: &str| {
        let mut session = model.session();
        assert_code(session.set_profile("gender", gender), METAREC_OK);
        assert_code(session.set_profile("age", age), METAREC_OK);
        for (item, rating) in &support() {
            assert_code(session.add_rating(item, *rating), METAREC_OK);
        }
        assert_code(session.adapt(0), METAREC_OK);
        bits(&session.score_all(ITEM_COUNT).unwrap())
    };
    assert_eq!(scores_with("F", "28"), scores_with("M", "61"));
    assert_eq!(scores_with("F", "28"), scores_with("never-seen", "not-a-number"));
    let mut session = model.session();
    assert_code(session.set_profile("shoe-size", "44"), METAREC_ERR_UNKNOWN_FIELD);
    assert_code(session.add_rating(&item_id(0), 5.5), METAREC_ERR_INVALID_RATING);
    assert_code(session.add_rating("no-such-item", 3.0), METAREC_ERR_UNKNOWN_ITEM);
    assert_code(session.adapt(METAREC_MAX_STEPS + 1), METAREC_ERR_TOO_MANY_STEPS);
}
