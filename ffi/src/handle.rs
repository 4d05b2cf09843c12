//! Every conversion between C pointers and Rust values lives here, so the entry points stay
//! free of raw pointer arithmetic: opaque handles, C strings, caller-owned arrays and
//! out-parameters.
//!
//! Each helper checks what it can (NULL, alignment, size overflow) and turns a violation into a
//! status code; what it cannot check (that a pointer is live and points to what the header says)
//! is the caller's contract, stated in the `# Safety` sections of the entry points.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ffi::{c_char, CStr};
use core::mem::size_of;

use metarec_runtime::{Model, Session};

use crate::limits::METAREC_MAX_STRING_LEN;
use crate::status::{
    Code, Status, METAREC_ERR_INVALID_ARGUMENT, METAREC_ERR_INVALID_UTF8, METAREC_ERR_NULL_POINTER,
    METAREC_ERR_STRING_TOO_LONG,
};

/// A loaded model: immutable, reference-counted, safe to share between threads.
///
/// Obtained from `metarec_model_load` or `metarec_model_load_from_memory`, released with
/// `metarec_model_free`. Sessions keep their own reference, so the model may be freed while
/// sessions created from it are still in use.
#[derive(Debug)]
pub struct MetarecModel {
    // Never constructed: a `*MetarecModel` is really an `Arc<Model>` raw pointer. The zero-sized
    // field keeps the type opaque in the header and unconstructible in Rust.
    _opaque: [u8; 0],
}

/// One user's session: profile, support ratings and adapted weights.
///
/// Created with `metarec_session_new`, released with `metarec_session_free`. A session may be
/// moved between threads but must be used by one thread at a time.
#[derive(Debug)]
pub struct MetarecSession {
    pub(crate) session: Session<Arc<Model>>,
}

impl MetarecSession {
    pub(crate) fn new(model: Arc<Model>) -> Self {
        MetarecSession { session: Session::new(model) }
    }
}

/// Gives an `Arc<Model>` to C.
pub(crate) fn model_into_raw(model: Arc<Model>) -> *mut MetarecModel {
    Arc::into_raw(model).cast_mut().cast::<MetarecModel>()
}

/// Borrows the model behind a handle.
///
/// # Safety
/// `model` is NULL or a live handle from [`model_into_raw`], valid for `'a`.
pub(crate) unsafe fn model_ref<'a>(model: *const MetarecModel) -> Status<&'a Model> {
    // SAFETY: a non-NULL handle is an `Arc<Model>` raw pointer that stays live while the
    // caller's reference does (caller's contract); `as_ref` maps NULL to None.
    unsafe { model.cast::<Model>().as_ref() }.ok_or(Code(METAREC_ERR_NULL_POINTER))
}

/// A new strong reference to the model behind a handle (the handle keeps its own).
///
/// # Safety
/// As [`model_ref`].
pub(crate) unsafe fn model_arc(model: *const MetarecModel) -> Status<Arc<Model>> {
    if model.is_null() {
        return Err(Code(METAREC_ERR_NULL_POINTER));
    }
    let raw = model.cast::<Model>();
    // SAFETY: `raw` came from `Arc::into_raw` and that reference is still live (caller's
    // contract), so adding a count and then taking ownership of exactly that count is balanced.
    unsafe {
        Arc::increment_strong_count(raw);
        Ok(Arc::from_raw(raw))
    }
}

/// Drops the reference a handle owns.
///
/// # Safety
/// `model` is NULL or a live handle from [`model_into_raw`], not used again afterwards.
pub(crate) unsafe fn model_release(model: *mut MetarecModel) {
    if !model.is_null() {
        // SAFETY: the handle owns one strong count from `Arc::into_raw` (caller's contract).
        drop(unsafe { Arc::from_raw(model.cast_const().cast::<Model>()) });
    }
}

/// Gives a session to C.
pub(crate) fn session_into_raw(session: Box<MetarecSession>) -> *mut MetarecSession {
    Box::into_raw(session)
}

/// Borrows the session behind a handle mutably.
///
/// # Safety
/// `session` is NULL or a live handle from [`session_into_raw`], not used by anyone else for `'a`.
pub(crate) unsafe fn session_mut<'a>(session: *mut MetarecSession) -> Status<&'a mut MetarecSession> {
    // SAFETY: a non-NULL handle is a live, exclusively used `Box` pointer (caller's contract).
    unsafe { session.as_mut() }.ok_or(Code(METAREC_ERR_NULL_POINTER))
}

/// Frees a session.
///
/// # Safety
/// `session` is NULL or a live handle from [`session_into_raw`], not used again afterwards.
pub(crate) unsafe fn session_release(session: *mut MetarecSession) {
    if !session.is_null() {
        // SAFETY: the handle is the pointer `Box::into_raw` returned (caller's contract).
        drop(unsafe { Box::from_raw(session) });
    }
}

