//! The inner loop: support gradients, gradient steps, and HML's choice of initialisation.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;

use super::score::sigmoid;
use super::Session;
use crate::error::{ensure, Invariant, Result};
use crate::format::LearningRate;
use crate::mlp::{self, Backward, Keep, Weights};
use crate::model::Model;

/// Adaptation scratch, sized by the support set on the first adaptation: the included support
/// rows' inputs and activations, dL/dy, the gradient and the backpropagation buffers.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// The included support rows' item inputs, `rows × item_width`.
    pub(super) x: Vec<f32>,
    /// Their activations, `rows × act_width`.
    pub(super) acts: Vec<f32>,
    /// Their ratings, then dL/dy (one per row).
    pub(super) dy: Vec<f32>,
    /// Their item biases (empty when the model has none).
    pub(super) bias: Vec<f32>,
    /// The gradient, in the flat parameter layout.
    grads: Vec<f32>,
    /// Backpropagation buffers, `rows × max_width` each.
    g_cur: Vec<f32>,
    g_next: Vec<f32>,
    /// Layer 0's pre-activation gradients of the rows from the last backward pass.
    pub(super) delta0: Vec<f32>,
    /// The low-rank path's `rows × rows` inner products.
    gram: Vec<f32>,
}

impl Scratch {
    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        let buffers = [
            &self.x,
            &self.acts,
            &self.dy,
            &self.bias,
            &self.grads,
            &self.g_cur,
            &self.g_next,
            &self.delta0,
            &self.gram,
        ];
        let floats = buffers.iter().map(|v| v.capacity()).sum::<usize>();
        floats * core::mem::size_of::<f32>()
    }

    /// The gradient of the last [`Session::support_gradient`].
    pub(super) fn grads(&self) -> &[f32] {
        &self.grads
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// The adaptation of an MLP model (see `Session::adapt_steps`): HML's choice of
    /// initialisation, the step size, then `steps` gradient steps.
    pub(super) fn inner_loop(&mut self, steps: u32) -> Result<()> {
        self.profile.refresh(self.model.borrow())?;
        let lr = self.model().body().adaptation.inner_lr;
        let init = self.choose_init(|session, mask| {
            for _ in 0..steps {
                session.support_gradient(Some(mask))?;
                session.step(Some(lr))?;
            }
            Ok(())
        })?;
        if init != 0 {
            self.load_init(init);
        }
        let model: &Model = self.model.borrow();
        let scalar = match &model.body().learning_rate {
            LearningRate::Fixed => Some(lr),
            LearningRate::PerParameter(_) => None,
            LearningRate::Network { .. } => Some(self.personal_rate()?),
        };
        for _ in 0..steps {
            self.support_gradient(None)?;
            self.step(scalar)?;
        }
        self.adapted = true;
        self.explanation.adapted = true;
        self.explanation.init = init as u32;
        self.explanation.learning_rate = scalar;
        Ok(())
    }

    /// One gradient step on the adapted parameters (see [`crate::format::Adapt`]):
    /// `p -= rate · g`, with one scalar rate or the model's per-parameter rates when `scalar` is
    /// None.
    pub(super) fn step(&mut self, scalar: Option<f32>) -> Result<()> {
        let model: &Model = self.model.borrow();
        let scope = model.scope();
        if scalar.is_none() && scope.item_columns() {
            // Per-parameter rates break the low rank: the weights themselves adapt.
            self.low_rank.materialize(model, &mut self.params)?;
        }
        for range in scope.ranges(self.low_rank.valid) {
            let params = self.params.get_mut(range.clone()).invariant("step: a range past the parameters")?;
            let grads = self.adaptation.grads.get(range.clone()).invariant("step: a range past the gradient")?;
            match scalar {
                Some(lr) => mlp::add_scaled(params, -lr, grads),
                None => {
                    let rates = model.parameter_rates().get(range.clone()).invariant("step: a range past the rates")?;
                    mlp::sub_scaled_each(params, rates, grads);
                }
            }
        }
        match scalar {
            Some(lr) => self.low_rank.track(model, lr, &self.adaptation, &mut self.scoring),
            None => Ok(()),
        }
    }

    /// HML: with several initialisations, adapt each on the resampled support's adapt part
    /// (`adapt_on` with its mask: the fixed rate's gradient steps, or the fold-in with the
    /// fixed rate's ridge weights), score the held-out part, and return the best (lowest
    /// support loss, first on ties). Leaves the parameters at initialisation 0.
    pub(super) fn choose_init(&mut self, mut adapt_on: impl FnMut(&mut Self, &[bool]) -> Result<()>) -> Result<usize> {
        let count = self.model().init_count();
        if count < 2 {
            return Ok(0);
        }
        let (adapt, score) = crate::resample::split(self.support.len());
        let mut best = (f32::INFINITY, 0);
        for k in 0..count {
            self.load_init(k);
            adapt_on(self, &adapt)?;
            let mean = self.held_out_loss(&score)?;
            if mean < best.0 {
                best = (mean, k);
            }
        }
        self.load_init(0);
        Ok(best.1)
    }

    /// The mean loss of the current parameters over the support ratings where `mask` is true.
    pub(super) fn held_out_loss(&mut self, mask: &[bool]) -> Result<f32> {
        let held_out: Vec<(u32, f32)> =
            self.support.iter().zip(mask).filter(|(_, &s)| s).map(|(&pair, _)| pair).collect();
        let items: Vec<u32> = held_out.iter().map(|&(item, _)| item).collect();
        let mut outputs = vec![0.0; items.len()];
        self.raw_scores(&items, &mut outputs)?;
        let click = self.model().is_click();
        let total: f32 = outputs.iter().zip(&held_out).map(|(&z, &(_, r))| loss(click, z, r)).sum();
        Ok(total / held_out.len().max(1) as f32)
    }

    /// Sets the gradient to that of the support loss w.r.t. the current parameters, over the
    /// ratings where `mask` is true (all when None): `(1/n) Σ (y_j − r_j)²` with
    /// `dL/dy_j = 2 (y_j − r_j) / n`, or for clicks `(1/n) Σ softplus(z_j) − r_j·z_j` with
    /// `dL/dz_j = (σ(z_j) − r_j) / n`, `y_j` (`z_j`) the MLP's output plus the item's bias;
    /// accumulated in f32. The adapted parameters' gradient gets the proximal term's
    /// `proximal · (θ − θ₀)`.
    pub(super) fn support_gradient(&mut self, mask: Option<&[bool]>) -> Result<()> {
        let (n, low_rank) = self.support_activations(mask)?;
        self.loss_gradient(n)?;
        self.support_backward(n, low_rank)?;
        self.proximal_gradient(low_rank)
    }

    /// Gathers the support ratings where `mask` is true (all when None) and runs them forward
    /// through the current parameters, every layer's activations kept in the scratch (their
    /// ratings in `dy`, their item biases in `bias`); returns the row count and whether the
    /// low-rank record holds the adaptation (see [`Session::low_rank_holds`]).
    pub(super) fn support_activations(&mut self, mask: Option<&[bool]>) -> Result<(usize, bool)> {
        let n = self.gather_support(mask)?;
        let low_rank = self.low_rank_holds(n)?;
        self.support_forward(mask, n, low_rank)?;
        Ok((n, low_rank))
    }

    /// Adds `proximal · (θ − θ₀)` to the gradient of every adapted parameter a step changes
    /// directly (the low-rank record takes its own part: see `LowRank::track`), θ₀ the
    /// initialisation the adaptation started from.
    fn proximal_gradient(&mut self, low_rank: bool) -> Result<()> {
        let model: &Model = self.model.borrow();
        let weight = model.body().product.proximal;
        if weight == 0.0 {
            return Ok(());
        }
        let init = model.init_params(self.low_rank.init()).invariant("proximal: an initialisation past the model's")?;
        for range in model.scope().ranges(low_rank) {
            let params = self.params.get(range.clone()).invariant("proximal: a range past the parameters")?;
            let start = init.get(range.clone()).invariant("proximal: a range past the initialisation")?;
            let grads =
                self.adaptation.grads.get_mut(range.clone()).invariant("proximal: a range past the gradient")?;
            for ((g, p), p0) in grads.iter_mut().zip(params).zip(start) {
                *g += weight * (p - p0);
            }
        }
        Ok(())
    }

    /// Gathers the included ratings' item inputs (and their ratings, parked in `dy`) to run the
    /// whole support set as one batch, and sizes the scratch; returns the row count.
    fn gather_support(&mut self, mask: Option<&[bool]>) -> Result<usize> {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        let scratch = &mut self.adaptation;
        scratch.grads.resize(layout.param_len, 0.0);
        scratch.x.clear();
        scratch.dy.clear();
        scratch.bias.clear();
        let biases = model.item_biases();
        for (j, &(item, rating)) in self.support.iter().enumerate() {
            if included(mask, j) {
                model.append_item_input(item, &mut scratch.x)?;
                scratch.dy.push(rating);
                if !biases.is_empty() {
                    scratch.bias.push(biases.get(item as usize).copied().invariant("a support item past the biases")?);
                }
            }
        }
        // Adaptation needs ratings, and HML's adapt part holds at least one of them.
        let n = scratch.dy.len();
        ensure(n > 0, "a support gradient over no ratings")?;
        scratch.acts.resize(n * layout.act_width(), 0.0);
        scratch.g_cur.resize(n * layout.max_width, 0.0);
        scratch.g_next.resize(n * layout.max_width, 0.0);
        scratch.delta0.resize(n * self.hidden0.len(), 0.0);
        Ok(n)
    }

    /// Whether the low-rank record holds this gradient's adaptation: while it runs over these
    /// very support rows (or none yet), layer 0's item weights in `params` stay at the
    /// initialisation, the support rows' item part is the precomputed `W0·x_j` plus
    /// `Σ_k c_k (x_k · x_j)`, and their gradient is not formed (the record takes the step).
    /// Otherwise the record is folded into the weights first.
    fn low_rank_holds(&mut self, n: usize) -> Result<bool> {
        let record = &self.low_rank;
        let holds =
            record.valid && (record.rows == 0 || (record.rows == n && same_bits(&record.x, &self.adaptation.x)));
        if !holds && record.valid {
            self.low_rank.materialize(self.model.borrow(), &mut self.params)?;
        }
        Ok(holds)
    }

    /// The forward pass over the `n` gathered rows, every layer's activations kept.
    fn support_forward(&mut self, mask: Option<&[bool]>, n: usize, low_rank: bool) -> Result<()> {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        mlp::user_hidden(layout, &self.params, self.profile.input()?, &mut self.hidden0)?;
        // The weights change every step: transposing them for the kernel costs what it saves.
        let weights = Weights { params: &self.params, upper_t: &[] };
        let scratch = &mut self.adaptation;
        if !low_rank {
            let (user_width, hidden0) = (model.user_width(), &self.hidden0);
            return mlp::forward_batch(
                layout,
                weights,
                user_width,
                hidden0,
                &scratch.x,
                n,
                &mut scratch.acts,
                Keep::Activations,
            );
        }
        let record = &self.low_rank;
        let z0 = scratch.acts.get_mut(..n * self.hidden0.len()).invariant("adaptation: activations too short")?;
        let items = self.support.iter().enumerate().filter(|&(j, _)| included(mask, j)).map(|(_, &(item, _))| item);
        scratch.gram.resize(n * record.gram_width(), 0.0);
        record.layer0(model, &self.hidden0, items, &scratch.x, n, z0, &mut scratch.gram)?;
        mlp::forward_upper(layout, weights, n, &mut scratch.acts, Keep::Activations)
    }

    /// dL/dy of each row from the outputs and the ratings parked in `dy`.
    pub(super) fn loss_gradient(&mut self, n: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        let scratch = &mut self.adaptation;
        let outputs = mlp::scores(model.layout(), &scratch.acts, n)?;
        // The item bias shifts the output: dL/dy is that of the shifted output.
        let bias = |j: usize| scratch.bias.get(j).copied().unwrap_or(0.0);
        if model.is_click() {
            let scale = 1.0 / n as f32;
            for (j, (d, z)) in scratch.dy.iter_mut().zip(outputs).enumerate() {
                *d = scale * (sigmoid(*z + bias(j)) - *d);
            }
        } else {
            let scale = 2.0 / n as f32;
            for (j, (d, y)) in scratch.dy.iter_mut().zip(outputs).enumerate() {
                *d = scale * ((y + bias(j)) - *d);
            }
        }
        Ok(())
    }

    /// Backpropagates dL/dy into the gradient: every parameter it writes (see
    /// [`written_ranges`]) is zeroed first. Layer 0's item columns are formed only when a step
    /// changes them directly (adapted, and not held by the low-rank record).
    fn support_backward(&mut self, n: usize, low_rank: bool) -> Result<()> {
        let model: &Model = self.model.borrow();
        let item_weights = !low_rank && model.scope().item_columns();
        let scratch = &mut self.adaptation;
        for range in written_ranges(model, item_weights) {
            scratch.grads.get_mut(range).invariant("backward: a range past the gradient")?.fill(0.0);
        }
        let lowest = model.scope().lowest_layer();
        self.backward_pass(n, item_weights, lowest)
    }

    /// The backward pass over the `n` rows of the last forward pass from layer `lowest` up, into
    /// the gradient buffer (zeroed by the caller where it is written).
    fn backward_pass(&mut self, n: usize, item_weights: bool, lowest: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        let scratch = &mut self.adaptation;
        let pass = Backward {
            user: self.profile.input()?,
            items: &scratch.x,
            rows: n,
            acts: &scratch.acts,
            dy: &scratch.dy,
            g_cur: &mut scratch.g_cur,
            g_next: &mut scratch.g_next,
            delta0: &mut scratch.delta0,
            lowest,
        };
        mlp::backward_batch(model.layout(), &self.params, pass, &mut scratch.grads, item_weights)
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// Backpropagates dL/dy of the `n` rows the last forward pass ran into the gradient of every
    /// decision-MLP parameter, layer 0's item columns included, whatever the model adapts (a
    /// fold-in contribution's pass through the body, `session::contribute`).
    pub(super) fn backward_all(&mut self, n: usize) -> Result<()> {
        self.adaptation.grads.fill(0.0);
        self.backward_pass(n, true, 0)
    }
}

/// Whether support rating `j` takes part (all do without a mask).
pub(super) fn included(mask: Option<&[bool]>, j: usize) -> bool {
    mask.is_none_or(|m| m.get(j).copied().unwrap_or(false))
}

/// Whether two vectors hold the same bit patterns (stricter than `==`, which a NaN fails and
/// `-0.0 == 0.0` passes; a false "different" only costs the low-rank shortcut). An OR over
/// XORs vectorises, where `==` on floats compared one pair per branch: 8% of an adaptation.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u32, |acc, (x, y)| acc | (x.to_bits() ^ y.to_bits())) == 0
}

/// The ranges of the flat parameters the backward pass writes: all of them, or without
/// `item_weights` everything but layer 0's item columns (64 × 128 of the ~20k parameters of a
/// MovieLens-sized model: their gradient is then never formed, so zeroing them does nothing).
fn written_ranges(model: &Model, item_weights: bool) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
    let layout = model.layout();
    let user_width = model.user_width();
    let first = layout.layers.first().filter(|_| !item_weights);
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
