//! Rows kept compact in memory: the model's per-row precompute (layer 0's item part of every
//! item-field embedding row, `hidden0` floats a row) is stored in the precision of the file's
//! embedding tables, f32, f16 or 8 bits with one scale per row, and scoring adds rows of it to
//! the user part without widening the table: `out += weight · row` with the row converted in
//! the kernel, accumulated in f32. The kernels
//! are written once for the compiler to vectorise ([`crate::simd::kernel`]: an AVX2 copy chosen
//! at run time on x86-64, NEON on aarch64, where it is the baseline, and a portable one).

use alloc::vec::Vec;

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

    /// `out[j] += weight · row[j]` for row `row` (over the shorter of the two), or None if the
    /// row is out of range.
    #[inline]
    pub(crate) fn add_scaled_row(&self, row: usize, weight: f32, out: &mut [f32]) -> Option<()> {
        let start = row.checked_mul(self.width)?;
        let end = start.checked_add(self.width)?;
        match &self.values {
            Values::None => return None,
            Values::F32(values) => crate::mlp::add_scaled(out, weight, values.get(start..end)?),
            Values::F16(bits) => add_f16(out, weight, bits.get(start..end)?),
            Values::Int8 { scales, values } => add_int8(out, weight * *scales.get(row)?, values.get(start..end)?),
        }
        Some(())
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

crate::simd::kernel! {
    /// `out[j] += s · f16(h[j])` over the shorter of the two.
    fn add_f16(out: &mut [f32], s: f32, h: &[u16]) {
        for (o, &h) in out.iter_mut().zip(h) {
            *o += s * f16_to_f32(h);
        }
    }
}

crate::simd::kernel! {
    /// `out[j] += s · q[j]` over the shorter of the two.
    fn add_int8(out: &mut [f32], s: f32, q: &[i8]) {
        for (o, &q) in out.iter_mut().zip(q) {
            *o += s * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
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

    /// Each precision's kernel adds the row widened the reference way (the `half` crate,
    /// `scale × q`), times a weight, on the kernels this CPU runs (the AVX2 and portable copies
    /// compute the same operations: no multiply-add is fused; the aarch64 run covers NEON); odd
    /// widths exercise the tails.
    #[test]
    fn compact_rows_add_what_the_f32_path_adds() {
        for width in [1, 7, 8, 33, 64] {
            let table = values(5, width);
            let a: Vec<f32> = (0..width).map(|j| j as f32 * 0.25 - 2.0).collect();
            for precision in EmbeddingPrecision::ALL {
                let rows = CompactRows::new(table.clone(), width, precision).unwrap();
                for row in 0..5 {
                    let stored = &table[row * width..(row + 1) * width];
                    let largest = stored.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let widened: Vec<f32> = match precision {
                        EmbeddingPrecision::F32 => stored.to_vec(),
                        EmbeddingPrecision::F16 => stored.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
                        EmbeddingPrecision::Int8 => {
                            let scale = largest / 127.0;
                            stored.iter().map(|&v| scale * f32::from(libm::roundf(v / scale) as i8)).collect()
                        }
                    };
                    for weight in [1.0f32, 0.5, 1.0 / 3.0] {
                        let mut out = a.clone();
                        rows.add_scaled_row(row, weight, &mut out).unwrap();
                        for j in 0..width {
                            let want = match precision {
                                EmbeddingPrecision::Int8 => {
                                    let scale = largest / 127.0;
                                    a[j] + (weight * scale) * f32::from(libm::roundf(stored[j] / scale) as i8)
                                }
                                _ => a[j] + weight * widened[j],
                            };
                            assert_eq!(out[j], want, "{precision:?} width {width} row {row} col {j} weight {weight}");
                            let error = (widened[j] - stored[j]).abs();
                            let bound = match precision {
                                EmbeddingPrecision::F32 => 0.0,
                                EmbeddingPrecision::F16 => stored[j].abs() / 1024.0,
                                EmbeddingPrecision::Int8 => largest / 254.0 * 1.0001,
                            };
                            assert!(error <= bound, "{precision:?}: {error} > {bound}");
                        }
                    }
                }
                assert!(rows.add_scaled_row(5, 1.0, &mut alloc::vec![0.0; width]).is_none());
            }
        }
    }
}