/// The bytes of a NUL-terminated C string (without the NUL).
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string that stays unchanged for `'a`.
pub(crate) unsafe fn c_bytes<'a>(text: *const c_char) -> Status<&'a [u8]> {
    if text.is_null() {
        return Err(Code(METAREC_ERR_NULL_POINTER));
    }
    // SAFETY: non-NULL and NUL-terminated (caller's contract).
    Ok(unsafe { CStr::from_ptr(text) }.to_bytes())
}

/// A NUL-terminated C string of at most [`METAREC_MAX_STRING_LEN`] bytes, as UTF-8. At most
/// `METAREC_MAX_STRING_LEN + 1` bytes are read: a longer string (or one whose NUL is missing
/// within that many bytes) is `METAREC_ERR_STRING_TOO_LONG`.
///
/// # Safety
/// As [`c_bytes`].
pub(crate) unsafe fn c_str<'a>(text: *const c_char) -> Status<&'a str> {
    if text.is_null() {
        return Err(Code(METAREC_ERR_NULL_POINTER));
    }
    let mut len = 0;
    loop {
        // SAFETY: the string is NUL-terminated (caller's contract) and no byte before `len` was
        // the NUL, so byte `len` is still part of it.
        if unsafe { *text.add(len) } == 0 {
            break;
        }
        len += 1;
        if len > METAREC_MAX_STRING_LEN {
            return Err(Code(METAREC_ERR_STRING_TOO_LONG));
        }
    }
    // SAFETY: the `len` bytes before the NUL were just read, so they are live and readable;
    // they stay unchanged for `'a` (caller's contract).
    let bytes = unsafe { core::slice::from_raw_parts(text.cast::<u8>(), len) };
    core::str::from_utf8(bytes).map_err(|_| Code(METAREC_ERR_INVALID_UTF8))
}

/// Checks what can be checked of a caller's array of `len` elements; an empty array may be NULL.
fn check_array<T>(ptr: *const T, len: usize) -> Status<bool> {
    if len == 0 {
        return Ok(false);
    }
    if ptr.is_null() {
        return Err(Code(METAREC_ERR_NULL_POINTER));
    }
    let too_big = len.checked_mul(size_of::<T>()).is_none_or(|bytes| bytes > isize::MAX as usize);
    if !ptr.is_aligned() || too_big {
        return Err(Code(METAREC_ERR_INVALID_ARGUMENT));
    }
    Ok(true)
}

/// A caller's read-only array.
///
/// # Safety
/// Unless `len` is 0, `ptr` points to `len` initialised elements left unchanged for `'a`.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Status<&'a [T]> {
    if !check_array(ptr, len)? {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, aligned, at most isize::MAX bytes (checked); live and initialised
    // for `len` elements (caller's contract).
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// A caller's writable array.
///
/// # Safety
/// Unless `len` is 0, `ptr` points to `len` writable elements nobody else touches for `'a`
/// (the elements are plain numbers, so any bit pattern is a valid initial value).
pub(crate) unsafe fn slice_mut<'a, T: Copy>(ptr: *mut T, len: usize) -> Status<&'a mut [T]> {
    if !check_array(ptr.cast_const(), len)? {
        return Ok(&mut []);
    }
    // SAFETY: non-NULL, aligned, at most isize::MAX bytes (checked); writable and exclusively
    // ours for `len` elements (caller's contract). `T` is a plain number type for every caller.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// Checks an out-parameter without writing it.
pub(crate) fn check_out<T>(out: *mut T) -> Status<()> {
    if out.is_null() {
        Err(Code(METAREC_ERR_NULL_POINTER))
    } else if !out.is_aligned() {
        Err(Code(METAREC_ERR_INVALID_ARGUMENT))
    } else {
        Ok(())
    }
}

/// Writes an out-parameter.
///
/// # Safety
/// `out` is NULL or points to writable memory for one `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> Status<()> {
    check_out(out)?;
    // SAFETY: non-NULL and aligned (checked), writable (caller's contract); `write` drops no
    // old value, which is right for plain C values.
    unsafe { out.write(value) };
    Ok(())
}

/// Writes an out-parameter if the caller passed one (optional outputs).
///
/// # Safety
/// As [`write_out`].
pub(crate) unsafe fn write_out_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: forwarded contract; a misaligned pointer only gives an ignored error here.
        let _ = unsafe { write_out(out, value) };
    }
}

/// Copies `text` into a caller's buffer of `buf_len` bytes, NUL-terminated, truncating to fit
/// (nothing is written when `buf_len` is 0, and then `buf` may be NULL). Returns whether the
/// whole text fitted.
///
/// # Safety
/// Unless `buf_len` is 0, `buf` points to `buf_len` writable bytes.
pub(crate) unsafe fn write_c_string(text: &[u8], buf: *mut c_char, buf_len: usize) -> Status<bool> {
    // SAFETY: forwarded contract (`c_char` is a plain byte).
    let buf = unsafe { slice_mut(buf, buf_len) }?;
    let Some(room) = buf.len().checked_sub(1) else {
        // Not even room for the NUL.
        return Ok(false);
    };
    let copied = text.len().min(room);
    for (dst, src) in buf.iter_mut().zip(&text[..copied]) {
        *dst = *src as c_char;
    }
    buf[copied] = 0;
    Ok(copied == text.len())
}
