//! Which vector instructions the runtime's kernels run on, chosen at run time.
//!
//! The library is built for each architecture's baseline (x86-64: SSE2; aarch64: NEON), so it
//! runs on every CPU of its architecture. On x86-64 the hot kernels (the register-tiled matrix
//! product, dot products, ReLU, the layer-0 sums of scoring) exist twice: compiled for the
//! baseline, and compiled with AVX2 and FMA. The first kernel call asks the CPU (`cpuid`, and
//! `xgetbv` for whether the OS saves the AVX registers) and remembers the answer; every later
//! call costs one relaxed atomic load. No std is needed for any of it.
//!
//! The two paths compute the same sums in the same order, except that the AVX2 matrix tile
//! rounds each multiply-add once (FMA): scores differ in the last bits, never more (the tests
//! compare both paths). [`force_portable`] (or the environment variable `METAREC_PORTABLE=1`
//! in builds with the `std` feature, read once, at the first kernel call) keeps the runtime on
//! the baseline kernels, to test them or to rule the AVX2 ones out.

use core::sync::atomic::{AtomicU8, Ordering};

/// The kernels the runtime runs ([`kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernels {
    /// The architecture's baseline instructions (x86-64: SSE2; other targets without NEON).
    Portable,
    /// x86-64 with AVX2 and FMA, detected at run time.
    Avx2Fma,
    /// aarch64's NEON (part of its baseline: no detection).
    Neon,
}

/// [`CHOSEN`] before the first detection.
const UNKNOWN: u8 = 0;
/// The baseline kernels.
const PORTABLE: u8 = 1;
/// The AVX2 + FMA kernels.
const AVX2_FMA: u8 = 2;

/// What the kernels run on: [`UNKNOWN`] until the first call detects it. Threads that race on
/// the first call detect the same answer, so a relaxed store is enough.
static CHOSEN: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The kernels the runtime runs now (detecting the CPU's features on the first call).
pub fn kernels() -> Kernels {
    if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        return Kernels::Neon;
    }
    if chosen() == AVX2_FMA {
        Kernels::Avx2Fma
    } else {
        Kernels::Portable
    }
}

/// Keeps every kernel on the baseline instructions (`true`), or goes back to what the CPU
/// offers (`false`). Process-wide: it applies to every session, on every thread, from their
/// next kernel call (a product under way finishes on the kernels it started with). aarch64
/// always runs NEON, its baseline.
pub fn force_portable(portable: bool) {
    CHOSEN.store(if portable { PORTABLE } else { detect() }, Ordering::Relaxed);
}

/// Whether the AVX2 + FMA kernels run: the CPU has both (and the OS saves the AVX registers),
/// and nothing forced the portable ones.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn avx2_fma() -> bool {
    chosen() == AVX2_FMA
}

/// [`CHOSEN`], detected on the first call (and the environment read, with std).
#[inline(always)]
fn chosen() -> u8 {
    match CHOSEN.load(Ordering::Relaxed) {
        UNKNOWN => {
            let chosen = if portable_from_env() { PORTABLE } else { detect() };
            CHOSEN.store(chosen, Ordering::Relaxed);
            chosen
        }
        known => known,
    }
}

/// Whether `METAREC_PORTABLE` asks for the portable kernels (set, and neither empty nor "0").
#[cfg(feature = "std")]
fn portable_from_env() -> bool {
    std::env::var_os("METAREC_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Without std there is no environment: [`force_portable`] is the way.
#[cfg(not(feature = "std"))]
fn portable_from_env() -> bool {
    false
}

/// The best kernels this CPU runs.
fn detect() -> u8 {
    if x86_avx2_fma() {
        AVX2_FMA
    } else {
        PORTABLE
    }
}

/// Whether the CPU has AVX2 and FMA and the OS has enabled the AVX (YMM) register state: the
/// checks `is_x86_feature_detected!("avx2")` makes, without std.
#[cfg(target_arch = "x86_64")]
pub(crate) fn x86_avx2_fma() -> bool {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: `cpuid` exists on every x86-64 CPU; leaf 0 gives the highest leaf there is.
    #[allow(unused_unsafe)]
    let max_leaf = unsafe { __cpuid(0) }.eax;
    if max_leaf < 7 {
        return false;
    }
    // SAFETY: leaf 1 is at most the highest leaf (checked above).
    #[allow(unused_unsafe)]
    let ecx = unsafe { __cpuid(1) }.ecx;
    let (fma, osxsave, avx) = (ecx & (1 << 12) != 0, ecx & (1 << 27) != 0, ecx & (1 << 28) != 0);
    if !(fma && osxsave && avx) {
        return false;
    }
    // SAFETY: leaf 7 (sub-leaf 0) is at most the highest leaf (checked above).
    #[allow(unused_unsafe)]
    let avx2 = unsafe { __cpuid_count(7, 0) }.ebx & (1 << 5) != 0;
    // XCR0 bits 1 and 2: the OS saves the SSE and AVX registers on a context switch.
    avx2 && xcr0() & 0b110 == 0b110
}

/// Extended control register 0 (which register states the OS saves).
#[cfg(target_arch = "x86_64")]
fn xcr0() -> u64 {
    /// `xgetbv` needs the xsave target feature to compile.
    #[target_feature(enable = "xsave")]
    unsafe fn read() -> u64 {
        // SAFETY: the caller checked the CPU has `xgetbv` (OSXSAVE); register 0 always exists.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    // SAFETY: called only after cpuid reported OSXSAVE: the OS enabled `xgetbv`.
    unsafe { read() }
}

/// Other architectures have no run-time choice.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn x86_avx2_fma() -> bool {
    false
}

/// Defines a kernel function whose body is compiled twice on x86-64, for the baseline and with
/// AVX2 and FMA, and runs the one [`avx2_fma`] chooses. The body is written once, for the
/// compiler to vectorise (eight independent lanes, no reductions through one register); both
/// copies compute the same operations in the same order. No generics: write a concrete
/// signature.
macro_rules! kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[inline]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                /// The body with AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2_fma($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::simd::avx2_fma() {
                    // SAFETY: `simd::avx2_fma` found AVX2 and FMA on this CPU (cpuid), with the
                    // AVX register state enabled by the OS (xgetbv).
                    return unsafe { avx2_fma($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use kernel;

#[cfg(all(test, target_arch = "x86_64", feature = "std"))]
mod tests {
    use super::*;

    /// Detection answers the same every time, and agrees with std's where std is there.
    #[test]
    fn detection_agrees_with_std() {
        let std_says = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        assert_eq!(x86_avx2_fma(), std_says);
        assert_eq!(detect(), detect());
    }
}
