//! Sessions: one user's profile, support ratings, adaptation and scoring.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int};

use crate::handle::{self, MetarecModel, MetarecSession};
use crate::limits::METAREC_MAX_CANDIDATES;
use crate::status::{Code, Status, METAREC_ERR_INVALID_ARGUMENT, METAREC_ERR_TOO_MANY_CANDIDATES};
use crate::{guard, guard_or};

/// Creates a session for one user on `model`. The session holds its own reference to the
/// model, so the model handle may be freed before the session. On success `*out_session`
/// receives a handle to free with `metarec_session_free`; on failure it is set to NULL.
///
/// Returns `METAREC_ERR_NULL_POINTER` when `model` or `out_session` is NULL.
///
/// # Safety
/// `model` is NULL or a live model handle; `out_session` is NULL or points to writable storage
/// for one pointer.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_new(model: *const MetarecModel, out_session: *mut *mut MetarecSession) -> i32 {
    guard(|| {
        handle::check_out(out_session)?;
        // SAFETY: checked non-NULL and aligned, writable (caller's contract).
        unsafe { handle::write_out(out_session, core::ptr::null_mut()) }?;
        // SAFETY: NULL or a live handle (caller's contract).
        let model = unsafe { handle::model_arc(model) }?;
        let session = handle::session_into_raw(Box::new(MetarecSession::new(model)));
        // SAFETY: as above.
        unsafe { handle::write_out(out_session, session) }
    })
}

/// Frees a session (and its reference to the model). NULL is a no-op.
///
/// # Safety
/// `session` is NULL or a handle from `metarec_session_new` that has not been freed and is not
/// in use by another thread; it must not be used after this call.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_free(session: *mut MetarecSession) {
    guard_or((), || {
        // SAFETY: NULL or a live, unshared handle, never used again (caller's contract).
        unsafe { handle::session_release(session) }
    });
}

/// Runs `body` on the session behind a handle, behind the panic boundary.
///
/// # Safety
/// `session` is NULL or a live handle not in use by another thread.
unsafe fn with_session(session: *mut MetarecSession, body: impl FnOnce(&mut MetarecSession) -> Status<()>) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle used by this thread only (caller's contract).
        let session = unsafe { handle::session_mut(session) }?;
        body(session)
    })
}

