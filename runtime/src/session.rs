//! One user's session: profile, support ratings, adapted weights and scoring.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;

use crate::error::{Error, Result};
use crate::format::{FieldKind, LearningRate, NeighbourTable, MAX_NEIGHBOURS};
use crate::gemm::{gemm, View};
use crate::mlp::{self, Keep, Weights};
use crate::model::{field_vector, Model};

use crate::limits::{MAX_CANDIDATES, MAX_STEPS, MAX_STRING_LEN, MAX_SUPPORT_RATINGS};

/// Items scored per block. The small-product kernel reads its operands in place, so a block only
/// amortises per-block work: 128, 256 and 512 scored 1,000 items equally fast (`trainer bench
/// device`), and 128 keeps the session's scratch a quarter of 512's.
const SCORE_BLOCK: usize = 128;

/// A click factor model's scores are its least-squares fit to the 0/1 labels, kept inside
/// `[CLICK_FACTOR_FLOOR, 1 − CLICK_FACTOR_FLOOR]` so that they are probabilities with a finite
/// log loss (the trainer's bias baseline keeps the same range).
pub const CLICK_FACTOR_FLOOR: f32 = 1e-3;

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
/// Scoring never allocates: the scratch buffers are sized from the model when the session is
/// created.
pub struct Session<M: Borrow<Model>> {
    model: M,
    /// Embedding rows of each user field, in `user_fields` order.
    profile: Vec<Vec<u32>>,
    /// `(item index, rating)` in insertion order.
    support: Vec<(u32, f32)>,
    /// Current decision-MLP parameters (meta-learned, or adapted when `adapted`), flat.
    params: Vec<f32>,
    adapted: bool,
    /// The user part of every input (the profile's field vectors), `user_width` wide.
    user_input: Vec<f32>,
    /// Layer 0's user part `W0[:, user] · user_input + b0` for the current parameters.
    hidden0: Vec<f32>,
    /// Scoring scratch for one block of items: inputs and activations (sized at creation, so
    /// scoring never allocates).
    block_x: Vec<f32>,
    block_acts: Vec<f32>,
    /// Adaptation scratch (sized by the support set on the first adaptation): the support
    /// items' inputs and activations, dL/dy, gradient buffers.
    support_x: Vec<f32>,
    support_acts: Vec<f32>,
    support_dy: Vec<f32>,
    grads: Vec<f32>,
    g_cur: Vec<f32>,
    g_next: Vec<f32>,
    /// Layer 0's pre-activation gradients of the support rows from the last backward pass.
    support_delta0: Vec<f32>,
    /// The adaptation as a low-rank change of layer 0's item part: see [`LowRank`].
    low_rank: LowRank,
    /// Scoring scratch of the low-rank path: `block rows × support rows` inner products.
    block_gram: Vec<f32>,
    /// Scoring: the hidden layers after layer 0, transposed (`mlp::transpose_upper`).
    upper_t: Vec<f32>,
    /// Adaptation scratch of the low-rank path: `support rows × support rows` inner products.
    support_gram: Vec<f32>,
    /// Tests: adapt and score with the full weights only, as a reference for the low-rank path.
    #[cfg(test)]
    full_weights_only: bool,
    /// The user embedding h (PAML family; allocated by the first adaptation that needs it).
    embedding: Vec<f32>,
    /// A factor model's user vector `[b_u, p_u]` (zeros until a fold-in; empty for MLP models).
    user_factors: Vec<f32>,
    /// A factor model's fold-in system (sized by the first fold-in).
    ridge: crate::factors::Ridge,
    /// How the last adaptation was set up.
    explanation: Explanation,
}

/// Gradient steps with one scalar rate change layer 0's item weights only by outer products of
/// the support items' inputs: `W0_item = W0_item(init) + Σ_j c_j ⊗ x_j` with `c_j` the sum over
/// steps of `−rate · ∂L/∂z0_j`. So an item's layer-0 item part is the model's precomputed
/// `W0_item(init) · x` plus `Σ_j c_j (x_j · x)`: `support × (item_width + hidden0)`
/// multiply-adds instead of `item_width × hidden0`. Per-parameter rates (Meta-SGD) break the
/// low rank; scoring then multiplies by the adapted weights directly.
#[derive(Debug, Clone, Default)]
struct LowRank {
    /// Whether the current parameters are `init`'s plus the tracked change.
    valid: bool,
    /// Initialisation the parameters started from.
    init: usize,
    /// Support rows the change runs over (0: none yet).
    rows: usize,
    /// Their item inputs, `rows × item_width`.
    x: Vec<f32>,
    /// The same transposed and zero-padded to [`LowRank::gram_width`] columns
    /// (`item_width × gram_width`), the layout the small-product kernel reads in place.
    x_t: Vec<f32>,
    /// Their coefficients `c_j`, `rows × hidden0`.
    coef: Vec<f32>,
}

