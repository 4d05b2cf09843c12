//! Scoring: the model's outputs for blocks of checked item indices.

use alloc::vec;
use alloc::vec::Vec;
use core::borrow::Borrow;

use super::low_rank::LowRank;
use super::Session;
use crate::error::{ensure, Invariant, Result};
use crate::mlp::{self, Keep, Weights};
use crate::model::Model;

/// Items scored per block. The small-product kernel reads its operands in place, so a block only
/// amortises per-block work: 128, 256 and 512 scored 1,000 items equally fast (`trainer bench
/// device`), and 128 keeps the session's scratch a quarter of 512's.
pub(super) const SCORE_BLOCK: usize = 128;

/// Scoring scratch for one block of items, sized when the session is created (and the low-rank
/// path's when an adaptation starts its record), so scoring never allocates.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// The block's item inputs, `SCORE_BLOCK × item_width`.
    x: Vec<f32>,
    /// The block's activations, `SCORE_BLOCK × act_width`.
    acts: Vec<f32>,
    /// The low-rank path's `block rows × support rows` inner products.
    gram: Vec<f32>,
    /// The hidden layers after layer 0, transposed (`mlp::transpose_upper`).
    pub(super) upper_t: Vec<f32>,
}

impl Scratch {
    /// Sized for `model` (the low-rank scratch waits for [`Scratch::reserve_gram`]).
    pub(super) fn new(model: &Model) -> Scratch {
        let item_width = model.input_width() - model.user_width();
        Scratch {
            x: vec![0.0; SCORE_BLOCK * item_width],
            acts: vec![0.0; SCORE_BLOCK * model.layout().act_width()],
            gram: Vec::new(),
            upper_t: vec![0.0; mlp::upper_transposed_len(model.layout())],
        }
    }

    /// Sizes the low-rank path's scratch for a record `gram_width` columns wide.
    pub(super) fn reserve_gram(&mut self, gram_width: usize) {
        let len = SCORE_BLOCK * gram_width;
        if self.gram.len() < len {
            self.gram.resize(len, 0.0);
        }
    }

    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        let floats = self.x.capacity() + self.acts.capacity() + self.gram.capacity() + self.upper_t.capacity();
        floats * core::mem::size_of::<f32>()
    }

    /// One block's forward pass through the adapted weights themselves; the scores land in
    /// `acts` (see [`mlp::scores`]).
    fn full_block(&mut self, model: &Model, params: &[f32], hidden0: &[f32], block: &[u32]) -> Result<()> {
        gather(model, block, &mut self.x)?;
        let weights = Weights { params, upper_t: &self.upper_t };
        let (layout, user_width, rows) = (model.layout(), model.user_width(), block.len());
        mlp::forward_batch(layout, weights, user_width, hidden0, &self.x, rows, &mut self.acts, Keep::Scores)
    }

    /// [`Scratch::full_block`] with layer 0's item part from the low-rank record (`record`).
    fn low_rank_block(
        &mut self,
        model: &Model,
        params: &[f32],
        hidden0: &[f32],
        record: &LowRank,
        block: &[u32],
    ) -> Result<()> {
        let rows = block.len();
        let z0 = self.acts.get_mut(..rows * hidden0.len()).invariant("scoring: activations shorter than a block")?;
        // The items' inputs are read only when the record holds support rows.
        let inputs: &[f32] = if record.rows == 0 {
            &[]
        } else {
            gather(model, block, &mut self.x)?;
            &self.x
        };
        record.layer0(model, hidden0, block.iter().copied(), inputs, rows, z0, &mut self.gram)?;
        let weights = Weights { params, upper_t: &self.upper_t };
        mlp::forward_upper(model.layout(), weights, rows, &mut self.acts, Keep::Scores)
    }
}

/// Copies the item inputs of `block` into `x` (`block.len() × item_width`).
fn gather(model: &Model, block: &[u32], x: &mut [f32]) -> Result<()> {
    let item_width = model.input_width() - model.user_width();
    let x = x.get_mut(..block.len() * item_width).invariant("scoring: a block past the input scratch")?;
    for (&item, row) in block.iter().zip(x.chunks_exact_mut(item_width.max(1))) {
        model.write_item_input(item, row)?;
    }
    Ok(())
}

impl<M: Borrow<Model>> Session<M> {
    /// Scores items whose indices were checked: the factor model's prediction, or
    /// [`Session::raw_scores`] (then σ for a click model).
    pub(super) fn score_checked(&mut self, items: &[u32], out: &mut [f32]) -> Result<()> {
        self.prepare_scoring()?;
        for (block, scores) in items.chunks(SCORE_BLOCK).zip(out.chunks_mut(SCORE_BLOCK)) {
            self.score_prepared(block, scores)?;
        }
        Ok(())
    }

