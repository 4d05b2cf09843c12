//! The fold-in: the user's part of a model solved exactly from their ratings by one ridge solve
//! ([`crate::factors::Ridge`]) instead of gradient steps. A factor model folds in `[b_u, p_u]`
//! and scores `μ + b_u + b_i + p_u · q_i`; a product model with a fold-in head
//! ([`crate::format::FoldInHead`]) folds in its output layer and `p_u`, and adds `p_u · q_i` to
//! the MLP's raw output.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;

use super::adapt::included;
use super::explain::FoldIn;
use super::score::sigmoid;
use super::Session;
use crate::error::{broken, ensure, Invariant, Result};
use crate::factors::{self, Ridge};
use crate::format::{Factors, FoldInHead, LearningRate};
use crate::mlp;
use crate::model::Model;

/// A user's fold-in: their vector and the system it is solved from.
#[derive(Debug, Clone, Default)]
pub(super) struct UserFactors {
    /// A factor model's `[b_u, p_u]`, or a fold-in head's `p_u` (k values); zeros until a
    /// fold-in, empty for other models.
    values: Vec<f32>,
    /// The fold-in system (sized by the first fold-in).
    ridge: Ridge,
    /// A fold-in head's row `z_j = [h_j; q_j; 1]` being added, then its solution δ.
    row: Vec<f32>,
}

/// What divides a fold-in head's ridge weights (see [`FoldInHead`]): the rates relative to
/// `inner_lr` of the method's inner loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum HeadRates {
    /// One fixed rate: Λ is the ridge weights themselves.
    Fixed,
    /// The user's own rate (PAML family): every weight times `inner_lr / rate`.
    PerUser(f32),
    /// Meta-SGD: the output layer's own rates (`inner_lr` for the factors).
    PerParameter,
}

impl UserFactors {
    /// Zeros for a factor model (`1 + k`) or a fold-in head (`k`), nothing for other models.
    pub(super) fn new(model: &Model) -> UserFactors {
        let len = match (model.factors(), model.fold_in_head()) {
            (Some(f), _) => f.factors as usize + 1,
            (None, Some(head)) => head.factors as usize,
            (None, None) => 0,
        };
        UserFactors { values: vec![0.0; len], ridge: Ridge::default(), row: Vec::new() }
    }

    /// Back to no fold-in (`μ + b_i`, or the head's initialisation with `p_u = 0`).
    pub(super) fn clear(&mut self) {
        self.values.fill(0.0);
    }

    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        (self.values.capacity() + self.row.capacity()) * core::mem::size_of::<f32>() + self.ridge.heap_bytes()
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

