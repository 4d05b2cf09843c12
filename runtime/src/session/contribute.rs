//! Federated contribution: this user's first-order meta-update, clipped, as a wire blob
//! ([`crate::contribution`]).
//!
//! # Why FOMAML on a support/query split, not Reptile
//! The trainer meta-trains with first-order MAML (`--first-order`): the outer gradient is the
//! query loss's gradient at the weights adapted on the support set. A device that splits its own
//! ratings the same way and sends `∇θ L_query(θ_adapted)` contributes exactly the term one user
//! adds to the trainer's central first-order meta-gradient, so a federated round with every user,
//! no noise and no clipping is the central step (the oracle the trainer can check), and the
//! server's step size means what `--meta-lr` means. A Reptile delta `θ_k − θ` has no central
//! counterpart in the trainer, needs k ≥ 2 steps to differ from plain joint training, and its
//! scale grows with the inner learning rate and step count, which makes one clip norm serve
//! fewer models. The cost is one adaptation on ~80% of the ratings plus one gradient.
//!
//! The split is the 80/20 shuffle HML uses, salted with the model id
//! ([`crate::resample::split_salted`]): the same ratings and model always give the same update,
//! and the trainer can reproduce it; since every round publishes a model with a new id, a device
//! sampled in several rounds scores on a different fifth of its ratings each time, so over the
//! rounds every rating serves as a query rating (with one fixed split, the same fifth did every
//! time: on 50,400 generated devices the rounds then recovered less of the central gain).
//!
//! # What the update covers
//! The decision MLP's weights and biases (initialisation 0, the flat layout). Left out, and kept
//! as meta-trained by the server: the embedding tables (an embedding row's gradient is non-zero
//! only for the items this user rated, so sending it would reveal the rated items to anyone who
//! sees one blob), Meta-SGD's per-parameter rates and the learning-rate network (PAML family),
//! and AT-PAML's neighbour memory. Models whose adaptation is neither gradient steps over every
//! MLP parameter nor the fold-in (a factor model, several initialisations (HML), an adaptation
//! scope `head` or `user`) are refused with [`Error::NotContributable`].
//!
//! # The fold-in (the product model's default adaptation)
//! A fold-in head ([`crate::format::FoldInHead`]) solves the output layer and the user's factors
//! exactly on the support part: `θ* = θ₀ + δ`, `(ZᵀSZ + Λ) δ = Zᵀr` over rows
//! `z_j = [h_j; q_j; 1]`. Its contribution ([`crate::contribution::VERSION_FOLD_IN`]) is the
//! gradient of the query part's loss (the MLP output plus the item's bias plus `p·q_i`):
//! - over the hidden layers: backpropagation through the MLP with the solved head held fixed,
//!   the solve's rows `z_j` treated as constants (the first-order part: differentiating the
//!   solve through its features would need a backward pass per support row);
//! - over the output layer's initialisation `(w₀, b₀)` and the log ridge weights: exact, through
//!   the solve, at the cost of one more pair of triangular solves with the Cholesky factor the
//!   fold-in already computed (`Λ∘A⁻¹g` and `−Λ∘A⁻¹g∘δ`, `g` the query gradient with respect to
//!   the solved head). The log ridge weights are the trainer's parameters (`fold_in_log_lambda`),
//!   dense (`d + k + 1` values), and say nothing about which items the user rated.
//!
//! Left out: the item biases and the item factors `q_i`. Their gradient is non-zero only at the
//! items this user rated (support and query), so sending them sparse would name those items;
//! sending them dense over the whole catalogue would hide the set but cost `items × (k + 1)`
//! values per device (490 KB for MovieLens-1M's 3,706 items at k = 32, 2.5× the MLP's update
//! even for a small model) and add noise of norm `zS√(items·(k+1))/m` to every round, so the server keeps them
//! as trained centrally, like the embedding tables.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;

use super::Session;
use crate::contribution;
use crate::error::{Error, Invariant, Result};
use crate::format::LearningRate;
use crate::model::Model;

