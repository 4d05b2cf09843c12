//! The happy path: the C functions give exactly what the runtime gives.

use std::sync::Arc;

use metarec::*;
use metarec_runtime::{Model, Session};

use crate::fixture::{self, item_id, UserFile, ITEM_COUNT};
use crate::util::{assert_code, ModelHandle};

fn runtime_session(user: &UserFile) -> Session<Arc<Model>> {
    let model = Arc::new(Model::from_bytes(&fixture::model_bytes(false)).unwrap());
    let mut session = Session::new(model);
    for (field, value) in &user.profile {
        session.set_profile(field, value).unwrap();
    }
    for (item, rating) in &user.support {
        session.add_rating(item, *rating).unwrap();
    }
    session
}

#[test]
fn catalogue_is_visible_by_index() {
    let model = ModelHandle::fixture();
    assert_eq!(model.item_count(), ITEM_COUNT);
    for i in 0..ITEM_COUNT {
        assert_eq!(model.item_id(i).unwrap(), item_id(i));
    }
}

#[test]
fn loading_from_a_file_equals_loading_from_memory() {
    let dir = std::env::temp_dir().join(format!("metarec-ffi-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixture.mrec");
    std::fs::write(&path, fixture::model_bytes(false)).unwrap();
    let from_file = ModelHandle::from_path(path.to_str().unwrap()).unwrap();
    let from_memory = ModelHandle::fixture();
    let (mut a, mut b) = (from_file.session(), from_memory.session());
    assert_eq!(a.score_all(ITEM_COUNT).unwrap(), b.score_all(ITEM_COUNT).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model that reads its catalogue from the caller's buffer (the aligned layout in place, an
/// older file copied) has the same catalogue and scores as one that copies the buffer.
#[test]
fn loading_in_place_equals_loading_a_copy() {
    for bytes in [fixture::aligned_model_bytes(), fixture::model_bytes(false)] {
        let copied = ModelHandle::from_bytes(&bytes).unwrap();
        let mut model = std::ptr::dangling_mut::<MetarecModel>();
        // SAFETY: `bytes` is live and unchanged until after the handle and its sessions drop
        // (declared before them, dropped after them).
        let code = unsafe { metarec_model_load_from_memory_borrowed(bytes.as_ptr(), bytes.len(), &mut model) };
        assert_code(code, METAREC_OK);
        let borrowed = ModelHandle(model);
        assert_eq!(borrowed.item_count(), ITEM_COUNT);
        for i in 0..ITEM_COUNT {
            assert_eq!(borrowed.item_id(i).unwrap(), item_id(i));
        }
        let (mut a, mut b) = (borrowed.session(), copied.session());
        assert_eq!(a.score_all(ITEM_COUNT).unwrap(), b.score_all(ITEM_COUNT).unwrap());
    }
}

#[test]
fn scores_and_adaptation_match_the_runtime() {
    let user = UserFile::fixture();
    let mut expected = runtime_session(&user);
    let model = ModelHandle::fixture();
    let mut session = model.session();
    for (field, value) in &user.profile {
        assert_code(session.set_profile(field, value), METAREC_OK);
    }
    for (item, rating) in &user.support {
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    let ids: Vec<String> = (0..ITEM_COUNT).map(item_id).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut want = vec![0.0; ITEM_COUNT];

    expected.score_ids(&ids, &mut want).unwrap();
    assert_eq!(session.score(&ids).unwrap(), want, "before adaptation");
    assert_eq!(session.score_all(ITEM_COUNT).unwrap(), want);

    expected.adapt().unwrap();
    assert_code(session.adapt(0), METAREC_OK);
    expected.score_ids(&ids, &mut want).unwrap();
    assert_eq!(session.score(&ids).unwrap(), want, "after default adaptation");
    assert_eq!(session.score_all(ITEM_COUNT).unwrap(), want);

    expected.adapt_steps(2).unwrap();
    assert_code(session.adapt(2), METAREC_OK);
    expected.score_ids(&ids, &mut want).unwrap();
    assert_eq!(session.score(&ids).unwrap(), want, "after 2 steps");

    expected.clear_ratings();
    assert_code(session.clear_ratings(), METAREC_OK);
    expected.score_ids(&ids, &mut want).unwrap();
    assert_eq!(session.score(&ids).unwrap(), want, "after clearing");
}

#[test]
fn adaptation_moves_scores_toward_the_support_ratings() {
    let user = UserFile::fixture();
    let model = ModelHandle::fixture();
    let mut session = model.session();
    for (item, rating) in &user.support {
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    let ids: Vec<&str> = user.support.iter().map(|(id, _)| id.as_str()).collect();
    let mse = |scores: &[f32]| {
        scores.iter().zip(&user.support).map(|(s, (_, r))| (s - r).powi(2)).sum::<f32>() / scores.len() as f32
    };
    let before = mse(&session.score(&ids).unwrap());
    assert_code(session.adapt(0), METAREC_OK);
    let after = mse(&session.score(&ids).unwrap());
    assert!(after < before, "support MSE {before} -> {after}");
}

#[test]
fn top_k_ranks_by_score_and_excludes_rated_items() {
    let user = UserFile::fixture();
    let model = ModelHandle::fixture();
    let mut session = model.session();
    for (item, rating) in &user.support {
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    assert_code(session.adapt(0), METAREC_OK);
    let all = session.score_all(ITEM_COUNT).unwrap();
    let mut order: Vec<usize> = (0..ITEM_COUNT).collect();
    order.sort_by(|a, b| all[*b].total_cmp(&all[*a]).then(a.cmp(b)));

    let top = session.top_k(10, false).unwrap();
    assert_eq!(top.len(), 10);
    let expected: Vec<(usize, f32)> = order.iter().take(10).map(|i| (*i, all[*i])).collect();
    assert_eq!(top, expected);

    let rated: Vec<usize> =
        user.support.iter().map(|(id, _)| (0..ITEM_COUNT).find(|i| item_id(*i) == *id).unwrap()).collect();
    let unrated: Vec<(usize, f32)> = order.iter().filter(|i| !rated.contains(i)).map(|i| (*i, all[*i])).collect();
    assert_eq!(session.top_k(10, true).unwrap(), unrated[..10]);
    // k larger than the candidates: every candidate, in order.
    assert_eq!(session.top_k(1000, true).unwrap(), unrated);
    assert_eq!(session.top_k(1000, false).unwrap().len(), ITEM_COUNT);
    assert_eq!(session.top_k(0, true).unwrap(), []);
}

#[test]
fn top_k_breaks_ties_by_lower_index() {
    let model = ModelHandle::from_bytes(&fixture::model_bytes(true)).unwrap();
    let mut session = model.session();
    let top = session.top_k(5, false).unwrap();
    assert_eq!(top.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(top.iter().all(|(_, s)| *s == 3.5), "{top:?}");
    assert_code(session.add_rating(&item_id(1), 4.0), METAREC_OK);
    assert_code(session.add_rating(&item_id(3), 4.0), METAREC_OK);
    let top = session.top_k(3, true).unwrap();
    assert_eq!(top.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2, 4]);
}

#[test]
fn top_k_scores_are_optional() {
    let model = ModelHandle::fixture();
    let session = model.session();
    let mut indices = [0usize; 3];
    let mut len = 0;
    // SAFETY: a live session; `indices` holds 3 elements; NULL scores are allowed.
    let code = unsafe { metarec_session_top_k(session.0, 3, 0, indices.as_mut_ptr(), core::ptr::null_mut(), &mut len) };
    assert_code(code, METAREC_OK);
    assert_eq!(len, 3);
}

#[test]
fn a_session_outlives_its_model_handle() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    let before = session.score_all(ITEM_COUNT).unwrap();
    drop(model);
    assert_eq!(session.score_all(ITEM_COUNT).unwrap(), before);
    assert_code(session.add_rating(&item_id(2), 4.5), METAREC_OK);
    assert_code(session.adapt(0), METAREC_OK);
}

#[test]
fn one_model_serves_sessions_on_many_threads() {
    let model = ModelHandle::fixture();
    let single = model.session().score_all(ITEM_COUNT).unwrap();
    // The handle is documented as shareable across threads; pass its address.
    let address = model.0 as usize;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let session = ptr_session(address as *const MetarecModel);
                let mut out = vec![0.0f32; ITEM_COUNT];
                // SAFETY: a live session owned by this thread; `out` holds ITEM_COUNT floats.
                let code = unsafe { metarec_session_score_all(session, out.as_mut_ptr(), out.len()) };
                assert_code(code, METAREC_OK);
                // SAFETY: freed once, not used afterwards.
                unsafe { metarec_session_free(session) };
                out
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), single);
    }
}

fn ptr_session(model: *const MetarecModel) -> *mut MetarecSession {
    let mut session = core::ptr::null_mut();
    // SAFETY: a live model handle and a writable pointer slot.
    assert_code(unsafe { metarec_session_new(model, &mut session) }, METAREC_OK);
    session
}

#[test]
fn error_messages_follow_snprintf() {
    let full = "rating is NaN, infinite or outside the model's rating scale";
    let mut buf = [0x7f_u8 as core::ffi::c_char; 8];
    // SAFETY: `buf` holds 8 writable bytes.
    let len = unsafe { metarec_error_message(METAREC_ERR_INVALID_RATING, buf.as_mut_ptr(), 8) };
    assert_eq!(len, full.len());
    let written: Vec<u8> = buf.iter().map(|c| *c as u8).collect();
    assert_eq!(&written, b"rating \0");
    // Size query: NULL buffer with length 0.
    // SAFETY: nothing is written when the length is 0.
    let len = unsafe { metarec_error_message(METAREC_ERR_INVALID_RATING, core::ptr::null_mut(), 0) };
    assert_eq!(len, full.len());
    assert_eq!(crate::util::message(12345), "unknown error code");
    assert_eq!(crate::util::message(-1), "unknown error code");
    assert_eq!(crate::util::message(METAREC_OK), "ok");
}

/// A string getter's result through the `(buf, buf_len, out_len)` convention: asks for the size
/// first, then fetches exactly that.
fn text(get: impl Fn(*mut core::ffi::c_char, usize, *mut usize) -> i32) -> String {
    let mut needed = 0usize;
    assert_code(get(core::ptr::null_mut(), 0, &mut needed), METAREC_ERR_BUFFER_TOO_SMALL);
    assert!(needed >= 1);
    let mut buf = vec![b'x' as core::ffi::c_char; needed];
    let mut reported = 0usize;
    assert_code(get(buf.as_mut_ptr(), needed, &mut reported), METAREC_OK);
    assert_eq!(reported, needed);
    assert_eq!(buf[needed - 1], 0, "not NUL-terminated");
    String::from_utf8(buf[..needed - 1].iter().map(|c| *c as u8).collect()).unwrap()
}

#[test]
fn model_info_describes_the_fixture() {
    let model = ModelHandle::fixture();
    let body = fixture::model_body(false);
    let method = text(|buf, len, out| {
        // SAFETY: a live handle; `text` passes a buffer of `len` bytes (or NULL and 0) and a
        // writable `out`.
        unsafe { metarec_model_method(model.0, buf, len, out) }
    });
    assert_eq!(method, "melu");
    let task = text(|buf, len, out| {
        // SAFETY: as above.
        unsafe { metarec_model_task(model.0, buf, len, out) }
    });
    assert_eq!(task, "rating");
    let adapt = text(|buf, len, out| {
        // SAFETY: as above.
        unsafe { metarec_model_adapt(model.0, buf, len, out) }
    });
    assert_eq!(adapt, "all");

    let (mut min, mut max) = (f32::NAN, f32::NAN);
    // SAFETY: a live handle and two writable floats.
    assert_code(unsafe { metarec_model_rating_range(model.0, &mut min, &mut max) }, METAREC_OK);
    assert_eq!((min, max), (body.rating.min, body.rating.max));

    for (side, fields) in [(METAREC_FIELDS_USER, &body.user_fields), (METAREC_FIELDS_ITEM, &body.item_fields)] {
        // SAFETY: a live handle.
        assert_eq!(unsafe { metarec_model_field_count(model.0, side) }, fields.len());
        for (index, field) in fields.iter().enumerate() {
            // SAFETY: as above.
            let name = text(|buf, len, out| {
                // SAFETY: as above.
                unsafe { metarec_model_field_name(model.0, side, index, buf, len, out) }
            });
            assert_eq!(name, field.name);
            let (mut kind, mut size) = (-1, usize::MAX);
            // SAFETY: a live handle and writable outputs.
            let code = unsafe { metarec_model_field_info(model.0, side, index, &mut kind, &mut size) };
            assert_code(code, METAREC_OK);
            let (want_kind, want_size) = match &field.kind {
                metarec_runtime::format::FieldKind::Categorical => (METAREC_FIELD_CATEGORICAL, field.vocabulary.len()),
                metarec_runtime::format::FieldKind::MultiCategorical { .. } => {
                    (METAREC_FIELD_MULTI_CATEGORICAL, field.vocabulary.len())
                }
                metarec_runtime::format::FieldKind::Numeric { bounds } => (METAREC_FIELD_NUMERIC, bounds.len() + 1),
            };
            assert_eq!((kind, size), (want_kind, want_size), "{}", field.name);
        }
        // SAFETY: a live handle; past the end is refused before anything is written.
        let past = unsafe {
            metarec_model_field_info(model.0, side, fields.len(), core::ptr::null_mut(), core::ptr::null_mut())
        };
        assert_code(past, METAREC_ERR_INVALID_ARGUMENT);
    }
    // Names of the fixture, spelled out so a change of the fixture or the mapping shows.
    let names: Vec<String> = (0..2)
        .map(|i| {
            text(|buf, len, out| {
                // SAFETY: as above.
                unsafe { metarec_model_field_name(model.0, METAREC_FIELDS_USER, i, buf, len, out) }
            })
        })
        .collect();
    assert_eq!(names, ["gender", "age"]);
    // SAFETY: a live handle.
    assert_eq!(unsafe { metarec_model_field_count(model.0, 2) }, 0);
    // SAFETY: NULL is allowed.
    assert_eq!(unsafe { metarec_model_field_count(core::ptr::null(), METAREC_FIELDS_USER) }, 0);
}

#[test]
fn unknown_profile_values_score_like_the_unknown_row() {
    let model = ModelHandle::fixture();
    let scores_with = |gender: &str, age: &str| {
        let mut session = model.session();
        assert_code(session.set_profile("gender", gender), METAREC_OK);
        assert_code(session.set_profile("age", age), METAREC_OK);
        session.score_all(ITEM_COUNT).unwrap()
    };
    // Two different unseen values both map to row 0, so they score identically; a known value
    // scores differently.
    assert_eq!(scores_with("never-seen", "28"), scores_with("also-unknown", "28"));
    assert_ne!(scores_with("F", "28"), scores_with("never-seen", "28"));
    // A number that does not parse is the numeric field's unknown row, like the trainer's.
    assert_eq!(scores_with("F", "not-a-number"), scores_with("F", "NaN"));
    assert_ne!(scores_with("F", "not-a-number"), scores_with("F", "28"));
}

/// A bias-aware product model (format 2.3) loads through the C API, names its adaptation scope,
/// and scores and adapts exactly as the runtime does (the fold-in's solve included).
#[test]
fn product_models_score_as_the_runtime() {
    use metarec_runtime::format::{self, Adapt, FoldInHead, ProductModel};
    for adapt in Adapt::ALL {
        let mut body = fixture::model_body(false);
        let item_bias = (0..ITEM_COUNT).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        // The output layer reads 8 hidden units; 2 item factors each.
        let fold_in = (adapt == Adapt::FoldIn).then(|| FoldInHead {
            factors: 2,
            ridge: vec![0.5; 8 + 2 + 1],
            item_factors: (0..ITEM_COUNT * 2).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect(),
        });
        body.product = ProductModel { item_bias, adapt, proximal: 0.5, fold_in };
        let bytes = format::encode(&body).unwrap();
        let model = ModelHandle::from_bytes(&bytes).unwrap();
        let name = text(|buf, len, out| {
            // SAFETY: a live handle; `text` passes a buffer of `len` bytes (or NULL and 0) and a
            // writable `out`.
            unsafe { metarec_model_adapt(model.0, buf, len, out) }
        });
        assert_eq!(name, adapt.name());
        let user = UserFile::fixture();
        let mut expected = Session::new(Model::from_bytes(&bytes).unwrap());
        let mut session = model.session();
        for (field, value) in &user.profile {
            expected.set_profile(field, value).unwrap();
            assert_code(session.set_profile(field, value), METAREC_OK);
        }
        for (item, rating) in &user.support {
            expected.add_rating(item, *rating).unwrap();
            assert_code(session.add_rating(item, *rating), METAREC_OK);
        }
        expected.adapt().unwrap();
        assert_code(session.adapt(0), METAREC_OK);
        let items: Vec<u32> = (0..ITEM_COUNT as u32).collect();
        let mut want = vec![0.0; ITEM_COUNT];
        expected.score_indices(&items, &mut want).unwrap();
        assert_eq!(session.score_all(ITEM_COUNT).unwrap(), want, "{adapt:?}");
    }
}
