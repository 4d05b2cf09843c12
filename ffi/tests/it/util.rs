//! Safe wrappers around the C functions for the tests.

use core::ffi::c_char;
use core::ptr;
use std::ffi::CString;

use metarec::*;

/// Asserts a status code, naming both codes' messages on failure.
#[track_caller]
pub fn assert_code(actual: i32, expected: i32) {
    assert_eq!(actual, expected, "got {actual} ({}), expected {expected} ({})", message(actual), message(expected));
}

/// The message of a code through `metarec_error_message`.
pub fn message(code: i32) -> String {
    let mut buf = vec![0 as c_char; 256];
    // SAFETY: `buf` holds `buf.len()` writable bytes.
    let len = unsafe { metarec_error_message(code, buf.as_mut_ptr(), buf.len()) };
    assert!(len < buf.len(), "message of {code} longer than 255 bytes");
    let bytes: Vec<u8> = buf[..len].iter().map(|c| *c as u8).collect();
    assert_eq!(buf[len], 0, "message not NUL-terminated");
    String::from_utf8(bytes).expect("messages are UTF-8")
}

/// A model handle, freed on drop.
#[derive(Debug)]
pub struct ModelHandle(pub *mut MetarecModel);

impl ModelHandle {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, i32> {
        let mut model = ptr::dangling_mut::<MetarecModel>();
        // SAFETY: `bytes` is a live slice; `model` is a writable pointer slot.
        let code = unsafe { metarec_model_load_from_memory(bytes.as_ptr(), bytes.len(), &mut model) };
        if code == METAREC_OK {
            assert!(!model.is_null());
            Ok(ModelHandle(model))
        } else {
            assert!(model.is_null(), "a failed load must set *out_model to NULL");
            Err(code)
        }
    }

    pub fn from_path(path: &str) -> Result<Self, i32> {
        let path = CString::new(path).expect("no NUL in test paths");
        let mut model = ptr::dangling_mut::<MetarecModel>();
        // SAFETY: `path` is NUL-terminated; `model` is a writable pointer slot.
        let code = unsafe { metarec_model_load(path.as_ptr(), &mut model) };
        if code == METAREC_OK {
            Ok(ModelHandle(model))
        } else {
            assert!(model.is_null(), "a failed load must set *out_model to NULL");
            Err(code)
        }
    }

    pub fn fixture() -> Self {
        ModelHandle::from_bytes(&crate::fixture::model_bytes(false)).expect("fixture loads")
    }

    pub fn item_count(&self) -> usize {
        // SAFETY: a live handle.
        unsafe { metarec_model_item_count(self.0) }
    }

    pub fn item_id(&self, index: usize) -> Result<String, i32> {
        let mut buf = vec![0 as c_char; 128];
        let mut len = 0usize;
        // SAFETY: a live handle, `buf.len()` writable bytes, a writable `len`.
        let code = unsafe { metarec_model_item_id(self.0, index, buf.as_mut_ptr(), buf.len(), &mut len) };
        if code != METAREC_OK {
            return Err(code);
        }
        assert_eq!(buf[len - 1], 0);
        Ok(String::from_utf8(buf[..len - 1].iter().map(|c| *c as u8).collect()).unwrap())
    }

    pub fn session(&self) -> SessionHandle {
        let mut session = ptr::null_mut();
        // SAFETY: a live handle and a writable pointer slot.
        assert_code(unsafe { metarec_session_new(self.0, &mut session) }, METAREC_OK);
        SessionHandle(session)
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        unsafe { metarec_model_free(self.0) }
    }
}

/// A session handle, freed on drop.
#[derive(Debug)]
pub struct SessionHandle(pub *mut MetarecSession);

impl SessionHandle {
    pub fn set_profile(&mut self, field: &str, value: &str) -> i32 {
        let (field, value) = (CString::new(field).unwrap(), CString::new(value).unwrap());
        // SAFETY: a live session and two NUL-terminated strings.
        unsafe { metarec_session_set_profile(self.0, field.as_ptr(), value.as_ptr()) }
    }

    pub fn add_rating(&mut self, item: &str, rating: f32) -> i32 {
        let item = CString::new(item).unwrap();
        // SAFETY: a live session and a NUL-terminated string.
        unsafe { metarec_session_add_rating(self.0, item.as_ptr(), rating) }
    }

    pub fn clear_ratings(&mut self) -> i32 {
        // SAFETY: a live session.
        unsafe { metarec_session_clear_ratings(self.0) }
    }

    pub fn adapt(&mut self, steps: u32) -> i32 {
        // SAFETY: a live session.
        unsafe { metarec_session_adapt(self.0, steps) }
    }

    pub fn score(&mut self, items: &[&str]) -> Result<Vec<f32>, i32> {
        let owned: Vec<CString> = items.iter().map(|i| CString::new(*i).unwrap()).collect();
        let pointers: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        let mut out = vec![f32::NAN; items.len()];
        // SAFETY: a live session; `pointers` and `out` hold `items.len()` elements.
        let code = unsafe { metarec_session_score(self.0, pointers.as_ptr(), pointers.len(), out.as_mut_ptr()) };
        if code == METAREC_OK {
            Ok(out)
        } else {
            Err(code)
        }
    }

    pub fn score_all(&mut self, len: usize) -> Result<Vec<f32>, i32> {
        let mut out = vec![f32::NAN; len];
        // SAFETY: a live session; `out` holds `len` floats.
        let code = unsafe { metarec_session_score_all(self.0, out.as_mut_ptr(), len) };
        if code == METAREC_OK {
            Ok(out)
        } else {
            Err(code)
        }
    }

    pub fn top_k(&mut self, k: usize, exclude_rated: bool) -> Result<Vec<(usize, f32)>, i32> {
        let mut indices = vec![usize::MAX; k];
        let mut scores = vec![f32::NAN; k];
        let mut len = usize::MAX;
        // SAFETY: a live session; both arrays hold `k` elements; `len` is writable.
        let code = unsafe {
            metarec_session_top_k(
                self.0,
                k,
                i32::from(exclude_rated),
                indices.as_mut_ptr(),
                scores.as_mut_ptr(),
                &mut len,
            )
        };
        if code != METAREC_OK {
            assert_eq!(len, 0, "*out_len must be 0 on failure");
            return Err(code);
        }
        assert!(len <= k);
        Ok(indices.into_iter().zip(scores).take(len).collect())
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        unsafe { metarec_session_free(self.0) }
    }
}
