//! Summary statistics and Student t-tests (the t distribution comes from `statrs`).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean of `values` (NaN when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator; 0 for fewer than two values).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// A t statistic, its degrees of freedom and two-tailed p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// The t statistic (positive when the first sample's mean is larger).
    pub t: f64,
    /// Degrees of freedom.
    pub df: f64,
    /// Two-tailed p-value.
    pub p: f64,
}

/// Two-tailed p-value of `t` under Student's t with `df` degrees of freedom. A zero standard
/// error gives t = ±inf (p = 0) or 0/0 (equal samples, p = 1).
fn two_tailed(t: f64, df: f64) -> TTest {
    if t.is_nan() {
        return TTest { t: 0.0, df, p: 1.0 };
    }
    if t.is_infinite() {
        return TTest { t, df, p: 0.0 };
    }
    let dist = StudentsT::new(0.0, 1.0, df).expect("df > 0");
    // sf(|t|) keeps precision in the far tail, where 1 − cdf would round to 0.
    TTest { t, df, p: (2.0 * dist.sf(t.abs())).min(1.0) }
}

/// Two-sample Student t-test with pooled variance (equal variances assumed), two-tailed.
/// `None` when the samples leave no degree of freedom (fewer than 3 values, or an empty one).
pub fn student_t_test(a: &[f64], b: &[f64]) -> Option<TTest> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() || a.len() + b.len() < 3 {
        return None;
    }
    let (ma, mb) = (mean(a), mean(b));
    let ss = |xs: &[f64], m: f64| xs.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let df = na + nb - 2.0;
    let pooled = (ss(a, ma) + ss(b, mb)) / df;
    let se = (pooled * (1.0 / na + 1.0 / nb)).sqrt();
    Some(two_tailed((ma - mb) / se, df))
}

/// Paired t-test on `a[i] − b[i]`, two-tailed. `None` for fewer than two pairs or unequal lengths.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<TTest> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let se = std_dev(&d) / n.sqrt();
    Some(two_tailed(mean(&d) / se, n - 1.0))
}

/// Quartiles by linear interpolation between order statistics (as numpy's default):
/// `(q1, median, q3)`. `values` must not be empty.
pub fn quartiles(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (quantile_sorted(&sorted, 0.25), quantile_sorted(&sorted, 0.5), quantile_sorted(&sorted, 0.75))
}

/// The `q` quantile of sorted values, linear interpolation.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}
