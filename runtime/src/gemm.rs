//! The one place the runtime multiplies matrices: a bounds-checked, safe wrapper over
//! `matrixmultiply::sgemm` (cache-blocked, vectorised, no_std). Views carry their own strides,
//! so transposes and column slices of the row-major weights cost nothing.

use crate::error::{broken, ensure, Invariant, Result};

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

/// Whether `c = a · b` fits: the inner dimensions agree and every operand lies inside its
/// slice (`c` dense row-major, `a.rows × b.cols` with row stride `ldc`, in `c_len` elements).
fn shapes_fit(a: View<'_>, b: View<'_>, c_len: usize, ldc: usize) -> bool {
    b.rows == a.cols && a.fits() && b.fits() && span(a.rows, b.cols, ldc, 1).is_some_and(|len| len <= c_len)
}

/// `c = alpha · a · b + beta · c` for a dense row-major `c` (`a.rows × b.cols`, row stride
/// `ldc`). Every caller sizes its operands from a validated model, so shapes or lengths that do
/// not fit are a bug: [`crate::Error::Internal`] (an assertion in debug builds), `c` untouched.
pub(crate) fn gemm(alpha: f32, a: View<'_>, b: View<'_>, beta: f32, c: &mut [f32], ldc: usize) -> Result<()> {
    ensure(shapes_fit(a, b, c.len(), ldc), "gemm: operand shapes or lengths do not fit")?;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if small_product(alpha, a, b, beta, c, ldc)? {
        return Ok(());
    }
    let (Ok(rsa), Ok(csa), Ok(rsb), Ok(csb), Ok(rsc)) = (
        isize::try_from(a.row_stride),
        isize::try_from(a.col_stride),
        isize::try_from(b.row_stride),
        isize::try_from(b.col_stride),
        isize::try_from(ldc),
    ) else {
        return Err(broken("gemm: a stride past isize::MAX"));
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
    Ok(())
}

/// Largest `b` (in elements) [`small_product`] takes: it keeps `b` in L1 rather than blocking it.
const SMALL_B_MAX: usize = 8 * 1024;

/// The products of scoring and adaptation are small and skinny (a few hundred rows against a
/// `b` of at most 128 × 64): matrixmultiply packs both operands on every call, which cost a fifth
/// of the scoring time. Where `a`'s rows and `b`'s rows are contiguous, `b.cols` a multiple of 8,
/// `alpha` 1 and `beta` 0 or 1, this register-tiled loop (6 or 4 rows × 16 columns of accumulators,
/// written for the compiler to vectorise) reads both in place. Returns false for any other case,
/// which then goes to matrixmultiply. The caller has checked the shapes and spans
/// ([`shapes_fit`]), so a slice out of range here is [`crate::Error::Internal`].
fn small_product(alpha: f32, a: View<'_>, b: View<'_>, beta: f32, c: &mut [f32], ldc: usize) -> Result<bool> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let fits = alpha == 1.0
        && (beta == 0.0 || beta == 1.0)
        && a.col_stride == 1
        && b.col_stride == 1
        && b.row_stride == n
        && n % 8 == 0
        && k > 0
        && k * n <= SMALL_B_MAX
        && ldc >= n;
    if !fits {
        return Ok(false);
    }
    let lda = a.row_stride;
    let b = b.data.get(..k * n).invariant("small product: b shorter than its shape")?;
    let a =
        span(m, k, lda, 1).and_then(|len| a.data.get(..len)).invariant("small product: a shorter than its shape")?;
    let at = Tile { b, ldb: n, col: 0, c_at: 0, ldc, accumulate: beta == 1.0 };
    let shape = Tiled { a, lda, m, k, n };
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: `simd::avx2_fma` found AVX2 and FMA on this CPU (cpuid), with the AVX
        // register state enabled by the OS (xgetbv).
        return unsafe { tiled_avx2_fma(shape, at, c) }.map(|()| true);
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    return tiled::<Fma<Neon>>(shape, at, c).map(|()| true);
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    tiled::<Portable>(shape, at, c).map(|()| true)
}