    /// Adds `p_u · q_i` to the raw outputs of checked items, for a fold-in head with factors
    /// (nothing otherwise, nor before a fold-in: `p_u` is then zero).
    pub(super) fn add_user_term(&self, model: &Model, items: &[u32], out: &mut [f32]) -> Result<()> {
        if model.fold_in_head().is_none_or(|head| head.factors == 0) {
            return Ok(());
        }
        for (o, &item) in out.iter_mut().zip(items) {
            let q = model.fold_in_factors(item).invariant("fold-in score: an item past the factors")?;
            *o += self.values.iter().zip(q).map(|(p, q)| p * q).sum::<f32>();
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

    /// A fold-in head's adaptation (see [`FoldInHead`]): HML's choice of initialisation (each
    /// folded in on the resampled support's adapt part with the fixed rate's ridge weights),
    /// the ridge weights of the method's rate, then one solve over the whole support set.
    pub(super) fn fold_in_head(&mut self) -> Result<()> {
        self.profile.refresh(self.model.borrow())?;
        let init = self.choose_init(|session, mask| session.solve_head(Some(mask), HeadRates::Fixed))?;
        if init != 0 {
            self.load_init(init);
        }
        let lr = self.model().body().adaptation.inner_lr;
        let rates = self.head_rates()?;
        self.solve_head(None, rates)?;
        self.adapted = true;
        self.explanation.adapted = true;
        self.explanation.init = init as u32;
        self.explanation.learning_rate = match rates {
            HeadRates::Fixed => Some(lr),
            HeadRates::PerUser(rate) => Some(rate),
            HeadRates::PerParameter => None,
        };
        Ok(())
    }

    /// What divides the ridge weights for this user: the method's rate ([`HeadRates`]). The
    /// profile must be fresh (the learning-rate network reads it).
    pub(super) fn head_rates(&mut self) -> Result<HeadRates> {
        Ok(match &self.model().body().learning_rate {
            LearningRate::Fixed => HeadRates::Fixed,
            LearningRate::PerParameter(_) => HeadRates::PerParameter,
            LearningRate::Network { .. } => HeadRates::PerUser(self.personal_rate()?),
        })
    }

    /// The fold-in's backward pass (a contribution's, `session::contribute`), after a
    /// [`Session::solve_head`] with `rates`: `g` holds a loss's gradient with respect to the
    /// solved head `[w; p; b]` (`d + k + 1`). The solved head is `θ* = A⁻¹(Λθ₀ + Zᵀy)` for ratings
    /// (`A = ZᵀZ + Λ`, θ₀ = `[w₀; 0; b₀]`), so with `u = A⁻¹g` the gradient with respect to θ₀ is
    /// `Λ ∘ u`, written back into `g`, and with respect to the log ridge weights
    /// `−Λ ∘ u ∘ δ` (δ = θ* − θ₀), written into `log_ridge`. A click head's curvature `s_j`
    /// depends on θ₀ too; that third-order term is left out (first order).
    ///
    /// Errors: [`crate::Error::Internal`] (a bug: no solve before, or sizes that disagree).
    pub(super) fn head_backward(&self, rates: HeadRates, g: &mut [f64], log_ridge: &mut [f32]) -> Result<()> {
        let model: &Model = self.model.borrow();
        let head = model.fold_in_head().invariant("fold-in backward: a model without a fold-in head")?;
        let last = *model.layout().layers.last().invariant("fold-in backward: an MLP without layers")?;
        let lambda = ridge_weights(model, head, rates, last.weight_at, last.inputs)?;
        let system = &self.factors.ridge;
        let delta = system.solution();
        ensure(delta.len() == g.len() && log_ridge.len() == g.len(), "fold-in backward: sizes differ")?;
        system.solve_factored(g)?;
        for (m, (u, (d, out))) in g.iter_mut().zip(delta.iter().zip(log_ridge.iter_mut())).enumerate() {
            let l = lambda(m);
            *out = (-l * *u * *d) as f32;
            *u *= l;
        }
        Ok(())
    }

    /// Folds the support ratings where `mask` is true (all when None) into the current
    /// initialisation's output layer and `p_u` (see [`FoldInHead`]): the rows `z_j`, weights
    /// `s_j` and residuals `r_j` at the initialisation, the solve, and `θ₀ + δ`.
    ///
    /// Errors: [`crate::Error::NonFiniteParameter`] when the system is not positive definite
    /// in f64 (ridge weights too small for this user's features, or features that overflowed);
    /// [`crate::Error::Internal`] (a bug).
    pub(super) fn solve_head(&mut self, mask: Option<&[bool]>, rates: HeadRates) -> Result<()> {
        let (n, _) = self.support_activations(mask)?;
        let model: &Model = self.model.borrow();
        let head = model.fold_in_head().invariant("fold-in head: a model without one")?;
        let last = *model.layout().layers.last().invariant("fold-in head: an MLP without layers")?;
        let (d, k) = (last.inputs, head.factors as usize);
        ensure(head.ridge.len() == d + k + 1, "fold-in head: ridge weights of another width")?;
        let ridge = ridge_weights(model, head, rates, last.weight_at, d)?;
        // What the explanation reports: the mean Λ over the factors (the hidden features' when
        // there are none) and the bias's.
        let mean_of = |m: core::ops::Range<usize>| m.clone().map(&ridge).sum::<f64>() / m.len().max(1) as f64;
        let lambdas = (if k > 0 { mean_of(d..d + k) } else { mean_of(0..d) }, ridge(d + k));
        self.factors.ridge.reset_with(d + k + 1, ridge);
        self.add_head_rows(mask, n, d, k)?;
        self.factors.ridge.solve_if_definite(&mut self.factors.row)?;

        let model: &Model = self.model.borrow();
        // A one-layer MLP's output layer is layer 0: its item columns change, which the low-rank
        // record (layer 0's item part at the initialisation) does not know.
        if model.scope().item_columns() {
            self.low_rank.materialize(model, &mut self.params)?;
        }
        let (delta_w, rest) = self.factors.row.split_at(d);
        let (delta_p, delta_b) = rest.split_at(k);
        let w = self.params.get_mut(last.weight_at..last.weight_at + d).invariant("fold-in head: weights past θ")?;
        for (w, dw) in w.iter_mut().zip(delta_w) {
            *w += dw;
        }
        let b = self.params.get_mut(last.weight_at + d).invariant("fold-in head: bias past θ")?;
        let user_bias = delta_b.first().copied().invariant("fold-in head: no bias in δ")?;
        *b += user_bias;
        if mask.is_none() {
            self.explanation.fold_in = Some(FoldIn {
                support: u32::try_from(n).unwrap_or(u32::MAX),
                regularisation: lambdas.0 as f32,
                bias_regularisation: lambdas.1 as f32,
                user_bias,
            });
        }
        ensure(self.factors.values.len() == k, "fold-in head: a user vector of another width")?;
        self.factors.values.copy_from_slice(delta_p);
        Ok(())
    }

    /// Adds the `n` support rows the last forward pass ran (those where `mask` is true) to the
    /// fold-in system: `z_j = [h_j; q_j; 1]` (`d` features, `k` factors), and from the output
    /// plus the item's bias, `start_j`, the residual and curvature of the task's loss.
    fn add_head_rows(&mut self, mask: Option<&[bool]>, n: usize, d: usize, k: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        let scratch = &self.adaptation;
        let starts = mlp::scores(layout, &scratch.acts, n)?;
        // The output layer's inputs: the last hidden layer's activations, or the input itself.
        let hidden = match layout.layers.len().checked_sub(2) {
            Some(l) => {
                let at = layout.act_at(l, n);
                Some(scratch.acts.get(at..at + n * d).invariant("fold-in head: hidden activations out of range")?)
            }
            None => None,
        };
        let user = self.profile.input()?;
        let item_width = d.saturating_sub(user.len());
        let items = self.support.iter().enumerate().filter(|&(j, _)| included(mask, j)).map(|(_, &(item, _))| item);
        let row = &mut self.factors.row;
        row.clear();
        row.resize(d + k + 1, 0.0);
        for (j, item) in items.enumerate() {
            let (features, rest) = row.split_at_mut(d);
            match hidden {
                Some(hidden) => {
                    features.copy_from_slice(hidden.get(j * d..(j + 1) * d).invariant("fold-in head: hidden row")?)
                }
                None => {
                    let x = scratch.x.get(j * item_width..(j + 1) * item_width);
                    let (user_part, item_part) = features.split_at_mut(d - item_width);
                    user_part.copy_from_slice(user.get(..user_part.len()).invariant("fold-in head: user input")?);
                    item_part.copy_from_slice(x.invariant("fold-in head: an item input past the rows")?);
                }
            }
            let (q, one) = rest.split_at_mut(k);
            q.copy_from_slice(model.fold_in_factors(item).invariant("fold-in head: an item past the factors")?);
            one.fill(1.0);
            let bias = scratch.bias.get(j).copied().unwrap_or(0.0);
            let start = starts.get(j).copied().invariant("fold-in head: fewer outputs than rows")? + bias;
            let y = scratch.dy.get(j).copied().invariant("fold-in head: fewer ratings than rows")?;
            let (residual, curvature) = if model.is_click() {
                let p = sigmoid(start);
                (y - p, p * (1.0 - p))
            } else {
                (y - start, 1.0)
            };
            self.factors.ridge.add_weighted(row, f64::from(curvature), f64::from(residual));
        }
        ensure(self.factors.ridge.rows() == n, "fold-in head: rows other than the gathered ones")
    }
}

/// `Λ_m` of a fold-in head: `ridge_m · inner_lr / rate_m` (rates below 1e-12 count as 1e-12, as
/// do `inner_lr` below it), the rate of every `m` per [`HeadRates`]; for per-parameter rates
/// the output weights' (`m < d`), `inner_lr` (factors) and the output bias's (`m = d + k`).
fn ridge_weights<'m>(
    model: &'m Model,
    head: &'m FoldInHead,
    rates: HeadRates,
    weight_at: usize,
    d: usize,
) -> Result<impl Fn(usize) -> f64 + 'm> {
    let base = f64::from(model.body().adaptation.inner_lr).max(1e-12);
    let bias_at = head.ridge.len().saturating_sub(1);
    let own = match rates {
        HeadRates::PerParameter => {
            let rates = model.parameter_rates().get(weight_at..weight_at + d + 1);
            rates.invariant("fold-in head: per-parameter rates past the output layer")?
        }
        HeadRates::Fixed | HeadRates::PerUser(_) => &[],
    };
    Ok(move |m: usize| {
        let lambda = head.ridge.get(m).map_or(1.0, |&l| f64::from(l));
        let rate = match rates {
            HeadRates::Fixed => return lambda,
            HeadRates::PerUser(rate) => f64::from(rate),
            HeadRates::PerParameter if m < d => own.get(m).map_or(base, |&r| f64::from(r)),
            HeadRates::PerParameter if m == bias_at => own.get(d).map_or(base, |&r| f64::from(r)),
            HeadRates::PerParameter => base,
        };
        lambda * base / rate.max(1e-12)
    })
}
