//! Matrix factorisation with fold-in: the exact ridge solve that gives a new user their bias and
//! factors from a few ratings, and the score `μ + b_u + b_i + p_u · q_i`.
//!
//! The trainer's alternating least squares runs the same [`Ridge`] for every user and every item
//! of the training set, so what the device solves is what training solved, to the bit.

use alloc::vec::Vec;

use crate::error::{broken, Error, Invariant, Result};
use crate::format::Factors;
use crate::limits::MAX_SUPPORT_RATINGS;

/// A click factor model's scores are its least-squares fit to the 0/1 labels, kept inside
/// `[CLICK_FACTOR_FLOOR, 1 − CLICK_FACTOR_FLOOR]` so that they are probabilities with a finite
/// log loss (the trainer's bias baseline keeps the same range).
pub const CLICK_FACTOR_FLOOR: f32 = 1e-3;

/// A click factor model's raw score kept a probability (see [`CLICK_FACTOR_FLOOR`]): the one
/// rule the device and the trainer both apply.
pub fn click_probability(score: f32) -> f32 {
    score.clamp(CLICK_FACTOR_FLOOR, 1.0 - CLICK_FACTOR_FLOOR)
}

/// Most factors a model may have: the device's system is `(k + 1)²` doubles (528 KB at 256).
pub const MAX_FACTORS: usize = 256;

/// The normal equations of one ridge regression with an intercept:
/// `min_w Σ_j (t_j − w · [1, v_j])² + λ_b w_0² + λ Σ_{d ≥ 1} w_d²`, accumulated in f64 and
/// solved by Cholesky. With `λ_b, λ > 0` the system is positive definite whatever the rows
/// (none, duplicates, extreme targets), so the solve always exists; [`Factors`] that pass
/// [`check`] keep it numerically so.
#[derive(Debug, Clone, Default)]
pub struct Ridge {
    /// Unknowns: 1 + the factor count.
    n: usize,
    /// `n × n`, row-major; the lower triangle is accumulated, then factored in place.
    a: Vec<f64>,
    /// Right-hand side, then the solution.
    b: Vec<f64>,
    /// Rows added since [`Ridge::reset`].
    rows: usize,
}

impl Ridge {
    /// Starts an empty system for `factors` factors (plus the bias) with its ridge weights.
    /// Allocates only when the system grows.
    pub fn reset(&mut self, factors: usize, bias_regularisation: f32, regularisation: f32) {
        let n = factors + 1;
        self.n = n;
        self.rows = 0;
        self.a.clear();
        self.a.resize(n * n, 0.0);
        self.b.clear();
        self.b.resize(n, 0.0);
        for d in 0..n {
            self.a[d * n + d] = f64::from(if d == 0 { bias_regularisation } else { regularisation });
        }
    }

    /// Adds one observation: target `t` for features `[1, v]` (`v` as long as the factors; a
    /// shorter or longer `v` is a caller bug, read as zero-padded or cut).
    pub fn add(&mut self, v: &[f32], t: f32) {
        debug_assert_eq!(v.len() + 1, self.n, "feature width differs from the system's");
        let n = self.n;
        let t = f64::from(t);
        let x = |d: usize| if d == 0 { 1.0 } else { v.get(d - 1).map_or(0.0, |&x| f64::from(x)) };
        for i in 0..n {
            let xi = x(i);
            self.b[i] += xi * t;
            let row = &mut self.a[i * n..i * n + i + 1];
            for (j, a) in row.iter_mut().enumerate() {
                *a += xi * x(j);
            }
        }
        self.rows += 1;
    }

    /// Bytes the system holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        (self.a.capacity() + self.b.capacity()) * core::mem::size_of::<f64>()
    }

    /// Rows added since the last reset.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Solves the system into `out` (`[w_0, w_1, …]`, as many as the unknowns).
    ///
    /// Errors: [`Error::LengthMismatch`] when `out` has the wrong length (not `1 + factors`);
    /// [`Error::NonFiniteParameter`] when a pivot is not positive, which validated factors rule
    /// out (a debug build asserts); [`Error::Internal`] for a system of the wrong size (a bug:
    /// [`Ridge::reset`] sizes it).
    pub fn solve(&mut self, out: &mut [f32]) -> Result<()> {
        let n = self.n;
        if out.len() != n {
            return Err(Error::LengthMismatch);
        }
        if self.a.len() != n * n || self.b.len() != n {
            return Err(broken("ridge solve: a system of the wrong size (reset keeps them sized)"));
        }
        // Cholesky A = L Lᵀ in place over the lower triangle (every index below n², checked above).
        let a = &mut self.a;
        for j in 0..n {
            let pivot = a[j * n + j] - (0..j).map(|p| a[j * n + p] * a[j * n + p]).sum::<f64>();
            if !(pivot > 0.0 && pivot.is_finite()) {
                debug_assert!(false, "ridge solve: pivot {pivot} of a system that should be positive definite");
                return Err(Error::NonFiniteParameter);
            }
            let diagonal = libm::sqrt(pivot);
            a[j * n + j] = diagonal;
            for i in j + 1..n {
                let dot: f64 = (0..j).map(|p| a[i * n + p] * a[j * n + p]).sum();
                a[i * n + j] = (a[i * n + j] - dot) / diagonal;
            }
        }
        // L y = b, then Lᵀ w = y.
        for i in 0..n {
            let dot: f64 = (0..i).map(|p| self.a[i * n + p] * self.b[p]).sum();
            self.b[i] = (self.b[i] - dot) / self.a[i * n + i];
        }
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|p| self.a[p * n + i] * self.b[p]).sum();
            self.b[i] = (self.b[i] - dot) / self.a[i * n + i];
        }
        for (o, w) in out.iter_mut().zip(&self.b) {
            *o = *w as f32;
        }
        Ok(())
    }
}

