//! Adam over a VarStore with its state exposed, so a checkpoint can hold the optimizer too and a
//! resumed run continues exactly where an uninterrupted one would be (tch's built-in optimizer
//! keeps its moments inside libtorch, out of reach of a checkpoint).
//!
//! **Lazy rows** ([`Adam::with_lazy_rows`]): for lookup tables (embeddings, item biases and
//! factors), a step can update only the rows whose gradient is not zero, as PyTorch's
//! `SparseAdam` and TensorFlow's `LazyAdam` do: their moments, decay and value move, the other
//! rows (moments included) stay as they are until a batch reaches them again. A step then costs
//! one scan of each table for its non-zero rows plus work on those rows, instead of a dozen
//! passes over every row; the numerics differ from dense Adam, whose moments keep moving rows no
//! batch touched.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::{nn, Tensor};

use crate::dist::Layout;

/// Adam (Kingma & Ba) with bias correction, and optional decoupled weight decay (AdamW,
/// Loshchilov & Hutter) on chosen variables.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i64,
    /// Per variable name: (parameter, first moment, second moment).
    state: Vec<(String, Tensor, Tensor, Tensor)>,
    /// Per variable (as `state`): its decoupled weight decay.
    decay: Vec<f64>,
    /// Per variable (as `state`): whether it steps only its rows with a gradient.
    lazy: Vec<bool>,
    /// Per variable (as `state`): the rows the last lazy step found with a gradient, the only
    /// rows [`Adam::zero_grad`] must clear (None: clear them all).
    touched: Vec<Option<Tensor>>,
}

