//! Rows kept compact in memory: the model's per-row precompute (layer 0's item part of every
//! item-field embedding row, `hidden0` floats a row) is stored in the precision of the file's
//! embedding tables, f32, f16 or 8 bits with one scale per row, and scoring adds rows of it to
//! the user part without widening the table: `out += weight · row` with the row converted in
//! the kernel, accumulated in f32. The kernels
//! are written once for the compiler to vectorise ([`crate::simd::kernel`]: an AVX2 copy chosen
//! at run time on x86-64, NEON on aarch64, where it is the baseline, and a portable one).

use alloc::vec::Vec;

use crate::catalogue::StackedRows;
use crate::error::{Error, Result};
use crate::format::EmbeddingPrecision;

/// `rows × width` values in one precision.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompactRows {
    width: usize,
    values: Values,
}

#[derive(Debug, Clone, Default)]
enum Values {
    #[default]
    None,
    F32(Vec<f32>),
    /// Half-precision bit patterns, every one finite.
    F16(Vec<u16>),
    /// Per row: `value = scale × q`, |q| ≤ 127.
    Int8 {
        scales: Vec<f32>,
        values: Vec<i8>,
    },
}

impl CompactRows {
    /// `values` (`rows × width`, finite) stored in `precision`. A row that f16 cannot hold
    /// (magnitudes past 65,504) keeps the whole table in f32.
    ///
    /// Errors: [`Error::InconsistentDimensions`] when the compact copy cannot be allocated.
    pub(crate) fn new(values: Vec<f32>, width: usize, precision: EmbeddingPrecision) -> Result<CompactRows> {
        let bad = Error::InconsistentDimensions;
        let stored = match precision {
            EmbeddingPrecision::F16 if values.iter().all(|v| v.abs() <= 65_504.0) => {
                let mut bits = Vec::new();
                bits.try_reserve_exact(values.len()).map_err(|_| bad)?;
                bits.extend(values.iter().map(|&v| half::f16::from_f32(v).to_bits()));
                Values::F16(bits)
            }
            EmbeddingPrecision::Int8 if width > 0 => {
                let (mut scales, mut quantised) = (Vec::new(), Vec::new());
                scales.try_reserve_exact(values.len() / width).map_err(|_| bad)?;
                quantised.try_reserve_exact(values.len()).map_err(|_| bad)?;
                for row in values.chunks(width) {
                    let largest = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
                    scales.push(scale);
                    // Within ±127 by construction of the scale; `as` saturates regardless.
                    quantised.extend(row.iter().map(|v| libm::roundf(v / scale) as i8));
                }
                Values::Int8 { scales, values: quantised }
            }
            _ => Values::F32(values),
        };
        Ok(CompactRows { width, values: stored })
    }

    /// `out = base + Σ_f mean(rows of field f)` for one item's rows over the stacked tables
    /// (`out` and `base` as wide as a row): layer 0's item part of an item, plus `base`. One
    /// kernel call an item, the rows converted and added in place; the same sums in the same
    /// order as adding the rows one by one. None if there are no rows,
    /// the widths differ or a row is out of range.
    pub(crate) fn sum_stacked(&self, rows: StackedRows<'_>, base: &[f32], out: &mut [f32]) -> Option<()> {
        if out.len() != base.len() || out.len() != self.width {
            return None;
        }
        match &self.values {
            Values::None => None,
            Values::F32(values) => sum_stacked_f32(values, rows, base, out),
            Values::F16(bits) => sum_stacked_f16(bits, rows, base, out),
            Values::Int8 { scales, values } => sum_stacked_int8(scales, values, rows, base, out),
        }
    }

    /// Whether there are rows at all.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self.values, Values::None)
    }

    /// Bytes on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.values {
            Values::None => 0,
            Values::F32(values) => 4 * values.capacity(),
            Values::F16(bits) => 2 * bits.capacity(),
            Values::Int8 { scales, values } => 4 * scales.capacity() + values.capacity(),
        }
    }
}

/// `2^112`: scales an f16's magnitude bits, shifted into an f32's place, to its value.
const F16_SCALE: f32 = f32::from_bits((127 + 112) << 23);

/// The value of a finite half-precision number, branch-free (so it vectorises): its exponent
/// and mantissa bits moved to an f32's place give its value times `2^-112`, subnormals and zero
/// included; the sign is put back after. (Infinity and NaN would come out finite: the rows
/// never hold them.)
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let bits = u32::from(h);
    let magnitude = f32::from_bits((bits & 0x7fff) << 13) * F16_SCALE;
    f32::from_bits(magnitude.to_bits() | ((bits & 0x8000) << 16))
}