impl<M: Borrow<Model>> Session<M> {
    /// This user's first-order meta-update from the support ratings, clipped flat to L2 norm
    /// `clip_norm`, as a contribution blob bound to the model ([`crate::contribution`]). See the
    /// module docs of `session::contribute` for the method and what it covers.
    ///
    /// Once it computes (it returns the blob or [`Error::NonFiniteParameter`]), it drops any
    /// adaptation: the session scores with the meta-learned weights afterwards (call
    /// [`Session::adapt`] again). Profile and ratings are kept. The refusals checked first
    /// ([`Session::check_contribution`]) leave the session as it was.
    ///
    /// Errors: [`Error::InvalidClipNorm`] (`clip_norm` NaN, infinite or not positive);
    /// [`Error::NotContributable`] (see above); [`Error::TooFewRatings`] (fewer than two support
    /// ratings: one to adapt on, one to score); [`Error::NonFiniteParameter`] (the update
    /// overflowed); [`Error::Internal`] (a bug).
    pub fn contribute(&mut self, clip_norm: f32) -> Result<Vec<u8>> {
        self.check_contribution(clip_norm)?;
        let gradient = self.query_gradient();
        // Never leave a support-only adaptation behind.
        self.drop_adaptation();
        let mut update = gradient?;
        if update.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFiniteParameter);
        }
        contribution::clip(&mut update, clip_norm);
        let model = self.model();
        let (model_id, schema) = model.contribution_ids();
        let version = contribution::UpdateLayout::of(model).version();
        Ok(contribution::encode_version(version, model_id, schema, clip_norm, &update))
    }

    /// The length in bytes of this model's contributions ([`Session::contribute`]).
    pub fn contribution_len(&self) -> usize {
        contribution::encoded_len(contribution::update_len(self.model()))
    }

    /// Checks what [`Session::contribute`] checks before it computes anything: the clip norm,
    /// the model and the rating count.
    pub fn check_contribution(&self, clip_norm: f32) -> Result<()> {
        if !clip_norm.is_finite() || clip_norm <= 0.0 {
            return Err(Error::InvalidClipNorm);
        }
        contribution::check_contributable(self.model())?;
        if self.support.len() < 2 {
            return Err(Error::TooFewRatings);
        }
        Ok(())
    }

    /// Adapts on the support part of the split with the model's own inner loop (its step count,
    /// and its fixed, per-parameter or per-user rate), then returns the gradient of the query
    /// part's loss at the adapted weights over every decision-MLP parameter.
    fn query_gradient(&mut self) -> Result<Vec<f32>> {
        self.reset_adaptation();
        self.explanation = super::Explanation::default();
        self.profile.refresh(self.model.borrow())?;
        let (model_id, _) = self.model().contribution_ids();
        let (support, query) = crate::resample::split_salted(self.support.len(), model_id);
        if self.model().fold_in_head().is_some() {
            return self.fold_in_query_gradient(&support, &query);
        }
        let model: &Model = self.model.borrow();
        let adaptation = model.body().adaptation;
        let scalar = match &model.body().learning_rate {
            LearningRate::Fixed => Some(adaptation.inner_lr),
            LearningRate::PerParameter(_) => None,
            LearningRate::Network { .. } => Some(self.personal_rate()?),
        };
        for _ in 0..adaptation.inner_steps {
            self.support_gradient(Some(&support))?;
            self.step(scalar)?;
        }
        // The query gradient must cover layer 0's item columns too: fold the low-rank record
        // into the weights so the backward pass forms them.
        let model: &Model = self.model.borrow();
        self.low_rank.materialize(model, &mut self.params)?;
        self.support_gradient(Some(&query))?;
        let grads = self.adaptation.grads();
        let len = self.model().layout().param_len;
        Ok(grads.get(..len).invariant("contribute: gradient shorter than the parameters")?.to_vec())
    }

    /// A fold-in head's update (see the module docs): the fold-in on the `support` part, the
    /// query part's loss gradient over every MLP parameter with the solved head fixed, then the
    /// output layer's initialisation and the log ridge weights through the solve.
    fn fold_in_query_gradient(&mut self, support: &[bool], query: &[bool]) -> Result<Vec<f32>> {
        let rates = self.head_rates()?;
        self.solve_head(Some(support), rates)?;
        let model: &Model = self.model.borrow();
        self.low_rank.materialize(model, &mut self.params)?;
        let (n, _) = self.support_activations(Some(query))?;
        // The user's term p·q_i joins the item's bias as the output's offset.
        let model: &Model = self.model.borrow();
        let k = model.fold_in_head().map_or(0, |head| head.factors as usize);
        let items: Vec<u32> = self.support.iter().zip(query).filter(|(_, &q)| q).map(|(&(item, _), _)| item).collect();
        let offsets = &mut self.adaptation.bias;
        offsets.resize(n, 0.0);
        self.factors.add_user_term(model, &items, offsets)?;
        self.loss_gradient(n)?;
        self.backward_all(n)?;
        let model: &Model = self.model.borrow();
        let last = *model.layout().layers.last().invariant("contribute: an MLP without layers")?;
        let d = last.inputs;
        let grads = self.adaptation.grads();
        let head_grads = grads.get(last.weight_at..last.weight_at + d + 1).invariant("contribute: no output layer")?;
        let mut g = vec![0.0f64; d + k + 1];
        for (g, &h) in g.iter_mut().zip(&head_grads[..d]) {
            *g = f64::from(h);
        }
        g[d + k] = f64::from(head_grads[d]);
        for (&dy, &item) in self.adaptation.dy.iter().zip(&items) {
            let q = model.fold_in_factors(item).invariant("contribute: an item past the factors")?;
            for (g, &q) in g[d..d + k].iter_mut().zip(q) {
                *g += f64::from(dy) * f64::from(q);
            }
        }
        let len = model.layout().param_len;
        let mut update = grads.get(..len).invariant("contribute: gradient shorter than the parameters")?.to_vec();
        update.resize(len + d + k + 1, 0.0);
        let (mlp, log_ridge) = update.split_at_mut(len);
        self.head_backward(rates, &mut g, log_ridge)?;
        let head = mlp.get_mut(last.weight_at..last.weight_at + d + 1).invariant("contribute: no output layer")?;
        for (w, &g) in head.iter_mut().zip(&g[..d]) {
            *w = g as f32;
        }
        head[d] = g[d + k] as f32;
        Ok(update)
    }
}
