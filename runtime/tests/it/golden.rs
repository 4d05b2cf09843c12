//! The encoded tiny model must stay byte-identical to the committed golden file.

use std::path::PathBuf;

use metarec_runtime::format::{self, FORMAT_MAJOR, HEADER_LEN, MAGIC};
use metarec_runtime::Model;

use crate::fixture::tiny_body;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny.mrec")
}

#[test]
fn tiny_model_matches_golden_file() {
    let bytes = format::encode(&tiny_body()).unwrap();
    let path = golden_path();
    if std::env::var_os("METAREC_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with METAREC_BLESS=1 to write it", path.display()));
    assert!(golden == bytes, "encoding differs from {}; if intended, re-bless", path.display());
    // The committed file loads back to the same model through the std helper.
    let model = Model::from_path(&path).unwrap();
    assert_eq!(model.body(), &tiny_body());
    assert_eq!(model.item_count(), 6);
    assert_eq!(model.input_width(), 16);
    let missing = Model::from_path(path.with_extension("missing")).unwrap_err();
    assert!(matches!(missing, metarec_runtime::LoadFileError::Io(_)));
}

#[test]
fn header_bytes_are_literal() {
    let bytes = format::encode(&tiny_body()).unwrap();
    let body_len = (bytes.len() - HEADER_LEN) as u64;
    let crc = crc_of(&bytes[HEADER_LEN..]);
    let mut expected = Vec::new();
    expected.extend_from_slice(b"METAREC\x1a");
    expected.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    expected.extend_from_slice(&body_len.to_le_bytes());
    expected.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(&bytes[..24], &expected[..]);
    assert_eq!(MAGIC, *b"METAREC\x1a");
    assert_eq!(FORMAT_MAJOR, 1);
    // The literal header of the committed tiny model (length and CRC pinned too).
    assert_eq!(&bytes[..24], &TINY_HEADER[..]);
}

/// The blessed tiny model's header: magic, major 1, minor 0, body length 1039, CRC 0x3d6abcd2.
const TINY_HEADER: [u8; 24] = [
    b'M', b'E', b'T', b'A', b'R', b'E', b'C', 0x1a, // magic
    0x01, 0x00, // major
    0x00, 0x00, // minor
    0x0f, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // body length
    0xd2, 0xbc, 0x6a, 0x3d, // CRC32 of the body
];

/// Bitwise CRC-32 (IEEE), independent of crc32fast.
fn crc_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