/// Layer 0's item part of one initialisation, as scoring adds it to the user part: per
/// item-field embedding row ([`CompactRows::sum_stacked`]: memory that does not grow with the
/// catalogue), or, for a catalogue small enough that one f32 row an item takes no more memory
/// than that table, per item (the same sums, done once at load: one addition an item instead of
/// one per field row; ~5% off the bench's 1,000-item personalize + score).
#[derive(Debug, Clone)]
pub(crate) enum ItemParts {
    /// Per item-field row, in the file's precision.
    PerRow(CompactRows),
    /// Per item, `items × width` sums in f32.
    PerItem { width: usize, sums: Vec<f32> },
}

impl ItemParts {
    /// The parts of `items` items from the per-row table `rows`, with `stacked(i)` item `i`'s
    /// rows over it. None if an item's rows are out of range.
    ///
    /// Errors: [`Error::InconsistentDimensions`] when the per-item table cannot be allocated.
    pub(crate) fn new<'a>(
        rows: CompactRows,
        items: usize,
        stacked: impl Fn(u32) -> StackedRows<'a>,
    ) -> Result<Option<ItemParts>> {
        let width = rows.width;
        let per_item_bytes = items.saturating_mul(width).saturating_mul(core::mem::size_of::<f32>());
        if rows.is_empty() || width == 0 || per_item_bytes > rows.heap_bytes() {
            return Ok(Some(ItemParts::PerRow(rows)));
        }
        let bad = Error::InconsistentDimensions;
        let mut sums = Vec::new();
        sums.try_reserve_exact(items * width).map_err(|_| bad)?;
        sums.resize(items * width, 0.0);
        let zeros = alloc::vec![0.0; width];
        // `items` fits in u32: the catalogue's indices do.
        for (item, out) in sums.chunks_exact_mut(width).enumerate() {
            if rows.sum_stacked(stacked(item as u32), &zeros, out).is_none() {
                return Ok(None);
            }
        }
        Ok(Some(ItemParts::PerItem { width, sums }))
    }

    /// `out = base + ` the item's part (`rows`: its rows over the stacked tables). None if
    /// there are no parts, the widths differ or an index is out of range.
    #[inline]
    pub(crate) fn add(&self, rows: StackedRows<'_>, base: &[f32], out: &mut [f32]) -> Option<()> {
        match self {
            ItemParts::PerRow(table) => table.sum_stacked(rows, base, out),
            &ItemParts::PerItem { width, ref sums } => {
                let from = (rows.item() as usize).checked_mul(width)?;
                let part = sums.get(from..from.checked_add(width)?)?;
                if out.len() != width || base.len() != width {
                    return None;
                }
                crate::mlp::sum_into(out, base, part);
                Some(())
            }
        }
    }

    /// Whether there are parts at all.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            ItemParts::PerRow(table) => table.is_empty(),
            ItemParts::PerItem { sums, .. } => sums.is_empty(),
        }
    }

    /// Bytes on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            ItemParts::PerRow(table) => table.heap_bytes(),
            ItemParts::PerItem { sums, .. } => 4 * sums.capacity(),
        }
    }
}

/// [`CompactRows::sum_stacked`]'s loop for rows of `T` widened by `widen`, row `r` scaled by
/// `scale(r)` (the int8 rows' scales; 1 otherwise). `out.len()` is the row width.
#[inline(always)]
fn sum_stacked_rows<T: Copy>(
    values: &[T],
    scale: impl Fn(usize) -> Option<f32>,
    widen: impl Fn(T) -> f32,
    rows: StackedRows<'_>,
    base: &[f32],
    out: &mut [f32],
) -> Option<()> {
    let width = out.len();
    out.copy_from_slice(base);
    for f in 0..rows.fields() {
        let (start, list) = rows.field(f)?;
        // 1.0 for one row: the product is exact.
        let weight = 1.0 / list.len().max(1) as f32;
        for &row in list {
            let row = start.checked_add(row as usize)?;
            let s = weight * scale(row)?;
            let from = row.checked_mul(width)?;
            let values = values.get(from..from.checked_add(width)?)?;
            for (o, &v) in out.iter_mut().zip(values) {
                *o += s * widen(v);
            }
        }
    }
    Some(())
}

crate::simd::kernel! {
    /// [`CompactRows::sum_stacked`] over f32 rows.
    fn sum_stacked_f32(values: &[f32], rows: StackedRows<'_>, base: &[f32], out: &mut [f32]) -> Option<()> {
        sum_stacked_rows(values, |_| Some(1.0), |v| v, rows, base, out)
    }
}