/// Sets one profile field of the user (e.g. `"age"`, `"25"`), replacing an earlier value of the
/// same field. Values the model does not know map to its "unknown" embedding. Invalidates an
/// earlier adaptation.
///
/// Returns `METAREC_ERR_NULL_POINTER`, `METAREC_ERR_INVALID_UTF8`,
/// `METAREC_ERR_STRING_TOO_LONG` (`field` or `value` longer than `METAREC_MAX_STRING_LEN` bytes)
/// or `METAREC_ERR_UNKNOWN_FIELD` (the model has no such user field).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; `field` and `value`
/// are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_set_profile(
    session: *mut MetarecSession,
    field: *const c_char,
    value: *const c_char,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let (field, value) = unsafe { (handle::c_str(field)?, handle::c_str(value)?) };
        Ok(s.session.set_profile(field, value)?)
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Adds one of the user's own ratings to the support set that adaptation learns from.
///
/// Returns `METAREC_ERR_NULL_POINTER`, `METAREC_ERR_INVALID_UTF8`,
/// `METAREC_ERR_STRING_TOO_LONG` (an id longer than `METAREC_MAX_STRING_LEN` bytes),
/// `METAREC_ERR_UNKNOWN_ITEM`, `METAREC_ERR_INVALID_RATING` (NaN, infinite or outside the
/// model's scale) or `METAREC_ERR_TOO_MANY_RATINGS` (the session holds
/// `METAREC_MAX_SUPPORT_RATINGS` already).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; `item_id` is NULL
/// or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_add_rating(
    session: *mut MetarecSession,
    item_id: *const c_char,
    rating: f32,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        // SAFETY: NULL or NUL-terminated (caller's contract).
        let item_id = unsafe { handle::c_str(item_id) }?;
        Ok(s.session.add_rating(item_id, rating)?)
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Removes every support rating (the profile stays).
///
/// Returns `METAREC_ERR_NULL_POINTER` when `session` is NULL.
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_clear_ratings(session: *mut MetarecSession) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        s.session.clear_ratings();
        Ok(())
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Adapts the model to the user's support ratings with `steps` gradient steps, starting again
/// from the meta-learned weights; `steps` 0 uses the model's own step count (the one it was
/// meta-trained with). Scores afterwards use the adapted weights. A model that adapts by the
/// fold-in (`metarec_model_adapt` says `"fold-in"`, or `metarec_model_method` `"mf"`) solves
/// its part once, exactly, whatever the step count.
///
/// Returns `METAREC_ERR_NULL_POINTER`, `METAREC_ERR_TOO_MANY_STEPS` (`steps` >
/// `METAREC_MAX_STEPS`; the session is left as it was) or `METAREC_ERR_NON_FINITE_PARAMETER`
/// (a fold-in whose system is not numerically solvable for this user: the model's ridge
/// weights are too small for the features it computes; the session then scores with the
/// meta-learned weights).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_adapt(session: *mut MetarecSession, steps: u32) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        if steps == 0 {
            s.session.adapt()?;
        } else {
            s.session.adapt_steps(steps)?;
        }
        Ok(())
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Predicts the user's rating of `count` items given by id: `out_scores[i]` receives the score
/// of `item_ids[i]`. With `count` 0 nothing happens and both arrays may be NULL. On failure the
/// contents of `out_scores` are unspecified.
///
/// Returns `METAREC_ERR_NULL_POINTER` (also for a NULL id), `METAREC_ERR_TOO_MANY_CANDIDATES`
/// (`count` > `METAREC_MAX_CANDIDATES`; checked before the arrays are read),
/// `METAREC_ERR_INVALID_UTF8`, `METAREC_ERR_STRING_TOO_LONG` (an id longer than
/// `METAREC_MAX_STRING_LEN` bytes) or `METAREC_ERR_UNKNOWN_ITEM`.
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; unless `count` is 0,
/// `item_ids` points to `count` pointers, each NULL or a NUL-terminated string, and `out_scores`
/// to `count` writable floats.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_score(
    session: *mut MetarecSession,
    item_ids: *const *const c_char,
    count: usize,
    out_scores: *mut f32,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        if count > METAREC_MAX_CANDIDATES {
            return Err(Code(METAREC_ERR_TOO_MANY_CANDIDATES));
        }
        // SAFETY: unless `count` is 0, `count` readable pointers and `count` writable floats
        // that the caller does not touch during the call (caller's contract).
        let (pointers, out) = unsafe { (handle::slice(item_ids, count)?, handle::slice_mut(out_scores, count)?) };
        let ids = pointers
            .iter()
            // SAFETY: each id is NULL or NUL-terminated (caller's contract).
            .map(|id| unsafe { handle::c_str(*id) })
            .collect::<Status<Vec<&str>>>()?;
        Ok(s.session.score_ids(&ids, out)?)
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Predicts the user's rating of every catalogue item: `out_scores[i]` receives the score of
/// item index `i` (see `metarec_model_item_id`). `len` must equal `metarec_model_item_count`
/// exactly. On failure the contents of `out_scores` are unspecified.
///
/// Returns `METAREC_ERR_NULL_POINTER` or `METAREC_ERR_INVALID_ARGUMENT` (`len` differs from
/// the item count, smaller or larger).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; unless `len` is 0,
/// `out_scores` points to `len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_score_all(
    session: *mut MetarecSession,
    out_scores: *mut f32,
    len: usize,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        // SAFETY: unless `len` is 0, `len` writable floats (caller's contract).
        let out = unsafe { handle::slice_mut(out_scores, len) }?;
        if len != s.session.model().item_count() {
            return Err(Code(METAREC_ERR_INVALID_ARGUMENT));
        }
        Ok(s.session.score_all(out)?)
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Ranks the catalogue for the user and returns the `k` best items: highest score first, ties
/// broken by the lower item index. When `exclude_rated` is non-zero, items in the support set
/// (rated with `metarec_session_add_rating`) are left out. `*out_len` receives the number of
/// items written, `min(k, candidates)`; `out_indices[0..*out_len]` receive item indices (see
/// `metarec_model_item_id`) and, if `out_scores` is not NULL, `out_scores[0..*out_len]` their
/// scores. `*out_len` is 0 on failure.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`session` or `out_len` NULL, or `out_indices` NULL with
/// `k` > 0 and a non-empty catalogue).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; `out_len` is NULL
/// or writable; `out_indices` and `out_scores` (when not NULL) have room for
/// `min(k, metarec_model_item_count(model))` elements.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_top_k(
    session: *mut MetarecSession,
    k: usize,
    exclude_rated: c_int,
    out_indices: *mut usize,
    out_scores: *mut f32,
    out_len: *mut usize,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        // SAFETY: NULL or writable (caller's contract).
        unsafe { handle::write_out(out_len, 0) }?;
        let room = k.min(s.session.model().item_count());
        // SAFETY: room for `min(k, item count)` elements in each non-NULL array (caller's
        // contract).
        let indices_out = unsafe { handle::slice_mut(out_indices, room) }?;
        let scores_out = if out_scores.is_null() {
            None
        } else {
            // SAFETY: as above.
            Some(unsafe { handle::slice_mut(out_scores, room) }?)
        };
        let ranked = s.session.top_k(room, exclude_rated != 0)?;
        for (slot, r) in indices_out.iter_mut().zip(ranked) {
            *slot = r.item as usize;
        }
        for (slot, r) in scores_out.into_iter().flatten().zip(ranked) {
            *slot = r.score;
        }
        // SAFETY: as for the first write.
        unsafe { handle::write_out(out_len, ranked.len()) }
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// How `metarec_session_top_k` ranks the catalogue from now on. `candidates` < 0 (the
/// default): exhaustively below 20,000 items, through a shortlist of 1 in 50 items (at least
/// 1,024) above. 0: always exhaustively (every item scored by the network). n > 0: through a
/// shortlist of n items: an additive surrogate of the user's adapted network ranks every item
/// with one look-up per item field, and the network re-scores its best n (at least k plus the
/// rated items); exhaustively when that is the whole catalogue. The scores returned are always
/// the network's; a shortlist may miss a true top-k item the surrogate ranked too low (the
/// recall is measured by `trainer bench device --items N`). Factor models and fold-in heads
/// always rank exhaustively.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`session` NULL).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_set_ranking(session: *mut MetarecSession, candidates: i64) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        let ranking = match candidates {
            ..0 => metarec_runtime::Ranking::Auto,
            0 => metarec_runtime::Ranking::Exhaustive,
            n => metarec_runtime::Ranking::Shortlist { candidates: usize::try_from(n).unwrap_or(usize::MAX) },
        };
        s.session.set_ranking(ranking);
        Ok(())
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// One stored user that set a personalized learning rate (AT-PAML models).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MetarecNeighbour {
    /// Entry of the model's neighbour table.
    pub entry: u32,
    /// Squared distance between the user's key and the entry's key.
    pub distance: f32,
    /// Normalised kernel weight of the entry.
    pub weight: f32,
    /// The entry's stored learning rate.
    pub rate: f32,
}