impl Adam {
    /// Adam over every trainable variable of `vs`.
    pub fn new(vs: &nn::VarStore, lr: f64) -> Adam {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let state: Vec<(String, Tensor, Tensor, Tensor)> = variables
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let (m, v) = (t.zeros_like(), t.zeros_like());
                (name, t, m, v)
            })
            .collect();
        let decay = vec![0.0; state.len()];
        let (lazy, touched) = (vec![false; state.len()], (0..state.len()).map(|_| None).collect());
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, state, decay, lazy, touched }
    }

    /// Decays the variables whose name `chosen` accepts by `lr · decay` of their value per step.
    pub fn with_decay(mut self, decay: f64, chosen: impl Fn(&str) -> bool) -> Adam {
        self.decay = self.state.iter().map(|(name, ..)| if chosen(name) { decay } else { 0.0 }).collect();
        self
    }

    /// Steps the variables whose name `chosen` accepts lazily: only their rows (along the first
    /// dimension) with a non-zero gradient (see the module documentation).
    pub fn with_lazy_rows(mut self, chosen: impl Fn(&str) -> bool) -> Adam {
        self.lazy = self.state.iter().map(|(name, ..)| chosen(name)).collect();
        self
    }

    /// Clears the gradients, back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.backward(loss);
        self.step();
    }

    /// Clears the gradients and back-propagates `loss` (a data-parallel step sums the
    /// gradients of [`Adam::parameters`] over the ranks before [`Adam::step`]).
    pub fn backward(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
    }

    /// Clears the gradients (a rank whose shard of a batch is empty adds zeros to the sum).
    pub fn zero_grad(&mut self) {
        for ((_, p, _, _), touched) in self.state.iter().zip(&mut self.touched) {
            let mut grad = p.grad();
            if grad.defined() {
                // After a lazy step only the rows it found have a gradient left.
                let _ = match touched.take() {
                    Some(rows) => grad.index_fill_(0, &rows, 0.0),
                    None => grad.zero_(),
                };
            }
        }
    }

    /// The trainable variables this optimizer steps, in its (name) order, each with how a
    /// data-parallel step sums its gradient: the rows a rank reached of a variable stepped
    /// lazily (the others are zero on every rank), all of any other.
    pub fn parameters(&self) -> Vec<(Tensor, Layout)> {
        let layout = |lazy: bool| if lazy { Layout::Rows } else { Layout::Dense };
        self.state.iter().zip(&self.lazy).map(|((_, p, _, _), &lazy)| (p.shallow_clone(), layout(lazy))).collect()
    }

    /// One step along the current gradients.
    pub fn step(&mut self) {
        self.step_rows(&[]);
    }

    /// [`Adam::step`], where `known[k]` (in [`Adam::parameters`] order; missing or None: not
    /// known) holds rows of variable k, ascending and unique, outside which its gradient is
    /// zero: a lazy variable then steps those rows without scanning its gradient for them (a
    /// data-parallel step knows them from [`crate::dist::Comm::sum_gradients`]). A known row
    /// whose gradient is zero all the same moves as a zero gradient moves it in dense Adam.
    pub fn step_rows(&mut self, known: &[Option<Tensor>]) {
        self.step += 1;
        let (c1, c2) = (1.0 - self.beta1.powi(self.step as i32), 1.0 - self.beta2.powi(self.step as i32));
        let _guard = tch::no_grad_guard();
        for (k, (_, p, m, v)) in self.state.iter_mut().enumerate() {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            let rule =
                Rule { lr: self.lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, c1, c2, decay: self.decay[k] };
            if self.lazy[k] {
                let rows =
                    known.get(k).and_then(Option::as_ref).map_or_else(|| nonzero_rows(&grad), Tensor::shallow_clone);
                rule.step_rows(p, m, v, &grad, &rows);
                self.touched[k] = Some(rows);
            } else {
                rule.step_dense(p, m, v, &grad);
            }
        }
    }

    /// Named tensors for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("adam.step".to_string(), Tensor::from_slice(&[self.step]))];
        for (name, _, m, v) in &self.state {
            out.push((format!("adam.m.{name}"), m.shallow_clone()));
            out.push((format!("adam.v.{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restores [`Adam::state`].
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) -> Result<()> {
        let step = named.get("adam.step").context("checkpoint lacks adam.step")?;
        self.step = step.int64_value(&[0]);
        self.touched.iter_mut().for_each(|rows| *rows = None);
        let _guard = tch::no_grad_guard();
        for (name, p, m, v) in &mut self.state {
            for (prefix, target) in [("adam.m.", &mut *m), ("adam.v.", &mut *v)] {
                let saved = named
                    .get(&format!("{prefix}{name}"))
                    .with_context(|| format!("checkpoint lacks {prefix}{name}"))?;
                target.copy_(&saved.to(p.device()));
            }
        }
        Ok(())
    }
}

/// One step's constants: the learning rate, the moments' rates, the bias corrections `c1`, `c2`
/// and the variable's decoupled weight decay.
struct Rule {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    c1: f64,
    c2: f64,
    decay: f64,
}

impl Rule {
    /// Adam on the whole of `p` with its moments `m`, `v`.
    fn step_dense(&self, p: &mut Tensor, m: &mut Tensor, v: &mut Tensor, grad: &Tensor) {
        if self.decay > 0.0 {
            let _ = p.g_mul_scalar_(1.0 - self.lr * self.decay);
        }
        let _ = m.g_mul_scalar_(self.beta1).g_add_(&(grad * (1.0 - self.beta1)));
        let _ = v.g_mul_scalar_(self.beta2).g_add_(&(grad.square() * (1.0 - self.beta2)));
        let update = (&*m / self.c1) / ((&*v / self.c2).sqrt() + self.eps) * self.lr;
        let _ = p.g_sub_(&update);
    }

    /// Adam on `rows` of `p` (and of `m`, `v`): every row whose gradient may be non-zero (a row
    /// with a zero gradient among them moves as dense Adam moves it), the same arithmetic as
    /// [`Rule::step_dense`] on each.
    fn step_rows(&self, p: &mut Tensor, m: &mut Tensor, v: &mut Tensor, grad: &Tensor, rows: &Tensor) {
        let (mut p_rows, g) = (p.index_select(0, rows), grad.index_select(0, rows));
        let (mut m_rows, mut v_rows) = (m.index_select(0, rows), v.index_select(0, rows));
        self.step_dense(&mut p_rows, &mut m_rows, &mut v_rows, &g);
        for (target, values) in [(p, &p_rows), (m, &m_rows), (v, &v_rows)] {
            let _ = target.index_copy_(0, rows, values);
        }
    }
}

/// The rows (along the first dimension) of `grad` with a non-zero value, ascending, as an `i64`
/// tensor on its device: the rows a lazy step moves, and those a data-parallel step sums
/// ([`crate::dist::Layout::Rows`]).
pub(crate) fn nonzero_rows(grad: &Tensor) -> Tensor {
    let nonzero = grad.ne(0.0);
    let nonzero = if grad.dim() > 1 { nonzero.flatten(1, -1).any_dim(1, false) } else { nonzero };
    nonzero.nonzero().select(1, 0)
}