impl LowRank {
    /// Layer 0's pre-activations of `rows` items into `z0` (`rows × hidden0`):
    /// `hidden0 + W0_item(init)·x + Σ_j c_j (x_j · x)`, with `inputs` the items' inputs
    /// (`rows × item_width`; read only when the record holds support rows) and `gram` scratch of
    /// at least `rows × self.rows`.
    #[allow(clippy::too_many_arguments)]
    fn layer0(
        &self,
        model: &Model,
        hidden0: &[f32],
        items: impl Iterator<Item = u32>,
        inputs: &[f32],
        rows: usize,
        z0: &mut [f32],
        gram: &mut [f32],
    ) {
        let hidden_width = hidden0.len();
        for (row, item) in z0.chunks_exact_mut(hidden_width.max(1)).zip(items) {
            let precomputed = model.item_hidden(self.init, item).unwrap_or(&[]);
            for ((z, u), p) in row.iter_mut().zip(hidden0).zip(precomputed) {
                *z = u + p;
            }
        }
        if self.rows == 0 {
            return;
        }
        let item_width = model.input_width() - model.user_width();
        let width = self.gram_width();
        let Some(gram) = gram.get_mut(..rows * width) else { return };
        let x = View::rows(inputs, rows, item_width);
        gemm(1.0, x, View::rows(&self.x_t, item_width, width), 0.0, gram, width);
        // The padding columns are zero; the product reads the real ones.
        let gram = View { data: gram, rows, cols: self.rows, row_stride: width, col_stride: 1 };
        gemm(1.0, gram, View::rows(&self.coef, self.rows, hidden_width), 1.0, z0, hidden_width);
    }

    /// Columns of the inner-product scratch: the support rows rounded up to 8.
    fn gram_width(&self) -> usize {
        self.rows.div_ceil(8) * 8
    }

    /// Records the support rows the change runs over (`x`: `rows × item_width`).
    fn start(&mut self, x: &[f32], rows: usize, item_width: usize, hidden_width: usize) {
        self.rows = rows;
        self.x.clear();
        self.x.extend_from_slice(x);
        let width = self.gram_width();
        self.x_t.clear();
        self.x_t.resize(item_width * width, 0.0);
        mlp::transpose(x, rows, item_width, &mut self.x_t, width);
        self.coef.clear();
        self.coef.resize(rows * hidden_width, 0.0);
    }

    /// Parameters were just set to initialisation `init`.
    fn restart(&mut self, init: usize, available: bool) {
        self.valid = available;
        self.init = init;
        self.rows = 0;
        self.x.clear();
        self.x_t.clear();
        self.coef.clear();
    }
}

/// One stored user that set a personalized learning rate (AT-PAML).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Entry of the model's neighbour table.
    pub entry: u32,
    /// Squared distance between the user's key and the entry's key.
    pub distance: f32,
    /// Normalised kernel weight s_k / (Σ s_j + σ).
    pub weight: f32,
    /// The entry's stored learning rate.
    pub rate: f32,
}

/// How the last [`Session::adapt`] adapted: the learning rate, its parts, and the
/// initialisation. Read it with [`Session::explain`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// Whether an adaptation ran (ratings present and steps > 0).
    pub adapted: bool,
    /// The initialisation adapted from (HML's choice; 0 otherwise).
    pub init: u32,
    /// The scalar inner learning rate used (None when every parameter has its own, Meta-SGD).
    pub learning_rate: Option<f32>,
    /// The learning-rate network's part alpha'(h) (PAML family).
    pub network_rate: Option<f32>,
    /// The stored users whose rates were added (AT-PAML), nearest first.
    pub neighbours: heapless::Vec<Neighbour, MAX_NEIGHBOURS>,
    /// A factor model's fold-in (matrix factorisation): what the ridge solve used.
    pub fold_in: Option<FoldIn>,
}

/// How a factor model's fold-in solved the user's bias and factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldIn {
    /// Support ratings the solve ran over.
    pub support: u32,
    /// λ on the user's factors.
    pub regularisation: f32,
    /// λ_b on the user's bias.
    pub bias_regularisation: f32,
    /// The solved user bias b_u.
    pub user_bias: f32,
}