/// How the last `metarec_session_adapt` adapted.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MetarecExplanation {
    /// 1 if an adaptation ran (ratings present, steps > 0), else 0.
    pub adapted: i32,
    /// The initialisation adapted from (HML models choose one per user; 0 otherwise).
    pub init: u32,
    /// The scalar inner learning rate used; NaN when every parameter has its own (Meta-SGD).
    pub learning_rate: f32,
    /// The learning-rate network's part alpha'(h) (PAML family); NaN for other methods.
    pub network_rate: f32,
    /// Number of stored users that set the rate (AT-PAML); at most 16.
    pub neighbour_count: usize,
}

/// Explains the last adaptation: the learning rate used, its network part, the chosen
/// initialisation, and (AT-PAML) the stored users whose rates were added, nearest first. Writes
/// `*out`, and up to `capacity` neighbours into `out_neighbours` (which may be NULL when
/// `capacity` is 0; `out->neighbour_count` tells how many there are in all).
///
/// Returns `METAREC_ERR_NULL_POINTER`.
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; `out` is NULL or
/// writable; unless `capacity` is 0, `out_neighbours` points to `capacity` writable entries.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_explain(
    session: *mut MetarecSession,
    out: *mut MetarecExplanation,
    out_neighbours: *mut MetarecNeighbour,
    capacity: usize,
) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        crate::handle::check_out(out)?;
        let explanation = s.session.explain();
        // SAFETY: NULL or `capacity` writable entries (caller's contract), checked by the helper.
        let slots = unsafe { crate::handle::slice_mut(out_neighbours, capacity) }?;
        for (slot, n) in slots.iter_mut().zip(&explanation.neighbours) {
            *slot = MetarecNeighbour { entry: n.entry, distance: n.distance, weight: n.weight, rate: n.rate };
        }
        let value = MetarecExplanation {
            adapted: i32::from(explanation.adapted),
            init: explanation.init,
            learning_rate: explanation.learning_rate.unwrap_or(f32::NAN),
            network_rate: explanation.network_rate.unwrap_or(f32::NAN),
            neighbour_count: explanation.neighbours.len(),
        };
        // SAFETY: `out` was checked non-NULL and aligned above; writable by the caller's contract.
        unsafe { crate::handle::write_out(out, value) }
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// How a fold-in solved the user's bias and factors: a matrix-factorisation model's
/// (`metarec_model_method` says `"mf"`) or a fold-in head's (`metarec_model_adapt` says
/// `"fold-in"`; its ridge weights are vectors, so the fields hold their means, see below).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MetarecFoldIn {
    /// 1 if a fold-in ran (ratings present, steps > 0), else 0: scores are then `mu + b_item`.
    pub adapted: i32,
    /// Support ratings the ridge regression ran over (0 when none ran).
    pub support_count: u32,
    /// Ridge weight on the user's factors (a fold-in head: the mean over its item factors, or
    /// over its hidden features when it has none, after the method's learning rate; 0 before
    /// its first fold-in).
    pub regularisation: f32,
    /// Ridge weight on the user's bias (a fold-in head: after the method's learning rate).
    pub bias_regularisation: f32,
    /// The solved user bias (a fold-in head: the change of its output bias; 0 when no fold-in
    /// ran).
    pub user_bias: f32,
}

