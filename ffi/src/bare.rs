//! What std gives the library, for the std-free build (`--no-default-features`, profile
//! `minsize`): the C library's allocator, an abort on panic, and file reading through stdio.
//!
//! That build drops std's panic machinery (unwinding, the default hook's backtrace
//! symbolisation), most of the library's size. Its panic boundary is therefore an abort, never
//! an unwind into C; the runtime is written and fuzzed not to panic on any input, so a panic
//! means a bug, and aborting stops the process before it can act on broken state.

use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_char, c_int, c_void};

use crate::limits::METAREC_MAX_MODEL_BYTES;
use crate::status::{Code, Status, METAREC_ERR_IO, METAREC_ERR_MODEL_TOO_LARGE};

extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn calloc(count: usize, size: usize) -> *mut c_void;
    fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int;
    fn abort() -> !;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut c_void;
    fn fread(buf: *mut c_void, size: usize, count: usize, file: *mut c_void) -> usize;
    fn ferror(file: *mut c_void) -> c_int;
    fn fclose(file: *mut c_void) -> c_int;
}

/// Alignment every `malloc` result has on the platforms the library targets (glibc, bionic,
/// musl, Apple: 16 on 64-bit, 8 on 32-bit): larger alignments go through `posix_memalign`.
const MALLOC_ALIGN: usize = 2 * core::mem::size_of::<usize>();

/// The C library's heap, so memory the library allocates shows up in the host's own tools.
struct CAllocator;

// SAFETY: every method returns memory from the C heap with at least the layout's size and
// alignment (malloc's guaranteed alignment, or posix_memalign's), or NULL on failure; `dealloc`
// and `realloc` only receive pointers these methods returned.
unsafe impl GlobalAlloc for CAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            // SAFETY: plain C call; `size` is non-zero (GlobalAlloc never asks for 0 bytes).
            unsafe { malloc(layout.size()) }.cast()
        } else {
            aligned_alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            // SAFETY: plain C call.
            unsafe { calloc(1, layout.size()) }.cast()
        } else {
            let ptr = aligned_alloc(layout);
            if !ptr.is_null() {
                // SAFETY: `ptr` holds `layout.size()` writable bytes.
                unsafe { ptr.write_bytes(0, layout.size()) };
            }
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from malloc, calloc, realloc or posix_memalign (trait contract).
        unsafe { free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= new_size {
            // SAFETY: `ptr` came from this allocator (trait contract); realloc keeps malloc's
            // alignment, which covers `layout.align()`.
            unsafe { realloc(ptr.cast(), new_size) }.cast()
        } else {
            // SAFETY: `new_layout` is valid (trait contract: `new_size` rounded up to the
            // alignment does not overflow); copy the smaller of the two sizes, then free the old.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new_ptr = self.alloc(new_layout);
                if !new_ptr.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new_ptr
            }
        }
    }
}

/// `posix_memalign` for alignments past malloc's (its alignment must be at least a pointer).
fn aligned_alloc(layout: Layout) -> *mut u8 {
    let mut out = core::ptr::null_mut();
    let align = layout.align().max(core::mem::size_of::<usize>());
    // SAFETY: `align` is a power of two and a multiple of the pointer size; `out` is writable.
    match unsafe { posix_memalign(&mut out, align, layout.size()) } {
        0 => out.cast(),
        _ => core::ptr::null_mut(),
    }
}

#[global_allocator]
static ALLOCATOR: CAllocator = CAllocator;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: plain C call; never returns.
    unsafe { abort() }
}

/// The personality routine the precompiled `core` and `alloc` name in their unwind tables
/// (they are built for unwinding). With `panic = "abort"` nothing unwinds, so the unwinder never
/// calls it; it exists so that the library links and loads. Unwinding from elsewhere (a C++
/// exception thrown through a callback) is not supported by the C API in either build.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Closes a stdio stream when dropped.
struct File(*mut c_void);

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a stream from fopen, closed only here.
        unsafe { fclose(self.0) };
    }
}

/// Reads a model file's bytes with the std build's rules: any failure to open or read it is
/// `METAREC_ERR_IO`; a file larger than `METAREC_MAX_MODEL_BYTES` is
/// `METAREC_ERR_MODEL_TOO_LARGE`, and never read more than one byte past the limit.
pub(crate) fn read_file(path: &[u8]) -> Status<Vec<u8>> {
    let mut c_path = Vec::new();
    c_path.try_reserve_exact(path.len() + 1).map_err(|_| Code(METAREC_ERR_IO))?;
    c_path.extend_from_slice(path);
    c_path.push(0);
    // SAFETY: both strings are NUL-terminated.
    let stream = unsafe { fopen(c_path.as_ptr().cast(), c"rb".as_ptr()) };
    if stream.is_null() {
        return Err(Code(METAREC_ERR_IO));
    }
    let file = File(stream);
    const CHUNK: usize = 64 * 1024;
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        bytes.try_reserve(CHUNK).map_err(|_| Code(METAREC_ERR_MODEL_TOO_LARGE))?;
        // Never read past one byte over the limit (an endless stream such as /dev/zero).
        let left = METAREC_MAX_MODEL_BYTES + 1 - bytes.len();
        let spare = bytes.spare_capacity_mut();
        let want = spare.len().min(CHUNK).min(left);
        // SAFETY: `spare` holds at least `want` writable bytes; `file.0` is an open stream.
        let got = unsafe { fread(spare.as_mut_ptr().cast(), 1, want, file.0) };
        // SAFETY: fread initialised the first `got` (<= `want`) spare bytes.
        unsafe { bytes.set_len(bytes.len() + got) };
        if bytes.len() > METAREC_MAX_MODEL_BYTES {
            return Err(Code(METAREC_ERR_MODEL_TOO_LARGE));
        }
        if got < want {
            // SAFETY: `file.0` is an open stream.
            return match unsafe { ferror(file.0) } {
                0 => Ok(bytes),
                _ => Err(Code(METAREC_ERR_IO)),
            };
        }
    }
}