    /// Scores the catalogue, a block of [`SCORE_BLOCK`] items at a time (`0..128`, `128..256`,
    /// …: the blocks [`Session::score_checked`] forms over `0..item_count`, so every score is
    /// the one it gives), handing each block's indices and scores to `visit`. Needs no memory
    /// that grows with the catalogue.
    pub(super) fn score_catalogue(&mut self, mut visit: impl FnMut(&[u32], &[f32]) -> Result<()>) -> Result<()> {
        // Validation keeps the catalogue within u32 indices.
        let count = u32::try_from(self.model().item_count()).ok().invariant("scoring: a catalogue past u32 indices")?;
        self.prepare_scoring()?;
        let mut indices = [0u32; SCORE_BLOCK];
        let mut scores = [0f32; SCORE_BLOCK];
        let mut start = 0u32;
        while start < count {
            let rows = (count - start).min(SCORE_BLOCK as u32) as usize;
            for (slot, item) in indices.iter_mut().zip(start..) {
                *slot = item;
            }
            let (block, out) = (&indices[..rows], &mut scores[..rows]);
            self.score_prepared(block, out)?;
            visit(block, out)?;
            start += rows as u32;
        }
        Ok(())
    }

    /// What every block of a scoring call shares, computed once per call: for a network, the
    /// profile's input, layer 0's user part and the upper layers transposed.
    pub(super) fn prepare_scoring(&mut self) -> Result<()> {
        let model: &Model = self.model.borrow();
        if model.factors().is_some() {
            return Ok(());
        }
        self.profile.refresh(model)?;
        let layout = model.layout();
        mlp::user_hidden(layout, &self.params, self.profile.input()?, &mut self.hidden0)?;
        mlp::transpose_upper(layout, &self.params, &mut self.scoring.upper_t)?;
        if let Some(record) = Some(&self.low_rank).filter(|record| record.valid) {
            let sized = self.scoring.gram.len() >= SCORE_BLOCK * record.gram_width();
            ensure(sized, "low-rank scoring scratch not sized when the record started")?;
        }
        Ok(())
    }

    /// Scores of one block (at most [`SCORE_BLOCK`] checked indices) after
    /// [`Session::prepare_scoring`]: the factor model's prediction, or the network's raw output
    /// (then σ for a click model).
    pub(super) fn score_prepared(&mut self, block: &[u32], out: &mut [f32]) -> Result<()> {
        let model: &Model = self.model.borrow();
        if let Some(factors) = model.factors() {
            return self.factors.score(model, factors, block, out);
        }
        self.raw_block(block, out)?;
        if self.model().is_click() {
            for y in out.iter_mut() {
                *y = sigmoid(*y);
            }
        }
        Ok(())
    }

    /// The model's raw outputs (ratings or logits) for checked indices, a block at a time:
    /// gather the items' inputs, then one matrix product per layer (layer 0 only for the item
    /// part; its user part is `hidden0`, computed once), then the item biases and a fold-in
    /// head's `p_u · q_i`.
    pub(super) fn raw_scores(&mut self, items: &[u32], out: &mut [f32]) -> Result<()> {
        self.prepare_scoring()?;
        for (block, scores) in items.chunks(SCORE_BLOCK).zip(out.chunks_mut(SCORE_BLOCK)) {
            self.raw_block(block, scores)?;
        }
        Ok(())
    }

    /// [`Session::raw_scores`] of one block, after [`Session::prepare_scoring`].
    fn raw_block(&mut self, block: &[u32], scores: &mut [f32]) -> Result<()> {
        let model: &Model = self.model.borrow();
        ensure(block.len() <= SCORE_BLOCK, "scoring: a block past the scratch")?;
        // While the record holds the adaptation, layer 0's item weights in `params` are the
        // initialisation's: the full product would score without it.
        match Some(&self.low_rank).filter(|record| record.valid) {
            Some(record) => self.scoring.low_rank_block(model, &self.params, &self.hidden0, record, block)?,
            None => self.scoring.full_block(model, &self.params, &self.hidden0, block)?,
        }
        let outputs = mlp::scores(model.layout(), &self.scoring.acts, block.len())?;
        for (o, y) in scores.iter_mut().zip(outputs) {
            *o = *y;
        }
        add_item_bias(model, block, scores)?;
        self.factors.add_user_term(model, block, scores)
    }
}

/// Adds each item's bias to its raw output (nothing when the model has no item biases).
fn add_item_bias(model: &Model, items: &[u32], out: &mut [f32]) -> Result<()> {
    let biases = model.item_biases();
    if biases.is_empty() {
        return Ok(());
    }
    for (o, &item) in out.iter_mut().zip(items) {
        *o += biases.get(item as usize).copied().invariant("scoring: an item past the biases")?;
    }
    Ok(())
}

/// The logistic function, saturating cleanly for large |z|.
pub(super) fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::expf(-z))
    } else {
        let e = libm::expf(z);
        e / (1.0 + e)
    }
}
