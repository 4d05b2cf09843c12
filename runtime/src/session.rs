//! One user's session: profile, support ratings, adapted weights and scoring.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;

use crate::error::{Error, Result};
use crate::format::FieldKind;
use crate::mlp;
use crate::model::{field_vector, Model};

/// Most support ratings one session holds ([`Session::add_rating`] refuses more).
pub const MAX_SUPPORT_RATINGS: usize = 10_000;

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
/// on the mean squared error over the support ratings. Until then, and again after any change
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
    /// Activation chain `[x | layer outputs]`; `x[..user_width]` always holds the user part.
    acts: Vec<f32>,
    /// Gradient accumulator (allocated by the first adaptation).
    grads: Vec<f32>,
    /// Two backpropagation buffers of the widest layer.
    delta: Vec<f32>,
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
        let mut params = Vec::new();
        m.write_meta_params(&mut params);
        let acts = vec![0.0; m.layout().act_len];
        let delta = vec![0.0; m.layout().max_width.saturating_mul(2)];
        let mut session =
            Session { model, profile, support: Vec::new(), params, adapted: false, acts, grads: Vec::new(), delta };
        for i in 0..session.profile.len() {
            session.refresh_user_field(i);
        }
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
    /// Errors: [`Error::UnknownField`] if `field` is not one of the model's user fields.
    pub fn set_profile(&mut self, field: &str, value: &str) -> Result<()> {
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
    /// Errors: [`Error::UnknownItem`], [`Error::InvalidRating`] (NaN, infinite, or outside the
    /// model's rating scale), [`Error::TooManyRatings`] (more than [`MAX_SUPPORT_RATINGS`]).
    pub fn add_rating(&mut self, item_id: &str, rating: f32) -> Result<()> {
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
    /// steps with the model's `inner_lr` on `(1/n) Σ (f(x_j) − r_j)²` over the `n` support
    /// ratings, updating every layer's weights and biases. With no ratings (or zero steps) the
    /// weights stay meta-learned and the session is not adapted. Calling it twice gives the same
    /// weights. Cost: `steps × n` forward and backward passes.
    pub fn adapt_steps(&mut self, steps: u32) -> Result<()> {
        self.reset_adaptation();
        if self.support.is_empty() || steps == 0 {
            return Ok(());
        }
        let lr = self.model().body().adaptation.inner_lr;
        for _ in 0..steps {
            self.support_gradient();
            // Every parameter moves from the same gradient: plain full-batch gradient descent.
            for (p, g) in self.params.iter_mut().zip(&self.grads) {
                *p -= lr * g;
            }
        }
        self.adapted = true;
        Ok(())
    }

    /// Goes back to the meta-learned weights (keeps profile and ratings).
    pub fn reset_adaptation(&mut self) {
        if self.adapted {
            let model: &Model = self.model.borrow();
            model.write_meta_params(&mut self.params);
            self.adapted = false;
        }
    }

    /// Whether scores currently use weights adapted to the support set.
    pub fn is_adapted(&self) -> bool {
        self.adapted
    }

    /// Scores items by index into `out` (same length). Nothing is written on error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::UnknownItem`] (an index `>= item_count()`).
    pub fn score_indices(&mut self, items: &[u32], out: &mut [f32]) -> Result<()> {
        if items.len() != out.len() {
            return Err(Error::LengthMismatch);
        }
        let count = self.model().item_count();
        if items.iter().any(|&item| item as usize >= count) {
            return Err(Error::UnknownItem);
        }
        for (o, &item) in out.iter_mut().zip(items) {
            *o = self.score(item);
        }
        Ok(())
    }

    /// Scores items by id into `out` (same length). Nothing is written on error.
    ///
    /// Errors: [`Error::LengthMismatch`], [`Error::UnknownItem`].
    pub fn score_ids(&mut self, item_ids: &[&str], out: &mut [f32]) -> Result<()> {
        if item_ids.len() != out.len() {
            return Err(Error::LengthMismatch);
        }
        if item_ids.iter().any(|id| self.model().item_index(id).is_none()) {
            return Err(Error::UnknownItem);
        }
        for (o, id) in out.iter_mut().zip(item_ids) {
            let item = self.model().item_index(id).ok_or(Error::UnknownItem)?;
            *o = self.score(item);
        }
        Ok(())
    }

    /// Score of one item (the raw model output, not clamped to the rating scale).
    ///
    /// Errors: [`Error::UnknownItem`].
    pub fn predict(&mut self, item: u32) -> Result<f32> {
        if item as usize >= self.model().item_count() {
            return Err(Error::UnknownItem);
        }
        Ok(self.score(item))
    }

    // ---- internals ----

    /// Score of an item whose index was checked.
    fn score(&mut self, item: u32) -> f32 {
        let model: &Model = self.model.borrow();
        if let Some(x_item) = self.acts.get_mut(model.user_width()..model.input_width()) {
            model.write_item_input(item, x_item);
        }
        mlp::forward(model.layout(), &self.params, &mut self.acts)
    }

    /// Sets `grads` to the gradient of the support loss `(1/n) Σ (f(x_j) − r_j)²` w.r.t. the
    /// current parameters (`dL/dy_j = 2 (y_j − r_j) / n`, accumulated in f32).
    fn support_gradient(&mut self) {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        self.grads.clear();
        self.grads.resize(layout.param_len, 0.0);
        if self.support.is_empty() {
            return;
        }
        let scale = 2.0 / self.support.len() as f32;
        for &(item, rating) in &self.support {
            if let Some(x_item) = self.acts.get_mut(model.user_width()..model.input_width()) {
                model.write_item_input(item, x_item);
            }
            let y = mlp::forward(layout, &self.params, &mut self.acts);
            let dy = scale * (y - rating);
            mlp::backward(layout, &self.params, &self.acts, dy, &mut self.grads, &mut self.delta);
        }
    }

    /// Recomputes user field `i`'s vector in the cached user part of the input.
    fn refresh_user_field(&mut self, i: usize) {
        let model: &Model = self.model.borrow();
        let dim = model.embedding_dim();
        let start = i.saturating_mul(dim);
        let (Some(spec), Some(rows), Some(out)) =
            (model.body().user_fields.get(i), self.profile.get(i), self.acts.get_mut(start..start.saturating_add(dim)))
        else {
            return;
        };
        field_vector(spec, rows, out);
    }

    /// Drops a stale adaptation.
    fn invalidate(&mut self) {
        self.reset_adaptation();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Adaptation, DenseLayer, FieldSpec, ItemRecord, Method, ModelBody, RatingScale, Task};
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
            rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.0 },
        }
    }

    fn support_loss(session: &mut Session<&Model>) -> f64 {
        let support = session.support.clone();
        let n = support.len() as f64;
        support
            .iter()
            .map(|&(item, r)| {
                let y = session.score(item) as f64;
                (y - r as f64) * (y - r as f64)
            })
            .sum::<f64>()
            / n
    }

    #[test]
    fn analytic_gradient_matches_central_differences() {
        let model = Model::from_body(body()).unwrap();
        let mut session = Session::new(&model);
        session.set_profile("u", "b").unwrap();
        for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0), (3, 2.0)] {
            session.add_rating_by_index(item, rating).unwrap();
        }
        session.support_gradient();
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
    fn unset_fields_follow_their_kind() {
        let mut b = body();
        b.user_fields.push(b.item_fields[1].clone());
        b.user_fields[1].name = "tags".to_string();
        b.layers[0] = DenseLayer { inputs: 12, outputs: 5, weight: wave(60, 0.4, 0.8), bias: wave(5, 0.9, 0.1) };
        let model = Model::from_body(b).unwrap();
        let session = Session::new(&model);
        assert_eq!(session.profile, vec![vec![0], vec![]]);
        // Categorical unset → row 0; multi-categorical unset → zeros.
        assert_eq!(session.acts[..3], model.body().user_fields[0].embedding[..3]);
        assert_eq!(session.acts[3..6], [0.0; 3]);
    }
}