impl<M: Borrow<Model>> fmt::Debug for Session<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", self.model())
            .field("profile", &self.profile)
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
        let profile = m
            .body()
            .user_fields
            .iter()
            .map(|field| match field.kind {
                FieldKind::MultiCategorical { .. } => Vec::new(),
                FieldKind::Categorical | FieldKind::Numeric { .. } => vec![0],
            })
            .collect();
        let item_width = m.input_width() - m.user_width();
        let first_width = m.layout().layers.first().map_or(0, |l| l.outputs);
        let user_input = vec![0.0; m.user_width()];
        let block_acts = vec![0.0; SCORE_BLOCK * m.layout().act_width()];
        let upper_t = vec![0.0; mlp::upper_transposed_len(m.layout())];
        let user_factors = m.factors().map_or_else(Vec::new, |f| vec![0.0; f.factors as usize + 1]);
        let mut session = Session {
            model,
            profile,
            support: Vec::new(),
            // Filled with the meta-learned weights by `load_init(0)` below.
            params: Vec::new(),
            adapted: false,
            user_input,
            hidden0: vec![0.0; first_width],
            block_x: vec![0.0; SCORE_BLOCK * item_width],
            block_acts,
            support_x: Vec::new(),
            support_acts: Vec::new(),
            support_dy: Vec::new(),
            grads: Vec::new(),
            g_cur: Vec::new(),
            g_next: Vec::new(),
            support_delta0: Vec::new(),
            low_rank: LowRank::default(),
            block_gram: Vec::new(),
            upper_t,
            support_gram: Vec::new(),
            #[cfg(test)]
            full_weights_only: false,
            embedding: Vec::new(),
            user_factors,
            ridge: crate::factors::Ridge::default(),
            explanation: Explanation::default(),
        };
        for i in 0..session.profile.len() {
            session.refresh_user_field(i);
        }
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
        let model: &Model = self.model.borrow();
        let i = model.user_field_position(field).ok_or(Error::UnknownField)?;
        let (Some(spec), Some(rows)) = (model.body().user_fields.get(i), self.profile.get_mut(i)) else {
            return Err(Error::UnknownField);
        };
        spec.rows_of(value, rows);
        self.refresh_user_field(i);
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
    /// weights and biases, exactly as the trainer's inner loop does for the model's method:
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
    /// [`crate::factors`]); until then, and with no ratings, it scores `μ + b_i`.
    ///
    /// Errors: [`Error::TooManySteps`] when `steps` exceeds [`MAX_STEPS`] (the session is left
    /// as it was).
    pub fn adapt_steps(&mut self, steps: u32) -> Result<()> {
        if steps > MAX_STEPS {
            return Err(Error::TooManySteps);
        }
        self.reset_adaptation();
        self.explanation = Explanation::default();
        if self.support.is_empty() || steps == 0 {
            return Ok(());
        }
        if self.model().factors().is_some() {
            return self.fold_in();
        }
        let init = self.choose_init(steps);
        if init != 0 {
            self.load_init(init);
        }
        let model: &Model = self.model.borrow();
        let fixed = model.body().adaptation.inner_lr;
        let scalar = match &model.body().learning_rate {
            LearningRate::Fixed => Some(fixed),
            LearningRate::PerParameter(_) => None,
            LearningRate::Network { .. } => Some(self.personal_rate()),
        };
        for _ in 0..steps {
            self.support_gradient(None);
            self.step(scalar);
        }
        self.adapted = true;
        self.explanation.adapted = true;
        self.explanation.init = init as u32;
        self.explanation.learning_rate = scalar;
        Ok(())
    }

    /// A factor model's adaptation: the user's `[b_u, p_u]` by the exact ridge solve.
    fn fold_in(&mut self) -> Result<()> {
        let model: &Model = self.model.borrow();
        let Some(factors) = model.factors() else {
            debug_assert!(false, "fold-in on a model without factors");
            return Err(Error::InconsistentDimensions);
        };
        let mean = model.body().rating.global_mean;
        if let Err(error) =
            crate::factors::fold_in(factors, mean, &self.support, &mut self.ridge, &mut self.user_factors)
        {
            self.user_factors.fill(0.0);
            return Err(error);
        }
        self.adapted = true;
        self.explanation.adapted = true;
        self.explanation.fold_in = Some(FoldIn {
            support: u32::try_from(self.support.len()).unwrap_or(u32::MAX),
            regularisation: factors.regularisation,
            bias_regularisation: factors.bias_regularisation,
            user_bias: self.user_factors.first().copied().unwrap_or(0.0),
        });
        Ok(())
    }

    /// How the last adaptation was set up (learning rate, network part, neighbours, init).
    pub fn explain(&self) -> &Explanation {
        &self.explanation
    }

    /// Bytes this session holds on the heap and inline (the model is shared, not counted).
    pub fn memory_bytes(&self) -> usize {
        let floats = [
            &self.params,
            &self.user_input,
            &self.hidden0,
            &self.block_x,
            &self.block_acts,
            &self.support_x,
            &self.support_acts,
            &self.support_dy,
            &self.grads,
            &self.g_cur,
            &self.g_next,
            &self.support_delta0,
            &self.low_rank.x,
            &self.low_rank.x_t,
            &self.low_rank.coef,
            &self.block_gram,
            &self.upper_t,
            &self.support_gram,
            &self.embedding,
            &self.user_factors,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum::<usize>();
        let profile: usize = self
            .profile
            .iter()
            .map(|rows| rows.capacity() * core::mem::size_of::<u32>() + core::mem::size_of::<Vec<u32>>())
            .sum();
        core::mem::size_of::<Self>()
            + floats * core::mem::size_of::<f32>()
            + self.ridge.heap_bytes()
            + profile
            + self.support.capacity() * core::mem::size_of::<(u32, f32)>()
    }

    /// Goes back to the meta-learned weights (keeps profile and ratings).
    pub fn reset_adaptation(&mut self) {
        if self.adapted {
            self.load_init(0);
            self.user_factors.fill(0.0);
            self.adapted = false;
        }
    }

    /// Sets the parameters to initialisation `k` (0: the meta-learned weights).
    fn load_init(&mut self, k: usize) {
        let model: &Model = self.model.borrow();
        model.write_init_params(k, &mut self.params);
        let available = model.item_hidden(k, 0).is_some();
        #[cfg(test)]
        let available = available && !self.full_weights_only;
        self.low_rank.restart(k, available);
    }

    /// Whether scores currently use weights adapted to the support set.
    pub fn is_adapted(&self) -> bool {
        self.adapted
    }

    /// Scores items by index into `out` (same length). Nothing is written on error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::TooManyCandidates`] (more than
    /// [`MAX_CANDIDATES`] items), [`Error::UnknownItem`] (an index `>= item_count()`).
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
        self.score_checked(items, out);
        Ok(())
    }

    /// Scores items by id into `out` (same length). Nothing is written on error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::TooManyCandidates`] (more than
    /// [`MAX_CANDIDATES`] ids), [`Error::StringTooLong`] (an id longer than [`MAX_STRING_LEN`]
    /// bytes), [`Error::UnknownItem`].
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
            self.score_checked(&indices[..ids.len()], scores);
        }
        Ok(())
    }

    /// Score of one item: the model's output, not clamped to the rating scale (a click
    /// probability for a click model).
    ///
    /// Errors: [`Error::UnknownItem`].
    pub fn predict(&mut self, item: u32) -> Result<f32> {
        if item as usize >= self.model().item_count() {
            return Err(Error::UnknownItem);
        }
        let mut out = [0.0];
        self.score_checked(&[item], &mut out);
        Ok(out[0])
    }

    // ---- internals ----

    /// Scores items whose indices were checked: [`Session::raw_scores`], then σ for a click
    /// model.
    fn score_checked(&mut self, items: &[u32], out: &mut [f32]) {
        let model: &Model = self.model.borrow();
        if let Some(factors) = model.factors() {
            let mean = model.body().rating.global_mean;
            for (o, &item) in out.iter_mut().zip(items) {
                *o = crate::factors::predict(factors, mean, &self.user_factors, item);
            }
            // A click factor model regresses on the labels: keep its scores probabilities.
            if model.is_click() {
                for y in out.iter_mut() {
                    *y = y.clamp(CLICK_FACTOR_FLOOR, 1.0 - CLICK_FACTOR_FLOOR);
                }
            }
            return;
        }
        self.raw_scores(items, out);
        if self.model().is_click() {
            for y in out.iter_mut() {
                *y = sigmoid(*y);
            }
        }
    }

    /// The model's raw outputs (ratings or logits) for checked indices, a block at a time:
    /// gather the items' inputs, then one matrix product per layer (layer 0 only for the item
    /// part; its user part is `hidden0`, computed once).
    fn raw_scores(&mut self, items: &[u32], out: &mut [f32]) {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        mlp::user_hidden(layout, &self.params, &self.user_input, &mut self.hidden0);
        mlp::transpose_upper(layout, &self.params, &mut self.upper_t);
        let weights = Weights { params: &self.params, upper_t: &self.upper_t };
        let item_width = model.input_width() - model.user_width();
        let hidden_width = self.hidden0.len();
        let low_rank = &self.low_rank;
        let use_low_rank = low_rank.valid && self.block_gram.len() >= SCORE_BLOCK * low_rank.gram_width();
        for (block, scores) in items.chunks(SCORE_BLOCK).zip(out.chunks_mut(SCORE_BLOCK)) {
            let rows = block.len();
            if use_low_rank {
                let Some(z0) = self.block_acts.get_mut(..rows * hidden_width) else { return };
                // A run of consecutive items (scoring the catalogue) is read in place.
                let consecutive = block.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
                let run = block.first().filter(|_| consecutive).and_then(|&f| model.item_input_run(f, rows));
                let inputs: &[f32] = match run {
                    _ if low_rank.rows == 0 => &[],
                    Some(inputs) => inputs,
                    None => {
                        for (&item, x) in block.iter().zip(self.block_x.chunks_exact_mut(item_width.max(1))) {
                            x.copy_from_slice(model.item_input(item));
                        }
                        &self.block_x
                    }
                };
                low_rank.layer0(model, &self.hidden0, block.iter().copied(), inputs, rows, z0, &mut self.block_gram);
                mlp::forward_upper(layout, weights, rows, &mut self.block_acts, Keep::Scores);
            } else {
                for (&item, x) in block.iter().zip(self.block_x.chunks_exact_mut(item_width.max(1))) {
                    for (xv, v) in x.iter_mut().zip(model.item_input(item)) {
                        *xv = *v;
                    }
                }
                mlp::forward_batch(
                    layout,
                    weights,
                    model.user_width(),
                    &self.hidden0,
                    &self.block_x,
                    rows,
                    &mut self.block_acts,
                    Keep::Scores,
                );
            }
            for (o, y) in scores.iter_mut().zip(mlp::scores(layout, &self.block_acts, rows)) {
                *o = *y;
            }
        }
    }

    /// One gradient step: `p -= rate · g`, with one scalar rate or the model's per-parameter
    /// rates when `scalar` is None.
    fn step(&mut self, scalar: Option<f32>) {
        match scalar {
            Some(lr) => {
                let model: &Model = self.model.borrow();
                for range in adapted_ranges(model, self.low_rank.valid) {
                    let (Some(params), Some(grads)) = (self.params.get_mut(range.clone()), self.grads.get(range))
                    else {
                        continue;
                    };
                    for (p, g) in params.iter_mut().zip(grads) {
                        *p -= lr * g;
                    }
                }
                self.track_low_rank(lr);
            }
            None => {
                self.materialize_low_rank();
                let model: &Model = self.model.borrow();
                for ((p, g), lr) in self.params.iter_mut().zip(&self.grads).zip(model.parameter_rates()) {
                    *p -= lr * g;
                }
            }
        }
    }

    /// Folds the low-rank record into layer 0's item weights (`W0_item += Σ_j c_j ⊗ x_j`) and
    /// stops using it: from here on the weights themselves are adapted and scored with.
    fn materialize_low_rank(&mut self) {
        let record = &mut self.low_rank;
        if record.valid && record.rows > 0 {
            let model: &Model = self.model.borrow();
            let user_width = model.user_width();
            if let Some(shape) = model.layout().layers.first() {
                let item_width = shape.inputs - user_width;
                let at = shape.weight_at + user_width;
                if let Some(weights) = self.params.get_mut(at..) {
                    let coef = View::rows(&record.coef, record.rows, shape.outputs).t();
                    gemm(1.0, coef, View::rows(&record.x, record.rows, item_width), 1.0, weights, shape.inputs);
                }
            }
        }
        record.valid = false;
    }

    /// Adds this step's change of layer 0's item weights, `−lr · Σ_j ∂L/∂z0_j ⊗ x_j`, to the
    /// low-rank record (the gradient and the gathered support inputs are the last
    /// [`Session::support_gradient`]'s).
    fn track_low_rank(&mut self, lr: f32) {
        let record = &mut self.low_rank;
        if !record.valid {
            return;
        }
        let rows = self.support_dy.len();
        if rows == 0 {
            return;
        }
        // support_gradient has checked that the record runs over these rows (or folded it into
        // the weights and stopped using it).
        if record.rows == 0 {
            let item_width = self.support_x.len() / rows;
            record.start(&self.support_x[..rows * item_width], rows, item_width, self.support_delta0.len() / rows);
            // Scoring must not allocate: size its scratch now.
            let gram = SCORE_BLOCK * record.gram_width();
            if self.block_gram.len() < gram {
                self.block_gram.resize(gram, 0.0);
            }
        }
        for (c, d) in record.coef.iter_mut().zip(&self.support_delta0) {
            *c -= lr * d;
        }
    }

    /// HML: with several initialisations, adapt each on the resampled support's adapt part with
    /// the fixed rate, score the held-out part, and return the best (lowest support loss, first
    /// on ties).
    fn choose_init(&mut self, steps: u32) -> usize {
        let model: &Model = self.model.borrow();
        let count = model.init_count();
        if count < 2 {
            return 0;
        }
        let lr = model.body().adaptation.inner_lr;
        let (adapt, score) = crate::resample::split(self.support.len());
        let mut best = (f32::INFINITY, 0);
        for k in 0..count {
            self.load_init(k);
            for _ in 0..steps {
                self.support_gradient(Some(&adapt));
                self.step(Some(lr));
            }
            let held_out: Vec<(u32, f32)> =
                self.support.iter().zip(&score).filter(|(_, &s)| s).map(|(&pair, _)| pair).collect();
            let items: Vec<u32> = held_out.iter().map(|&(item, _)| item).collect();
            let mut outputs = vec![0.0; items.len()];
            self.raw_scores(&items, &mut outputs);
            let click = self.model().is_click();
            let total: f32 = outputs.iter().zip(&held_out).map(|(&z, &(_, r))| loss(click, z, r)).sum();
            let mean = total / held_out.len().max(1) as f32;
            if mean < best.0 {
                best = (mean, k);
            }
        }
        self.load_init(0);
        best.1
    }

    /// The user's own learning rate: alpha'(h) from the network, plus (AT-PAML) the
    /// kernel-weighted rates of the nearest stored users. Fills the explanation's parts.
    fn personal_rate(&mut self) -> f32 {
        self.write_user_embedding();
        let model: &Model = self.model.borrow();
        let LearningRate::Network { hidden, output } = &model.body().learning_rate else {
            return model.body().adaptation.inner_lr;
        };
        let h = &self.embedding;
        let mut z = output.bias.first().copied().unwrap_or(0.0);
        for ((row, b), w) in hidden.weight.chunks_exact(h.len().max(1)).zip(&hidden.bias).zip(&output.weight) {
            let a = row.iter().zip(h).fold(0.0f32, |acc, (x, y)| acc + x * y) + b;
            if a > 0.0 {
                z += w * a;
            }
        }
        // torch's softplus (beta 1, threshold 20).
        let network = if z > 20.0 { z } else { libm::log1pf(libm::expf(z)) };
        self.explanation.network_rate = Some(network);
        let Some(table) = &model.body().neighbours else {
            return network;
        };
        let (term, neighbours) = neighbour_term(table, h);
        self.explanation.neighbours = neighbours;
        network + term
    }

    /// h = [profile part of the input; Σ_j (r_j − mean r) / n · item input_j] over the support.
    fn write_user_embedding(&mut self) {
        let model: &Model = self.model.borrow();
        let (user_width, width) = (model.user_width(), model.input_width());
        self.embedding.clear();
        self.embedding.resize(width, 0.0);
        if let Some(out) = self.embedding.get_mut(..user_width) {
            for (o, u) in out.iter_mut().zip(&self.user_input) {
                *o = *u;
            }
        }
        let n = self.support.len().max(1) as f32;
        let mean = self.support.iter().map(|&(_, r)| r).sum::<f32>() / n;
        for &(item, rating) in &self.support {
            let weight = (rating - mean) / n;
            let x_item = model.item_input(item);
            for (h, x) in self.embedding.get_mut(user_width..).unwrap_or(&mut []).iter_mut().zip(x_item) {
                *h += x * weight;
            }
        }
    }

    /// Sets `grads` to the gradient of the support loss w.r.t. the current parameters, over the
    /// ratings where `mask` is true (all when None): `(1/n) Σ (y_j − r_j)²` with
    /// `dL/dy_j = 2 (y_j − r_j) / n`, or for clicks `(1/n) Σ softplus(z_j) − r_j·z_j` with
    /// `dL/dz_j = (σ(z_j) − r_j) / n`; accumulated in f32.
    fn support_gradient(&mut self, mask: Option<&[bool]>) {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        self.grads.resize(layout.param_len, 0.0);
        let included = |j: usize| mask.is_none_or(|m| m.get(j).copied().unwrap_or(false));
        let n = (0..self.support.len()).filter(|&j| included(j)).count();
        if n == 0 {
            return;
        }
        // Gather the included ratings' item inputs, run the whole support set as one batch.
        let item_width = model.input_width() - model.user_width();
        self.support_x.clear();
        self.support_dy.clear();
        for (j, &(item, rating)) in self.support.iter().enumerate() {
            if included(j) {
                self.support_x.extend_from_slice(model.item_input(item));
                self.support_dy.push(rating);
            }
        }
        debug_assert_eq!(self.support_x.len(), n * item_width);
        self.support_acts.resize(n * layout.act_width(), 0.0);
        self.g_cur.resize(n * layout.max_width, 0.0);
        self.g_next.resize(n * layout.max_width, 0.0);
        self.support_delta0.resize(n * layout.layers.first().map_or(0, |l| l.outputs), 0.0);
        mlp::user_hidden(layout, &self.params, &self.user_input, &mut self.hidden0);
        // While the low-rank record holds the adaptation, layer 0's item weights in `params` stay
        // at the initialisation: the support rows' item part is the precomputed `W0·x_j` plus
        // `Σ_k c_k (x_k · x_j)`, and their gradient is not formed (the record takes the step).
        let record = &self.low_rank;
        let low_rank =
            record.valid && (record.rows == 0 || (record.rows == n && same_bits(&record.x, &self.support_x)));
        if !low_rank && record.valid {
            self.materialize_low_rank();
        }
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        for range in adapted_ranges(model, low_rank) {
            if let Some(grads) = self.grads.get_mut(range) {
                grads.fill(0.0);
            }
        }
        // The weights change every step: transposing them for the kernel costs what it saves.
        let weights = Weights { params: &self.params, upper_t: &[] };
        if low_rank {
            let record = &self.low_rank;
            let z0 = &mut self.support_acts[..n * self.hidden0.len()];
            let items = self.support.iter().enumerate().filter(|&(j, _)| included(j)).map(|(_, &(item, _))| item);
            self.support_gram.resize(n * record.gram_width(), 0.0);
            record.layer0(model, &self.hidden0, items, &self.support_x, n, z0, &mut self.support_gram);
            mlp::forward_upper(layout, weights, n, &mut self.support_acts, Keep::Activations);
        } else {
            mlp::forward_batch(
                layout,
                weights,
                model.user_width(),
                &self.hidden0,
                &self.support_x,
                n,
                &mut self.support_acts,
                Keep::Activations,
            );
        }
        // dL/dy_j from the outputs and the ratings parked in support_dy.
        let outputs = mlp::scores(layout, &self.support_acts, n);
        if model.is_click() {
            let scale = 1.0 / n as f32;
            for (d, z) in self.support_dy.iter_mut().zip(outputs) {
                *d = scale * (sigmoid(*z) - *d);
            }
        } else {
            let scale = 2.0 / n as f32;
            for (d, y) in self.support_dy.iter_mut().zip(outputs) {
                *d = scale * (y - *d);
            }
        }
        mlp::backward_batch(
            layout,
            &self.params,
            &self.user_input,
            &self.support_x,
            n,
            &self.support_acts,
            &self.support_dy,
            &mut self.grads,
            &mut self.g_cur,
            &mut self.g_next,
            &mut self.support_delta0,
            !low_rank,
        );
    }

    /// Recomputes user field `i`'s vector in the cached user part of the input.
    fn refresh_user_field(&mut self, i: usize) {
        let model: &Model = self.model.borrow();
        let dim = model.embedding_dim();
        let start = i.saturating_mul(dim);
        let (Some(spec), Some(rows), Some(out)) = (
            model.body().user_fields.get(i),
            self.profile.get(i),
            self.user_input.get_mut(start..start.saturating_add(dim)),
        ) else {
            return;
        };
        field_vector(spec, rows, out);
    }

    /// Drops a stale adaptation.
    fn invalidate(&mut self) {
        self.reset_adaptation();
        self.explanation = Explanation::default();
    }
}

