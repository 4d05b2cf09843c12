//! Federated contributions: one user's clipped first-order meta-update as a blob the app sends
//! to the server however it likes.

use crate::guard;
use crate::handle::{self, MetarecSession};
use crate::status::{Code, Status, METAREC_ERR_BUFFER_TOO_SMALL};

/// Computes this user's first-order meta-update from the session's support ratings (FOMAML on
/// an 80/20 support/query split of them, a shuffle seeded by the model id: adapt on the first part with the model's
/// own inner loop, then the gradient of the second part's loss at the adapted weights over every
/// decision-MLP weight and bias; for a fold-in model, the default product model, also over the
/// fold-in's log ridge weights, through the solve), clips it to L2 norm `clip_norm`, and writes
/// it into `out_buf` as a versioned, CRC-checked blob bound to the model (a model id derived from
/// its parameters, and its schema hash). The blob holds the update only: no rating count, loss
/// or metric; it is `(32 + 4 × values + 4)` bytes. Embeddings, item biases and item factors
/// (whose gradients would name the rated items), learning rates and the neighbour memory are
/// not part of it.
///
/// `*out_len` (if `out_len` is not NULL) receives the blob's size both on success and on
/// `METAREC_ERR_BUFFER_TOO_SMALL`, so a call with `buf_len` 0 (and `out_buf` NULL) asks for the
/// size without computing anything. After a call that computed (`METAREC_OK` or
/// `METAREC_ERR_NON_FINITE_PARAMETER`) the session scores with the meta-learned weights (call
/// `metarec_session_adapt` again); profile and ratings are kept. The other errors leave the
/// session as it was.
///
/// Returns `METAREC_ERR_NULL_POINTER` (`session` NULL, or `out_buf` NULL with `buf_len` > 0),
/// `METAREC_ERR_INVALID_CLIP_NORM` (`clip_norm` NaN, infinite or not positive),
/// `METAREC_ERR_NOT_CONTRIBUTABLE` (a factor model, several initialisations, an adaptation
/// scope `head` or `user`, or zero inner steps), `METAREC_ERR_TOO_FEW_RATINGS` (fewer than
/// two support ratings), `METAREC_ERR_BUFFER_TOO_SMALL` (nothing is computed or written) or
/// `METAREC_ERR_NON_FINITE_PARAMETER` (the update overflowed). Those checks come in that order.
///
/// # Safety
/// `session` is NULL or a live session handle not in use by another thread; unless `buf_len` is
/// 0, `out_buf` points to `buf_len` writable bytes; `out_len` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn metarec_session_contribute(
    session: *mut MetarecSession,
    clip_norm: f32,
    out_buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: NULL or a live handle used by this thread only (caller's contract).
        let session = unsafe { handle::session_mut(session) }?;
        contribute(session, clip_norm, out_buf, buf_len, out_len)
    })
}

/// The body of [`metarec_session_contribute`], inside the panic boundary.
fn contribute(
    session: &mut MetarecSession,
    clip_norm: f32,
    out_buf: *mut u8,
    buf_len: usize,
    out_len: *mut usize,
) -> Status<()> {
    session.session.check_contribution(clip_norm)?;
    let needed = session.session.contribution_len();
    // SAFETY: NULL or writable (caller's contract).
    unsafe { handle::write_out_opt(out_len, needed) };
    if buf_len < needed {
        return Err(Code(METAREC_ERR_BUFFER_TOO_SMALL));
    }
    // SAFETY: `out_buf` holds `buf_len` writable bytes (caller's contract; checked non-NULL and
    // in range by `slice_mut`).
    let out = unsafe { handle::slice_mut(out_buf, buf_len) }?;
    let blob = session.session.contribute(clip_norm)?;
    let dest = out.get_mut(..blob.len()).ok_or(Code(METAREC_ERR_BUFFER_TOO_SMALL))?;
    dest.copy_from_slice(&blob);
    Ok(())
}
