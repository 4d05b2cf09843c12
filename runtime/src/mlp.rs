//! The decision MLP over one flat parameter vector: layout, forward pass and backpropagation.
//!
//! Parameters are stored `[W0, b0, W1, b1, …]`, each `W` `outputs × inputs` row-major (as torch
//! stores `nn.Linear`). Activations are stored as one chain `[x | y0 | y1 | …]`: the input of
//! layer `l + 1` is the output of layer `l`, so each layer reads the slice just before the one it
//! writes. Every layer but the last is followed by a ReLU; the last has one output, the score.

use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::format::DenseLayer;

/// Where one layer lives in the flat parameter and activation vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerShape {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// Offset of `W` in the parameter vector (`b` follows it directly).
    pub weight_at: usize,
    /// Offset of this layer's input in the activation vector (its output follows directly).
    pub input_at: usize,
}

impl LayerShape {
    fn weight_len(&self) -> usize {
        // Cannot overflow: checked when the layout was built.
        self.inputs * self.outputs
    }
}

/// Shapes of all layers and the buffer sizes a forward/backward pass needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// One entry per layer, input to output. Never empty.
    pub layers: Vec<LayerShape>,
    /// Length of the flat parameter vector.
    pub param_len: usize,
    /// Length of the activation chain (input width + every layer's outputs).
    pub act_len: usize,
    /// Widest layer output (the size of one backpropagation buffer).
    pub max_width: usize,
}

impl Layout {
    /// Checks that the layers chain from `input_width` to one output and computes the offsets.
    pub fn new(layers: &[DenseLayer], input_width: usize) -> Result<Layout> {
        let bad = Error::InconsistentDimensions;
        if layers.is_empty() {
            return Err(bad);
        }
        let mut shapes = Vec::new();
        shapes.try_reserve_exact(layers.len()).map_err(|_| bad)?;
        let mut previous = input_width;
        let mut param_len = 0usize;
        let mut input_at = 0usize;
        let mut max_width = 0usize;
        for layer in layers {
            let inputs = usize::try_from(layer.inputs).map_err(|_| bad)?;
            let outputs = usize::try_from(layer.outputs).map_err(|_| bad)?;
            if inputs == 0 || outputs == 0 || inputs != previous {
                return Err(bad);
            }
            let weight_len = inputs.checked_mul(outputs).ok_or(bad)?;
            if layer.weight.len() != weight_len || layer.bias.len() != outputs {
                return Err(bad);
            }
            shapes.push(LayerShape { inputs, outputs, weight_at: param_len, input_at });
            param_len = param_len.checked_add(weight_len).and_then(|n| n.checked_add(outputs)).ok_or(bad)?;
            input_at = input_at.checked_add(inputs).ok_or(bad)?;
            max_width = max_width.max(outputs);
            previous = outputs;
        }
        if previous != 1 {
            return Err(bad);
        }
        let act_len = input_at.checked_add(1).ok_or(bad)?;
        Ok(Layout { layers: shapes, param_len, act_len, max_width })
    }

    /// Width of the network input.
    #[cfg(test)]
    pub fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |s| s.inputs)
    }
}

/// `(W, b)` of one layer inside a flat parameter vector (empty slices if the vector is short,
/// which the callers rule out).
fn layer_params<'p>(params: &'p [f32], shape: &LayerShape) -> (&'p [f32], &'p [f32]) {
    let bias_at = shape.weight_at + shape.weight_len();
    let weight = params.get(shape.weight_at..bias_at).unwrap_or(&[]);
    let bias = params.get(bias_at..bias_at + shape.outputs).unwrap_or(&[]);
    (weight, bias)
}

/// Runs the network on the input already written at the start of `acts` (`layout.act_len`
/// long), leaving every layer's (post-ReLU) output in `acts`, and returns the score.
pub(crate) fn forward(layout: &Layout, params: &[f32], acts: &mut [f32]) -> f32 {
    let last = layout.layers.len().saturating_sub(1);
    for (l, shape) in layout.layers.iter().enumerate() {
        let (weight, bias) = layer_params(params, shape);
        let Some((head, tail)) = acts.split_at_mut_checked(shape.input_at + shape.inputs) else {
            return 0.0;
        };
        let input = head.get(shape.input_at..).unwrap_or(&[]);
        let relu = l != last;
        for ((out, row), b) in tail.iter_mut().zip(weight.chunks_exact(shape.inputs)).zip(bias) {
            let z = dot(row, input) + b;
            // torch's relu keeps NaN and maps everything below zero to zero.
            *out = if relu && z < 0.0 { 0.0 } else { z };
        }
    }
    acts.get(layout.act_len.wrapping_sub(1)).copied().unwrap_or(0.0)
}

