//! Fold-in: the exact ridge solve that gives a new user their part of a model from a few
//! ratings. A matrix factorisation folds in the user's bias and factors and scores
//! `μ + b_u + b_i + p_u · q_i`; a product model with [`crate::format::Adapt::FoldIn`] folds in
//! its output layer and a factor vector over the same kind of normal equations
//! ([`crate::format::FoldInHead`], solved by the session with this [`Ridge`]).
//!
//! The trainer's alternating least squares runs the same [`Ridge`] for every user and every item
//! of the training set, so what the device solves is what training solved, to the bit.

use alloc::vec::Vec;

use crate::error::{broken, Error, Invariant, Result};
use crate::format::{Factors, FoldInHead};
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

/// Widest output-layer input a fold-in head ([`FoldInHead`]) may solve for: its system is
/// `(d + k + 1)²` doubles, 13 MB at 1,024 features and [`MAX_FACTORS`] factors.
pub const MAX_FOLD_IN_FEATURES: usize = 1024;

/// The system `(Σ_j s_j x_j x_jᵀ + Λ) w = Σ_j r_j x_j` with `Λ = diag(Λ_d)`, `Λ_d > 0`,
/// accumulated in f64 and solved by Cholesky: with `s_j = 1` the normal equations of the ridge
/// regression `min_w Σ_j (r_j − w · x_j)² + Σ_d Λ_d w_d²`, and in general one Newton step of a
/// loss with curvature `s_j` and residual `r_j` (a click fold-in's logistic step). A factor
/// model's fold-in is the case `x_j = [1, v_j]`, `s_j = 1`, `Λ = (λ_b, λ, …, λ)`
/// ([`Ridge::reset`], [`Ridge::add`]). With every `Λ_d > 0` and `s_j ≥ 0` the system is positive
/// definite whatever the rows (none, duplicates, extreme targets), so the solve exists;
/// [`Factors`] that pass [`check`] keep it numerically so ([`Ridge::solve`]), and systems whose
/// rows validation cannot bound are solved with [`Ridge::solve_if_definite`].
#[derive(Debug, Clone, Default)]
pub struct Ridge {
    /// Unknowns: 1 + the factor count for a factor model.
    n: usize,
    /// `n × n`, row-major; the lower triangle is accumulated, then factored in place.
    a: Vec<f64>,
    /// Right-hand side, then the solution.
    b: Vec<f64>,
    /// The row being added, widened to f64 (`n`).
    x: Vec<f64>,
    /// Rows added since the last reset.
    rows: usize,
    /// Whether `a` holds the Cholesky factor of the last solve and `b` its solution (until the
    /// next reset).
    factored: bool,
}

impl Ridge {
    /// Starts an empty system for `factors` factors (plus the bias) with its ridge weights.
    /// Allocates only when the system grows.
    pub fn reset(&mut self, factors: usize, bias_regularisation: f32, regularisation: f32) {
        let (bias, rest) = (f64::from(bias_regularisation), f64::from(regularisation));
        self.reset_with(factors + 1, |d| if d == 0 { bias } else { rest });
    }

    /// Starts an empty system of `unknowns` unknowns with ridge weights `Λ_d = ridge(d)`.
    /// Allocates only when the system grows.
    pub fn reset_with(&mut self, unknowns: usize, ridge: impl Fn(usize) -> f64) {
        let n = unknowns;
        self.n = n;
        self.rows = 0;
        self.factored = false;
        self.a.clear();
        self.a.resize(n * n, 0.0);
        self.b.clear();
        self.b.resize(n, 0.0);
        self.x.clear();
        self.x.resize(n, 0.0);
        for d in 0..n {
            self.a[d * n + d] = ridge(d);
        }
    }

    /// Adds one observation: target `t` for features `[1, v]` (`v` as long as the factors; a
    /// shorter or longer `v` is a caller bug, read as zero-padded or cut).
    pub fn add(&mut self, v: &[f32], t: f32) {
        debug_assert_eq!(v.len() + 1, self.n, "feature width differs from the system's");
        if let Some((one, rest)) = self.x.split_first_mut() {
            *one = 1.0;
            for (x, v) in rest.iter_mut().zip(v.iter().map(|&v| f64::from(v)).chain(core::iter::repeat(0.0))) {
                *x = v;
            }
        }
        self.accumulate(1.0, f64::from(t));
    }

    /// Adds one row `x` (as many as the unknowns; a shorter or longer `x` is a caller bug, read
    /// as zero-padded or cut) with curvature `s` and residual `r`.
    pub fn add_weighted(&mut self, x: &[f32], s: f64, r: f64) {
        debug_assert_eq!(x.len(), self.n, "feature width differs from the system's");
        for (to, x) in self.x.iter_mut().zip(x.iter().map(|&x| f64::from(x)).chain(core::iter::repeat(0.0))) {
            *to = x;
        }
        self.accumulate(s, r);
    }

    /// Adds the row in `self.x` with curvature `s` and residual `r`: `b += r·x`, and the lower
    /// triangle of `a += s·x·xᵀ` (with `s = 1` exactly the unweighted sums, to the bit).
    fn accumulate(&mut self, s: f64, r: f64) {
        let n = self.n;
        self.factored = false;
        for (i, &xi) in self.x.iter().enumerate().take(n) {
            if let Some(b) = self.b.get_mut(i) {
                *b += xi * r;
            }
            let sx = s * xi;
            if let Some(row) = self.a.get_mut(i * n..i * n + i + 1) {
                for (a, xj) in row.iter_mut().zip(&self.x) {
                    *a += sx * xj;
                }
            }
        }
        self.rows += 1;
    }

