//! Top-k over the catalogue: score every item, leave out the rated ones if asked, keep the best.

use alloc::vec::Vec;
use core::borrow::Borrow;
use core::cmp::Ordering;

use super::Session;
use crate::error::{Invariant, Result};
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

/// [`Session::top_k`]'s scratch, sized by its first call (17 bytes an item) and reused.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// `0..item_count`.
    all: Vec<u32>,
    /// Every item's score.
    scores: Vec<f32>,
    /// Whether each item is in the support set (when rated items are left out).
    rated: Vec<bool>,
    /// The candidates, then the ranking.
    ranked: Vec<Ranked>,
}

impl Scratch {
    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.all.capacity() * core::mem::size_of::<u32>()
            + self.scores.capacity() * core::mem::size_of::<f32>()
            + self.rated.capacity() * core::mem::size_of::<bool>()
            + self.ranked.capacity() * core::mem::size_of::<Ranked>()
    }

    /// The best `k` of the scored items, less the support's items when `exclude_rated`.
    fn select(&mut self, support: &[(u32, f32)], k: usize, exclude_rated: bool) -> Result<&[Ranked]> {
        self.rated.clear();
        self.rated.resize(self.scores.len(), false);
        if exclude_rated {
            for &(item, _) in support {
                *self.rated.get_mut(item as usize).invariant("top-k: a support item past the catalogue")? = true;
            }
        }
        self.ranked.clear();
        let scored = self.all.iter().zip(&self.scores).zip(&self.rated);
        self.ranked.extend(scored.filter(|(_, &rated)| !rated).map(|((&item, &score), _)| Ranked { item, score }));
        top_k(&mut self.ranked, k);
        Ok(&self.ranked)
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// See [`Session::top_k`].
    pub(super) fn rank(&mut self, k: usize, exclude_rated: bool) -> Result<&[Ranked]> {
        let count = self.model().item_count();
        if self.ranking.all.len() != count {
            // Validation keeps the catalogue within u32 indices.
            let count = u32::try_from(count).ok().invariant("top-k: a catalogue past u32 indices")?;
            self.ranking.all.clear();
            self.ranking.all.extend(0..count);
        }
        // Moved out for the scoring call (no allocation), and back whatever it returns.
        let all = core::mem::take(&mut self.ranking.all);
        let mut scores = core::mem::take(&mut self.ranking.scores);
        scores.clear();
        scores.resize(count, 0.0);
        let scored = self.score_checked(&all, &mut scores);
        self.ranking.all = all;
        self.ranking.scores = scores;
        scored?;
        self.ranking.select(&self.support, k, exclude_rated)
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

/// Keeps in `candidates` the best `k` of them, best first.
pub(super) fn top_k(candidates: &mut Vec<Ranked>, k: usize) {
    if k == 0 {
        candidates.clear();
        return;
    }
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, rank_order);
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(rank_order);
}
