//! The documented caps through the C functions: `METAREC_MAX_*` requests work, one past them is
//! refused with its code, and a string argument is never read past the cap.

use core::ffi::c_char;
use core::ptr;

use metarec::*;

use crate::fixture::{self, item_id};
use crate::util::{assert_code, ModelHandle};

#[test]
fn the_header_caps_have_their_documented_values() {
    assert_eq!(METAREC_MAX_MODEL_BYTES, 1 << 30);
    assert_eq!(METAREC_MAX_SUPPORT_RATINGS, 10_000);
    assert_eq!(METAREC_MAX_CANDIDATES, 1 << 20);
    assert_eq!(METAREC_MAX_STEPS, 1_000);
    assert_eq!(METAREC_MAX_STRING_LEN, 4_096);
    let header = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../include/metarec.h")).unwrap();
    for line in [
        "#define METAREC_MAX_MODEL_BYTES 1073741824",
        "#define METAREC_MAX_SUPPORT_RATINGS 10000",
        "#define METAREC_MAX_CANDIDATES 1048576",
        "#define METAREC_MAX_STEPS 1000",
        "#define METAREC_MAX_STRING_LEN 4096",
    ] {
        assert!(header.contains(line), "header lacks `{line}`");
    }
}

#[test]
fn steps_past_the_cap() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    assert_code(session.add_rating(&item_id(1), 5.0), METAREC_OK);
    assert_code(session.adapt(METAREC_MAX_STEPS), METAREC_OK);
    assert_code(session.adapt(METAREC_MAX_STEPS + 1), METAREC_ERR_TOO_MANY_STEPS);
    assert_code(session.adapt(u32::MAX), METAREC_ERR_TOO_MANY_STEPS);
}

#[test]
fn support_ratings_past_the_cap() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    for _ in 0..METAREC_MAX_SUPPORT_RATINGS {
        assert_code(session.add_rating(&item_id(3), 4.0), METAREC_OK);
    }
    assert_code(session.add_rating(&item_id(3), 4.0), METAREC_ERR_TOO_MANY_RATINGS);
    assert_code(session.adapt(1), METAREC_OK);
}

#[test]
fn candidates_past_the_cap_are_refused_before_the_arrays_are_read() {
    let model = ModelHandle::fixture();
    let session = model.session();
    let id = std::ffi::CString::new(item_id(0)).unwrap();
    let ids = vec![id.as_ptr(); METAREC_MAX_CANDIDATES];
    let mut out = vec![0f32; METAREC_MAX_CANDIDATES];
    // SAFETY: a live session; both arrays hold METAREC_MAX_CANDIDATES elements.
    let code = unsafe { metarec_session_score(session.0, ids.as_ptr(), ids.len(), out.as_mut_ptr()) };
    assert_code(code, METAREC_OK);
    assert!(out.iter().all(|&s| s == out[0]));
    // One more: refused from the count alone (the arrays are one short and never touched).
    // SAFETY: the call returns before it reads or writes either array.
    let code = unsafe { metarec_session_score(session.0, ids.as_ptr(), METAREC_MAX_CANDIDATES + 1, out.as_mut_ptr()) };
    assert_code(code, METAREC_ERR_TOO_MANY_CANDIDATES);
    // SAFETY: as above; NULL arrays with a huge count are refused the same way.
    let code = unsafe { metarec_session_score(session.0, ptr::null(), usize::MAX, ptr::null_mut()) };
    assert_code(code, METAREC_ERR_TOO_MANY_CANDIDATES);
}

#[test]
fn strings_past_the_cap() {
    let model = ModelHandle::fixture();
    let mut session = model.session();
    let at_cap = "x".repeat(METAREC_MAX_STRING_LEN);
    let past = "x".repeat(METAREC_MAX_STRING_LEN + 1);
    assert_code(session.set_profile("gender", &at_cap), METAREC_OK);
    assert_code(session.set_profile(&at_cap, "F"), METAREC_ERR_UNKNOWN_FIELD);
    assert_code(session.add_rating(&at_cap, 3.0), METAREC_ERR_UNKNOWN_ITEM);
    assert_code(session.set_profile("gender", &past), METAREC_ERR_STRING_TOO_LONG);
    assert_code(session.set_profile(&past, "F"), METAREC_ERR_STRING_TOO_LONG);
    assert_code(session.add_rating(&past, 3.0), METAREC_ERR_STRING_TOO_LONG);
    assert_eq!(session.score(&[&item_id(0), &past]).unwrap_err(), METAREC_ERR_STRING_TOO_LONG);
}

#[test]
fn a_string_without_its_nul_is_read_no_further_than_the_cap() {
    let model = ModelHandle::fixture();
    let session = model.session();
    // Exactly cap + 1 readable bytes and no NUL: reading one byte more would be out of bounds
    // (Miri and AddressSanitizer would see it); the call stops at the cap.
    let unterminated = vec![b'a' as c_char; METAREC_MAX_STRING_LEN + 1].into_boxed_slice();
    // SAFETY: deliberately breaks the NUL contract, but within the cap + 1 bytes the library
    // promises to read at most.
    let code = unsafe { metarec_session_add_rating(session.0, unterminated.as_ptr(), 3.0) };
    assert_code(code, METAREC_ERR_STRING_TOO_LONG);
}

#[test]
fn model_files_past_the_size_cap() {
    let dir = std::env::temp_dir().join(format!("metarec-ffi-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A sparse file one byte past the cap: refused from its size, never read.
    let path = dir.join("huge.mrec");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(METAREC_MAX_MODEL_BYTES as u64 + 1).unwrap();
    drop(file);
    assert_eq!(ModelHandle::from_path(path.to_str().unwrap()).unwrap_err(), METAREC_ERR_MODEL_TOO_LARGE);
    std::fs::remove_dir_all(&dir).unwrap();

    // From memory: the length alone refuses it (the buffer is never read).
    let small = fixture::model_bytes(false);
    let mut model = ptr::dangling_mut::<MetarecModel>();
    // SAFETY: the call returns on the length before it reads `small`.
    let code = unsafe { metarec_model_load_from_memory(small.as_ptr(), METAREC_MAX_MODEL_BYTES + 1, &mut model) };
    assert_code(code, METAREC_ERR_MODEL_TOO_LARGE);
    assert!(model.is_null());
}
