//! One user's session: profile, support ratings, adapted weights, scoring and ranking.
//!
//! This module holds the public [`Session`] API and its documentation; each responsibility lives
//! in a module of its own, with the scratch buffers it uses:
//! - `profile`: the profile fields and the user part of every input;
//! - `adapt`: the inner loop (support gradients, steps, HML's choice of initialisation);
//! - `low_rank`: an adaptation with one scalar rate as a low-rank change of layer 0;
//! - `score`: scoring blocks of items;
//! - `rate`: the learning-rate network and AT-PAML's neighbour term;
//! - `fold_in`: the exact ridge solve instead of steps (matrix factorisation, fold-in heads);
//! - `rank`: top-k over the catalogue;
//! - `explain`: what the last adaptation did;
//! - `contribute`: this user's clipped first-order meta-update for federated training.

mod adapt;
mod contribute;
mod explain;
mod fold_in;
mod low_rank;
mod profile;
mod rank;
mod rate;
mod score;
mod shortlist;
#[cfg(test)]
pub(crate) mod tests;

use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;

use crate::error::{Error, Invariant, Result};
use crate::limits::{MAX_CANDIDATES, MAX_STEPS, MAX_STRING_LEN, MAX_SUPPORT_RATINGS};
use crate::model::Model;

pub use explain::{Explanation, FoldIn, Neighbour};
pub use rank::Ranked;
pub use shortlist::{default_candidates, Ranking, SHORTLIST_FROM};

use low_rank::LowRank;
use profile::Profile;
use score::SCORE_BLOCK;

/// One user's state against a [`Model`]: profile fields, support ratings (the user's own
/// ratings), and the decision-MLP weights adapted to them.
///
/// `M` is how the session holds the model: `&Model` for borrowing Rust callers, `Arc<Model>`
/// for the C API, or an owned `Model`.
///
/// # Profile
/// A fresh session behaves like a user whose every profile field is unknown: a categorical or
/// numeric field that was never set uses its unknown row (row 0); a multi-categorical field that
/// was never set has no values and contributes a zero vector. [`Session::set_profile`] replaces a
/// field's value.
///
/// # Adaptation
/// [`Session::adapt`] starts from the meta-learned weights and runs full-batch gradient descent
/// on the mean squared error over the support ratings (binary cross-entropy over support labels
/// for a click model, whose scores are click probabilities). Until then, and again after any change
/// to the profile or the support set ([`Session::set_profile`], [`Session::add_rating`],
/// [`Session::clear_ratings`]), scores use the meta-learned weights: a stale adaptation is
/// dropped, never silently mixed with new data. Call [`Session::adapt`] again to adapt to the
/// new state.
///
/// # Errors that are bugs
/// Every internal size and index follows from the validated model, so no input reaches a broken
/// internal invariant. Should one break (a bug in metarec), the call returns
/// [`Error::Internal`] instead of a wrong result, and a debug build asserts.
///
/// Scoring never allocates: the scratch buffers are sized from the model when the session is
/// created. [`Session::top_k`] allocates its own scratch on its first call only.
pub struct Session<M: Borrow<Model>> {
    model: M,
    /// The profile fields and the user part of every input.
    profile: Profile,
    /// `(item index, rating)` in insertion order.
    support: Vec<(u32, f32)>,
    /// Current decision-MLP parameters (meta-learned, or adapted when `adapted`), flat.
    params: Vec<f32>,
    /// The adaptation as a low-rank change of layer 0's item part: see [`LowRank`].
    low_rank: LowRank,
    /// Layer 0's user part `W0[:, user] · user_input + b0` for the current parameters, computed
    /// by every scoring call and every support gradient.
    hidden0: Vec<f32>,
    /// Whether `params` (or a factor model's user vector) are adapted to the support set.
    adapted: bool,
    /// How the last adaptation was set up.
    explanation: Explanation,
    /// Scoring scratch for one block of items (sized at creation).
    scoring: score::Scratch,
    /// Adaptation scratch (sized by the support set on the first adaptation).
    adaptation: adapt::Scratch,
    /// The learning-rate network's input (PAML family).
    rate: rate::Scratch,
    /// A factor model's user vector and fold-in system.
    factors: fold_in::UserFactors,
    /// Top-k scratch (sized by the first [`Session::top_k`]).
    ranking: rank::Scratch,
    /// Tests: adapt and score with the full weights only, as a reference for the low-rank path.
    #[cfg(test)]
    full_weights_only: bool,
}

