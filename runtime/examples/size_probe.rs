//! A `no_std` consumer of the runtime, built only to measure what the runtime costs in flash on a
//! Cortex-M4F (`scripts/bench.sh` builds it for thumbv7em-none-eabihf and reports its `.text`):
//! load a model from bytes, personalize one user, score items. Not a usable firmware.
#![no_std]

#[cfg(target_os = "none")]
mod bare {
    use core::alloc::{GlobalAlloc, Layout};
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// A bump allocator over a static arena: enough for a size measurement.
    struct Bump;

    const ARENA: usize = 64 * 1024;
    static mut HEAP: [u8; ARENA] = [0; ARENA];
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: `alloc` hands out disjoint, aligned ranges of the arena (never twice: the cursor
    // only moves forward) or null when it is full; `dealloc` never frees, which is allowed.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let mut start = 0;
            let claimed = NEXT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |next| {
                start = next.checked_add(layout.align() - 1)? & !(layout.align() - 1);
                let end = start.checked_add(layout.size())?;
                (end <= ARENA).then_some(end)
            });
            match claimed {
                // SAFETY: start + size <= ARENA, so the pointer stays inside the arena.
                Ok(_) => unsafe { core::ptr::addr_of_mut!(HEAP).cast::<u8>().add(start) },
                Err(_) => core::ptr::null_mut(),
            }
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
    }

    #[global_allocator]
    static ALLOCATOR: Bump = Bump;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {}
    }
}

/// Loads a model, adapts to three ratings and returns the score of item 0 (NaN on any error).
///
/// # Safety
/// `bytes` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn metarec_probe(bytes: *const u8, len: usize) -> f32 {
    // SAFETY: the caller's contract.
    let bytes = unsafe { core::slice::from_raw_parts(bytes, len) };
    let Ok(model) = metarec_runtime::Model::from_bytes(bytes) else { return f32::NAN };
    let mut session = metarec_runtime::Session::new(&model);
    let _ = session.set_profile("gender", "F");
    for (item, rating) in [(0u32, 4.0f32), (1, 2.0), (2, 5.0)] {
        let _ = session.add_rating_by_index(item, rating);
    }
    if session.adapt().is_err() {
        return f32::NAN;
    }
    let mut out = [0.0f32; 4];
    match session.score_indices(&[0, 1, 2, 3], &mut out) {
        Ok(()) => out[0] + session.explain().learning_rate.unwrap_or(0.0),
        Err(_) => f32::NAN,
    }
}
