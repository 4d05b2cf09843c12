//! The decision MLP over one flat parameter vector: layout, forward pass and backpropagation.
//!
//! Parameters are stored `[W0, b0, W1, b1, …]`, each `W` `outputs × inputs` row-major (as torch
//! stores `nn.Linear`). Activations are stored as one chain `[x | y0 | y1 | …]`: the input of
//! layer `l + 1` is the output of layer `l`, so each layer reads the slice just before the one it
//! writes. Every layer but the last is followed by a ReLU; the last has one output, the score.

use alloc::vec::Vec;

use crate::error::{Error, Invariant, Result};
use crate::format::DenseLayer;
use crate::gemm::{gemm, View};

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// One entry per layer, input to output. Never empty, but for a factor model's (no MLP).
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

/// `(W, b)` of one layer inside a flat parameter vector of the layout's length.
fn layer_params<'p>(params: &'p [f32], shape: &LayerShape) -> Result<(&'p [f32], &'p [f32])> {
    let bias_at = shape.weight_at + shape.weight_len();
    let weight = params.get(shape.weight_at..bias_at).invariant("layer weights past the parameters")?;
    let bias = params.get(bias_at..bias_at + shape.outputs).invariant("layer biases past the parameters")?;
    Ok((weight, bias))
}

impl Layout {
    /// Sum of all layer output widths (activation floats per row of a batch).
    pub fn act_width(&self) -> usize {
        self.layers.iter().map(|s| s.outputs).sum()
    }

    /// Offset of layer `l`'s activations in a batch of `rows` rows.
    pub fn act_at(&self, l: usize, rows: usize) -> usize {
        self.layers.iter().take(l).map(|s| s.outputs * rows).sum()
    }
}

/// The first layer's user part: `W0[:, ..user.len()] · user + b0` (the same for every item of a
/// user, so it is computed once per parameter state, not once per item).
pub(crate) fn user_hidden(layout: &Layout, params: &[f32], user: &[f32], out: &mut [f32]) -> Result<()> {
    let shape = layout.layers.first().invariant("an MLP without layers")?;
    let (weight, bias) = layer_params(params, shape)?;
    let n = user.len().min(shape.inputs);
    for ((o, row), b) in out.iter_mut().zip(weight.chunks_exact(shape.inputs)).zip(bias) {
        // Eight lanes: a single running sum does not vectorise, and this runs on every step.
        *o = b + dot(&row[..n], &user[..n]);
    }
    Ok(())
}

/// Forward pass for `rows` items at once: `items` holds their item inputs (`rows × item_width`,
/// row-major), `hidden0` the user part of layer 0. Every layer's (post-ReLU) outputs land in
/// `acts` (`rows × layout.act_width()`, layer after layer; see [`Keep`]); the scores are the
/// last layer's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_batch(
    layout: &Layout,
    weights: Weights<'_>,
    user_width: usize,
    hidden0: &[f32],
    items: &[f32],
    rows: usize,
    acts: &mut [f32],
    keep: Keep,
) -> Result<()> {
    let shape = layout.layers.first().invariant("an MLP without layers")?;
    let (weight, _) = layer_params(weights.params, shape)?;
    let out = acts.get_mut(..rows * shape.outputs).invariant("activations shorter than layer 0")?;
    for row in out.chunks_exact_mut(shape.outputs) {
        for (r, v) in row.iter_mut().zip(hidden0) {
            *r = *v;
        }
    }
    let item_width = shape.inputs.saturating_sub(user_width);
    let w = View {
        data: weight.get(user_width..).invariant("user part wider than layer 0's input")?,
        rows: shape.outputs,
        cols: item_width,
        row_stride: shape.inputs,
        col_stride: 1,
    };
    gemm(1.0, View::rows(items, rows, item_width), w.t(), 1.0, out, shape.outputs)?;
    forward_upper(layout, weights, rows, acts, keep)
}

/// What [`forward_upper`] leaves in `acts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Every layer's activations (the backward pass reads them).
    Activations,
    /// The scores only (scoring): the last hidden layer's bias, ReLU and the one-output score
    /// layer then run in one pass over its pre-activations, which are left without them.
    Scores,
}

/// The parameters a forward pass reads: the flat vector, and the hidden layers after layer 0
/// transposed (see [`transpose_upper`]; the layout the small-product kernel reads in place).
/// With `upper_t` empty the weights are read strided from `params`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights<'p> {
    pub params: &'p [f32],
    pub upper_t: &'p [f32],
}

