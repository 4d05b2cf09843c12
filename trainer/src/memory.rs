//! AT-PAML's memory of users (the PAML paper, Alg. 1–2): up to M entries (key_k, alpha_k); a new user's
//! learning rate adds the Gaussian-kernel-weighted learning rates of its K nearest entries.
//!
//! Keys are the user embedding h_i projected by a fixed random matrix to [`KEY_DIM`] dimensions
//! and normalised to unit length: a kd-tree only prunes in low dimension, and unit keys make the
//! kernel width `delta` mean the same on every dataset. Stored keys and learning rates are
//! trainable (the outer step moves them by gradient descent); the tree is rebuilt after each
//! batch from the current keys. Entries are evicted least recently used (used = inserted or
//! returned as a neighbour).

use std::num::NonZero;

use kiddo::immutable::float::kdtree::ImmutableKdTree;
use kiddo::SquaredEuclidean;
use tch::{Device, Kind, Tensor};

use crate::model::tensor_values;

/// Dimension of the memory keys (kd-tree search space).
pub const KEY_DIM: usize = 16;

/// The trainable user memory.
#[derive(Debug)]
pub struct Memory {
    /// Fixed random projection `[h_dim, KEY_DIM]`.
    projection: Tensor,
    /// Stored keys `[capacity, KEY_DIM]`; rows `len..` are unused. Trainable.
    keys: Tensor,
    /// Stored learning rates `[capacity]`. Trainable.
    alphas: Tensor,
    len: usize,
    last_used: Vec<u64>,
    /// Entries returned as neighbours in training since [`Memory::take_touched`].
    touched: Vec<u32>,
    clock: u64,
    tree: Option<ImmutableKdTree<f32, u32, KEY_DIM, 32>>,
    /// Neighbours per query (K).
    pub neighbours: usize,
    /// Kernel width delta.
    pub delta: f64,
    /// Entries stored with the fixed learning rate before neighbours are used.
    pub warmup: usize,
}

/// sigma in the paper's weights s_k / (sum_j s_j + sigma).
const SIGMA: f64 = 1e-5;

