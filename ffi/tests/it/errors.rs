//! Every documented error path, through the C functions.

use core::ffi::c_char;
use core::ptr;
use std::ffi::CString;

use metarec::*;
use metarec_runtime::format::HEADER_LEN;

use crate::fixture::{self, item_id, ITEM_COUNT};
use crate::util::{assert_code, ModelHandle};

#[test]
fn null_pointers_are_refused() {
    let model = ModelHandle::fixture();
    let session = model.session();
    let (m, s) = (model.0, session.0);
    let id = CString::new(item_id(0)).unwrap();
    let text = CString::new("gender").unwrap();
    let bytes = fixture::model_bytes(false);
    let mut out_model = ptr::null_mut();
    let mut out_session = ptr::null_mut();
    let mut scores = [0f32; ITEM_COUNT];
    let mut indices = [0usize; 4];
    let mut len = 0usize;
    let mut buf = [0 as c_char; 16];
    let null_str: *const c_char = ptr::null();
    let null_ids: *const *const c_char = ptr::null();
    let ids_with_null = [id.as_ptr(), null_str];

    // SAFETY: every pointer is NULL or valid for what the function reads or writes.
    let codes = unsafe {
        [
            metarec_model_load(null_str, &mut out_model),
            metarec_model_load(id.as_ptr(), ptr::null_mut()),
            metarec_model_load_from_memory(ptr::null(), 10, &mut out_model),
            metarec_model_load_from_memory(bytes.as_ptr(), bytes.len(), ptr::null_mut()),
            metarec_model_item_id(ptr::null(), 0, buf.as_mut_ptr(), buf.len(), &mut len),
            metarec_model_item_id(m, 0, ptr::null_mut(), 16, &mut len),
            metarec_session_new(ptr::null(), &mut out_session),
            metarec_session_new(m, ptr::null_mut()),
            metarec_session_set_profile(ptr::null_mut(), text.as_ptr(), text.as_ptr()),
            metarec_session_set_profile(s, null_str, text.as_ptr()),
            metarec_session_set_profile(s, text.as_ptr(), null_str),
            metarec_session_add_rating(ptr::null_mut(), id.as_ptr(), 3.0),
            metarec_session_add_rating(s, null_str, 3.0),
            metarec_session_clear_ratings(ptr::null_mut()),
            metarec_session_adapt(ptr::null_mut(), 0),
            metarec_session_score(ptr::null_mut(), ids_with_null.as_ptr(), 1, scores.as_mut_ptr()),
            metarec_session_score(s, null_ids, 1, scores.as_mut_ptr()),
            metarec_session_score(s, ids_with_null.as_ptr(), 2, scores.as_mut_ptr()),
            metarec_session_score(s, ids_with_null.as_ptr(), 1, ptr::null_mut()),
            metarec_session_score_all(ptr::null_mut(), scores.as_mut_ptr(), ITEM_COUNT),
            metarec_session_score_all(s, ptr::null_mut(), ITEM_COUNT),
            metarec_session_top_k(ptr::null_mut(), 4, 1, indices.as_mut_ptr(), ptr::null_mut(), &mut len),
            metarec_session_top_k(s, 4, 1, ptr::null_mut(), ptr::null_mut(), &mut len),
            metarec_session_top_k(s, 4, 1, indices.as_mut_ptr(), ptr::null_mut(), ptr::null_mut()),
        ]
    };
    for (i, code) in codes.into_iter().enumerate() {
        assert_eq!(code, METAREC_ERR_NULL_POINTER, "call #{i}");
    }
    assert!(out_model.is_null() && out_session.is_null());
    // Functions without a status: NULL is harmless.
    // SAFETY: NULL is documented as accepted.
    unsafe {
        assert_eq!(metarec_model_item_count(ptr::null()), 0);
        metarec_model_free(ptr::null_mut());
        metarec_session_free(ptr::null_mut());
    }
    // Empty arrays may be NULL.
    // SAFETY: a live session; zero-length arrays are never read.
    let code = unsafe { metarec_session_score(s, null_ids, 0, ptr::null_mut()) };
    assert_code(code, METAREC_OK);
}

#[test]
fn missing_and_unreadable_files_are_io_errors() {
    assert_eq!(ModelHandle::from_path("/nonexistent/dir/model.mrec").unwrap_err(), METAREC_ERR_IO);
    // A directory cannot be read as a file.
    let dir = std::env::temp_dir();
    assert_eq!(ModelHandle::from_path(dir.to_str().unwrap()).unwrap_err(), METAREC_ERR_IO);
}