/// Length of [`transpose_upper`]'s output: every layer after the first with more than one
/// output.
pub(crate) fn upper_transposed_len(layout: &Layout) -> usize {
    layout.layers.iter().skip(1).filter(|l| l.outputs > 1).map(|l| l.inputs * l.outputs).sum()
}

/// Writes the weights of every layer after the first with more than one output, transposed
/// (`inputs × outputs` each), one after the other, into `out` ([`upper_transposed_len`] long).
pub(crate) fn transpose_upper(layout: &Layout, params: &[f32], out: &mut [f32]) -> Result<()> {
    let mut at = 0;
    for shape in layout.layers.iter().skip(1).filter(|l| l.outputs > 1) {
        let (weight, _) = layer_params(params, shape)?;
        let dst =
            out.get_mut(at..at + shape.inputs * shape.outputs).invariant("transposed weights past their buffer")?;
        transpose(weight, shape.outputs, shape.inputs, dst, shape.outputs)?;
        at += shape.inputs * shape.outputs;
    }
    Ok(())
}

/// The rest of a forward pass once layer 0's pre-activations of `rows` rows sit at the start of
/// `acts`: its ReLU, then every further layer (see [`forward_batch`]).
pub(crate) fn forward_upper(
    layout: &Layout,
    weights: Weights<'_>,
    rows: usize,
    acts: &mut [f32],
    keep: Keep,
) -> Result<()> {
    let last = layout.layers.len().saturating_sub(1);
    let Weights { params, upper_t: mut weights_t } = weights;
    // Fused where the last hidden layer has a bias of its own to add (not layer 0, whose bias is
    // in the user part already); a one-hidden-layer model scores unfused.
    let fused_score = keep == Keep::Scores && last > 1 && layout.layers[last].outputs == 1;
    for (l, shape) in layout.layers.iter().enumerate() {
        let at = layout.act_at(l, rows);
        let (before, rest) = acts.split_at_mut(at.min(acts.len()));
        let out = rest.get_mut(..rows * shape.outputs).invariant("activations shorter than the layers")?;
        let fuse_here = fused_score && l + 1 == last;
        let (weight, bias) = layer_params(params, shape)?;
        if l > 0 {
            if !fuse_here {
                for row in out.chunks_exact_mut(shape.outputs) {
                    row.copy_from_slice(bias);
                }
            }
            let beta = if fuse_here { 0.0 } else { 1.0 };
            let input = before.get(layout.act_at(l - 1, rows)..).invariant("a layer's input past the activations")?;
            if shape.outputs == 1 {
                // The score layer is a matrix-vector product: plain dot products beat packing.
                for (o, x) in out.iter_mut().zip(input.chunks_exact(shape.inputs)) {
                    *o += dot(x, weight);
                }
            } else {
                let len = shape.inputs * shape.outputs;
                let w = match weights_t.split_at_checked(len) {
                    Some((w_t, rest)) => {
                        weights_t = rest;
                        View::rows(w_t, shape.inputs, shape.outputs)
                    }
                    None => View::rows(weight, shape.outputs, shape.inputs).t(),
                };
                gemm(1.0, View::rows(input, rows, shape.inputs), w, beta, out, shape.outputs)?;
            }
        }
        if fuse_here {
            let score_layer = &layout.layers[last];
            let (score_weight, score_bias) = layer_params(params, score_layer)?;
            let (pre, after) = rest.split_at_mut((layout.act_at(last, rows) - at).min(rest.len()));
            let pre = pre.get(..rows * shape.outputs).invariant("fused score: pre-activations out of range")?;
            let scores = after.get_mut(..rows).invariant("fused score: scores out of range")?;
            let score_bias = score_bias.first().copied().invariant("fused score: no score bias")?;
            for (y, z) in scores.iter_mut().zip(pre.chunks_exact(shape.outputs)) {
                *y = score_bias + relu_dot(z, bias, score_weight);
            }
            return Ok(());
        }
        if l != last {
            relu_in_place(out);
        }
    }
    Ok(())
}

/// torch's relu for every finite input, NaN kept (−∞ gives NaN, where torch gives 0: only a
/// diverged model gets there), computed without a branch or a select: `z/2 + |z|/2`, exact since
/// halving is (but for subnormal `z`, off by at most the smallest subnormal). A select between a
/// value and zero stored back in place becomes masked stores (`vmaskmovps`) on x86, which are
/// slow on some cores: on this machine's Zen they took a third of the scoring time.
#[inline(always)]
pub(crate) fn relu(z: f32) -> f32 {
    0.5 * z + 0.5 * z.abs()
}

