//! The one place the runtime multiplies matrices: a bounds-checked, safe wrapper over
//! `matrixmultiply::sgemm` (cache-blocked, vectorised, no_std). Views carry their own strides,
//! so transposes and column slices of the row-major weights cost nothing.

/// A read-only strided matrix view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Step between rows, in elements.
    pub row_stride: usize,
    /// Step between columns, in elements.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A dense row-major `rows × cols` matrix starting at `data[0]`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose (no copy).
    pub fn t(self) -> View<'a> {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn fits(&self) -> bool {
        span(self.rows, self.cols, self.row_stride, self.col_stride).is_some_and(|n| n <= self.data.len())
    }
}

/// Elements a strided matrix touches (its last element's offset + 1); None on overflow.
fn span(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(row_stride)?.checked_add((cols - 1).checked_mul(col_stride)?)?.checked_add(1)
}

/// `c = alpha · a · b + beta · c` for a dense row-major `c` (`a.rows × b.cols`, row stride
/// `ldc`). Returns false (and leaves `c` untouched) if the shapes or lengths do not fit.
pub(crate) fn gemm(alpha: f32, a: View<'_>, b: View<'_>, beta: f32, c: &mut [f32], ldc: usize) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k || !a.fits() || !b.fits() || span(m, n, ldc, 1).is_none_or(|len| len > c.len()) {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    let (Ok(rsa), Ok(csa), Ok(rsb), Ok(csb), Ok(rsc)) = (
        isize::try_from(a.row_stride),
        isize::try_from(a.col_stride),
        isize::try_from(b.row_stride),
        isize::try_from(b.col_stride),
        isize::try_from(ldc),
    ) else {
        return false;
    };
    // SAFETY: `a` spans at most `a.data.len()` elements from its start with these strides, `b`
    // likewise, and `c` spans at most `c.len()` (all checked above, with overflow-checked
    // arithmetic); `c` is a unique borrow that does not alias `a` or `b`; the dimensions are
    // the ones the spans were checked for. With k == 0, sgemm only scales `c` by beta.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            rsc,
            1,
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn multiplies_transposed_and_sliced_views() {
        // a: 2×3, w: 2×4 row-major; a · (w[:, 1..4])ᵀ is 2×2.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w = [9.0, 1.0, 0.0, -1.0, 9.0, 2.0, 1.0, 0.0];
        let b = View { data: &w[1..], rows: 2, cols: 3, row_stride: 4, col_stride: 1 }.t();
        let mut c = vec![10.0; 4];
        assert!(gemm(1.0, View::rows(&a, 2, 3), b, 1.0, &mut c, 2));
        assert_eq!(c, [10.0 + 1.0 - 3.0, 10.0 + 2.0 + 2.0, 10.0 + 4.0 - 6.0, 10.0 + 8.0 + 5.0]);
    }

    #[test]
    fn refuses_views_that_do_not_fit() {
        let a = [1.0; 5];
        let mut c = vec![0.0; 4];
        assert!(!gemm(1.0, View::rows(&a, 2, 3), View::rows(&a, 3, 1), 0.0, &mut c, 1));
        let b = [1.0; 6];
        assert!(!gemm(1.0, View::rows(&b, 2, 3), View::rows(&b, 2, 3), 0.0, &mut c, 3));
        let huge = View { data: &b, rows: usize::MAX, cols: 2, row_stride: usize::MAX, col_stride: 1 };
        assert!(!gemm(1.0, huge, View::rows(&b, 2, 1), 0.0, &mut c, 1));
    }
}