impl Memory {
    /// An empty memory for user embeddings of width `h_dim`.
    pub fn new(h_dim: i64, capacity: usize, neighbours: usize, delta: f64, warmup: usize, device: Device) -> Memory {
        let projection = Tensor::randn([h_dim, KEY_DIM as i64], (Kind::Float, device)) / (KEY_DIM as f64).sqrt();
        Memory {
            projection,
            keys: Tensor::zeros([capacity as i64, KEY_DIM as i64], (Kind::Float, device)).set_requires_grad(true),
            alphas: Tensor::zeros([capacity as i64], (Kind::Float, device)).set_requires_grad(true),
            len: 0,
            last_used: vec![0; capacity],
            touched: Vec::new(),
            clock: 0,
            tree: None,
            neighbours,
            delta,
            warmup: warmup.max(neighbours),
        }
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the warm-up is over (neighbour terms are used).
    pub fn ready(&self) -> bool {
        self.len >= self.warmup && self.tree.is_some()
    }

    /// Unit-length keys `[B, KEY_DIM]` of user embeddings `[B, h_dim]` (differentiable).
    pub fn key(&self, h: &Tensor) -> Tensor {
        let projected = h.matmul(&self.projection);
        // Clamp before the square root: its gradient at 0 is infinite, and a user whose
        // embedding is zero (no profile fields, all support ratings equal) would turn to NaN.
        let norm = projected.square().sum_dim_intlist(1, true, Kind::Float).clamp_min(1e-16).sqrt();
        projected / norm
    }

    /// Indices of the K nearest stored entries of each key (by the kd-tree on current keys).
    /// `touch` records them as used (training only, so evaluation changes nothing); the LRU
    /// order takes them at [`Memory::touch`].
    pub fn nearest(&mut self, keys: &Tensor, touch: bool) -> Vec<Vec<u32>> {
        let Some(tree) = &self.tree else { return Vec::new() };
        let k = NonZero::new(self.neighbours.min(self.len).max(1)).expect("at least one");
        let values = tensor_values(keys);
        let found: Vec<Vec<u32>> = values
            .chunks(KEY_DIM)
            .map(|chunk| {
                let query: [f32; KEY_DIM] = chunk.try_into().expect("KEY_DIM values");
                tree.nearest_n::<SquaredEuclidean>(&query, k).iter().map(|n| n.item).collect()
            })
            .collect();
        if touch {
            self.touched.extend(found.iter().flatten());
        }
        found
    }

    /// The entries training returned as neighbours since the last call (to gather them from
    /// every rank of a data-parallel step before [`Memory::touch`]).
    pub fn take_touched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.touched)
    }

    /// Marks `entries` used now, all at one tick of the LRU clock (one training step's
    /// neighbours, from every rank); nothing found, no tick.
    pub fn touch(&mut self, entries: &[u32]) {
        if entries.is_empty() {
            return;
        }
        self.clock += 1;
        for &i in entries {
            if let Some(used) = self.last_used.get_mut(i as usize) {
                *used = self.clock;
            }
        }
    }

    /// The neighbour term sum_k s_k / (sum_j s_j + sigma) · alpha_k per user: `[B]`.
    /// Gradients flow to the query keys, the stored keys and the stored learning rates.
    pub fn neighbour_term(&self, keys: &Tensor, neighbours: &[Vec<u32>]) -> Tensor {
        let b = neighbours.len() as i64;
        let k = neighbours.first().map_or(0, Vec::len) as i64;
        let flat: Vec<i64> = neighbours.iter().flatten().map(|&i| i64::from(i)).collect();
        let index = Tensor::from_slice(&flat).to(self.keys.device());
        let stored = self.keys.index_select(0, &index).view([b, k, KEY_DIM as i64]);
        let rates = self.alphas.index_select(0, &index).view([b, k]);
        let distance = (stored - keys.unsqueeze(1)).square().sum_dim_intlist(2, false, Kind::Float);
        let similarity = (distance * -self.delta).exp();
        let weights = &similarity / (similarity.sum_dim_intlist(1, true, Kind::Float) + SIGMA);
        (weights * rates).sum_dim_intlist(1, false, Kind::Float)
    }

    /// Stores `(key, alpha)` pairs, evicting least recently used entries when full.
    pub fn insert(&mut self, keys: &Tensor, alphas: &Tensor) {
        let keys = keys.detach();
        let alphas = alphas.detach();
        let _guard = tch::no_grad_guard();
        for row in 0..keys.size()[0] {
            self.clock += 1;
            let slot = if self.len < self.last_used.len() {
                self.len += 1;
                self.len - 1
            } else {
                (0..self.len).min_by_key(|&i| (self.last_used[i], i)).expect("non-empty")
            };
            self.last_used[slot] = self.clock;
            self.keys.get(slot as i64).copy_(&keys.get(row));
            self.alphas.get(slot as i64).copy_(&alphas.get(row));
        }
    }

    /// Applies the outer gradient to stored keys and learning rates (node_j -= beta·dL/dnode_j),
    /// clears it, and rebuilds the tree.
    pub fn outer_step(&mut self, beta: f64) {
        {
            let _guard = tch::no_grad_guard();
            for tensor in [&mut self.keys, &mut self.alphas] {
                let grad = tensor.grad();
                if grad.defined() {
                    let update = grad * beta;
                    let _ = tensor.f_sub_(&update);
                    let mut grad = tensor.grad();
                    let _ = grad.zero_();
                }
            }
            // A learning rate must stay positive.
            let _ = self.alphas.clamp_min_(0.0);
        }
        self.rebuild();
    }

    /// Rebuilds the kd-tree from the stored keys.
    pub fn rebuild(&mut self) {
        if self.len == 0 {
            self.tree = None;
            return;
        }
        let values = tensor_values(&self.keys.narrow(0, 0, self.len as i64));
        let points: Vec<[f32; KEY_DIM]> =
            values.chunks(KEY_DIM).map(|c| c.try_into().expect("KEY_DIM values")).collect();
        self.tree = Some(ImmutableKdTree::new_from_slice(&points));
    }

    /// The trainable tensors (stored keys and learning rates), whose gradients a data-parallel
    /// step sums over the ranks before [`Memory::outer_step`].
    pub fn trainable(&self) -> [Tensor; 2] {
        [self.keys.shallow_clone(), self.alphas.shallow_clone()]
    }

    /// Stored keys and learning rates (for export and inspection).
    pub fn entries(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.len as i64;
        (tensor_values(&self.keys.narrow(0, 0, n)), tensor_values(&self.alphas.narrow(0, 0, n)))
    }

    /// The projection matrix `[h_dim, KEY_DIM]`, row-major.
    pub fn projection(&self) -> Vec<f32> {
        tensor_values(&self.projection)
    }

    /// The kernel's sigma.
    pub fn sigma(&self) -> f64 {
        SIGMA
    }

    /// Tensors to checkpoint: projection, keys, learning rates, and the LRU state.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let used: Vec<i64> = self.last_used.iter().map(|&u| u as i64).collect();
        vec![
            ("memory.projection".into(), self.projection.shallow_clone()),
            ("memory.keys".into(), self.keys.detach()),
            ("memory.alphas".into(), self.alphas.detach()),
            ("memory.last_used".into(), Tensor::from_slice(&used)),
            ("memory.len_clock".into(), Tensor::from_slice(&[self.len as i64, self.clock as i64])),
        ]
    }

    /// Restores [`Memory::state`].
    pub fn load_state(&mut self, named: &std::collections::HashMap<String, Tensor>) -> anyhow::Result<()> {
        let get = |name: &str| named.get(name).ok_or_else(|| anyhow::anyhow!("checkpoint lacks {name}"));
        let device = self.keys.device();
        let _guard = tch::no_grad_guard();
        self.projection = get("memory.projection")?.to(device);
        self.keys.copy_(&get("memory.keys")?.to(device));
        self.alphas.copy_(&get("memory.alphas")?.to(device));
        let used: Vec<i64> = Vec::try_from(get("memory.last_used")?)?;
        self.last_used = used.into_iter().map(|u| u as u64).collect();
        let len_clock: Vec<i64> = Vec::try_from(get("memory.len_clock")?)?;
        self.len = len_clock[0] as usize;
        self.clock = len_clock[1] as u64;
        drop(_guard);
        self.rebuild();
        Ok(())
    }
}