/// Whether two vectors hold the same bit patterns (stricter than `==`, which a NaN fails and
/// `-0.0 == 0.0` passes; a false "different" only costs the low-rank shortcut). An OR over
/// XORs vectorises, where `==` on floats compared one pair per branch: 8% of an adaptation.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u32, |acc, (x, y)| acc | (x.to_bits() ^ y.to_bits())) == 0
}

/// The ranges of the flat parameters a gradient step changes: all of them, or while the low-rank
/// record holds the adaptation everything but layer 0's item columns (64 × 128 of the ~20k
/// parameters of a MovieLens-sized model: their gradient is never formed, so neither zeroing
/// nor stepping over them does anything).
fn adapted_ranges(model: &Model, low_rank: bool) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
    let layout = model.layout();
    let user_width = model.user_width();
    let first = layout.layers.first().filter(|_| low_rank);
    // Layer 0's rows: their user columns only.
    let rows = first.into_iter().flat_map(move |shape| {
        (0..shape.outputs).map(move |o| {
            let at = shape.weight_at + o * shape.inputs;
            at..at + user_width
        })
    });
    // What precedes layer 0's weights (nothing in today's layout), and everything after them
    // (or everything).
    let before = first.map_or(0..0, |shape| 0..shape.weight_at);
    let rest_at = first.map_or(0, |shape| shape.weight_at + shape.outputs * shape.inputs);
    core::iter::once(before).chain(rows).chain(core::iter::once(rest_at..layout.param_len))
}

