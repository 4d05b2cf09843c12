//! Loading, inspecting and freeing models.

use alloc::borrow::Cow;
use alloc::sync::Arc;
use core::ffi::c_char;

use metarec_runtime::format::{FieldKind, FieldSpec, Task};
use metarec_runtime::Model;

#[cfg(not(feature = "std"))]
use crate::bare::read_file;
#[cfg(feature = "std")]
use crate::file::read_file;
use crate::handle::{self, MetarecModel};
use crate::limits::METAREC_MAX_MODEL_BYTES;
use crate::status::{
    Code, Status, METAREC_ERR_BUFFER_TOO_SMALL, METAREC_ERR_INVALID_ARGUMENT, METAREC_ERR_MODEL_TOO_LARGE,
};
use crate::{guard, guard_or};

/// `side` of the field functions: the user's profile fields.
pub const METAREC_FIELDS_USER: i32 = 0;
/// `side` of the field functions: the catalogue's item fields.
pub const METAREC_FIELDS_ITEM: i32 = 1;

/// Field kind: one categorical value (e.g. `"F"`).
pub const METAREC_FIELD_CATEGORICAL: i32 = 0;
/// Field kind: several categorical values joined by a separator (e.g. `"comedy|drama"`).
pub const METAREC_FIELD_MULTI_CATEGORICAL: i32 = 1;
/// Field kind: a decimal number, mapped to a bucket (e.g. `"28"`).
pub const METAREC_FIELD_NUMERIC: i32 = 2;

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
/// Returns `METAREC_ERR_NULL_POINTER`, `METAREC_ERR_IO` (missing or unreadable file),
/// `METAREC_ERR_MODEL_TOO_LARGE` (larger than `METAREC_MAX_MODEL_BYTES`; such a file is not
/// read), or a load error (`METAREC_ERR_BAD_MAGIC` ... `METAREC_ERR_NON_FINITE_PARAMETER`).
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
/// Returns `METAREC_ERR_NULL_POINTER` (`bytes` NULL with `len` > 0, or `out_model` NULL),
/// `METAREC_ERR_MODEL_TOO_LARGE` (`len` > `METAREC_MAX_MODEL_BYTES`) or a load error
/// (`METAREC_ERR_BAD_MAGIC` ... `METAREC_ERR_NON_FINITE_PARAMETER`).
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
        let bytes = unsafe { model_bytes(bytes, len) }?;
        Ok(Model::from_bytes(bytes)?)
    };
    // SAFETY: NULL or writable for one pointer (caller's contract).
    unsafe { load(out_model, body) }
}

/// Loads and validates a model from `len` bytes in memory without copying its catalogue: the
/// model reads the item ids and rows from `bytes` for its whole life. For a file in the aligned
/// layout (format 2.4, what `trainer export` writes) whose buffer starts 4-byte aligned (as
/// `malloc` and `mmap` give) on a little-endian CPU, the catalogue is used in place; otherwise
/// (older files, an unaligned buffer) it is copied as `metarec_model_load_from_memory` copies
/// it. Everything is validated as `metarec_model_load_from_memory` validates it (checksums,
/// bounds, finite values). On success `*out_model` receives a handle to free with
/// `metarec_model_free`; on failure it is set to NULL.
///
/// The caller keeps the buffer alive and unchanged until the model handle and every session
/// created from it have been freed (sessions hold the model, and so the buffer). A failed call
/// keeps no reference to it.
///
/// Returns the codes of `metarec_model_load_from_memory`.
///
/// # Safety
/// Unless `len` is 0, `bytes` points to `len` readable bytes that stay alive and unchanged
/// until the model and every session created from it are freed; `out_model` is NULL or points
/// to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_load_from_memory_borrowed(
    bytes: *const u8,
    len: usize,
    out_model: *mut *mut MetarecModel,
) -> i32 {
    let body = || -> Status<Model> {
        // SAFETY: unless `len` is 0, `len` readable bytes (caller's contract).
        let bytes = unsafe { model_bytes(bytes, len) }?;
        // SAFETY: the bytes stay alive and unchanged until the model and its sessions are
        // freed (caller's contract), which is what `from_bytes_borrowed` asks.
        Ok(unsafe { Model::from_bytes_borrowed(bytes) }?)
    };
    // SAFETY: NULL or writable for one pointer (caller's contract).
    unsafe { load(out_model, body) }
}

