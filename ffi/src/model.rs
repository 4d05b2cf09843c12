//! Loading, inspecting and freeing models.

use core::ffi::c_char;
use std::sync::Arc;

use metarec_runtime::Model;

use crate::handle::{self, MetarecModel};
use crate::status::{Code, Status, METAREC_ERR_BUFFER_TOO_SMALL, METAREC_ERR_INVALID_ARGUMENT, METAREC_ERR_IO};
use crate::{guard, guard_or};

/// Reads a model file's bytes; any failure to open or read it is `METAREC_ERR_IO`.
fn read_file(path: &[u8]) -> Status<Vec<u8>> {
    #[cfg(unix)]
    let path = {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(path))
    };
    #[cfg(not(unix))]
    let path =
        std::path::Path::new(core::str::from_utf8(path).map_err(|_| Code(crate::status::METAREC_ERR_INVALID_UTF8))?);
    std::fs::read(path).map_err(|_| Code(METAREC_ERR_IO))
}

/// Stores a freshly loaded model in `*out_model`, or NULL on failure.
///
/// # Safety
/// `out_model` is NULL or writable.
unsafe fn load(out_model: *mut *mut MetarecModel, load: impl FnOnce() -> Status<Model>) -> i32 {
    guard(|| {
        handle::check_out(out_model)?;
        // SAFETY: checked non-NULL and aligned; writable (caller's contract). Set first so
        // the caller sees NULL on every failure, a panic included.
        unsafe { handle::write_out(out_model, core::ptr::null_mut()) }?;
        let model = Arc::new(load()?);
        // SAFETY: as above.
        unsafe { handle::write_out(out_model, handle::model_into_raw(model)) }
    })
}

/// Loads and validates the model file at `path` (a NUL-terminated path in the platform's
/// encoding). On success `*out_model` receives a handle to free with `metarec_model_free`;
/// on failure it is set to NULL.
///
/// Returns `METAREC_ERR_NULL_POINTER`, `METAREC_ERR_IO` (missing or unreadable file), or a
/// load error (`METAREC_ERR_BAD_MAGIC` ... `METAREC_ERR_NON_FINITE_PARAMETER`).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out_model` is NULL or points to writable storage
/// for one pointer.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_load(path: *const c_char, out_model: *mut *mut MetarecModel) -> i32 {
    let body = || -> Status<Model> {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let path = unsafe { handle::c_bytes(path) }?;
        Ok(Model::from_bytes(&read_file(path)?)?)
    };
    // SAFETY: NULL or writable for one pointer (caller's contract).
    unsafe { load(out_model, body) }
}

/// Loads and validates a model from `len` bytes in memory (the bytes are copied; the buffer
/// may be released after the call). On success `*out_model` receives a handle to free with
/// `metarec_model_free`; on failure it is set to NULL.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`bytes` NULL with `len` > 0, or `out_model` NULL) or a
/// load error (`METAREC_ERR_BAD_MAGIC` ... `METAREC_ERR_NON_FINITE_PARAMETER`).
///
/// # Safety
/// Unless `len` is 0, `bytes` points to `len` readable bytes; `out_model` is NULL or points to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_load_from_memory(
    bytes: *const u8,
    len: usize,
    out_model: *mut *mut MetarecModel,
) -> i32 {
    let body = || -> Status<Model> {
        // SAFETY: unless `len` is 0, `len` readable bytes, unchanged during the call (caller's
        // contract).
        let bytes = unsafe { handle::slice(bytes, len) }?;
        Ok(Model::from_bytes(bytes)?)
    };
    // SAFETY: NULL or writable for one pointer (caller's contract).
    unsafe { load(out_model, body) }
}

/// Releases a model handle. Sessions created from it stay valid (they hold their own
/// reference). NULL is a no-op.
///
/// # Safety
/// `model` is NULL or a handle from `metarec_model_load*` that has not been freed; it must not
/// be used after this call.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_free(model: *mut MetarecModel) {
    guard_or((), || {
        // SAFETY: a live handle or NULL, never used again (caller's contract).
        unsafe { handle::model_release(model) }
    });
}

/// Number of items in the model's catalogue (item indices run from 0 to this count - 1);
/// 0 when `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_item_count(model: *const MetarecModel) -> usize {
    guard_or(0, || {
        // SAFETY: NULL or a live handle (caller's contract).
        unsafe { handle::model_ref(model) }.map_or(0, Model::item_count)
    })
}

/// Copies the id of item `index` into `buf` as a NUL-terminated string.
///
/// `*out_len` (if `out_len` is not NULL) receives the size the id needs in bytes, NUL included,
/// both on success and on `METAREC_ERR_BUFFER_TOO_SMALL`; so a call with `buf_len` 0 (and `buf`
/// NULL) asks for the size. When the buffer is too small, `buf` receives an empty string (if
/// `buf_len` > 0).
///
/// Returns `METAREC_ERR_NULL_POINTER` (`model` NULL, or `buf` NULL with `buf_len` > 0),
/// `METAREC_ERR_INVALID_ARGUMENT` (`index` >= item count) or `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `model` is NULL or a live model handle; unless `buf_len` is 0, `buf` points to `buf_len`
/// writable bytes; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_item_id(
    model: *const MetarecModel,
    index: usize,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) }?;
        let id = u32::try_from(index)
            .ok()
            .and_then(|index| model.item_id(index))
            .ok_or(Code(METAREC_ERR_INVALID_ARGUMENT))?;
        let needed = id.len() + 1;
        // SAFETY: NULL or writable (caller's contract).
        unsafe { handle::write_out_opt(out_len, needed) };
        if buf_len < needed {
            // SAFETY: `buf_len` writable bytes unless 0 (caller's contract).
            unsafe { handle::write_c_string(b"", buf, buf_len) }?;
            return Err(Code(METAREC_ERR_BUFFER_TOO_SMALL));
        }
        // SAFETY: as above.
        unsafe { handle::write_c_string(id.as_bytes(), buf, buf_len) }?;
        Ok(())
    })
}
