//! Adam over a VarStore with its state exposed, so a checkpoint can hold the optimizer too and a
//! resumed run continues exactly where an uninterrupted one would be (tch's built-in optimizer
//! keeps its moments inside libtorch, out of reach of a checkpoint).

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::{nn, Tensor};

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
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, state, decay }
    }

    /// Decays the variables whose name `chosen` accepts by `lr · decay` of their value per step.
    pub fn with_decay(mut self, decay: f64, chosen: impl Fn(&str) -> bool) -> Adam {
        self.decay = self.state.iter().map(|(name, ..)| if chosen(name) { decay } else { 0.0 }).collect();
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
        for (_, p, _, _) in &self.state {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// The trainable variables this optimizer steps, in its (name) order.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.state.iter().map(|(_, p, _, _)| p.shallow_clone()).collect()
    }

    /// One step along the current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let (c1, c2) = (1.0 - self.beta1.powi(self.step as i32), 1.0 - self.beta2.powi(self.step as i32));
        let _guard = tch::no_grad_guard();
        for ((_, p, m, v), &decay) in self.state.iter_mut().zip(&self.decay) {
            let grad = p.grad();
            if !grad.defined() {
                continue;
            }
            if decay > 0.0 {
                let _ = p.g_mul_scalar_(1.0 - self.lr * decay);
            }
            let _ = m.g_mul_scalar_(self.beta1).g_add_(&(&grad * (1.0 - self.beta1)));
            let _ = v.g_mul_scalar_(self.beta2).g_add_(&(grad.square() * (1.0 - self.beta2)));
            let update = (&*m / c1) / ((&*v / c2).sqrt() + self.eps) * self.lr;
            let _ = p.g_sub_(&update);
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