#[test]
fn damaged_files_give_their_runtime_codes() {
    let good = fixture::model_bytes(false);
    let load = |bytes: &[u8]| ModelHandle::from_bytes(bytes).map(drop).unwrap_err();

    assert_code(load(&[]), METAREC_ERR_TRUNCATED);
    assert_code(load(&good[..5]), METAREC_ERR_TRUNCATED);
    assert_code(load(&good[..HEADER_LEN - 1]), METAREC_ERR_TRUNCATED);
    assert_code(load(&good[..good.len() - 1]), METAREC_ERR_TRUNCATED);
    assert_code(load(b"PNG\x89 not a model at all"), METAREC_ERR_BAD_MAGIC);

    let mut corrupted = good.clone();
    let middle = HEADER_LEN + (good.len() - HEADER_LEN) / 2;
    corrupted[middle] ^= 0x40;
    assert_code(load(&corrupted), METAREC_ERR_CHECKSUM_MISMATCH);

    let mut version = good.clone();
    version[8] = 99;
    assert_code(load(&version), METAREC_ERR_UNSUPPORTED_VERSION);

    let mut trailing = good.clone();
    trailing.push(0);
    assert_code(load(&trailing), METAREC_ERR_TRAILING_BYTES);

    // Through a file too.
    let dir = std::env::temp_dir().join(format!("metarec-ffi-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("truncated.mrec");
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert_eq!(ModelHandle::from_path(path.to_str().unwrap()).unwrap_err(), METAREC_ERR_TRUNCATED);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_models_give_their_runtime_codes() {
    let load = |body: &metarec_runtime::ModelBody| {
        let bytes = metarec_runtime::format::encode(body).unwrap();
        ModelHandle::from_bytes(&bytes).map(drop).unwrap_err()
    };
    let mut body = fixture::model_body(false);
    body.layers[0].weight[3] = f32::NAN;
    assert_code(load(&body), METAREC_ERR_NON_FINITE_PARAMETER);
    let mut body = fixture::model_body(false);
    body.layers[0].bias.pop();
    assert_code(load(&body), METAREC_ERR_INCONSISTENT_DIMENSIONS);
}

#[test]
fn session_errors_pass_through_the_runtime_codes() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    assert_code(session.add_rating("no-such-item", 3.0), METAREC_ERR_UNKNOWN_ITEM);
    assert_code(session.add_rating(&item_id(0), f32::NAN), METAREC_ERR_INVALID_RATING);
    assert_code(session.add_rating(&item_id(0), f32::INFINITY), METAREC_ERR_INVALID_RATING);
    assert_code(session.add_rating(&item_id(0), 9.0), METAREC_ERR_INVALID_RATING);
    assert_code(session.set_profile("shoe-size", "44"), METAREC_ERR_UNKNOWN_FIELD);
    assert_code(session.set_profile("age", "not a number"), METAREC_OK);
    assert_eq!(session.score(&[&item_id(0), "no-such-item"]).unwrap_err(), METAREC_ERR_UNKNOWN_ITEM);
    // Adapting with no ratings is allowed (scores stay meta-learned).
    assert_code(session.adapt(0), METAREC_OK);
}

#[test]
fn invalid_utf8_is_refused() {
    let model = ModelHandle::fixture();
    let session = model.session();
    let bad = b"caf\xe9\0";
    let good = c"gender";
    // SAFETY: a live session and NUL-terminated strings.
    unsafe {
        assert_code(metarec_session_add_rating(session.0, bad.as_ptr().cast(), 3.0), METAREC_ERR_INVALID_UTF8);
        assert_code(
            metarec_session_set_profile(session.0, good.as_ptr(), bad.as_ptr().cast()),
            METAREC_ERR_INVALID_UTF8,
        );
    }
}

#[test]
fn item_id_reports_the_size_it_needs() {
    let model = ModelHandle::fixture();
    let long = item_id(7);
    let needed = long.len() + 1;
    let mut len = 0usize;
    // Size query.
    // SAFETY: a live handle; nothing is written to a zero-length buffer.
    let code = unsafe { metarec_model_item_id(model.0, 7, ptr::null_mut(), 0, &mut len) };
    assert_code(code, METAREC_ERR_BUFFER_TOO_SMALL);
    assert_eq!(len, needed);
    // One byte short: an empty string, the code and the size.
    let mut buf = vec![0x55 as c_char; needed - 1];
    len = 0;
    // SAFETY: a live handle; `buf` holds `buf.len()` writable bytes.
    let code = unsafe { metarec_model_item_id(model.0, 7, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_code(code, METAREC_ERR_BUFFER_TOO_SMALL);
    assert_eq!((len, buf[0]), (needed, 0));
    // Exactly enough.
    let mut buf = vec![0x55 as c_char; needed];
    // SAFETY: as above.
    let code = unsafe { metarec_model_item_id(model.0, 7, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_code(code, METAREC_OK);
    assert_eq!(buf[needed - 1], 0);
    // `out_len` is optional.
    // SAFETY: as above; NULL `out_len` is allowed.
    let code = unsafe { metarec_model_item_id(model.0, 7, buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    assert_code(code, METAREC_OK);
    // Index out of range.
    assert_eq!(model.item_id(ITEM_COUNT).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
    assert_eq!(model.item_id(usize::MAX).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
}

#[test]
fn score_all_wants_exactly_the_item_count() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    assert_eq!(session.score_all(ITEM_COUNT - 1).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
    assert_eq!(session.score_all(ITEM_COUNT + 1).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
    assert_eq!(session.score_all(0).unwrap_err(), METAREC_ERR_INVALID_ARGUMENT);
    assert!(session.score_all(ITEM_COUNT).is_ok());
}

#[test]
fn misaligned_arrays_are_invalid_arguments() {
    let model = ModelHandle::fixture();
    let session = model.session();
    let mut storage = [0f32; ITEM_COUNT + 1];
    let misaligned = storage.as_mut_ptr().cast::<u8>().wrapping_add(1).cast::<f32>();
    // SAFETY: the misaligned pointer is refused before any access.
    let code = unsafe { metarec_session_score_all(session.0, misaligned, ITEM_COUNT) };
    assert_code(code, METAREC_ERR_INVALID_ARGUMENT);
}