/// Folds one user in: their `[b_u, p_u]` (`1 + k` values into `out`) from their `(item, rating)`
/// support ratings, the targets being `r − μ − b_i`. No ratings give zeros (the bias-only
/// prediction `μ + b_i`).
///
/// Errors: those of [`Ridge::solve`], and [`Error::Internal`] for an item out of range (items
/// must be in range: the session checks them; a debug build asserts).
pub fn fold_in(factors: &Factors, mean: f32, support: &[(u32, f32)], ridge: &mut Ridge, out: &mut [f32]) -> Result<()> {
    let k = factors.factors as usize;
    ridge.reset(k, factors.bias_regularisation, factors.regularisation);
    for &(item, rating) in support {
        let (bias, q) = item_terms(factors, item).invariant("fold-in: a support item out of range")?;
        ridge.add(q, rating - mean - bias);
    }
    ridge.solve(out)
}

/// `b_i` and `q_i` of an item, if in range.
pub fn item_terms(factors: &Factors, item: u32) -> Option<(f32, &[f32])> {
    let k = factors.factors as usize;
    let i = item as usize;
    let bias = *factors.item_bias.get(i)?;
    let q = factors.item_factors.get(i.checked_mul(k)?..i.checked_mul(k)?.checked_add(k)?)?;
    Some((bias, q))
}

/// `μ + b_u + b_i + p_u · q_i` for a user vector `[b_u, p_u]`; an out-of-range item is a
/// caller bug (a debug build asserts) and scores μ + b_u.
pub fn predict(factors: &Factors, mean: f32, user: &[f32], item: u32) -> f32 {
    score(factors, mean, user, item).unwrap_or_else(|_| mean + user.first().copied().unwrap_or(0.0))
}

/// [`predict`] for the session, which checked `item`: out of range is [`Error::Internal`].
pub(crate) fn score(factors: &Factors, mean: f32, user: &[f32], item: u32) -> Result<f32> {
    let (user_bias, p) = user.split_first().map_or((0.0, &[][..]), |(b, p)| (*b, p));
    let (bias, q) = item_terms(factors, item).invariant("fold-in score: an item out of range")?;
    Ok(mean + user_bias + bias + p.iter().zip(q).map(|(a, b)| a * b).sum::<f32>())
}

/// Validates factors against a catalogue of `items`: sizes, finite values, positive ridge
/// weights, and weights large enough against the items' norms that the f64 solve of up to
/// [`MAX_SUPPORT_RATINGS`] ratings stays positive definite (rounding in the sums is below
/// 1e-9 of them; a trained model is many orders of magnitude inside).
///
/// Errors: [`Error::InconsistentDimensions`] (sizes, more than [`MAX_FACTORS`] factors);
/// [`Error::NonFiniteParameter`] (a NaN or infinite value, a ridge weight that is not positive
/// or too small for the items' norms).
pub fn check(factors: &Factors, items: usize) -> Result<()> {
    let bad = Error::InconsistentDimensions;
    let k = factors.factors as usize;
    if k > MAX_FACTORS
        || factors.item_bias.len() != items
        || factors.item_factors.len() != items.checked_mul(k).ok_or(bad)?
    {
        return Err(bad);
    }
    let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
    if !finite(&factors.item_bias) || !finite(&factors.item_factors) {
        return Err(Error::NonFiniteParameter);
    }
    let smallest = factors.regularisation.min(factors.bias_regularisation);
    // NaN fails every comparison: `smallest` is checked for it apart.
    if smallest.is_nan()
        || smallest <= 0.0
        || !factors.regularisation.is_finite()
        || !factors.bias_regularisation.is_finite()
    {
        return Err(Error::NonFiniteParameter);
    }
    let largest_norm = factors
        .item_factors
        .chunks(k.max(1))
        .map(|q| 1.0 + q.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .fold(1.0f64, f64::max);
    if f64::from(smallest) < largest_norm * MAX_SUPPORT_RATINGS as f64 * 1e-9 {
        return Err(Error::NonFiniteParameter);
    }
    Ok(())
}
