//! `metarec_session_contribute`: the same blob as the runtime, the size query, and its errors.

use std::ptr;
use std::sync::Arc;

use metarec::*;
use metarec_runtime::{contribution, Model, Session};

use crate::fixture::{self, UserFile};
use crate::util::{assert_code, ModelHandle, SessionHandle};

fn user_session(model: &ModelHandle, user: &UserFile) -> SessionHandle {
    let mut session = model.session();
    for (field, value) in &user.profile {
        assert_code(session.set_profile(field, value), METAREC_OK);
    }
    for (item, rating) in &user.support {
        assert_code(session.add_rating(item, *rating), METAREC_OK);
    }
    session
}

/// Calls `metarec_session_contribute` with a buffer of `buf_len` bytes.
fn contribute(session: &SessionHandle, clip: f32, buf_len: usize) -> (i32, Vec<u8>, usize) {
    let mut buf = vec![0u8; buf_len];
    let mut len = usize::MAX;
    let ptr = if buf_len == 0 { ptr::null_mut() } else { buf.as_mut_ptr() };
    // SAFETY: a live session; `buf_len` writable bytes (or NULL with 0); a writable length.
    let code = unsafe { metarec_session_contribute(session.0, clip, ptr, buf_len, &mut len) };
    (code, buf, len)
}

#[test]
fn the_blob_is_the_runtimes_and_the_size_can_be_asked_first() {
    let user = UserFile::fixture();
    let model = ModelHandle::fixture();
    let session = user_session(&model, &user);
    let (code, _, needed) = contribute(&session, 1.0, 0);
    assert_code(code, METAREC_ERR_BUFFER_TOO_SMALL);
    let (code, _, again) = contribute(&session, 1.0, needed - 1);
    assert_code(code, METAREC_ERR_BUFFER_TOO_SMALL);
    assert_eq!(again, needed);
    let (code, buf, len) = contribute(&session, 1.0, needed + 8);
    assert_code(code, METAREC_OK);
    assert_eq!(len, needed);

    let runtime_model = Arc::new(Model::from_bytes(&fixture::model_bytes(false)).unwrap());
    let mut reference = Session::new(runtime_model.clone());
    for (field, value) in &user.profile {
        reference.set_profile(field, value).unwrap();
    }
    for (item, rating) in &user.support {
        reference.add_rating(item, *rating).unwrap();
    }
    let expected = reference.contribute(1.0).unwrap();
    assert_eq!(&buf[..len], &expected[..]);
    let decoded = contribution::decode(&expected).unwrap();
    assert_eq!(decoded.model_id, contribution::model_id(&runtime_model));
    assert!(decoded.update.iter().any(|v| *v != 0.0));
}

#[test]
fn errors_have_stable_codes() {
    let user = UserFile::fixture();
    let model = ModelHandle::fixture();
    let session = user_session(&model, &user);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_code(contribute(&session, bad, 4096).0, METAREC_ERR_INVALID_CLIP_NORM);
    }
    let empty = model.session();
    assert_code(contribute(&empty, 1.0, 4096).0, METAREC_ERR_TOO_FEW_RATINGS);
    let factors = ModelHandle::from_bytes(&fixture::factor_model_bytes()).unwrap();
    let mut factor_session = factors.session();
    for (item, rating) in &user.support {
        assert_code(factor_session.add_rating(item, *rating), METAREC_OK);
    }
    assert_code(contribute(&factor_session, 1.0, 4096).0, METAREC_ERR_NOT_CONTRIBUTABLE);
    let mut len = 0usize;
    // SAFETY: NULL session: the call must refuse it without touching anything.
    let code = unsafe { metarec_session_contribute(ptr::null_mut(), 1.0, ptr::null_mut(), 0, &mut len) };
    assert_code(code, METAREC_ERR_NULL_POINTER);
    // SAFETY: a live session, a NULL buffer with a non-zero length (refused).
    let code = unsafe { metarec_session_contribute(session.0, 1.0, ptr::null_mut(), 1 << 20, &mut len) };
    assert_code(code, METAREC_ERR_NULL_POINTER);
    for code in [METAREC_ERR_NOT_CONTRIBUTABLE, METAREC_ERR_TOO_FEW_RATINGS, METAREC_ERR_INVALID_CLIP_NORM] {
        assert_ne!(crate::util::message(code), "unknown error code");
    }
}