    /// Bytes the system holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        (self.a.capacity() + self.b.capacity() + self.x.capacity()) * core::mem::size_of::<f64>()
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
        let solved = self.solve_if_definite(out);
        debug_assert!(
            solved != Err(Error::NonFiniteParameter),
            "ridge solve: a system that should be positive definite"
        );
        solved
    }

    /// [`Ridge::solve`] for a system whose rows validation cannot bound (a fold-in head's
    /// hidden features): a pivot that is not positive and finite in f64 (ridge weights too small
    /// for the rows, or rows that overflowed) is [`Error::NonFiniteParameter`] without an
    /// assertion, `out` left unspecified.
    pub fn solve_if_definite(&mut self, out: &mut [f32]) -> Result<()> {
        let n = self.n;
        if out.len() != n {
            return Err(Error::LengthMismatch);
        }
        if self.a.len() != n * n || self.b.len() != n {
            return Err(broken("ridge solve: a system of the wrong size (reset keeps them sized)"));
        }
        self.factored = false;
        // Cholesky A = L Lᵀ in place over the lower triangle (every index below n², checked above).
        let a = &mut self.a;
        for j in 0..n {
            let pivot = a[j * n + j] - (0..j).map(|p| a[j * n + p] * a[j * n + p]).sum::<f64>();
            if !(pivot > 0.0 && pivot.is_finite()) {
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
        self.factored = true;
        Ok(())
    }

    /// The solution of the last successful solve, in f64 (empty before one, and after a reset
    /// or a new row).
    pub fn solution(&self) -> &[f64] {
        if self.factored {
            &self.b
        } else {
            &[]
        }
    }

    /// Solves `(Σ_j s_j x_j x_jᵀ + Λ) u = v` in place (`v` in, `u` out, as many as the
    /// unknowns) with the Cholesky factor of the last successful solve, which it keeps: the
    /// same system against another right-hand side in O(n²) (a contribution's backward pass
    /// through the fold-in, `session::contribute`).
    ///
    /// Errors: [`Error::LengthMismatch`] when `v` has the wrong length; [`Error::Internal`] when
    /// no solve succeeded since the last reset or row (a bug).
    pub fn solve_factored(&self, v: &mut [f64]) -> Result<()> {
        let n = self.n;
        if v.len() != n {
            return Err(Error::LengthMismatch);
        }
        if !self.factored || self.a.len() != n * n {
            return Err(broken("ridge: a second right-hand side before a successful solve"));
        }
        let a = &self.a;
        for i in 0..n {
            let dot: f64 = (0..i).map(|p| a[i * n + p] * v[p]).sum();
            v[i] = (v[i] - dot) / a[i * n + i];
        }
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|p| a[p * n + i] * v[p]).sum();
            v[i] = (v[i] - dot) / a[i * n + i];
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
    check_ridge(&[factors.regularisation, factors.bias_regularisation], &factors.item_factors, k)
}

/// Ridge weights `ridge` finite, > 0 and large enough against the largest `1 + |q_i|²` over the
/// item factors (`k` per item) that the f64 solve of up to [`MAX_SUPPORT_RATINGS`] rows of
/// `[1, q_i]` stays positive definite: rounding in the sums is below 1e-9 of them.
///
/// Errors: [`Error::NonFiniteParameter`].
fn check_ridge(ridge: &[f32], item_factors: &[f32], k: usize) -> Result<()> {
    check_positive(ridge)?;
    let smallest = ridge.iter().fold(f32::INFINITY, |m, &lambda| m.min(lambda));
    let largest_norm = item_factors
        .chunks(k.max(1))
        .map(|q| 1.0 + q.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .fold(1.0f64, f64::max);
    if f64::from(smallest) < largest_norm * MAX_SUPPORT_RATINGS as f64 * 1e-9 {
        return Err(Error::NonFiniteParameter);
    }
    Ok(())
}

/// Every ridge weight finite and > 0 ([`Error::NonFiniteParameter`] otherwise).
fn check_positive(ridge: &[f32]) -> Result<()> {
    // NaN fails every comparison: `!(λ > 0)` refuses it.
    if ridge.iter().any(|&lambda| !(lambda > 0.0 && lambda.is_finite())) {
        return Err(Error::NonFiniteParameter);
    }
    Ok(())
}

/// Validates a fold-in head against an output layer `features` (d) wide and a catalogue of
/// `items`: sizes (`d + k + 1` ridge weights, `items × k` factors, `k ≤` [`MAX_FACTORS`],
/// `d ≤` [`MAX_FOLD_IN_FEATURES`]), finite factors, and ridge weights finite, > 0 and, for the
/// factors' and the bias's, large enough against the item factors' norms as [`check`] asks of
/// a factor model's. The hidden features' rows depend on the user, so no load-time bound holds
/// for them: the session solves with [`Ridge::solve_if_definite`].
///
/// Errors: [`Error::InconsistentDimensions`] (sizes); [`Error::NonFiniteParameter`] (a NaN or
/// infinite value, a ridge weight that is not positive or too small).
pub fn check_fold_in(head: &FoldInHead, features: usize, items: usize) -> Result<()> {
    let bad = Error::InconsistentDimensions;
    let k = head.factors as usize;
    if k > MAX_FACTORS
        || features > MAX_FOLD_IN_FEATURES
        || head.ridge.len() != features + k + 1
        || head.item_factors.len() != items.checked_mul(k).ok_or(bad)?
    {
        return Err(bad);
    }
    if !head.item_factors.iter().all(|x| x.is_finite()) {
        return Err(Error::NonFiniteParameter);
    }
    let (hidden, rest) = head.ridge.split_at(features);
    check_positive(hidden)?;
    check_ridge(rest, &head.item_factors, k)
}