/// The ReLU derivative at output `a`: 0 where `a <= 0`, else 1 (NaN included). The backward
/// pass multiplies by it: a select against the gradient's own memory compiled to masked stores
/// (see [`relu`]), 20% of the backward pass. It differs from zeroing only for a non-finite
/// gradient, which a diverged model alone produces.
#[inline(always)]
fn relu_slope(a: f32) -> f32 {
    if a <= 0.0 {
        0.0
    } else {
        1.0
    }
}

crate::simd::kernel! {
    /// [`relu`] of every element, in place.
    fn relu_in_place(z: &mut [f32]) {
        for z in z.iter_mut() {
            *z = relu(*z);
        }
    }
}

crate::simd::kernel! {
    /// `Σ_j relu(z_j + bias_j) · w_j` over the shortest of the three, in eight independent lanes.
    fn relu_dot(z: &[f32], bias: &[f32], w: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let n = z.len().min(bias.len()).min(w.len());
        let (z8, b8, w8) = (z[..n].chunks_exact(8), bias[..n].chunks_exact(8), w[..n].chunks_exact(8));
        let tail: f32 =
            (z8.remainder().iter().zip(b8.remainder()).zip(w8.remainder())).map(|((z, b), w)| relu(z + b) * w).sum();
        for ((z, b), w) in z8.zip(b8).zip(w8) {
            for k in 0..8 {
                lanes[k] += relu(z[k] + b[k]) * w[k];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }
}

crate::simd::kernel! {
    /// Dot product in eight independent lanes, so the compiler can vectorise it.
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in a8.zip(b8) {
            for k in 0..8 {
                lanes[k] += x[k] * y[k];
            }
        }
        lanes.iter().sum::<f32>() + tail
    }
}

crate::simd::kernel! {
    /// `out[j] += s · x[j]` over the shorter of the two.
    pub(crate) fn add_scaled(out: &mut [f32], s: f32, x: &[f32]) {
        for (o, x) in out.iter_mut().zip(x) {
            *o += s * x;
        }
    }
}

crate::simd::kernel! {
    /// `out[j] = a[j] + b[j]` over the shortest of the three.
    pub(crate) fn sum_into(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    }
}

crate::simd::kernel! {
    /// `out[j] -= rate[j] · x[j]` over the shortest of the three.
    pub(crate) fn sub_scaled_each(out: &mut [f32], rate: &[f32], x: &[f32]) {
        for ((o, x), r) in out.iter_mut().zip(x).zip(rate) {
            *o -= r * x;
        }
    }
}

crate::simd::kernel! {
    /// `out[j] += x[j]` over the shorter of the two.
    fn add_into(out: &mut [f32], x: &[f32]) {
        for (o, x) in out.iter_mut().zip(x) {
            *o += x;
        }
    }
}

crate::simd::kernel! {
    /// The backward pass through a ReLU: `g[j] *= relu_slope(a[j])` (see [`relu_slope`]).
    fn relu_backward(g: &mut [f32], a: &[f32]) {
        for (gi, &a) in g.iter_mut().zip(a) {
            *gi *= relu_slope(a);
        }
    }
}

/// Scores of the last forward pass over `rows` rows.
pub(crate) fn scores<'a>(layout: &Layout, acts: &'a [f32], rows: usize) -> Result<&'a [f32]> {
    let at = layout.act_at(layout.layers.len().saturating_sub(1), rows);
    acts.get(at..at + rows).invariant("scores past the activations")
}

