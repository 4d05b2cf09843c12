//! The std-free build (`--no-default-features`) links no std, so it names the C library itself
//! (heap, abort, stdio: src/bare.rs). The precompiled `core` and `alloc` still reference the
//! unwinder's `_Unwind_Resume` from their (never taken) cleanup paths: on glibc targets that
//! symbol comes from libgcc_s, which std would have linked.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let std = std::env::var_os("CARGO_FEATURE_STD").is_some();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if std {
        return;
    }
    println!("cargo:rustc-link-lib=dylib=c");
    if os == "linux" && env == "gnu" {
        // Recorded as needed even where the linker would drop it (--as-needed on aarch64): the
        // library is linked with BIND_NOW, so an unresolved symbol would stop it loading.
        println!("cargo:rustc-link-arg-cdylib=-Wl,--push-state,--no-as-needed,-lgcc_s,--pop-state");
        println!("cargo:rustc-link-lib=dylib=gcc_s");
    }
}
