//! The documented caps of `metarec_runtime::limits`: requests at a cap work, requests past it
//! are errors (and leave the session as it was), models past it do not load.

use metarec_runtime::format::ItemRecord;
use metarec_runtime::limits::{MAX_CANDIDATES, MAX_MODEL_BYTES, MAX_STEPS, MAX_STRING_LEN, MAX_SUPPORT_RATINGS};
use metarec_runtime::{Error, Model, ModelBody, Session};

use crate::fixture::tiny_body;

fn model() -> Model {
    Model::from_body(tiny_body()).unwrap()
}

fn scores(session: &mut Session<&Model>) -> Vec<f32> {
    let items: Vec<u32> = (0..session.model().item_count() as u32).collect();
    let mut out = vec![0.0; items.len()];
    session.score_indices(&items, &mut out).unwrap();
    out
}

#[test]
fn the_caps_have_their_documented_values() {
    assert_eq!(MAX_MODEL_BYTES, 1 << 30);
    assert_eq!(MAX_SUPPORT_RATINGS, 10_000);
    assert_eq!(MAX_CANDIDATES, 1 << 20);
    assert_eq!(MAX_STEPS, 1_000);
    assert_eq!(MAX_STRING_LEN, 4_096);
}

#[test]
fn steps_past_the_cap_are_refused_and_keep_the_adaptation() {
    let model = model();
    let mut session = Session::new(&model);
    session.add_rating("m3", 5.0).unwrap();
    session.add_rating("m2", 1.0).unwrap();
    session.adapt_steps(MAX_STEPS).unwrap();
    let adapted = scores(&mut session);
    for steps in [MAX_STEPS + 1, u32::MAX] {
        assert_eq!(session.adapt_steps(steps), Err(Error::TooManySteps), "{steps} steps");
        assert!(session.is_adapted(), "a refused adaptation drops nothing");
        assert_eq!(scores(&mut session), adapted);
    }
}

#[test]
fn candidates_past_the_cap_are_refused() {
    let model = model();
    let mut session = Session::new(&model);
    // At the cap the call goes through (and fails only on what the items are).
    let mut out = vec![0.0; MAX_CANDIDATES];
    let at_cap = vec![0u32; MAX_CANDIDATES];
    session.score_indices(&at_cap, &mut out).unwrap();
    let past = vec![0u32; MAX_CANDIDATES + 1];
    let mut out = vec![0.0; MAX_CANDIDATES + 1];
    assert_eq!(session.score_indices(&past, &mut out), Err(Error::TooManyCandidates));
    let ids = vec!["m3"; MAX_CANDIDATES + 1];
    assert_eq!(session.score_ids(&ids, &mut out), Err(Error::TooManyCandidates));
    assert!(out.iter().all(|&v| v == 0.0), "nothing is written on error");
    // A length mismatch is still reported as such.
    assert_eq!(session.score_ids(&ids, &mut out[..2]), Err(Error::LengthMismatch));
}

#[test]
fn strings_past_the_cap_are_refused() {
    let model = model();
    let mut session = Session::new(&model);
    let at_cap = "x".repeat(MAX_STRING_LEN);
    let past = "x".repeat(MAX_STRING_LEN + 1);
    // At the cap: an unknown value maps to the unknown row; an unknown id is unknown.
    session.set_profile("gender", &at_cap).unwrap();
    assert_eq!(session.set_profile(&at_cap, "F"), Err(Error::UnknownField));
    assert_eq!(session.add_rating(&at_cap, 3.0), Err(Error::UnknownItem));
    // Past it, whatever else the call holds.
    assert_eq!(session.set_profile("gender", &past), Err(Error::StringTooLong));
    assert_eq!(session.set_profile(&past, "F"), Err(Error::StringTooLong));
    assert_eq!(session.add_rating(&past, 3.0), Err(Error::StringTooLong));
    assert_eq!(session.add_rating(&past, f32::NAN), Err(Error::StringTooLong));
    let mut out = [0.0; 2];
    assert_eq!(session.score_ids(&["m3", &past], &mut out), Err(Error::StringTooLong));
    assert_eq!(session.support_len(), 0);
}

#[test]
fn files_past_the_size_cap_are_refused_unread() {
    // Zeroed pages are never touched: the size alone refuses the buffer.
    let huge = vec![0u8; MAX_MODEL_BYTES + 1];
    assert_eq!(Model::from_bytes(&huge).map(drop), Err(Error::ModelTooLarge));
    drop(huge);
    // At the cap the other checks run (zeros are not a model).
    let at_cap = vec![0u8; MAX_MODEL_BYTES];
    assert_eq!(Model::from_bytes(&at_cap).map(drop), Err(Error::BadMagic));
}

fn refused(edit: impl FnOnce(&mut ModelBody)) -> Error {
    let mut body = tiny_body();
    edit(&mut body);
    let direct = Model::from_body(body.clone()).map(drop).unwrap_err();
    let from_file = Model::from_bytes(&metarec_runtime::format::encode(&body).unwrap()).map(drop).unwrap_err();
    assert_eq!(direct, from_file);
    direct
}

#[test]
fn models_past_a_cap_do_not_load() {
    let long = "x".repeat(MAX_STRING_LEN + 1);
    assert_eq!(refused(|b| b.adaptation.inner_steps = MAX_STEPS + 1), Error::ModelTooLarge);
    assert_eq!(refused(|b| b.items[2].id = long.clone()), Error::ModelTooLarge);
    assert_eq!(refused(|b| b.user_fields[0].name = long.clone()), Error::ModelTooLarge);
    assert_eq!(refused(|b| b.item_fields[1].name = long.clone()), Error::ModelTooLarge);
    assert_eq!(refused(|b| b.item_fields[0].vocabulary[3] = format!("Z{long}")), Error::ModelTooLarge);
    let template = tiny_body().items[0].clone();
    let many = |b: &mut ModelBody| {
        b.items = (0..=MAX_CANDIDATES).map(|i| ItemRecord { id: i.to_string(), ..template.clone() }).collect();
    };
    let mut body = tiny_body();
    many(&mut body);
    assert_eq!(Model::from_body(body).map(drop), Err(Error::ModelTooLarge));

    // At the caps a model loads, and its longest id can be passed back.
    let mut body = tiny_body();
    body.adaptation.inner_steps = MAX_STEPS;
    body.items[2].id = "y".repeat(MAX_STRING_LEN);
    let model = Model::from_body(body).unwrap();
    let mut session = Session::new(&model);
    session.add_rating(&"y".repeat(MAX_STRING_LEN), 4.0).unwrap();
    session.adapt().unwrap();
}