/// Adds `Σ_rows dy_row · ∂y_row/∂θ` to `grads` (same layout as `params`) after
/// [`forward_batch`] over the same rows (`pass`: see [`Backward`]). Layer 0's pre-activation
/// gradients (`rows × outputs0`) are copied into `pass.delta0`. Layer 0's item-column weight
/// gradients are formed only when `item_weights` is true. The pass stops at layer
/// `pass.lowest`: the layers below it get no gradient (nor `delta0`, unless it is 0).
///
/// The ReLU derivative is 1 where the layer output is > 0 and 0 elsewhere, which equals torch's
/// `threshold_backward(grad, result, 0)`.
pub(crate) fn backward_batch(
    layout: &Layout,
    params: &[f32],
    pass: Backward<'_>,
    grads: &mut [f32],
    item_weights: bool,
) -> Result<()> {
    let Backward { user, items, rows, acts, dy, g_cur, g_next, delta0, lowest } = pass;
    let (mut current, mut next) = (g_cur, g_next);
    for (g, d) in current.iter_mut().zip(dy.iter().take(rows)) {
        *g = *d;
    }
    for (l, shape) in layout.layers.iter().enumerate().rev() {
        let (weight, _) = layer_params(params, shape)?;
        let g = current.get(..rows * shape.outputs).invariant("backward: gradient scratch too short")?;
        let g = View::rows(g, rows, shape.outputs);
        let bias_at = shape.weight_at + shape.weight_len();
        let layer_grads =
            grads.get_mut(shape.weight_at..bias_at + shape.outputs).invariant("backward: gradients too short")?;
        let (grad_weight, grad_bias) = layer_grads.split_at_mut(shape.weight_len());
        for row in g.data.chunks_exact(shape.outputs) {
            add_into(grad_bias, row);
        }
        if l == 0 {
            delta0
                .get_mut(..g.data.len())
                .invariant("backward: layer-0 gradient buffer too short")?
                .copy_from_slice(g.data);
            let layer0 = Layer0 { shape, user, items, rows, item_weights };
            return layer0_weight_gradients(layer0, g, grad_weight, next);
        }
        let input_at = layout.act_at(l - 1, rows);
        let input =
            acts.get(input_at..input_at + rows * shape.inputs).invariant("backward: input past the activations")?;
        gemm(1.0, transposed(g, next)?, View::rows(input, rows, shape.inputs), 1.0, grad_weight, shape.inputs)?;
        if l <= lowest {
            return Ok(());
        }
        let g_in = next.get_mut(..rows * shape.inputs).invariant("backward: gradient scratch too short")?;
        gemm(1.0, g, View::rows(weight, shape.outputs, shape.inputs), 0.0, g_in, shape.inputs)?;
        relu_backward(g_in, input);
        core::mem::swap(&mut current, &mut next);
    }
    Ok(())
}

/// What [`backward_batch`] reads besides the parameters, and its scratch: `user` is the user
/// part of every row's input, `items` the rows' item inputs (`rows × item_width`), `acts` and
/// `dy` the forward pass's activations and dL/dy; `g_cur`/`g_next` are scratch of
/// `rows × layout.max_width` each, `delta0` receives layer 0's pre-activation gradients;
/// `lowest` is the lowest layer that needs its gradient (0 for all).
#[derive(Debug)]
pub(crate) struct Backward<'a> {
    pub user: &'a [f32],
    pub items: &'a [f32],
    pub rows: usize,
    pub acts: &'a [f32],
    pub dy: &'a [f32],
    pub g_cur: &'a mut [f32],
    pub g_next: &'a mut [f32],
    pub delta0: &'a mut [f32],
    pub lowest: usize,
}

/// Layer 0 as [`layer0_weight_gradients`] sees it.
struct Layer0<'a> {
    shape: &'a LayerShape,
    user: &'a [f32],
    items: &'a [f32],
    rows: usize,
    item_weights: bool,
}

/// Layer 0's weight gradients from its pre-activation gradients `g` (`rows × outputs`): the user
/// columns, and the item columns when `item_weights` (`scratch` holds `g` transposed).
fn layer0_weight_gradients(layer: Layer0<'_>, g: View<'_>, grad_weight: &mut [f32], scratch: &mut [f32]) -> Result<()> {
    let Layer0 { shape, user, items, rows, item_weights } = layer;
    let user_width = user.len();
    let item_width = shape.inputs.saturating_sub(user_width);
    // User columns: every row shares the user input, so dW[:, u] = (Σ_rows g) ⊗ user.
    for (o, grad_row) in grad_weight.chunks_exact_mut(shape.inputs).enumerate() {
        let total: f32 = g.data.chunks_exact(shape.outputs).map(|row| row[o]).sum();
        add_scaled(grad_row, total, user);
    }
    if !item_weights {
        return Ok(());
    }
    let item_grads = grad_weight.get_mut(user_width..).invariant("backward: user part wider than layer 0")?;
    let g_t = transposed(g, scratch)?;
    gemm(1.0, g_t, View::rows(items, rows, item_width), 1.0, item_grads, shape.inputs)
}

