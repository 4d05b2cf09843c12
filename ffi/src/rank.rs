//! Top-k selection over a score vector (the one piece of logic the runtime has no call for).

use alloc::vec::Vec;
use core::cmp::Ordering;

/// Orders item `a` before item `b` when it scores higher; NaN scores sort last; ties (and NaN
/// against NaN) go to the lower index, so the order is total and the result deterministic.
fn rank_order(scores: &[f32], a: u32, b: u32) -> Ordering {
    let (sa, sb) = (scores[a as usize], scores[b as usize]);
    let by_score = match (sa.is_nan(), sb.is_nan()) {
        (false, false) => sb.partial_cmp(&sa).unwrap_or(Ordering::Equal),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => Ordering::Equal,
    };
    by_score.then(a.cmp(&b))
}

/// Keeps in `candidates` the best `k` of them, best first.
pub(crate) fn top_k(scores: &[f32], candidates: &mut Vec<u32>, k: usize) {
    if k == 0 {
        candidates.clear();
        return;
    }
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, |a, b| rank_order(scores, *a, *b));
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(|a, b| rank_order(scores, *a, *b));
}
