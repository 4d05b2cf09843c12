//! The K nearest stored keys of AT-PAML's neighbour table: the linear scan the session runs, and
//! the distance kernels any other search must share to return exactly the same list.
//!
//! AT-PAML personalises a user's learning rate with the Gaussian-kernel-weighted rates of the K
//! stored users whose keys lie nearest to the user's own key. The table holds up to a few
//! thousand unit keys of width 16 and K is 4, so the search runs once per personalisation on a
//! phone or a microcontroller: it must need no std, never panic, and — because the trainer's and
//! the device's results are compared to 1e-4 and an explanation names the entries used — give
//! one deterministic answer that does not depend on how it was found.
//!
//! Every search shares one definition of "nearest":
//!
//! * the distance is the squared Euclidean distance computed in `f32` as the sum, in dimension
//!   order, of `(stored - query)²` ([`squared_distance`]);
//! * the result is sorted by distance ascending, and of two entries at the same distance the lower
//!   entry index comes first (and is the one kept when only one fits).
//!
//! [`nearest_scan`] visits every entry: O(entries · key_dim), no extra memory, the reference and
//! the session's search. The trainer's static kd-tree (`metarec_trainer::kdtree`, which `trainer
//! bench neighbours` measures against the scan) computes its distances with
//! [`squared_distance`], [`squared_distances`] and [`each_distance`] and sizes its result with
//! [`result_len`], so it returns the scan's list bit for bit; on the keys of trained AT-PAML
//! tables it saves too little to ship (see the session's neighbour term).

use core::cmp::Ordering;

use crate::format::MAX_NEIGHBOURS;

/// A search's result: `(entry index, squared distance)`, nearest first, at most
/// [`MAX_NEIGHBOURS`] (a fixed-capacity list, so searching never allocates for it).
pub type Nearest = heapless::Vec<(u32, f32), MAX_NEIGHBOURS>;

/// The squared Euclidean distance between a stored key and a query, as every search computes
/// it: `Σ (stored[i] - query[i])²` in `f32`, summed in dimension order from zero. Pairs beyond
/// the shorter slice are ignored.
#[inline]
pub fn squared_distance(stored: &[f32], query: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in stored.iter().zip(query) {
        sum += (a - b) * (a - b);
    }
    sum
}

/// [`squared_distance`] of `N` stored keys at once. Each key keeps its own sum in dimension
/// order, so every result is bit for bit the single-key one; the independent sums only let the
/// processor overlap them (and put them side by side in vector lanes) instead of waiting on one
/// chain of dependent additions per key.
#[inline(always)]
pub fn squared_distances<const N: usize>(rows: [&[f32]; N], query: &[f32]) -> [f32; N] {
    let mut sums = [0.0f32; N];
    if rows.iter().any(|row| row.len() != query.len()) {
        for (sum, row) in sums.iter_mut().zip(rows) {
            *sum = squared_distance(row, query);
        }
        return sums;
    }
    for (i, q) in query.iter().enumerate() {
        for (sum, row) in sums.iter_mut().zip(rows) {
            if let Some(a) = row.get(i) {
                *sum += (a - q) * (a - q);
            }
        }
    }
    sums
}

/// Rows of `block`, `key_dim` wide, as an array (empty rows if it holds fewer than `N`).
#[inline(always)]
fn rows_of<const N: usize>(block: &[f32], key_dim: usize) -> [&[f32]; N] {
    let mut rows = block.chunks_exact(key_dim);
    core::array::from_fn(|_| rows.next().unwrap_or(&[]))
}

/// Calls `visit(entry, distance)` for the consecutive rows of `keys` (row `i` is entry
/// `first + i`), in order, eight rows at a time (by [`squared_distances`]); a trailing partial
/// row is not visited, and with `key_dim` 0 nothing is.
#[inline(always)]
pub fn each_distance(keys: &[f32], key_dim: usize, first: usize, query: &[f32], mut visit: impl FnMut(usize, f32)) {
    if key_dim == 0 {
        return;
    }
    let mut entry = first;
    let mut blocks = keys.chunks_exact(8 * key_dim);
    for block in blocks.by_ref() {
        for (j, distance) in squared_distances(rows_of::<8>(block, key_dim), query).into_iter().enumerate() {
            visit(entry + j, distance);
        }
        entry += 8;
    }
    let mut rest = blocks.remainder().chunks_exact(4 * key_dim);
    for block in rest.by_ref() {
        for (j, distance) in squared_distances(rows_of::<4>(block, key_dim), query).into_iter().enumerate() {
            visit(entry + j, distance);
        }
        entry += 4;
    }
    for (j, row) in rest.remainder().chunks_exact(key_dim).enumerate() {
        visit(entry + j, squared_distance(row, query));
    }
}

/// The number of entries a search returns: `k` clamped to [`MAX_NEIGHBOURS`] and to `entries`.
pub fn result_len(k: usize, entries: usize) -> usize {
    k.min(MAX_NEIGHBOURS).min(entries)
}

/// The session's insertion rule: before the first listed entry that is strictly farther, so on
/// equal distances the earlier visited (lower) entry stays ahead; nothing beyond `wanted`.
#[inline(always)]
fn scan_insert(out: &mut Nearest, wanted: usize, entry: usize, distance: f32) {
    if out.len() == wanted {
        // Fast rejection, exact: the non-NaN distances in the list are ascending (each is
        // inserted before the first strictly greater one), so when the last is not NaN nothing
        // listed is greater than a distance that is not less than it.
        if let Some(&(_, last)) = out.last() {
            if !last.is_nan() && distance.partial_cmp(&last) != Some(Ordering::Less) {
                return;
            }
        }
    }
    let position = out.iter().position(|&(_, d)| distance < d).unwrap_or(out.len());
    if position < wanted {
        if out.len() == wanted {
            out.pop();
        }
        // Cannot fail: the list holds fewer than `wanted` <= 16 entries here.
        let _ = out.insert(position, (entry as u32, distance));
    }
}

/// The K entries of `keys` (`entries × key_dim`, row-major) nearest to `query`, by a linear scan.
///
/// `out` is cleared, then receives `(entry index, squared distance)` sorted by distance
/// ascending; on equal distances the lower entry index comes first. At most
/// `min(k, 16, entries)` pairs are returned. This is the search the session has always run
/// (distances by [`squared_distance`], entries visited in index order), with the distances of
/// eight entries computed side by side, each in its own dimension-order sum.
///
/// Degenerate inputs never panic; they give:
/// * `key_dim == 0`, `query.len() != key_dim`, or `keys.len()` not a multiple of `key_dim`: an
///   empty result (the table and the query do not describe keys of one width);
/// * an empty table or `k == 0`: an empty result;
/// * `k > 16`: the 16 nearest;
/// * a NaN in the query or the keys: entries whose distance is NaN compare neither less nor
///   greater than anything, so the result is what the session's scan has always given — with a
///   NaN query every distance is NaN and the result is the first `k` entries in index order, each
///   at distance NaN.
pub fn nearest_scan(keys: &[f32], key_dim: usize, query: &[f32], k: usize, out: &mut Nearest) {
    out.clear();
    if key_dim == 0 || query.len() != key_dim || keys.len() % key_dim != 0 {
        return;
    }
    let wanted = result_len(k, keys.len() / key_dim);
    if wanted == 0 {
        return;
    }
    each_distance(keys, key_dim, 0, query, |entry, distance| scan_insert(out, wanted, entry, distance));
}
