//! An adaptation with one scalar rate as a low-rank change of layer 0's item weights.

use alloc::vec::Vec;

use super::adapt;
use super::score;
use crate::error::{ensure, Invariant, Result};
use crate::gemm::{gemm, View};
use crate::mlp;
use crate::model::Model;

/// Gradient steps with one scalar rate change layer 0's item weights only by outer products of
/// the support items' inputs: `W0_item = W0_item(init) + Σ_j c_j ⊗ x_j` with `c_j` the sum over
/// steps of `−rate · ∂L/∂z0_j`. So an item's layer-0 item part is the model's precomputed
/// `W0_item(init) · x` plus `Σ_j c_j (x_j · x)`: `support × (item_width + hidden0)`
/// multiply-adds instead of `item_width × hidden0`. Per-parameter rates (Meta-SGD) break the
/// low rank; scoring then multiplies by the adapted weights directly. A proximal term keeps it:
/// it shrinks the change `Σ_j c_j ⊗ x_j` itself, i.e. every `c_j`.
///
/// An adaptation scope that leaves layer 0's item columns alone (`Head`, `User`) never changes
/// layer 0's item part: the record then stays without rows for the whole adaptation, whatever
/// the learning rate, and every item's item part is the precomputed one.
#[derive(Debug, Clone, Default)]
pub(super) struct LowRank {
    /// Whether the current parameters are `init`'s plus the tracked change.
    pub(super) valid: bool,
    /// Initialisation the parameters started from.
    init: usize,
    /// Support rows the change runs over (0: none yet).
    pub(super) rows: usize,
    /// Their item inputs, `rows × item_width`.
    pub(super) x: Vec<f32>,
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
    /// at least `rows × self.gram_width()`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer0(
        &self,
        model: &Model,
        hidden0: &[f32],
        items: impl Iterator<Item = u32>,
        inputs: &[f32],
        rows: usize,
        z0: &mut [f32],
        gram: &mut [f32],
    ) -> Result<()> {
        let hidden_width = hidden0.len();
        for (row, item) in z0.chunks_exact_mut(hidden_width.max(1)).zip(items) {
            model
                .add_item_hidden(self.init, item, hidden0, row)
                .invariant("low rank: no precomputed layer 0 for the init")?;
        }
        if self.rows == 0 {
            return Ok(());
        }
        let item_width = model.input_width() - model.user_width();
        let width = self.gram_width();
        let gram = gram.get_mut(..rows * width).invariant("low rank: inner-product scratch too short")?;
        let x = View::rows(inputs, rows, item_width);
        gemm(1.0, x, View::rows(&self.x_t, item_width, width), 0.0, gram, width)?;
        // The padding columns are zero; the product reads the real ones.
        let gram = View { data: gram, rows, cols: self.rows, row_stride: width, col_stride: 1 };
        gemm(1.0, gram, View::rows(&self.coef, self.rows, hidden_width), 1.0, z0, hidden_width)
    }

    /// Columns of the inner-product scratch: the support rows rounded up to 8.
    pub(super) fn gram_width(&self) -> usize {
        self.rows.div_ceil(8) * 8
    }

    /// Records the support rows the change runs over (`x`: `rows × item_width`).
    fn start(&mut self, x: &[f32], rows: usize, item_width: usize, hidden_width: usize) -> Result<()> {
        self.rows = rows;
        self.x.clear();
        self.x.extend_from_slice(x);
        let width = self.gram_width();
        self.x_t.clear();
        self.x_t.resize(item_width * width, 0.0);
        mlp::transpose(x, rows, item_width, &mut self.x_t, width)?;
        self.coef.clear();
        self.coef.resize(rows * hidden_width, 0.0);
        Ok(())
    }

    /// The initialisation the parameters started from.
    pub(super) fn init(&self) -> usize {
        self.init
    }

    /// Parameters were just set to initialisation `init`.
    pub(super) fn restart(&mut self, init: usize, available: bool) {
        self.valid = available;
        self.init = init;
        self.rows = 0;
        self.x.clear();
        self.x_t.clear();
        self.coef.clear();
    }

    /// Adds a step's change of layer 0's item weights, `−lr · Σ_j ∂L/∂z0_j ⊗ x_j`, to the record
    /// (the gradient and the gathered support inputs are the last support gradient's, in
    /// `support`), after shrinking the change so far by `1 − lr · proximal` (the proximal term's
    /// part of the step, `−lr · proximal · (W0_item − W0_item(init))`). The first step starts
    /// the record and sizes the scoring scratch for it (scoring must not allocate). Nothing to
    /// track when the model's scope leaves the item columns alone.
    pub(super) fn track(
        &mut self,
        model: &Model,
        lr: f32,
        support: &adapt::Scratch,
        scoring: &mut score::Scratch,
    ) -> Result<()> {
        if !self.valid || !model.scope().item_columns() {
            return Ok(());
        }
        let rows = support.dy.len();
        ensure(rows > 0, "low rank: a step without support rows")?;
        // The support gradient has checked that the record runs over these rows (or folded it
        // into the weights and stopped using it).
        if self.rows == 0 {
            let item_width = support.x.len() / rows;
            let x = support.x.get(..rows * item_width).invariant("low rank: support inputs too short")?;
            self.start(x, rows, item_width, support.delta0.len() / rows)?;
            scoring.reserve_gram(self.gram_width());
        }
        let keep = 1.0 - lr * model.body().product.proximal;
        if keep == 1.0 {
            for (c, d) in self.coef.iter_mut().zip(&support.delta0) {
                *c -= lr * d;
            }
        } else {
            for (c, d) in self.coef.iter_mut().zip(&support.delta0) {
                *c = keep * *c - lr * d;
            }
        }
        Ok(())
    }

    /// Folds the record into layer 0's item weights in `params` (`W0_item += Σ_j c_j ⊗ x_j`) and
    /// stops using it: from here on the weights themselves are adapted and scored with.
    pub(super) fn materialize(&mut self, model: &Model, params: &mut [f32]) -> Result<()> {
        if self.valid && self.rows > 0 {
            let user_width = model.user_width();
            let shape = model.layout().layers.first().invariant("low rank: an MLP without layers")?;
            let item_width = shape.inputs - user_width;
            let weights =
                params.get_mut(shape.weight_at + user_width..).invariant("low rank: layer 0 past the parameters")?;
            let coef = View::rows(&self.coef, self.rows, shape.outputs).t();
            gemm(1.0, coef, View::rows(&self.x, self.rows, item_width), 1.0, weights, shape.inputs)?;
        }
        self.valid = false;
        Ok(())
    }

    /// Adds the tracked change `Σ_j c_j ⊗ x_j` to layer 0's item weights `weights`
    /// (`hidden0 × item_width`, row-major).
    pub(super) fn add_change(&self, weights: &mut [f32], item_width: usize) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let hidden = self.coef.len() / self.rows;
        let coef = View::rows(&self.coef, self.rows, hidden).t();
        gemm(1.0, coef, View::rows(&self.x, self.rows, item_width), 1.0, weights, item_width)
    }

    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        (self.x.capacity() + self.x_t.capacity() + self.coef.capacity()) * core::mem::size_of::<f32>()
    }
}
