//! Embeds libtorch's lib/ directory as an rpath so `trainer` (and its tests) run without
//! LD_LIBRARY_PATH. LIBTORCH comes from .cargo/config.toml (set up by scripts/setup.sh).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