/// The operand `a` of a small product as [`tiled`] reads it: `m` rows of `k` floats, `lda`
/// apart, and the product's dimensions.
#[derive(Debug, Clone, Copy)]
struct Tiled<'a> {
    a: &'a [f32],
    lda: usize,
    m: usize,
    k: usize,
    n: usize,
}

/// [`tiled`] with the AVX2 + FMA tiles, compiled for them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiled_avx2_fma(shape: Tiled<'_>, at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    tiled::<Fma<Avx>>(shape, at, c)
}

/// [`small_product`]'s loops over tiles of `c`: 6 rows × 16 (then 8) columns, then 4 rows,
/// then single rows. Six AVX rows of 16 columns keep 12 accumulators in flight (of 16
/// registers) and load `b` once for 12 multiply-adds instead of 8: ~4% off the bench's
/// personalize + score against 4-row tiles.
#[inline(always)]
fn tiled<T: Tiles>(shape: Tiled<'_>, mut at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let Tiled { a, lda, m, k, n } = shape;
    let row = |r: usize| a.get(r * lda..r * lda + k).invariant("small product: a row out of range");
    let mut r = 0;
    while r + 6 <= m {
        band::<6>(&row, r, Tile { c_at: r * at.ldc, col: 0, ..at }, n, c, T::tile6_16, T::tile6_8)?;
        r += 6;
    }
    while r + 4 <= m {
        band::<4>(&row, r, Tile { c_at: r * at.ldc, col: 0, ..at }, n, c, T::tile4_16, T::tile4_8)?;
        r += 4;
    }
    while r < m {
        at.c_at = r * at.ldc;
        at.col = 0;
        while at.col < n {
            T::tile1_8(row(r)?, at, c)?;
            at.col += 8;
        }
        r += 1;
    }
    Ok(())
}

/// Rows `r..r + R` of `c` at `at` across all `n` columns: `wide` tiles of 16 columns, then a
/// `narrow` one of 8 (`n` is a multiple of 8); `row(i)` gives row `i` of `a`.
#[inline(always)]
fn band<'a, const R: usize>(
    row: &impl Fn(usize) -> Result<&'a [f32]>,
    r: usize,
    mut at: Tile<'_>,
    n: usize,
    c: &mut [f32],
    wide: impl Fn([&'a [f32]; R], Tile<'_>, &mut [f32]) -> Result<()>,
    narrow: impl Fn([&'a [f32]; R], Tile<'_>, &mut [f32]) -> Result<()>,
) -> Result<()> {
    let mut rows: [&[f32]; R] = [&[]; R];
    for (i, slot) in rows.iter_mut().enumerate() {
        *slot = row(r + i)?;
    }
    while at.col + 16 <= n {
        wide(rows, at, c)?;
        at.col += 16;
    }
    if at.col < n {
        narrow(rows, at, c)?;
    }
    Ok(())
}

/// Where a tile reads `b` (`ldb` wide) and writes `c`: columns from `col`, `c`'s rows from
/// offset `c_at`, `ldc` apart; added to `c` or stored.
#[derive(Debug, Clone, Copy)]
struct Tile<'b> {
    b: &'b [f32],
    ldb: usize,
    col: usize,
    c_at: usize,
    ldc: usize,
    accumulate: bool,
}