/// The caller's model buffer of `len` bytes, refused above `METAREC_MAX_MODEL_BYTES`.
///
/// # Safety
/// Unless `len` is 0, `bytes` points to `len` readable bytes that stay alive for `'a`.
unsafe fn model_bytes<'a>(bytes: *const u8, len: usize) -> Status<&'a [u8]> {
    if len > METAREC_MAX_MODEL_BYTES {
        return Err(Code(METAREC_ERR_MODEL_TOO_LARGE));
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { handle::slice(bytes, len) }
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
    // SAFETY: forwarded contract.
    unsafe {
        model_text(model, buf, buf_len, out_len, |model| {
            let id = u32::try_from(index).ok().and_then(|index| model.item_id(index));
            Ok(Cow::Borrowed(id.ok_or(Code(METAREC_ERR_INVALID_ARGUMENT))?))
        })
    }
}

/// The body of every string getter: inside the panic boundary, the model behind `model`
/// (`METAREC_ERR_NULL_POINTER` when NULL), the string `text` picks from it (or its error), copied
/// into `buf` by [`copy_text`].
///
/// # Safety
/// `model` is NULL or a live model handle; unless `buf_len` is 0, `buf` points to `buf_len`
/// writable bytes; `out_len` is NULL or writable.
unsafe fn model_text(
    model: *const MetarecModel,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
    text: impl FnOnce(&Model) -> Status<Cow<'_, str>>,
) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) }?;
        let text = text(model)?;
        // SAFETY: forwarded contract.
        unsafe { copy_text(&text, buf, buf_len, out_len) }
    })
}

/// Copies `text` into a caller's buffer the way every string getter does: `*out_len` (when not
/// NULL) receives the size needed, NUL included; a buffer that is too small receives an empty
/// string (when `buf_len` > 0) and gives `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// Unless `buf_len` is 0, `buf` points to `buf_len` writable bytes; `out_len` is NULL or
/// writable.
unsafe fn copy_text(text: &str, buf: *mut c_char, buf_len: usize, out_len: *mut usize) -> Status<()> {
    let needed = text.len() + 1;
    // SAFETY: NULL or writable (caller's contract).
    unsafe { handle::write_out_opt(out_len, needed) };
    if buf_len < needed {
        // SAFETY: `buf_len` writable bytes unless 0 (caller's contract).
        unsafe { handle::write_c_string(b"", buf, buf_len) }?;
        return Err(Code(METAREC_ERR_BUFFER_TOO_SMALL));
    }
    // SAFETY: as above.
    unsafe { handle::write_c_string(text.as_bytes(), buf, buf_len) }?;
    Ok(())
}

/// Copies the name of the meta-learning method that trained the model (`"melu"`, spelled like the
/// trainer's `--method` values) into `buf`, with the conventions of `metarec_model_item_id`
/// (`*out_len` receives the size needed, NUL included; `buf_len` 0 asks for the size).
///
/// Returns `METAREC_ERR_NULL_POINTER` (`model` NULL, or `buf` NULL with `buf_len` > 0) or
/// `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// As `metarec_model_item_id`.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_method(
    model: *const MetarecModel,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { model_text(model, buf, buf_len, out_len, |model| Ok(Cow::Borrowed(model.body().method.name()))) }
}

/// Copies the name of what the model predicts into `buf`, with the conventions of
/// `metarec_model_item_id`: `"rating"` (scores are ratings on the scale of
/// `metarec_model_rating_range`) or `"click"` (scores are click probabilities; support values
/// are labels in 0..1, 1 = clicked; see `metarec_model_click_threshold`).
///
/// Returns `METAREC_ERR_NULL_POINTER` or `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// As `metarec_model_item_id`.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_task(
    model: *const MetarecModel,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { model_text(model, buf, buf_len, out_len, |model| Ok(Cow::Borrowed(model.task().name()))) }
}

/// Copies the name of what adaptation updates into `buf`, with the conventions of
/// `metarec_model_item_id`: `"all"` (every weight of the decision network, the papers'
/// models), `"head"` (its output layer only), `"user"` (the user side: the first layer's
/// bias and user-field weights, and the output bias) or `"fold-in"` (the output layer and a
/// user factor vector, solved exactly from the ratings by one ridge regression instead of
/// gradient steps). Informational: the library adapts as the model says either way.
///
/// Returns `METAREC_ERR_NULL_POINTER` or `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// As `metarec_model_item_id`.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_adapt(
    model: *const MetarecModel,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { model_text(model, buf, buf_len, out_len, |model| Ok(Cow::Borrowed(model.adapt_scope().name()))) }
}