/// The logistic function, saturating cleanly for large |z|.
fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::expf(-z))
    } else {
        let e = libm::expf(z);
        e / (1.0 + e)
    }
}

/// One support entry's loss for raw output `z` and target `r`: squared error, or for clicks
/// binary cross-entropy `softplus(z) − r·z` (as the trainer computes it).
fn loss(click: bool, z: f32, r: f32) -> f32 {
    if click {
        let softplus = if z > 20.0 { z } else { libm::log1pf(libm::expf(z)) };
        softplus - r * z
    } else {
        (z - r) * (z - r)
    }
}

/// AT-PAML: key = normalise(h · projection); the K nearest stored keys by squared distance
/// (an exact scan, first entry on ties); returns Σ_k s_k / (Σ_j s_j + σ) · rate_k with
/// s_k = exp(−δ d_k²), and the neighbours nearest first.
fn neighbour_term(table: &NeighbourTable, h: &[f32]) -> (f32, heapless::Vec<Neighbour, MAX_NEIGHBOURS>) {
    let key_dim = table.key_dim as usize;
    let mut key: heapless::Vec<f32, 64> = heapless::Vec::new();
    let mut key_heap: Vec<f32> = Vec::new();
    let key: &mut [f32] = if key_dim <= 64 {
        let _ = key.resize(key_dim, 0.0);
        &mut key
    } else {
        key_heap.resize(key_dim, 0.0);
        &mut key_heap
    };
    for (hi, row) in h.iter().zip(table.projection.chunks_exact(key_dim)) {
        for (k, p) in key.iter_mut().zip(row) {
            *k += hi * p;
        }
    }
    // As the trainer: the squared norm is clamped to 1e-16 before the square root.
    let norm = libm::sqrtf(key.iter().map(|k| k * k).sum::<f32>().max(1e-16));
    for k in key.iter_mut() {
        *k /= norm;
    }
    // A scan: on the keys of trained AT-PAML tables (≤ 4096 entries, 16 dimensions) a kd-tree
    // saves 10–20% of one search at most (`trainer bench neighbours`), not worth building.
    let mut found = crate::neighbours::Nearest::new();
    crate::neighbours::nearest_scan(&table.keys, key_dim, key, table.neighbours as usize, &mut found);
    let mut nearest: heapless::Vec<Neighbour, MAX_NEIGHBOURS> = found
        .iter()
        .map(|&(entry, distance)| Neighbour {
            entry,
            distance,
            weight: 0.0,
            rate: table.rates.get(entry as usize).copied().unwrap_or(0.0),
        })
        .collect();
    let similarities: heapless::Vec<f32, MAX_NEIGHBOURS> =
        nearest.iter().map(|n| libm::expf(-table.delta * n.distance)).collect();
    let total: f32 = similarities.iter().sum::<f32>() + table.sigma;
    let mut term = 0.0;
    for (n, s) in nearest.iter_mut().zip(&similarities) {
        n.weight = s / total;
        term += n.weight * n.rate;
    }
    (term, nearest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        Adaptation, DenseLayer, FieldSpec, ItemRecord, LearningRate, Method, ModelBody, RatingScale, Task,
    };
    use alloc::string::ToString;

    fn wave(n: usize, phase: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|i| libm::sinf(i as f32 * 1.37 + phase) * scale).collect()
    }

    fn body() -> ModelBody {
        let field = |name: &str, kind, vocabulary: &[&str], phase| {
            let mut spec = FieldSpec {
                name: name.to_string(),
                kind,
                vocabulary: vocabulary.iter().map(|v| v.to_string()).collect(),
                embedding: Vec::new(),
            };
            spec.embedding = wave(spec.rows() * 3, phase, 1.0);
            spec
        };
        let layer = |inputs: u32, outputs: u32, phase| DenseLayer {
            inputs,
            outputs,
            weight: wave((inputs * outputs) as usize, phase, 0.8),
            bias: wave(outputs as usize, phase + 0.5, 0.1),
        };
        let item = |id: &str, a: u32, b: Vec<u32>| ItemRecord { id: id.to_string(), rows: vec![vec![a], b] };
        ModelBody {
            method: Method::Melu,
            task: Task::Rating,
            embedding_dim: 3,
            user_fields: vec![field("u", FieldKind::Categorical, &["a", "b"], 0.1)],
            item_fields: vec![
                field("c", FieldKind::Categorical, &["x", "y", "z"], 0.2),
                field("m", FieldKind::MultiCategorical { separator: '|' }, &["p", "q"], 0.3),
            ],
            items: vec![
                item("i0", 1, vec![1]),
                item("i1", 2, vec![1, 2]),
                item("i2", 3, vec![]),
                item("i3", 0, vec![2]),
            ],
            layers: vec![layer(9, 5, 0.4), layer(5, 4, 0.5), layer(4, 1, 0.6)],
            adaptation: Adaptation { inner_lr: 0.1, inner_steps: 2 },
            extra_inits: Vec::new(),
            learning_rate: LearningRate::Fixed,
            neighbours: None,
            rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.0 },
            factors: None,
        }
    }

    /// The support loss as the model defines it, from public predictions: MSE, or binary
    /// cross-entropy of the predicted probabilities for a click model.
    fn support_loss(session: &mut Session<&Model>) -> f64 {
        let support = session.support.clone();
        let click = session.model().is_click();
        let n = support.len() as f64;
        support
            .iter()
            .map(|&(item, r)| {
                let (y, r) = (session.predict(item).unwrap() as f64, r as f64);
                if click {
                    -(r * y.ln() + (1.0 - r) * (1.0 - y).ln())
                } else {
                    (y - r) * (y - r)
                }
            })
            .sum::<f64>()
            / n
    }

    fn assert_gradient_matches_central_differences(body: ModelBody, support: &[(u32, f32)]) {
        let model = Model::from_body(body).unwrap();
        let mut session = Session::new(&model);
        session.set_profile("u", "b").unwrap();
        for &(item, rating) in support {
            session.add_rating_by_index(item, rating).unwrap();
        }
        // The parameters are perturbed directly below: form every gradient and score with the
        // weights themselves, not the low-rank record.
        session.materialize_low_rank();
        session.support_gradient(None);
        let analytic = session.grads.clone();
        assert_eq!(analytic.len(), model.layout().param_len);
        let h = 1e-3f32;
        let mut nonzero = 0;
        for (k, &a) in analytic.iter().enumerate() {
            let a = a as f64;
            let original = session.params[k];
            session.params[k] = original + h;
            let plus = support_loss(&mut session);
            session.params[k] = original - h;
            let minus = support_loss(&mut session);
            session.params[k] = original;
            let numeric = (plus - minus) / (2.0 * h as f64);
            assert!(
                (a - numeric).abs() <= 2e-3 + 2e-3 * numeric.abs(),
                "parameter {k}: analytic {a} vs numeric {numeric}"
            );
            if a.abs() > 1e-3 {
                nonzero += 1;
            }
        }
        // The check is meaningful: most parameters get a real gradient.
        assert!(nonzero > analytic.len() / 2, "{nonzero} of {}", analytic.len());
    }

    #[test]
    fn analytic_gradient_matches_central_differences() {
        assert_gradient_matches_central_differences(body(), &[(0, 4.0), (1, 1.5), (2, 5.0), (3, 2.0)]);
    }

    #[test]
    fn click_gradient_matches_central_differences() {
        let mut click = body();
        click.task = Task::Click { threshold: 4.0 };
        click.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.5 };
        assert_gradient_matches_central_differences(click, &[(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.25)]);
    }

    /// Scoring through the low-rank record equals scoring with the adapted weights themselves.
    #[test]
    fn low_rank_scores_equal_full_product_scores() {
        for network in [false, true] {
            let mut b = body();
            if network {
                b.learning_rate = LearningRate::Network {
                    hidden: DenseLayer { inputs: 9, outputs: 3, weight: wave(27, 0.7, 0.5), bias: wave(3, 0.1, 0.1) },
                    output: DenseLayer { inputs: 3, outputs: 1, weight: wave(3, 0.2, 0.3), bias: vec![-2.0] },
                };
            }
            let model = Model::from_body(b).unwrap();
            let mut session = Session::new(&model);
            session.set_profile("u", "a").unwrap();
            for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0)] {
                session.add_rating_by_index(item, rating).unwrap();
            }
            session.adapt_steps(7).unwrap();
            assert!(session.low_rank.valid && session.low_rank.rows == 3);
            let items = [0, 1, 2, 3, 3, 1];
            let mut fast = [0.0; 6];
            session.score_indices(&items, &mut fast).unwrap();
            session.materialize_low_rank();
            assert!(!session.low_rank.valid);
            let mut full = [0.0; 6];
            session.score_indices(&items, &mut full).unwrap();
            for (a, b) in fast.iter().zip(&full) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{fast:?} vs {full:?}");
            }
            // A session that never uses the low-rank path adapts to the same scores.
            let mut reference = Session::new(&model);
            reference.full_weights_only = true;
            reference.load_init(0);
            reference.set_profile("u", "a").unwrap();
            for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0)] {
                reference.add_rating_by_index(item, rating).unwrap();
            }
            reference.adapt_steps(7).unwrap();
            assert!(!reference.low_rank.valid);
            let mut expected = [0.0; 6];
            reference.score_indices(&items, &mut expected).unwrap();
            for (a, b) in fast.iter().zip(&expected) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{fast:?} vs {expected:?}");
            }
            let mut unadapted = [0.0; 6];
            session.reset_adaptation();
            session.score_indices(&items, &mut unadapted).unwrap();
            assert!(fast.iter().zip(&unadapted).any(|(a, b)| (a - b).abs() > 1e-3), "adaptation moved scores");
        }
    }

    #[test]
    fn click_scores_are_probabilities_and_adaptation_follows_the_labels() {
        let mut click = body();
        click.task = Task::Click { threshold: 4.0 };
        click.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.5 };
        let model = Model::from_body(click).unwrap();
        let mut session = Session::new(&model);
        assert_eq!(session.add_rating_by_index(0, 4.0), Err(Error::InvalidRating));
        session.add_rating_by_index(0, 1.0).unwrap();
        session.add_rating_by_index(3, 0.0).unwrap();
        let before = [session.predict(0).unwrap(), session.predict(3).unwrap()];
        session.adapt_steps(50).unwrap();
        let after = [session.predict(0).unwrap(), session.predict(3).unwrap()];
        assert!(before.iter().chain(&after).all(|p| *p > 0.0 && *p < 1.0), "{before:?} {after:?}");
        assert!(after[0] > before[0] && after[1] < before[1], "{before:?} -> {after:?}");
    }

    #[test]
    fn unset_fields_follow_their_kind() {
        let mut b = body();
        b.user_fields.push(b.item_fields[1].clone());
        b.user_fields[1].name = "tags".to_string();
        b.layers[0] = DenseLayer { inputs: 12, outputs: 5, weight: wave(60, 0.4, 0.8), bias: wave(5, 0.9, 0.1) };
        let model = Model::from_body(b).unwrap();
        let session = Session::new(&model);
        assert_eq!(session.profile, vec![vec![0], vec![]]);
        // Categorical unset → row 0; multi-categorical unset → zeros.
        assert_eq!(session.user_input[..3], model.body().user_fields[0].embedding[..3]);
        assert_eq!(session.user_input[3..6], [0.0; 3]);
    }
}
