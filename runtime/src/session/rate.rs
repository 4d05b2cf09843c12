//! The user's own learning rate (PAML family): the learning-rate network alpha'(h) of the user
//! embedding h, plus AT-PAML's kernel-weighted rates of the nearest stored users.

use alloc::vec::Vec;
use core::borrow::Borrow;

use super::explain::Neighbour;
use super::Session;
use crate::error::{broken, ensure, Invariant, Result};
use crate::format::{DenseLayer, LearningRate, NeighbourTable, MAX_NEIGHBOURS};
use crate::model::Model;
use crate::neighbours::{nearest_scan, Nearest};

/// The learning-rate network's input, allocated by the first adaptation that needs it.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// The user embedding h, as wide as the MLP input.
    embedding: Vec<f32>,
    /// One support item's input (the item part of the input).
    item: Vec<f32>,
}

impl Scratch {
    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        (self.embedding.capacity() + self.item.capacity()) * core::mem::size_of::<f32>()
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// The user's own learning rate: alpha'(h) from the network, plus (AT-PAML) the
    /// kernel-weighted rates of the nearest stored users. Fills the explanation's parts.
    pub(super) fn personal_rate(&mut self) -> Result<f32> {
        self.write_user_embedding()?;
        let model: &Model = self.model.borrow();
        let LearningRate::Network { hidden, output } = &model.body().learning_rate else {
            return Err(broken("a personal rate asked of a model without a learning-rate network"));
        };
        let h = &self.rate.embedding;
        let network = network_rate(hidden, output, h)?;
        self.explanation.network_rate = Some(network);
        let Some(table) = &model.body().neighbours else {
            return Ok(network);
        };
        let (term, neighbours) = neighbour_term(table, h)?;
        self.explanation.neighbours = neighbours;
        Ok(network + term)
    }

    /// h = [profile part of the input; Σ_j (r_j − mean r) / n · item input_j] over the support.
    fn write_user_embedding(&mut self) -> Result<()> {
        let model: &Model = self.model.borrow();
        let (user_width, width) = (model.user_width(), model.input_width());
        let embedding = &mut self.rate.embedding;
        embedding.clear();
        embedding.resize(width, 0.0);
        let (user_part, item_part) =
            embedding.split_at_mut_checked(user_width).invariant("user embedding: user part past the input")?;
        user_part.copy_from_slice(self.profile.input()?);
        let n = self.support.len().max(1) as f32;
        let mean = self.support.iter().map(|&(_, r)| r).sum::<f32>() / n;
        let input = &mut self.rate.item;
        input.resize(item_part.len(), 0.0);
        for &(item, rating) in &self.support {
            let weight = (rating - mean) / n;
            model.write_item_input(item, input)?;
            for (h, x) in item_part.iter_mut().zip(input.iter()) {
                *h += x * weight;
            }
        }
        Ok(())
    }
}

/// alpha'(h) = softplus(output(relu(hidden(h)))), torch's softplus (beta 1, threshold 20).
fn network_rate(hidden: &DenseLayer, output: &DenseLayer, h: &[f32]) -> Result<f32> {
    let mut z = output.bias.first().copied().invariant("learning-rate network: no output bias")?;
    for ((row, b), w) in hidden.weight.chunks_exact(h.len().max(1)).zip(&hidden.bias).zip(&output.weight) {
        let a = row.iter().zip(h).fold(0.0f32, |acc, (x, y)| acc + x * y) + b;
        if a > 0.0 {
            z += w * a;
        }
    }
    Ok(if z > 20.0 { z } else { libm::log1pf(libm::expf(z)) })
}

/// AT-PAML: key = normalise(h · projection); the K nearest stored keys by squared distance
/// (an exact scan, first entry on ties); returns Σ_k s_k / (Σ_j s_j + σ) · rate_k with
/// s_k = exp(−δ d_k²), and the neighbours nearest first.
fn neighbour_term(table: &NeighbourTable, h: &[f32]) -> Result<(f32, heapless::Vec<Neighbour, MAX_NEIGHBOURS>)> {
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
    let mut found = Nearest::new();
    nearest_scan(&table.keys, key_dim, key, table.neighbours as usize, &mut found);
    // Validation keeps K within the table and the keys whole rows of `key_dim`.
    ensure(found.len() == table.neighbours as usize, "neighbour search: fewer than K entries")?;
    let mut nearest: heapless::Vec<Neighbour, MAX_NEIGHBOURS> = heapless::Vec::new();
    for &(entry, distance) in &found {
        let rate = table.rates.get(entry as usize).copied().invariant("neighbour search: an entry past the rates")?;
        let neighbour = Neighbour { entry, distance, weight: 0.0, rate };
        nearest.push(neighbour).map_err(|_| broken("neighbour search: more than MAX_NEIGHBOURS"))?;
    }
    let similarities: heapless::Vec<f32, MAX_NEIGHBOURS> =
        nearest.iter().map(|n| libm::expf(-table.delta * n.distance)).collect();
    let total: f32 = similarities.iter().sum::<f32>() + table.sigma;
    let mut term = 0.0;
    for (n, s) in nearest.iter_mut().zip(&similarities) {
        n.weight = s / total;
        term += n.weight * n.rate;
    }
    Ok((term, nearest))
}
