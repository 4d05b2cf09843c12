//! The matrix-factorisation path: a factor model adapts by the exact ridge solve (fold-in) and
//! scores `μ + b_u + b_i + p_u · q_i`.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;

use super::explain::FoldIn;
use super::Session;
use crate::error::{broken, Invariant, Result};
use crate::factors::{self, Ridge};
use crate::format::Factors;
use crate::model::Model;

/// A factor model's user: their vector and the system it is solved from.
#[derive(Debug, Clone, Default)]
pub(super) struct UserFactors {
    /// `[b_u, p_u]` (zeros until a fold-in; empty for MLP models).
    values: Vec<f32>,
    /// The fold-in system (sized by the first fold-in).
    ridge: Ridge,
}

impl UserFactors {
    /// Zeros for a factor model, nothing for an MLP model.
    pub(super) fn new(model: &Model) -> UserFactors {
        let values = model.factors().map_or_else(Vec::new, |f| vec![0.0; f.factors as usize + 1]);
        UserFactors { values, ridge: Ridge::default() }
    }

    /// Back to no fold-in (`μ + b_i`).
    pub(super) fn clear(&mut self) {
        self.values.fill(0.0);
    }

    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.values.capacity() * core::mem::size_of::<f32>() + self.ridge.heap_bytes()
    }

    /// Scores checked items; a click model's scores are kept probabilities.
    pub(super) fn score(&self, model: &Model, factors: &Factors, items: &[u32], out: &mut [f32]) -> Result<()> {
        let mean = model.body().rating.global_mean;
        for (o, &item) in out.iter_mut().zip(items) {
            *o = factors::score(factors, mean, &self.values, item)?;
        }
        // A click factor model regresses on the labels: keep its scores probabilities.
        if model.is_click() {
            for y in out.iter_mut() {
                *y = factors::click_probability(*y);
            }
        }
        Ok(())
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// A factor model's adaptation: the user's `[b_u, p_u]` by the exact ridge solve.
    pub(super) fn fold_in(&mut self) -> Result<()> {
        let model: &Model = self.model.borrow();
        let Some(factors) = model.factors() else {
            return Err(broken("fold-in on a model without factors"));
        };
        let mean = model.body().rating.global_mean;
        let user = &mut self.factors;
        factors::fold_in(factors, mean, &self.support, &mut user.ridge, &mut user.values)?;
        let user_bias = user.values.first().copied().invariant("fold-in: a user vector without its bias")?;
        self.adapted = true;
        self.explanation.adapted = true;
        self.explanation.fold_in = Some(FoldIn {
            support: u32::try_from(self.support.len()).unwrap_or(u32::MAX),
            regularisation: factors.regularisation,
            bias_regularisation: factors.bias_regularisation,
            user_bias,
        });
        Ok(())
    }
}
