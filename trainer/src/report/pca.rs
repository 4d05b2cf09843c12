//! Principal component analysis to two dimensions (for the user-embedding figure): the two
//! leading eigenvectors of the covariance matrix by power iteration with deflation.

use ndarray::{Array1, Array2, Axis};

/// A 2-D projection.
#[derive(Debug, Clone)]
pub struct Pca2 {
    /// Per point, its coordinates on the two components `[n, 2]`.
    pub projected: Array2<f64>,
    /// The components as unit vectors `[2, d]`, largest variance first; each one's largest
    /// entry (by magnitude) is positive, so the result does not depend on the start vector.
    pub components: Array2<f64>,
    /// Share of the total variance along each component.
    pub explained: [f64; 2],
}

/// Projects the rows of `points` (`[n, d]`, n ≥ 2) onto their two principal components. With
/// d = 1 (or no variance left for a second component) the second coordinate is 0.
pub fn pca_2d(points: &Array2<f64>) -> Pca2 {
    let (n, d) = points.dim();
    assert!(n >= 2 && d >= 1, "PCA needs at least two points");
    let mean = points.mean_axis(Axis(0)).expect("n >= 1");
    let centred = points - &mean;
    let mut covariance = centred.t().dot(&centred) / (n - 1) as f64;
    let total: f64 = covariance.diag().sum();
    let mut components = Array2::<f64>::zeros((2, d));
    let mut explained = [0.0; 2];
    for (c, share) in explained.iter_mut().enumerate().take(d) {
        let (value, vector) = leading_eigen(&covariance);
        if value <= total * 1e-12 || value <= 0.0 {
            break;
        }
        // Deflate: remove the found direction so the next iteration finds the next one.
        let outer = vector.view().insert_axis(Axis(1)).dot(&vector.view().insert_axis(Axis(0)));
        covariance = covariance - outer * value;
        components.row_mut(c).assign(&vector);
        *share = if total > 0.0 { value / total } else { 0.0 };
    }
    let projected = centred.dot(&components.t());
    Pca2 { projected, components, explained }
}

/// Largest eigenvalue and its unit eigenvector of a symmetric positive semi-definite matrix.
fn leading_eigen(matrix: &Array2<f64>) -> (f64, Array1<f64>) {
    let d = matrix.nrows();
    // Start from the all-ones direction tilted towards the largest diagonal entry: never
    // orthogonal to the leading eigenvector in the cases that matter, and deterministic.
    let mut v = Array1::<f64>::from_elem(d, 1.0);
    let largest = (0..d).max_by(|&a, &b| matrix[[a, a]].total_cmp(&matrix[[b, b]])).unwrap_or(0);
    v[largest] += d as f64;
    v /= v.dot(&v).sqrt();
    for _ in 0..10_000 {
        let next = matrix.dot(&v);
        let norm = next.dot(&next).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return (0.0, v);
        }
        let next = next / norm;
        let change = (&next - &v).mapv(f64::abs).sum();
        v = next;
        if change < 1e-13 {
            break;
        }
    }
    // Sign convention: the largest entry by magnitude is positive.
    let big = (0..d).max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs())).unwrap_or(0);
    if v[big] < 0.0 {
        v.mapv_inplace(|x| -x);
    }
    (v.dot(&matrix.dot(&v)), v)
}