/// Adds `dy · ∂y/∂θ` to `grads` (same layout as `params`), where `y` is the score of the forward
/// pass whose activations are in `acts`. `delta` is scratch of at least `2 · layout.max_width`.
///
/// The ReLU derivative is 1 where the layer output is > 0 and 0 elsewhere, which equals torch's
/// `threshold_backward(grad, result, 0)`.
pub(crate) fn backward(layout: &Layout, params: &[f32], acts: &[f32], dy: f32, grads: &mut [f32], delta: &mut [f32]) {
    let (mut current, mut next) = delta.split_at_mut(delta.len() / 2);
    if let Some(first) = current.first_mut() {
        *first = dy;
    }
    for (l, shape) in layout.layers.iter().enumerate().rev() {
        let (weight, _) = layer_params(params, shape);
        let input = acts.get(shape.input_at..shape.input_at + shape.inputs).unwrap_or(&[]);
        let g_out = current.get(..shape.outputs).unwrap_or(&[]);

        let bias_at = shape.weight_at + shape.weight_len();
        let (grad_weight, grad_bias) = match grads.get_mut(shape.weight_at..bias_at + shape.outputs) {
            Some(slice) => slice.split_at_mut(shape.weight_len()),
            None => return,
        };
        for ((grad_row, gb), &g) in grad_weight.chunks_exact_mut(shape.inputs).zip(grad_bias.iter_mut()).zip(g_out) {
            *gb += g;
            if g != 0.0 {
                for (gw, &a) in grad_row.iter_mut().zip(input) {
                    *gw += g * a;
                }
            }
        }

        if l == 0 {
            break;
        }
        // Gradient w.r.t. this layer's input, i.e. the previous layer's ReLU output; W rows are
        // walked contiguously.
        let Some(g_in) = next.get_mut(..shape.inputs) else {
            return;
        };
        g_in.fill(0.0);
        for (row, &g) in weight.chunks_exact(shape.inputs).zip(g_out) {
            if g != 0.0 {
                for (gi, &w) in g_in.iter_mut().zip(row) {
                    *gi += g * w;
                }
            }
        }
        for (gi, &a) in g_in.iter_mut().zip(input) {
            *gi = if a > 0.0 { *gi } else { 0.0 };
        }
        core::mem::swap(&mut current, &mut next);
    }
}

/// Plain sequential f32 dot product.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| acc + x * y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn layer(inputs: u32, outputs: u32) -> DenseLayer {
        let n = (inputs * outputs) as usize;
        DenseLayer {
            inputs,
            outputs,
            weight: (0..n).map(|i| (i as f32 * 0.37).sin()).collect(),
            bias: (0..outputs).map(|i| (i as f32 * 0.11).cos() * 0.1).collect(),
        }
    }

    #[test]
    fn layout_offsets_chain() {
        let layout = Layout::new(&[layer(3, 4), layer(4, 2), layer(2, 1)], 3).unwrap();
        assert_eq!(layout.param_len, 3 * 4 + 4 + 4 * 2 + 2 + 2 + 1);
        assert_eq!(layout.act_len, 3 + 4 + 2 + 1);
        assert_eq!(layout.max_width, 4);
        assert_eq!(layout.input_width(), 3);
        assert_eq!(layout.layers[1].weight_at, 16);
        assert_eq!(layout.layers[2].input_at, 7);
    }

    #[test]
    fn layout_rejects_bad_shapes() {
        let bad = Err(Error::InconsistentDimensions);
        assert_eq!(Layout::new(&[], 3), bad);
        assert_eq!(Layout::new(&[layer(3, 2)], 3), bad);
        assert_eq!(Layout::new(&[layer(3, 2), layer(3, 1)], 3), bad);
        assert_eq!(Layout::new(&[layer(4, 1)], 3), bad);
        let mut huge = layer(1, 1);
        huge.inputs = u32::MAX;
        huge.outputs = u32::MAX;
        assert_eq!(Layout::new(&[huge], u32::MAX as usize), bad);
    }

    #[test]
    fn forward_single_linear_layer() {
        let l = DenseLayer { inputs: 2, outputs: 1, weight: vec![2.0, -1.0], bias: vec![0.5] };
        let layout = Layout::new(core::slice::from_ref(&l), 2).unwrap();
        let params: Vec<f32> = l.weight.iter().chain(&l.bias).copied().collect();
        let mut acts = vec![3.0, 4.0, 0.0];
        // Linear output: no ReLU even though negative... 6 - 4 + 0.5 = 2.5
        assert_eq!(forward(&layout, &params, &mut acts), 2.5);
        acts[0] = -3.0;
        assert_eq!(forward(&layout, &params, &mut acts), -9.5);
    }
}