crate::simd::kernel! {
    /// [`CompactRows::sum_stacked`] over f16 rows.
    fn sum_stacked_f16(bits: &[u16], rows: StackedRows<'_>, base: &[f32], out: &mut [f32]) -> Option<()> {
        sum_stacked_rows(bits, |_| Some(1.0), f16_to_f32, rows, base, out)
    }
}

crate::simd::kernel! {
    /// [`CompactRows::sum_stacked`] over int8 rows with a scale per row.
    fn sum_stacked_int8(scales: &[f32], values: &[i8], rows: StackedRows<'_>, base: &[f32], out: &mut [f32]) -> Option<()> {
        sum_stacked_rows(values, |row| scales.get(row).copied(), f32::from, rows, base, out)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// Every finite f16 converts as the `half` crate converts it, to the bit.
    #[test]
    fn f16_conversion_matches_half_for_every_finite_value() {
        for h in 0..=u16::MAX {
            let reference = half::f16::from_bits(h);
            if reference.is_finite() {
                assert_eq!(f16_to_f32(h).to_bits(), reference.to_f32().to_bits(), "{h:#06x}");
            }
        }
    }

    fn values(rows: usize, width: usize) -> Vec<f32> {
        (0..rows * width).map(|i| libm::sinf(i as f32 * 0.73) * (1.0 + (i % 7) as f32)).collect()
    }

    /// A row widened the reference way (the `half` crate, `scale × q`), its int8 scale, and a
    /// check that it is within the precision's rounding of the stored values.
    fn widened(table: &[f32], width: usize, row: usize, precision: EmbeddingPrecision) -> (Vec<f32>, f32) {
        let stored = &table[row * width..(row + 1) * width];
        let largest = stored.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = largest / 127.0;
        let widened: Vec<f32> = match precision {
            EmbeddingPrecision::F32 => stored.to_vec(),
            EmbeddingPrecision::F16 => stored.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            EmbeddingPrecision::Int8 => stored.iter().map(|&v| f32::from(libm::roundf(v / scale) as i8)).collect(),
        };
        for (j, &v) in stored.iter().enumerate() {
            let (value, bound) = match precision {
                EmbeddingPrecision::F32 => (widened[j], 0.0),
                EmbeddingPrecision::F16 => (widened[j], v.abs() / 1024.0),
                EmbeddingPrecision::Int8 => (scale * widened[j], largest / 254.0 * 1.0001),
            };
            assert!((value - v).abs() <= bound, "{precision:?}: {value} for {v}");
        }
        (widened, if precision == EmbeddingPrecision::Int8 { scale } else { 1.0 })
    }

    /// Each precision's kernel sums an item's rows (the mean of each field's, added to a base)
    /// widened the reference way, in the same order, on the kernels this CPU runs (the AVX2 and
    /// portable copies compute the same operations: no multiply-add is fused; the aarch64 run
    /// covers NEON): items of one row, of two (a mean) and of none in the multi-categorical field;
    /// odd widths exercise the tails. A row past the table or widths that differ give None.
    #[test]
    fn compact_rows_sum_what_the_f32_path_sums() {
        let body = crate::session::tests::body();
        let catalogue = crate::catalogue::Catalogue::new(&body).unwrap();
        let starts = [0, body.item_fields[0].rows()];
        let total = starts[1] + body.item_fields[1].rows();
        for width in [1, 7, 8, 33, 64] {
            let table = values(total, width);
            let base: Vec<f32> = (0..width).map(|j| j as f32 * 0.25 - 2.0).collect();
            for precision in EmbeddingPrecision::ALL {
                let rows = CompactRows::new(table.clone(), width, precision).unwrap();
                for item in 0..body.items.len() as u32 {
                    let mut want = base.clone();
                    for (f, &start) in starts.iter().enumerate() {
                        let list = catalogue.rows(item, f).unwrap();
                        let weight = 1.0 / list.len().max(1) as f32;
                        for &row in list {
                            let (row, scale) = widened(&table, width, start + row as usize, precision);
                            for (w, v) in want.iter_mut().zip(&row) {
                                *w += (weight * scale) * v;
                            }
                        }
                    }
                    let mut out = vec![0.0; width];
                    rows.sum_stacked(catalogue.stacked(item, &starts), &base, &mut out).unwrap();
                    assert_eq!(out, want, "{precision:?} width {width} item {item}");
                    let mut longer = vec![0.0; width + 1];
                    assert!(rows.sum_stacked(catalogue.stacked(item, &starts), &base, &mut longer).is_none());
                }
                // Field m's rows moved past the table's end.
                let past = [0, total - 1];
                assert!(rows.sum_stacked(catalogue.stacked(1, &past), &base, &mut vec![0.0; width]).is_none());
            }
        }
    }
}