/// Writes the rating at or above which training counted a click, for a click model: an app
/// that holds ratings rather than clicks passes `rating >= threshold ? 1 : 0` as the label.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`model` or `out_threshold` NULL) or
/// `METAREC_ERR_INVALID_ARGUMENT` (a rating model, which has no threshold).
///
/// # Safety
/// `model` is NULL or a live model handle; `out_threshold` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_click_threshold(model: *const MetarecModel, out_threshold: *mut f32) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) }?;
        let Task::Click { threshold } = model.task() else {
            return Err(Code(METAREC_ERR_INVALID_ARGUMENT));
        };
        // SAFETY: NULL or writable (caller's contract).
        unsafe { handle::write_out(out_threshold, threshold) }
    })
}

/// Writes the model's rating scale: the lowest and highest rating `metarec_session_add_rating`
/// accepts. Either output may be NULL.
///
/// Returns `METAREC_ERR_NULL_POINTER` when `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model handle; `out_min` and `out_max` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_rating_range(
    model: *const MetarecModel,
    out_min: *mut f32,
    out_max: *mut f32,
) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) }?;
        let scale = model.body().rating;
        // SAFETY: NULL or writable (caller's contract).
        unsafe {
            handle::write_out_opt(out_min, scale.min);
            handle::write_out_opt(out_max, scale.max);
        }
        Ok(())
    })
}

/// The fields of one side of the model, or `METAREC_ERR_INVALID_ARGUMENT` for an unknown side.
fn fields(model: &Model, side: i32) -> Status<&[FieldSpec]> {
    match side {
        METAREC_FIELDS_USER => Ok(&model.body().user_fields),
        METAREC_FIELDS_ITEM => Ok(&model.body().item_fields),
        _ => Err(Code(METAREC_ERR_INVALID_ARGUMENT)),
    }
}

/// One field, or `METAREC_ERR_INVALID_ARGUMENT` for an unknown side or an index out of range.
fn field(model: &Model, side: i32, index: usize) -> Status<&FieldSpec> {
    fields(model, side)?.get(index).ok_or(Code(METAREC_ERR_INVALID_ARGUMENT))
}

/// Number of fields on one side of the model: `side` is `METAREC_FIELDS_USER` (the profile
/// fields `metarec_session_set_profile` accepts) or `METAREC_FIELDS_ITEM` (the catalogue's
/// features, already mapped in the model). 0 when `model` is NULL or `side` is neither.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_field_count(model: *const MetarecModel, side: i32) -> usize {
    guard_or(0, || {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) };
        model.and_then(|model| fields(model, side)).map_or(0, <[FieldSpec]>::len)
    })
}

/// Copies the name of field `index` of `side` (see `metarec_model_field_count`) into `buf`, with
/// the conventions of `metarec_model_item_id`. User field names are what
/// `metarec_session_set_profile` takes.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`model` NULL, or `buf` NULL with `buf_len` > 0),
/// `METAREC_ERR_INVALID_ARGUMENT` (unknown `side`, `index` >= the field count) or
/// `METAREC_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// As `metarec_model_item_id`.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_field_name(
    model: *const MetarecModel,
    side: i32,
    index: usize,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        model_text(model, buf, buf_len, out_len, |model| Ok(Cow::Borrowed(field(model, side, index)?.name.as_str())))
    }
}

/// Describes field `index` of `side`: `*out_kind` receives `METAREC_FIELD_CATEGORICAL` (one
/// value), `METAREC_FIELD_MULTI_CATEGORICAL` (several values joined by a separator, e.g.
/// `"comedy|drama"`) or `METAREC_FIELD_NUMERIC` (a decimal number, put in a bucket);
/// `*out_vocabulary_size` the number of values the model knows: vocabulary entries, or buckets of
/// a numeric field. A value outside the vocabulary (or a number that does not parse) is not an
/// error: it maps to the field's "unknown" embedding, as in training. Either output may be NULL.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`model` NULL) or `METAREC_ERR_INVALID_ARGUMENT` (unknown
/// `side`, `index` >= the field count).
///
/// # Safety
/// `model` is NULL or a live model handle; `out_kind` and `out_vocabulary_size` are NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_model_field_info(
    model: *const MetarecModel,
    side: i32,
    index: usize,
    out_kind: *mut i32,
    out_vocabulary_size: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_ref(model) }?;
        let field = field(model, side, index)?;
        let kind = match field.kind {
            FieldKind::Categorical => METAREC_FIELD_CATEGORICAL,
            FieldKind::MultiCategorical { .. } => METAREC_FIELD_MULTI_CATEGORICAL,
            FieldKind::Numeric { .. } => METAREC_FIELD_NUMERIC,
        };
        // Row 0 of every table is the "unknown" row; the others are the known values.
        let known = field.rows().saturating_sub(1);
        // SAFETY: NULL or writable (caller's contract).
        unsafe {
            handle::write_out_opt(out_kind, kind);
            handle::write_out_opt(out_vocabulary_size, known);
        }
        Ok(())
    })
}
