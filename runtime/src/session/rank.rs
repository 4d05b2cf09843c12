//! Top-k over the catalogue: score it a block at a time, leave out the rated items if asked, and
//! keep the best `k` in a bounded heap. Nothing grows with the catalogue.

use alloc::vec::Vec;
use core::borrow::Borrow;
use core::cmp::Ordering;

use super::shortlist::{self, Ranking};
use super::Session;
use crate::error::Result;
use crate::model::Model;

/// One item of a ranking ([`Session::top_k`]): its index in the catalogue (see
/// [`Model::item_id`]) and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Item index.
    pub item: u32,
    /// The item's score, as [`Session::score_indices`] gives it.
    pub score: f32,
}

/// [`Session::top_k`]'s scratch: `min(k, items)` ranked items (8 bytes each) and the rated
/// items, grown to the largest call's needs and reused.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// The items left out, ascending.
    rated: Vec<u32>,
    /// The first of `rated` not behind the items offered so far.
    next_rated: usize,
    /// The bounded heap of the best items so far (its root the worst of them), then the ranking.
    ranked: Vec<Ranked>,
    /// How the catalogue is ranked ([`Session::set_ranking`]).
    pub(super) mode: Ranking,
    /// The two-stage ranking's scratch.
    pub(super) shortlist: shortlist::Scratch,
}

impl Scratch {
    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.rated.capacity() * core::mem::size_of::<u32>()
            + self.ranked.capacity() * core::mem::size_of::<Ranked>()
            + self.shortlist.heap_bytes()
    }

    /// Starts a ranking of `k` items over `count`, leaving out the support's items when
    /// `exclude_rated`.
    fn start(&mut self, support: &[(u32, f32)], k: usize, count: usize, exclude_rated: bool) {
        self.rated.clear();
        if exclude_rated {
            self.rated.extend(support.iter().map(|&(item, _)| item));
            self.rated.sort_unstable();
        }
        self.next_rated = 0;
        self.ranked.clear();
        self.ranked.reserve(k.min(count));
    }

    /// Offers one block of scored items, ascending indices, to the ranking.
    pub(super) fn offer(&mut self, items: &[u32], scores: &[f32], k: usize) {
        for (&item, &score) in items.iter().zip(scores) {
            // Both ascend: rated items behind this one are never offered again.
            while self.rated.get(self.next_rated).is_some_and(|&r| r < item) {
                self.next_rated += 1;
            }
            if self.rated.get(self.next_rated) == Some(&item) {
                continue;
            }
            push_bounded(&mut self.ranked, Ranked { item, score }, k);
        }
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// See [`Session::top_k`].
    pub(super) fn rank(&mut self, k: usize, exclude_rated: bool) -> Result<&[Ranked]> {
        let count = self.model().item_count();
        // Moved out for the scoring call (no allocation), and back whatever it returns.
        let mut ranking = core::mem::take(&mut self.ranking);
        ranking.start(&self.support, k, count, exclude_rated);
        let scored = if k == 0 {
            Ok(())
        } else if let Some(candidates) = self.shortlist_size(ranking.mode, k) {
            self.rank_shortlist(&mut ranking, k, candidates)
        } else {
            self.score_catalogue(|items, scores| {
                ranking.offer(items, scores, k);
                Ok(())
            })
        };
        ranking.ranked.sort_unstable_by(rank_order);
        self.ranking = ranking;
        scored?;
        Ok(&self.ranking.ranked)
    }
}

/// Orders `a` before `b` when it scores higher; NaN scores sort last; ties (and NaN against NaN)
/// go to the lower index, so the order is total and the result deterministic.
fn rank_order(a: &Ranked, b: &Ranked) -> Ordering {
    let by_score = match (a.score.is_nan(), b.score.is_nan()) {
        (false, false) => b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (true, true) => Ordering::Equal,
    };
    by_score.then(a.item.cmp(&b.item))
}

/// Adds `candidate` to `heap`, a binary heap of at most `k` items whose root is the last of them
/// in [`rank_order`]: pushed while there is room, else it replaces the root if it ranks before
/// it. [`rank_order`] is a total order, so the kept set is exactly the first `k` of every item
/// offered, whatever the order they come in.
pub(super) fn push_bounded(heap: &mut Vec<Ranked>, candidate: Ranked, k: usize) {
    let len = heap.len();
    if len < k {
        heap.push(candidate);
        sift_up(heap, len);
    } else if let Some(root) = heap.first_mut() {
        if rank_order(&candidate, root) == Ordering::Less {
            *root = candidate;
            sift_down(heap, 0);
        }
    }
}

/// Moves the item at `at` up while it ranks after its parent.
fn sift_up(heap: &mut [Ranked], mut at: usize) {
    while at > 0 {
        let parent = (at - 1) / 2;
        if rank_order(&heap[at], &heap[parent]) != Ordering::Greater {
            return;
        }
        heap.swap(at, parent);
        at = parent;
    }
}

/// Moves the item at `at` down while a child ranks after it.
fn sift_down(heap: &mut [Ranked], mut at: usize) {
    loop {
        let (left, right) = (2 * at + 1, 2 * at + 2);
        let mut last = at;
        for child in [left, right] {
            if child < heap.len() && rank_order(&heap[child], &heap[last]) == Ordering::Greater {
                last = child;
            }
        }
        if last == at {
            return;
        }
        heap.swap(at, last);
        at = last;
    }
}

/// Keeps in `candidates` the best `k` of them, best first (the bounded heap over a list).
#[cfg(test)]
pub(super) fn top_k(candidates: &mut Vec<Ranked>, k: usize) {
    let mut heap = Vec::new();
    for &candidate in candidates.iter() {
        push_bounded(&mut heap, candidate, k);
    }
    heap.sort_unstable_by(rank_order);
    *candidates = heap;
}
