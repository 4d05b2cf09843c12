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
//! The split is the deterministic 80/20 shuffle HML uses ([`crate::resample::split`]): the same
//! ratings always give the same update, and the trainer can reproduce it.
//!
//! # What the update covers
//! The decision MLP's weights and biases (initialisation 0, the flat layout). Left out, and kept
//! as meta-trained by the server: the embedding tables (an embedding row's gradient is non-zero
//! only for the items this user rated, so sending it would reveal the rated items to anyone who
//! sees one blob), Meta-SGD's per-parameter rates and the learning-rate network (PAML family),
//! and AT-PAML's neighbour memory. Models whose adaptation is not gradient steps over every MLP
//! parameter (a factor model, a fold-in head, several initialisations (HML), an adaptation
//! scope other than all) are refused with [`Error::NotContributable`].

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
        let schema = crate::format::schema_hash(model.body());
        Ok(contribution::encode(contribution::model_id(model), schema, clip_norm, &update))
    }

    /// The length in bytes of this model's contributions ([`Session::contribute`]).
    pub fn contribution_len(&self) -> usize {
        contribution::encoded_len(self.model().layout().param_len)
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
        let (support, query) = crate::resample::split(self.support.len());
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
}
