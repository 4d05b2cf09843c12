//! C ABI for the metarec on-device runtime.
//!
//! A thin layer: every function checks its pointers, converts C strings and arrays, calls
//! [`metarec_runtime`] and turns its [`metarec_runtime::Error`] into a stable `int32_t` code
//! (see [`status`]). The header `include/metarec.h` is generated from this crate by cbindgen
//! (configuration in `ffi/cbindgen.toml`) and committed; the test `header_is_up_to_date` fails
//! when it drifts, and `METAREC_BLESS=1 cargo test -p metarec-ffi` rewrites it.
//!
//! Conventions of every entry point:
//! - fallible functions return `METAREC_OK` (0) or an error code; on failure, output handles are
//!   set to NULL and other outputs are unspecified unless the function documents otherwise
//!   (the string getters report the size they need, `metarec_session_top_k` sets `*out_len`
//!   to 0);
//! - a panic never crosses the boundary: it becomes `METAREC_ERR_PANIC` (functions without a
//!   status return a neutral value instead). This needs `panic = "unwind"`, which every profile
//!   of the workspace keeps;
//! - pointers are checked for NULL (and arrays for alignment) before use.
//!
//! Two builds: the default one links std and catches panics with `catch_unwind`; the std-free
//! one (`--no-default-features`, profile `minsize`, see `scripts/package.sh --minimal`) is a
//! fraction of the size, uses the C heap and aborts on a panic instead (module `bare`).
//!
//! Thread safety: a model handle is immutable and may be shared by any number of threads and
//! sessions; a session must be used by one thread at a time.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

/// The std-free build's platform layer (not part of the C API).
///
/// cbindgen:ignore
#[cfg(not(feature = "std"))]
mod bare;
mod contribute;
#[cfg(feature = "std")]
mod file;
mod handle;
mod limits;
mod model;
mod session;
pub mod status;

use core::ffi::{c_char, CStr};

pub use contribute::*;
pub use handle::{MetarecModel, MetarecSession};
pub use limits::*;
pub use model::*;
pub use session::*;
pub use status::*;

use crate::status::{Code, Status};

/// `CARGO_PKG_VERSION` as a C string.
const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the package version contains a NUL byte"),
};

/// Runs an entry point's body behind the panic boundary and turns its result into a status code.
pub(crate) fn guard(body: impl FnOnce() -> Status<()>) -> i32 {
    match catch_panic(body) {
        Some(Ok(())) => METAREC_OK,
        Some(Err(Code(code))) => code,
        None => METAREC_ERR_PANIC,
    }
}

/// Runs the body of an entry point that has no status return; a panic gives `fallback`.
pub(crate) fn guard_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_panic(body).unwrap_or(fallback)
}

/// `body`'s result, or None when it panicked.
#[cfg(feature = "std")]
fn catch_panic<T>(body: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(core::panic::AssertUnwindSafe(body)).ok()
}

/// The std-free build cannot unwind: a panic aborts (see `bare`), so this never returns None.
#[cfg(not(feature = "std"))]
fn catch_panic<T>(body: impl FnOnce() -> T) -> Option<T> {
    Some(body())
}

/// The library version, e.g. `"0.1.0"` (equal to the `METAREC_VERSION_*` macros of the header
/// the library was built with). The string is static: never free it.
#[no_mangle]
pub extern "C" fn metarec_version() -> *const c_char {
    VERSION.as_ptr()
}

/// Checks that this library can serve a program compiled against header version
/// `major.minor`; pass `METAREC_VERSION_MAJOR` and `METAREC_VERSION_MINOR` (the
/// `METAREC_CHECK_VERSION()` macro does). Call it once at start-up, before any other function.
///
/// Returns `METAREC_OK` when the major versions are equal and the library's minor version is at
/// least `minor` (minor versions only add functions); while the major version is 0 the minor
/// versions must be equal (0.x releases may change the API). Otherwise returns
/// `METAREC_ERR_INCOMPATIBLE_VERSION`.
#[no_mangle]
pub extern "C" fn metarec_check_version(major: u32, minor: u32) -> i32 {
    guard(|| {
        let compatible = compatible((VERSION_MAJOR, VERSION_MINOR), (major, minor));
        if compatible {
            Ok(())
        } else {
            Err(Code(METAREC_ERR_INCOMPATIBLE_VERSION))
        }
    })
}

/// The library's major and minor version (from `CARGO_PKG_VERSION_*`).
const VERSION_MAJOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR"));
const VERSION_MINOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MINOR"));

/// A decimal number at compile time.
const fn parse_u32(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "a version component is not a number");
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Whether a library of version `library` serves a caller compiled against `header`.
fn compatible(library: (u32, u32), header: (u32, u32)) -> bool {
    library.0 == header.0 && if library.0 == 0 { library.1 == header.1 } else { library.1 >= header.1 }
}

/// Writes the message of status `code` into `buf` (at most `buf_len` bytes, NUL included,
/// truncated to fit) and returns the message's full length without the NUL, like `snprintf`:
/// a return value `>= buf_len` means the message was truncated. Unknown codes give
/// `"unknown error code"`. With `buf_len` 0 nothing is written and `buf` may be NULL.
///
/// # Safety
/// Unless `buf_len` is 0, `buf` points to `buf_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn metarec_error_message(code: i32, buf: *mut c_char, buf_len: usize) -> usize {
    guard_or(0, || {
        let text = status::message(code);
        // SAFETY: `buf` holds `buf_len` writable bytes unless `buf_len` is 0 (caller's contract).
        // A NULL `buf` with a non-zero length writes nothing; the length is still returned.
        let _ = unsafe { handle::write_c_string(text.as_bytes(), buf, buf_len) };
        text.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_results_and_panics_into_codes() {
        assert_eq!(guard(|| Ok(())), METAREC_OK);
        assert_eq!(guard(|| Err(Code(METAREC_ERR_IO))), METAREC_ERR_IO);
        assert_eq!(guard(|| Err(metarec_runtime::Error::UnknownItem.into())), METAREC_ERR_UNKNOWN_ITEM);
        assert_eq!(guard(|| panic!("boom")), METAREC_ERR_PANIC);
        assert_eq!(guard_or(7usize, || panic!("boom")), 7);
        assert_eq!(guard_or(7usize, || 3), 3);
    }

    #[test]
    fn version_compatibility_follows_semver() {
        assert!(compatible((1, 4), (1, 4)));
        assert!(compatible((1, 4), (1, 0)));
        assert!(!compatible((1, 4), (1, 5)));
        assert!(!compatible((1, 4), (2, 0)));
        assert!(!compatible((2, 0), (1, 9)));
        assert!(compatible((0, 3), (0, 3)));
        assert!(!compatible((0, 3), (0, 2)));
        assert!(!compatible((0, 3), (0, 4)));
        assert_eq!(VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(metarec_check_version(VERSION_MAJOR, VERSION_MINOR), METAREC_OK);
        assert_eq!(metarec_check_version(VERSION_MAJOR + 1, VERSION_MINOR), METAREC_ERR_INCOMPATIBLE_VERSION);
    }
}
