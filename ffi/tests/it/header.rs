//! The committed header: generated, current, and consistent with the crate and the runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metarec_runtime::Error;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../include/metarec.h")
}

fn committed_header() -> String {
    std::fs::read_to_string(header_path()).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}\nGenerate it with: METAREC_BLESS=1 cargo test -p metarec-ffi",
            header_path().display()
        )
    })
}

/// The header cbindgen generates from the crate now.
fn generated_header() -> String {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).expect("ffi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

/// `#define NAME VALUE` lines of the header whose value is an integer.
fn integer_macros(header: &str) -> BTreeMap<String, i64> {
    header
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "#define").then_some(())?;
            let name = words.next()?;
            let value = words.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

#[test]
fn header_is_up_to_date() {
    let generated = generated_header();
    if std::env::var_os("METAREC_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(header_path(), &generated).expect("write include/metarec.h");
        return;
    }
    let committed = committed_header();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/metarec.h is out of date with ffi/src and ffi/cbindgen.toml (first \
             difference at line {}).\nRefresh it with: METAREC_BLESS=1 cargo test -p metarec-ffi",
            first_difference + 1
        );
    }
}

#[test]
fn version_macros_match_the_package_version() {
    let macros = integer_macros(&committed_header());
    let expected = [
        ("METAREC_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("METAREC_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("METAREC_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ];
    for (name, value) in expected {
        let value: i64 = value.parse().unwrap();
        assert_eq!(
            macros.get(name),
            Some(&value),
            "{name} in include/metarec.h must be {value} (CARGO_PKG_VERSION {}): update \
             after_includes in ffi/cbindgen.toml, then METAREC_BLESS=1 cargo test -p metarec-ffi",
            env!("CARGO_PKG_VERSION")
        );
    }
    let string = format!("#define METAREC_VERSION_STRING \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(committed_header().contains(&string), "header lacks `{string}`");

    let version = metarec::metarec_version();
    assert!(!version.is_null());
    // SAFETY: metarec_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(version) }.to_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn every_runtime_error_has_a_header_constant_with_its_code_and_message() {
    let macros = integer_macros(&committed_header());
    let codes: BTreeMap<i64, &str> = macros
        .iter()
        .filter(|(name, _)| name.starts_with("METAREC_OK") || name.starts_with("METAREC_ERR_"))
        .map(|(name, code)| (*code, name.as_str()))
        .collect();
    let code_macro_count =
        macros.keys().filter(|name| name.starts_with("METAREC_OK") || name.starts_with("METAREC_ERR_")).count();
    assert_eq!(codes.len(), code_macro_count, "two status macros share a value: {macros:?}");
    for error in Error::ALL {
        let code = i64::from(error.code());
        let name = codes.get(&code).unwrap_or_else(|| {
            panic!("runtime error {error:?} (code {code}) has no METAREC_ERR_* macro in the header")
        });
        assert_eq!(crate::util::message(code as i32), error.message(), "{name}");
    }
    // The C layer's own codes, fixed forever.
    let own = [
        ("METAREC_OK", 0),
        ("METAREC_ERR_NULL_POINTER", 1),
        ("METAREC_ERR_INVALID_UTF8", 2),
        ("METAREC_ERR_IO", 3),
        ("METAREC_ERR_BUFFER_TOO_SMALL", 4),
        ("METAREC_ERR_INVALID_ARGUMENT", 5),
        ("METAREC_ERR_PANIC", 6),
        ("METAREC_ERR_INCOMPATIBLE_VERSION", 7),
    ];
    for (name, code) in own {
        assert_eq!(macros.get(name), Some(&code), "{name}");
        assert_ne!(crate::util::message(code as i32), "unknown error code", "{name}");
    }
    assert_eq!(code_macro_count, own.len() + Error::ALL.len(), "{codes:?}");
}

#[test]
fn header_declares_the_opaque_handles_and_every_function() {
    let header = committed_header();
    for needle in [
        "#ifndef METAREC_H",
        "typedef struct MetarecModel MetarecModel;",
        "typedef struct MetarecSession MetarecSession;",
        "Thread safety",
        "const char *metarec_version(void);",
        "#define METAREC_CHECK_VERSION() metarec_check_version(METAREC_VERSION_MAJOR, METAREC_VERSION_MINOR)",
    ] {
        assert!(header.contains(needle), "header lacks `{needle}`");
    }
    for function in [
        "metarec_version",
        "metarec_check_version",
        "metarec_error_message",
        "metarec_model_load",
        "metarec_model_load_from_memory",
        "metarec_model_load_from_memory_borrowed",
        "metarec_model_free",
        "metarec_model_item_count",
        "metarec_model_item_id",
        "metarec_model_method",
        "metarec_model_task",
        "metarec_model_adapt",
        "metarec_model_rating_range",
        "metarec_model_field_count",
        "metarec_model_field_name",
        "metarec_model_field_info",
        "metarec_session_new",
        "metarec_session_free",
        "metarec_session_set_profile",
        "metarec_session_add_rating",
        "metarec_session_clear_ratings",
        "metarec_session_adapt",
        "metarec_session_score",
        "metarec_session_score_all",
        "metarec_session_top_k",
    ] {
        let declared = [" ", "*"].iter().any(|before| header.contains(&format!("{before}{function}(")));
        assert!(declared, "header lacks {function}");
    }
}