/// The `6 × 16`, `6 × 8`, `4 × 16`, `4 × 8` and `1 × 8` tiles of one instruction set. A row's sums round alike in
/// all three (fused or not), so a product's row does not depend on how many rows it has: one
/// item scored alone equals the same item scored in a batch, to the bit.
trait Tiles {
    fn tile6_16(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()>;
    fn tile6_8(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()>;
    fn tile4_16(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()>;
    fn tile4_8(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()>;
    fn tile1_8(row: &[f32], at: Tile<'_>, c: &mut [f32]) -> Result<()>;
}

/// The portable tiles: plain loops the compiler vectorises (SSE2 on the x86-64 baseline).
#[cfg_attr(all(target_arch = "aarch64", target_feature = "neon"), allow(dead_code))]
struct Portable;

impl Tiles for Portable {
    #[inline(always)]
    fn tile6_16(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        portable6::<16>(rows, at, c)
    }
    #[inline(always)]
    fn tile6_8(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        portable6::<8>(rows, at, c)
    }
    #[inline(always)]
    fn tile4_16(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        tile4::<16>(rows, at, c)
    }
    #[inline(always)]
    fn tile4_8(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        tile4::<8>(rows, at, c)
    }
    #[inline(always)]
    fn tile1_8(row: &[f32], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        tile1::<8>(row, at, c)
    }
}

/// The tiles with fused multiply-adds in registers `L`: two (16 columns) or one (8) AVX
/// registers per row, four or two NEON ones.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
struct Fma<L>(core::marker::PhantomData<L>);

#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
impl<L: Lanes> Tiles for Fma<L> {
    #[inline(always)]
    fn tile6_16(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        fma_rows::<L, 6>(rows, true, at, c)
    }
    #[inline(always)]
    fn tile6_8(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        fma_rows::<L, 6>(rows, false, at, c)
    }
    #[inline(always)]
    fn tile4_16(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        fma_rows::<L, 4>(rows, true, at, c)
    }
    #[inline(always)]
    fn tile4_8(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        fma_rows::<L, 4>(rows, false, at, c)
    }
    #[inline(always)]
    fn tile1_8(row: &[f32], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
        if L::WIDTH == 8 {
            tile1_fma::<L, 1>(row, at, c)
        } else {
            tile1_fma::<L, 2>(row, at, c)
        }
    }
}

/// [`tile_fma`] over `R` rows of 16 columns (`wide`) or 8, in as many registers as `L` needs.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
#[inline(always)]
fn fma_rows<L: Lanes, const R: usize>(rows: [&[f32]; R], wide: bool, at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    match (L::WIDTH == 8, wide) {
        (true, true) | (false, false) => tile_fma::<L, R, 2>(rows, at, c),
        (true, false) => tile_fma::<L, R, 1>(rows, at, c),
        (false, true) => tile_fma::<L, R, 4>(rows, at, c),
    }
}

/// The `4 × N` block of `c` at `at`: `Σ_k rows[i][k] · b[k][col..col + N]`.
#[inline(always)]
// aarch64 builds use `tile_fma`; the tests still run this one.
#[cfg_attr(all(target_arch = "aarch64", target_feature = "neon"), allow(dead_code))]
fn tile4<const N: usize>(rows: [&[f32]; 4], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let mut acc = [[0f32; N]; 4];
    let [a0, a1, a2, a3] = rows;
    for ((((x0, x1), x2), x3), b_row) in a0.iter().zip(a1).zip(a2).zip(a3).zip(at.b.chunks_exact(at.ldb)) {
        let b = b_row.get(at.col..at.col + N).invariant("tile: columns past b's row")?;
        let x = [*x0, *x1, *x2, *x3];
        for i in 0..4 {
            for j in 0..N {
                acc[i][j] += x[i] * b[j];
            }
        }
    }
    store(&acc, at, c)
}

/// Six rows of `N` columns as the portable tiles compute them: [`tile4`] over the first four,
/// then one row at a time (the portable sums do not depend on the tile).
#[inline(always)]
#[cfg_attr(all(target_arch = "aarch64", target_feature = "neon"), allow(dead_code))]
fn portable6<const N: usize>(rows: [&[f32]; 6], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let [a0, a1, a2, a3, a4, a5] = rows;
    tile4::<N>([a0, a1, a2, a3], at, c)?;
    for (i, row) in [a4, a5].into_iter().enumerate() {
        let mut one = Tile { c_at: at.c_at + (4 + i) * at.ldc, ..at };
        while one.col < at.col + N {
            tile1::<8>(row, one, c)?;
            one.col += 8;
        }
    }
    Ok(())
}

/// [`tile4`] with fused multiply-adds in `V` vectors of `L::WIDTH` columns per row, over `R`
/// rows (each `k` long). Rust never contracts the portable loop's multiply and add into one
/// instruction; with them the 4 × 64 × 64 product of scoring ran ~20% faster on this machine
/// (x86-64-v3). On x86-64 it runs only inside [`tiled_avx2_fma`], compiled for AVX2 and FMA.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
#[inline(always)]
fn tile_fma<L: Lanes, const R: usize, const V: usize>(rows: [&[f32]; R], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let mut acc = [[L::zero(); V]; R];
    let k = rows.first().map_or(0, |row| row.len());
    for (kk, b_row) in at.b.chunks_exact(at.ldb).take(k).enumerate() {
        let b = b_row.get(at.col..at.col + L::WIDTH * V).invariant("tile: columns past b's row")?;
        let mut bv = [L::zero(); V];
        for (v, chunk) in bv.iter_mut().zip(b.chunks_exact(L::WIDTH)) {
            *v = L::load(chunk);
        }
        for (acc_row, row) in acc.iter_mut().zip(&rows) {
            let x = L::splat(row.get(kk).copied().invariant("tile: a row shorter than k")?);
            for (s, w) in acc_row.iter_mut().zip(&bv) {
                *s = s.mul_add(x, *w);
            }
        }
    }
    store_fma(&acc, at, c)
}

/// One row of [`tile_fma`]: the same fused sums, so the row rounds as it would in a 6- or 4-row tile.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
#[inline(always)]
fn tile1_fma<L: Lanes, const V: usize>(row: &[f32], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let mut acc = [L::zero(); V];
    for (x, b_row) in row.iter().zip(at.b.chunks_exact(at.ldb)) {
        let b = b_row.get(at.col..at.col + L::WIDTH * V).invariant("tile: columns past b's row")?;
        let x = L::splat(*x);
        for (s, chunk) in acc.iter_mut().zip(b.chunks_exact(L::WIDTH)) {
            *s = s.mul_add(x, L::load(chunk));
        }
    }
    store_fma(&[acc], at, c)
}

/// Adds (or stores) the registers of `R` tile rows into `c` at `at`.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
#[inline(always)]
fn store_fma<L: Lanes, const V: usize, const R: usize>(acc: &[[L; V]; R], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    // `WIDTH` is at most 8: every register fits.
    let mut lanes = [0f32; 8];
    for (i, acc_row) in acc.iter().enumerate() {
        for (v, sum) in acc_row.iter().enumerate() {
            sum.store(&mut lanes);
            let from = at.c_at + i * at.ldc + at.col + v * L::WIDTH;
            let dst = c.get_mut(from..from + L::WIDTH).invariant("tile: c shorter than its shape")?;
            for (d, s) in dst.iter_mut().zip(lanes.iter()) {
                *d = if at.accumulate { *d + s } else { *s };
            }
        }
    }
    Ok(())
}

/// One SIMD register of floats, for [`tile_fma`]: one implementation per instruction set.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
trait Lanes: Copy {
    /// Floats per register (at most 8).
    const WIDTH: usize;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    /// The first `WIDTH` floats of `from` (zeros if it is shorter).
    fn load(from: &[f32]) -> Self;
    /// `self + x · w`, rounded once.
    fn mul_add(self, x: Self, w: Self) -> Self;
    /// Writes `WIDTH` floats to the start of `to` (nothing if it is shorter).
    fn store(self, to: &mut [f32]);
}

/// AVX registers with FMA, chosen at run time (`crate::simd`).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx(core::arch::x86_64::__m256);

// Parallel to `impl Lanes for Neon` on purpose: other intrinsics and register, same operations.
// Every intrinsic below needs the avx and fma target features: these functions are inlined only
// into `tiled_avx2_fma` (through `tiled` and `tile_fma`, all `inline(always)`), which is
// compiled for them and called only after `simd::avx2_fma` found them on the CPU. Loads and
// stores check the slice holds the 8 floats they touch.
#[cfg(target_arch = "x86_64")]
impl Lanes for Avx {
    const WIDTH: usize = 8;
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: see above.
        Avx(unsafe { core::arch::x86_64::_mm256_setzero_ps() })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: see above.
        Avx(unsafe { core::arch::x86_64::_mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn load(from: &[f32]) -> Self {
        match from.get(..8) {
            // SAFETY: see above; `from` holds the 8 floats read.
            Some(from) => Avx(unsafe { core::arch::x86_64::_mm256_loadu_ps(from.as_ptr()) }),
            None => Self::zero(),
        }
    }
    #[inline(always)]
    fn mul_add(self, x: Self, w: Self) -> Self {
        // SAFETY: see above.
        Avx(unsafe { core::arch::x86_64::_mm256_fmadd_ps(x.0, w.0, self.0) })
    }
    #[inline(always)]
    fn store(self, to: &mut [f32]) {
        if let Some(to) = to.get_mut(..8) {
            // SAFETY: see above; `to` holds the 8 floats written.
            unsafe { core::arch::x86_64::_mm256_storeu_ps(to.as_mut_ptr(), self.0) }
        }
    }
}

/// NEON registers (aarch64: phones and most edge boards; NEON is part of the baseline).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[derive(Clone, Copy)]
struct Neon(core::arch::aarch64::float32x4_t);

// Parallel to `impl Lanes for Avx` on purpose: other intrinsics and register, same operations.
// Every intrinsic below needs the neon target feature, which the cfg guarantees for the whole
// build; loads and stores check the slice holds the 4 floats they touch.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
impl Lanes for Neon {
    const WIDTH: usize = 4;
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: see above.
        Neon(unsafe { core::arch::aarch64::vdupq_n_f32(0.0) })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: see above.
        Neon(unsafe { core::arch::aarch64::vdupq_n_f32(x) })
    }
    #[inline(always)]
    fn load(from: &[f32]) -> Self {
        match from.get(..4) {
            // SAFETY: see above; `from` holds the 4 floats read.
            Some(from) => Neon(unsafe { core::arch::aarch64::vld1q_f32(from.as_ptr()) }),
            None => Self::zero(),
        }
    }
    #[inline(always)]
    fn mul_add(self, x: Self, w: Self) -> Self {
        // SAFETY: see above.
        Neon(unsafe { core::arch::aarch64::vfmaq_f32(self.0, x.0, w.0) })
    }
    #[inline(always)]
    fn store(self, to: &mut [f32]) {
        if let Some(to) = to.get_mut(..4) {
            // SAFETY: see above; `to` holds the 4 floats written.
            unsafe { core::arch::aarch64::vst1q_f32(to.as_mut_ptr(), self.0) }
        }
    }
}

/// [`tile4`] for one row.
#[inline(always)]
#[cfg_attr(all(target_arch = "aarch64", target_feature = "neon"), allow(dead_code))]
fn tile1<const N: usize>(row: &[f32], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    let mut acc = [[0f32; N]; 1];
    for (x, b_row) in row.iter().zip(at.b.chunks_exact(at.ldb)) {
        let b = b_row.get(at.col..at.col + N).invariant("tile: columns past b's row")?;
        for j in 0..N {
            acc[0][j] += x * b[j];
        }
    }
    store(&acc, at, c)
}

/// Adds (or stores) accumulator rows into `c` at `at`.
#[inline(always)]
fn store<const R: usize, const N: usize>(acc: &[[f32; N]; R], at: Tile<'_>, c: &mut [f32]) -> Result<()> {
    for (i, acc_row) in acc.iter().enumerate() {
        let from = at.c_at + i * at.ldc + at.col;
        let out = c.get_mut(from..from + N).invariant("tile: c shorter than its shape")?;
        if at.accumulate {
            for (o, s) in out.iter_mut().zip(acc_row) {
                *o += s;
            }
        } else {
            out.copy_from_slice(acc_row);
        }
    }
    Ok(())
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
        gemm(1.0, View::rows(&a, 2, 3), b, 1.0, &mut c, 2).unwrap();
        assert_eq!(c, [10.0 + 1.0 - 3.0, 10.0 + 2.0 + 2.0, 10.0 + 4.0 - 6.0, 10.0 + 8.0 + 5.0]);
    }

    /// The register-tiled path against a plain triple loop: row counts around the tile of 4,
    /// column counts of 8, 16, 24 and 64, strided `a` rows, storing and accumulating.
    /// A row of a small product is the same, to the bit, whether it sits in a 6-row or a 4-row
    /// tile or is computed alone (one item scored alone equals it scored in a batch), on every
    /// kernel path: 11 rows take one tile of each and one row alone.
    #[test]
    fn a_row_alone_equals_the_row_in_a_batch() {
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0;
        let (m, k, n) = (11, 37, 24);
        let a: alloc::vec::Vec<f32> = (0..m * k).map(value).collect();
        let b: alloc::vec::Vec<f32> = (0..k * n).map(|i| value(i + 5)).collect();
        let mut batch = vec![0.0; m * n];
        assert!(small_product(1.0, View::rows(&a, m, k), View::rows(&b, k, n), 0.0, &mut batch, n).unwrap());
        for r in 0..m {
            let mut alone = vec![0.0; n];
            let row = View::rows(&a[r * k..(r + 1) * k], 1, k);
            assert!(small_product(1.0, row, View::rows(&b, k, n), 0.0, &mut alone, n).unwrap());
            for j in 0..n {
                assert_eq!(alone[j].to_bits(), batch[r * n + j].to_bits(), "row {r}, column {j}");
            }
        }
    }

    #[test]
    fn small_products_match_the_plain_definition() {
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0;
        for &(m, k, n) in &[(1, 3, 8), (3, 20, 16), (4, 128, 24), (5, 64, 64), (9, 20, 64), (130, 128, 24)] {
            let lda = k + 3;
            let a: alloc::vec::Vec<f32> = (0..m * lda).map(value).collect();
            let b: alloc::vec::Vec<f32> = (0..k * n).map(|i| value(i + 5)).collect();
            let a_view = View { data: &a, rows: m, cols: k, row_stride: lda, col_stride: 1 };
            for beta in [0.0, 1.0] {
                let start: alloc::vec::Vec<f32> = (0..m * (n + 2)).map(|i| value(i + 11)).collect();
                let mut c = start.clone();
                assert!(small_product(1.0, a_view, View::rows(&b, k, n), beta, &mut c, n + 2).unwrap(), "{m}x{k}x{n}");
                for r in 0..m {
                    for j in 0..n {
                        let sum: f32 = (0..k).map(|t| a[r * lda + t] * b[t * n + j]).sum();
                        let want = beta * start[r * (n + 2) + j] + sum;
                        let got = c[r * (n + 2) + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{k}x{n} [{r},{j}]: {got} vs {want}"
                        );
                    }
                    // The padding columns of each row are untouched.
                    assert_eq!(c[r * (n + 2) + n..r * (n + 2) + n + 2], start[r * (n + 2) + n..r * (n + 2) + n + 2]);
                }
            }
        }
        // The portable tile, whichever one the build uses.
        let (k, n) = (20, 24);
        let a: alloc::vec::Vec<f32> = (0..4 * k).map(value).collect();
        let b: alloc::vec::Vec<f32> = (0..k * n).map(|i| value(i + 3)).collect();
        let rows = [&a[..k], &a[k..2 * k], &a[2 * k..3 * k], &a[3 * k..]];
        let mut c = vec![1.0f32; 4 * n];
        let at = Tile { b: &b, ldb: n, col: 0, c_at: 0, ldc: n, accumulate: true };
        tile4::<16>(rows, at, &mut c).unwrap();
        tile4::<8>(rows, Tile { col: 16, accumulate: false, ..at }, &mut c).unwrap();
        for r in 0..4 {
            for j in 0..n {
                let sum: f32 = (0..k).map(|t| a[r * k + t] * b[t * n + j]).sum();
                let want = if j < 16 { 1.0 + sum } else { sum };
                assert!((c[r * n + j] - want).abs() <= 1e-5, "tile [{r},{j}]: {} vs {want}", c[r * n + j]);
            }
        }

        // Shapes it does not take: those go to matrixmultiply.
        let x = [1.0f32; 64];
        let mut c = [0.0f32; 64];
        assert!(!small_product(1.0, View::rows(&x, 2, 4), View::rows(&x, 4, 6), 0.0, &mut c, 6).unwrap());
        assert!(!small_product(2.0, View::rows(&x, 2, 4), View::rows(&x, 4, 8), 0.0, &mut c, 8).unwrap());
        assert!(!small_product(1.0, View::rows(&x, 2, 4), View::rows(&x, 4, 8), 0.5, &mut c, 8).unwrap());
        assert!(!small_product(1.0, View::rows(&x, 2, 4), View::rows(&x, 8, 4).t(), 0.0, &mut c, 8).unwrap());
    }

    /// The portable tiles and the AVX2 + FMA ones (when the CPU has them; the NEON ones on
    /// aarch64) give the same products, to rounding (FMA rounds once per multiply-add).
    #[test]
    fn every_kernel_gives_the_same_products() {
        let value = |i: usize| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0;
        for &(m, k, n) in &[(1, 3, 8), (7, 20, 24), (128, 64, 64), (130, 128, 16)] {
            let a: alloc::vec::Vec<f32> = (0..m * k).map(value).collect();
            let b: alloc::vec::Vec<f32> = (0..k * n).map(|i| value(i + 5)).collect();
            let shape = Tiled { a: &a, lda: k, m, k, n };
            let at = Tile { b: &b, ldb: n, col: 0, c_at: 0, ldc: n, accumulate: true };
            let mut portable = vec![0.5f32; m * n];
            tiled::<Portable>(shape, at, &mut portable).unwrap();
            let mut fast = vec![0.5f32; m * n];
            #[cfg(target_arch = "x86_64")]
            if crate::simd::x86_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { tiled_avx2_fma(shape, at, &mut fast) }.unwrap();
            } else {
                fast.copy_from_slice(&portable);
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            tiled::<Fma<Neon>>(shape, at, &mut fast).unwrap();
            #[cfg(not(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon"))))]
            fast.copy_from_slice(&portable);
            for (i, (p, f)) in portable.iter().zip(&fast).enumerate() {
                assert!((p - f).abs() <= 1e-5 * (1.0 + p.abs()), "{m}x{k}x{n} [{i}]: {p} vs {f}");
            }
        }
    }

    #[test]
    fn views_that_do_not_fit_are_refused() {
        let a = [1.0; 5];
        let b = [1.0; 6];
        // `a` shorter than 2 × 3; inner dimensions that differ; a span that overflows; a short `c`.
        assert!(!shapes_fit(View::rows(&a, 2, 3), View::rows(&a, 3, 1), 4, 1));
        assert!(!shapes_fit(View::rows(&b, 2, 3), View::rows(&b, 2, 3), 4, 3));
        let huge = View { data: &b, rows: usize::MAX, cols: 2, row_stride: usize::MAX, col_stride: 1 };
        assert!(!shapes_fit(huge, View::rows(&b, 2, 1), 4, 1));
        assert!(!shapes_fit(View::rows(&b, 2, 3), View::rows(&b, 3, 2), 3, 2));
        assert!(shapes_fit(View::rows(&b, 2, 3), View::rows(&b, 3, 2), 4, 2));
    }

    /// A product whose shapes do not fit is a bug: it asserts in debug builds (release builds
    /// return `Error::Internal` with `c` untouched).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "internal invariant broken: gemm")]
    fn a_misfit_product_asserts_in_debug_builds() {
        let a = [1.0; 5];
        let mut c = vec![0.0; 4];
        let _ = gemm(1.0, View::rows(&a, 2, 3), View::rows(&a, 3, 1), 0.0, &mut c, 1);
    }

    /// ... and release builds return `Error::Internal`, `c` untouched.
    #[test]
    #[cfg(not(debug_assertions))]
    fn a_misfit_product_is_an_internal_error_in_release_builds() {
        let a = [1.0; 5];
        let mut c = vec![7.0; 4];
        let misfit = gemm(1.0, View::rows(&a, 2, 3), View::rows(&a, 3, 1), 0.0, &mut c, 1);
        assert_eq!(misfit, Err(crate::Error::Internal));
        assert_eq!(c, [7.0; 4]);
    }
}