impl<M: Borrow<Model>> fmt::Debug for Session<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", self.model())
            .field("profile", &self.profile.rows())
            .field("support_len", &self.support.len())
            .field("adapted", &self.adapted)
            .finish_non_exhaustive()
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// A session with every profile field unset and no ratings, scoring with the meta-learned
    /// weights.
    pub fn new(model: M) -> Self {
        let m: &Model = model.borrow();
        let first_width = m.layout().layers.first().map_or(0, |l| l.outputs);
        let mut session = Session {
            profile: Profile::new(m),
            support: Vec::new(),
            // Filled with the meta-learned weights by `load_init(0)` below.
            params: Vec::new(),
            low_rank: LowRank::default(),
            hidden0: alloc::vec![0.0; first_width],
            adapted: false,
            explanation: Explanation::default(),
            scoring: score::Scratch::new(m),
            adaptation: adapt::Scratch::default(),
            rate: rate::Scratch::default(),
            factors: fold_in::UserFactors::new(m),
            ranking: rank::Scratch::default(),
            #[cfg(test)]
            full_weights_only: false,
            model,
        };
        session.load_init(0);
        session
    }

    /// The model this session scores with.
    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    /// Sets user profile field `field` from its raw value, as the dataset spells it (a number for
    /// numeric fields, `separator`-joined values for multi-categorical ones). Values the model
    /// does not know map to the unknown row, as in training. Setting a field again replaces its
    /// value. Drops the adaptation (see the type docs).
    ///
    /// Errors: [`Error::StringTooLong`] if `field` or `value` is longer than
    /// [`MAX_STRING_LEN`] bytes; [`Error::UnknownField`] if `field` is not one of the model's user
    /// fields.
    pub fn set_profile(&mut self, field: &str, value: &str) -> Result<()> {
        if field.len() > MAX_STRING_LEN || value.len() > MAX_STRING_LEN {
            return Err(Error::StringTooLong);
        }
        self.profile.set(self.model.borrow(), field, value)?;
        self.invalidate();
        Ok(())
    }

    /// Adds one support rating by item id. Drops the adaptation (see the type docs).
    ///
    /// Errors: [`Error::StringTooLong`] (an id longer than [`MAX_STRING_LEN`] bytes),
    /// [`Error::UnknownItem`], [`Error::InvalidRating`] (NaN, infinite, or outside the model's
    /// rating scale), [`Error::TooManyRatings`] (more than [`MAX_SUPPORT_RATINGS`]).
    pub fn add_rating(&mut self, item_id: &str, rating: f32) -> Result<()> {
        if item_id.len() > MAX_STRING_LEN {
            return Err(Error::StringTooLong);
        }
        let item = self.model().item_index(item_id).ok_or(Error::UnknownItem)?;
        self.add_rating_by_index(item, rating)
    }

    /// Adds one support rating by item index. Same rules as [`Session::add_rating`].
    pub fn add_rating_by_index(&mut self, item: u32, rating: f32) -> Result<()> {
        let model = self.model();
        if item as usize >= model.item_count() {
            return Err(Error::UnknownItem);
        }
        let scale = model.body().rating;
        if !rating.is_finite() || rating < scale.min || rating > scale.max {
            return Err(Error::InvalidRating);
        }
        if self.support.len() >= MAX_SUPPORT_RATINGS {
            return Err(Error::TooManyRatings);
        }
        self.support.push((item, rating));
        self.invalidate();
        Ok(())
    }

    /// Removes every support rating. Drops the adaptation (see the type docs).
    pub fn clear_ratings(&mut self) {
        self.support.clear();
        self.invalidate();
    }

    /// Number of support ratings.
    pub fn support_len(&self) -> usize {
        self.support.len()
    }

    /// The support ratings, `(item index, rating)` in insertion order.
    pub fn support(&self) -> &[(u32, f32)] {
        &self.support
    }

    /// Adapts to the support set with the model's `inner_steps`: see [`Session::adapt_steps`].
    pub fn adapt(&mut self) -> Result<()> {
        let steps = self.model().body().adaptation.inner_steps;
        self.adapt_steps(steps)
    }

    /// Restarts from the meta-learned weights, then runs `steps` full-batch gradient-descent
    /// steps on `(1/n) Σ (f(x_j) − r_j)²` over the `n` support ratings, updating every layer's
    /// weights and biases, exactly as the trainer's inner loop does for the model's method. A
    /// bias-aware product model ([`crate::format::ProductModel`]) adds its item's bias to
    /// `f(x_j)` (in every score too), updates only the parameters its scope names (the output
    /// layer, or the user side: layer 0's bias and user-field weights and the output bias), and
    /// adds `(proximal/2)·‖θ − θ₀‖²` over them to the loss, θ₀ the initialisation adapted from.
    /// The step size:
    /// - the step size is the model's fixed `inner_lr`, one rate per parameter (Meta-SGD), or the
    ///   user's own rate alpha'(h) from the learning-rate network (PAML, REG-PAML), plus the
    ///   kernel-weighted rates of the nearest stored users (AT-PAML);
    /// - with several initialisations (HML) it first adapts each on part of the support set,
    ///   scores the rest, and continues from the best.
    ///
    /// With no ratings (or zero steps) the weights stay meta-learned and the session is not
    /// adapted. Calling it twice gives the same weights. [`Session::explain`] tells what was used.
    ///
    /// A factor model ([`Model::factors`]) has no gradient steps: any `steps > 0` solves the
    /// user's bias and factors from the support ratings exactly (ridge regression, see
    /// [`crate::factors`]); until then, and with no ratings, it scores `μ + b_i`. A model whose
    /// output layer adapts by the fold-in ([`Model::fold_in_head`]) likewise solves its output
    /// layer and the user's factors once for any `steps > 0` (HML: each initialisation on the
    /// resampled support first), as [`crate::format::FoldInHead`] defines; the learning rate
    /// scales the ridge weights instead of a step ([`Explanation::learning_rate`] says which).
    ///
    /// Errors: [`Error::TooManySteps`] when `steps` exceeds [`MAX_STEPS`] (the session is left
    /// as it was); [`Error::NonFiniteParameter`] when a fold-in head's system is not positive
    /// definite in f64 (its ridge weights too small for this user's features, or features that
    /// overflowed: validation cannot bound the hidden features); [`Error::Internal`] (a bug).
    /// After an error the session scores with the meta-learned weights.
    pub fn adapt_steps(&mut self, steps: u32) -> Result<()> {
        if steps > MAX_STEPS {
            return Err(Error::TooManySteps);
        }
        self.reset_adaptation();
        self.explanation = Explanation::default();
        if self.support.is_empty() || steps == 0 {
            return Ok(());
        }
        let model = self.model();
        let adapted = if model.factors().is_some() {
            self.fold_in()
        } else if model.fold_in_head().is_some() {
            self.fold_in_head()
        } else {
            self.inner_loop(steps)
        };
        if adapted.is_err() {
            // Never score with a partial adaptation.
            self.drop_adaptation();
        }
        adapted
    }

    /// How the last adaptation was set up (learning rate, network part, neighbours, init).
    pub fn explain(&self) -> &Explanation {
        &self.explanation
    }

    /// Bytes this session holds on the heap and inline (the model is shared, not counted).
    pub fn memory_bytes(&self) -> usize {
        let floats = self.params.capacity() + self.hidden0.capacity();
        core::mem::size_of::<Self>()
            + floats * core::mem::size_of::<f32>()
            + self.profile.heap_bytes()
            + self.low_rank.heap_bytes()
            + self.scoring.heap_bytes()
            + self.adaptation.heap_bytes()
            + self.rate.heap_bytes()
            + self.factors.heap_bytes()
            + self.ranking.heap_bytes()
            + self.support.capacity() * core::mem::size_of::<(u32, f32)>()
    }

    /// Goes back to the meta-learned weights (keeps profile and ratings).
    pub fn reset_adaptation(&mut self) {
        if self.adapted {
            self.load_init(0);
            self.factors.clear();
            self.adapted = false;
        }
    }

    /// Whether scores currently use weights adapted to the support set.
    pub fn is_adapted(&self) -> bool {
        self.adapted
    }

    /// Scores items by index into `out` (same length). Nothing is written on a caller error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::TooManyCandidates`] (more than
    /// [`MAX_CANDIDATES`] items), [`Error::UnknownItem`] (an index `>= item_count()`);
    /// [`Error::Internal`] (a bug; `out` is then unspecified).
    pub fn score_indices(&mut self, items: &[u32], out: &mut [f32]) -> Result<()> {
        if items.len() != out.len() {
            return Err(Error::LengthMismatch);
        }
        if items.len() > MAX_CANDIDATES {
            return Err(Error::TooManyCandidates);
        }
        let count = self.model().item_count();
        if items.iter().any(|&item| item as usize >= count) {
            return Err(Error::UnknownItem);
        }
        self.score_checked(items, out)
    }

    /// Scores the whole catalogue into `out`, by index (`out[i]` is item `i`'s score, the one
    /// [`Session::score_indices`] over `0..item_count()` gives), a block of items at a time:
    /// no memory that grows with the catalogue besides `out`.
    ///
    /// Errors: [`Error::LengthMismatch`] (`out.len()` is not [`Model::item_count`]);
    /// [`Error::Internal`] (a bug; `out` is then unspecified).
    pub fn score_all(&mut self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.model().item_count() {
            return Err(Error::LengthMismatch);
        }
        let mut at = 0;
        self.score_catalogue(|_, scores| {
            let to = at + scores.len();
            out.get_mut(at..to).invariant("score_all: a block past the catalogue")?.copy_from_slice(scores);
            at = to;
            Ok(())
        })
    }

    /// Scores items by id into `out` (same length). Nothing is written on a caller error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::TooManyCandidates`] (more than
    /// [`MAX_CANDIDATES`] ids), [`Error::StringTooLong`] (an id longer than [`MAX_STRING_LEN`]
    /// bytes), [`Error::UnknownItem`]; [`Error::Internal`] (a bug; `out` is then unspecified).
    pub fn score_ids(&mut self, item_ids: &[&str], out: &mut [f32]) -> Result<()> {
        if item_ids.len() != out.len() {
            return Err(Error::LengthMismatch);
        }
        if item_ids.len() > MAX_CANDIDATES {
            return Err(Error::TooManyCandidates);
        }
        if item_ids.iter().any(|id| id.len() > MAX_STRING_LEN) {
            return Err(Error::StringTooLong);
        }
        if item_ids.iter().any(|id| self.model().item_index(id).is_none()) {
            return Err(Error::UnknownItem);
        }
        // Blocks of indices on the stack keep this allocation-free.
        let mut indices = [0u32; SCORE_BLOCK];
        for (ids, scores) in item_ids.chunks(SCORE_BLOCK).zip(out.chunks_mut(SCORE_BLOCK)) {
            for (slot, id) in indices.iter_mut().zip(ids) {
                *slot = self.model().item_index(id).ok_or(Error::UnknownItem)?;
            }
            self.score_checked(&indices[..ids.len()], scores)?;
        }
        Ok(())
    }

    /// Score of one item: the model's output, not clamped to the rating scale (a click
    /// probability for a click model).
    ///
    /// Errors: [`Error::UnknownItem`]; [`Error::Internal`] (a bug).
    pub fn predict(&mut self, item: u32) -> Result<f32> {
        if item as usize >= self.model().item_count() {
            return Err(Error::UnknownItem);
        }
        let mut out = [0.0];
        self.score_checked(&[item], &mut out)?;
        Ok(out[0])
    }

    /// Ranks the catalogue for the user and returns its `k` best items, best first: highest
    /// score first, NaN scores last, ties (and NaN against NaN) to the lower item index, so the
    /// order is total and deterministic. With `exclude_rated`, items in the support set are left
    /// out. The result holds `min(k, candidates)` items with the scores [`Session::score_indices`]
    /// gives them; it borrows the session's ranking scratch until the next call.
    ///
    /// Scores the catalogue a block of items at a time (the scores [`Session::score_indices`]
    /// over `0..item_count()` gives) and keeps the best in a bounded heap: O(items · log k)
    /// comparisons at most, and memory for `min(k, items)` results (8 bytes each) plus the rated
    /// items, never for the catalogue. The scratch grows to the largest `k` asked so far: a call
    /// with no larger `k` does not allocate. A large catalogue is ranked in two stages by
    /// default (see [`Session::set_ranking`]): its result is then the exact top k of the
    /// shortlisted items, which holds the true top k unless the surrogate misordered one.
    ///
    /// Errors: [`Error::Internal`] (a bug).
    pub fn top_k(&mut self, k: usize, exclude_rated: bool) -> Result<&[Ranked]> {
        self.rank(k, exclude_rated)
    }

    /// Sets how [`Session::top_k`] ranks the catalogue (default [`Ranking::Auto`]: exhaustive
    /// below [`SHORTLIST_FROM`] items, else a linear surrogate of the adapted network picks
    /// [`default_candidates`] items that the network re-scores; see [`Ranking`]). The scores
    /// returned are always the network's; a shortlist may miss a true top-k item the surrogate
    /// ranked too low.
    pub fn set_ranking(&mut self, ranking: Ranking) {
        self.ranking.mode = ranking;
    }

    // ---- internals shared by the modules ----

    /// Sets the parameters to initialisation `k` (0: the meta-learned weights), with no
    /// fold-in (the user's factors at zero).
    fn load_init(&mut self, k: usize) {
        let model: &Model = self.model.borrow();
        model.write_init_params(k, &mut self.params);
        self.factors.clear();
        let available = model.has_item_hidden(k) && model.item_count() > 0;
        #[cfg(test)]
        let available = available && !self.full_weights_only;
        self.low_rank.restart(k, available);
    }

    /// Drops a stale adaptation.
    fn invalidate(&mut self) {
        self.reset_adaptation();
        self.explanation = Explanation::default();
    }

    /// Drops an adaptation that failed part-way: back to the meta-learned weights.
    fn drop_adaptation(&mut self) {
        self.load_init(0);
        self.factors.clear();
        self.adapted = false;
        self.explanation = Explanation::default();
    }
}