/// `m` transposed into `scratch` (as a dense view), so the weight gradients `gᵀ · input` read
/// both operands row by row, the small-product kernel's layout; `m.t()` itself when `m` is not
/// dense or `scratch` is too short (the same product, read strided).
fn transposed<'s>(m: View<'s>, scratch: &'s mut [f32]) -> Result<View<'s>> {
    if m.row_stride != m.cols || m.col_stride != 1 {
        return Ok(m.t());
    }
    let Some(dst) = scratch.get_mut(..m.rows * m.cols) else { return Ok(m.t()) };
    transpose(m.data, m.rows, m.cols, dst, m.rows)?;
    Ok(View::rows(dst, m.cols, m.rows))
}

/// `dst` (`cols` rows, `ld_dst >= rows` apart) = `src` (`rows × cols`, row-major) transposed,
/// in 8 × 8 tiles so both sides move whole cache lines (element by element with a bounds check
/// each, the 64 × 64 transposition cost 4 µs). Columns `rows..ld_dst` of `dst` are left as they
/// are. Callers size both sides: a short slice or `ld_dst < rows` is [`Error::Internal`], with
/// nothing written.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], ld_dst: usize) -> Result<()> {
    let dst_len = if cols == 0 { 0 } else { (cols - 1) * ld_dst + rows };
    let fits = ld_dst >= rows && src.len() >= rows * cols && dst.len() >= dst_len;
    crate::error::ensure(fits, "transpose: a slice shorter than its shape")?;
    for r0 in (0..rows).step_by(8) {
        for c0 in (0..cols).step_by(8) {
            let (r1, c1) = ((r0 + 8).min(rows), (c0 + 8).min(cols));
            for r in r0..r1 {
                let src_row = &src[r * cols + c0..r * cols + c1];
                for (c, v) in (c0..c1).zip(src_row) {
                    dst[c * ld_dst + r] = *v;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn transposes_in_tiles_at_any_shape() {
        for (rows, cols) in [(1, 1), (5, 11), (8, 8), (20, 64), (64, 64), (13, 9)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            for ld in [rows, rows + 3] {
                let mut dst = vec![-1.0; cols * ld];
                transpose(&src, rows, cols, &mut dst, ld).unwrap();
                for c in 0..cols {
                    for r in 0..rows {
                        assert_eq!(dst[c * ld + r], src[r * cols + c], "{rows}x{cols} (ld {ld}) at ({r}, {c})");
                    }
                    // The padding columns are left as they were.
                    assert!(dst[c * ld + rows..c * ld + ld].iter().all(|v| *v == -1.0));
                }
            }
        }
    }

    /// A short destination, or a stride below the row count, is a bug in the caller: it asserts
    /// in debug builds (release builds return `Error::Internal` and leave `dst` alone).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "internal invariant broken: transpose")]
    fn a_short_transpose_asserts_in_debug_builds() {
        let mut short = vec![-1.0; 3];
        let _ = transpose(&[1.0; 4], 2, 2, &mut short, 2);
    }

    /// ... and release builds return `Error::Internal`, writing nothing.
    #[test]
    #[cfg(not(debug_assertions))]
    fn a_short_transpose_is_an_internal_error_in_release_builds() {
        let mut short = vec![-1.0; 3];
        assert_eq!(transpose(&[1.0; 4], 2, 2, &mut short, 2), Err(Error::Internal));
        assert_eq!(short, [-1.0; 3]);
        let mut dst = vec![-1.0; 4];
        assert_eq!(transpose(&[1.0; 4], 2, 2, &mut dst, 1), Err(Error::Internal));
        assert_eq!(dst, [-1.0; 4]);
    }

    #[test]
    fn relu_is_torchs_for_finite_values_and_keeps_nan() {
        for z in [0.0f32, 1.0, 2.5e-3, 3.0e38, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY] {
            assert_eq!(relu(z).to_bits(), z.to_bits(), "{z}");
        }
        for z in [-0.0f32, -1.0, -2.5e-3, -3.0e38, f32::MIN, -f32::MIN_POSITIVE] {
            assert_eq!(relu(z).to_bits(), 0.0f32.to_bits(), "{z}");
        }
        assert!(relu(f32::NAN).is_nan());
        let tiny = f32::from_bits(1);
        assert!(relu(tiny) >= 0.0 && relu(tiny) <= tiny);
    }

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
}