/// Explains the last adaptation of a session on a model that folds users in (a matrix
/// factorisation, or a fold-in head): whether the fold-in ran, over how many ratings, its ridge
/// weights and the user bias it found. `metarec_session_explain` works on such a session too.
///
/// Returns `METAREC_ERR_NULL_POINTER` or `METAREC_ERR_INVALID_ARGUMENT` (a model that adapts by
/// gradient steps, which has no fold-in).
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_explain_fold_in(session: *mut MetarecSession, out: *mut MetarecFoldIn) -> i32 {
    let body = |s: &mut MetarecSession| -> Status<()> {
        crate::handle::check_out(out)?;
        let model = s.session.model();
        let mut value = match (model.factors(), model.fold_in_head()) {
            (Some(factors), _) => MetarecFoldIn {
                regularisation: factors.regularisation,
                bias_regularisation: factors.bias_regularisation,
                ..MetarecFoldIn::default()
            },
            (None, Some(_)) => MetarecFoldIn::default(),
            (None, None) => return Err(Code(METAREC_ERR_INVALID_ARGUMENT)),
        };
        if let Some(fold_in) = s.session.explain().fold_in {
            value.adapted = 1;
            value.support_count = fold_in.support;
            value.regularisation = fold_in.regularisation;
            value.bias_regularisation = fold_in.bias_regularisation;
            value.user_bias = fold_in.user_bias;
        }
        // SAFETY: `out` was checked non-NULL and aligned above; writable by the caller's contract.
        unsafe { crate::handle::write_out(out, value) }
    };
    // SAFETY: NULL or a live session used by this thread only (caller's contract).
    unsafe { with_session(session, body) }
}

/// Bytes the session holds (its adapted weights and scratch; the shared model is not counted),
/// or 0 for NULL.
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_memory_bytes(session: *mut MetarecSession) -> usize {
    crate::guard_or(0, || {
        // SAFETY: NULL or a live session used by this thread only (caller's contract).
        match unsafe { crate::handle::session_mut(session) } {
            Ok(s) => s.session.memory_bytes(),
            Err(_) => 0,
        }
    })
}
