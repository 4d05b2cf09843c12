//! The encoded tiny model must stay byte-identical to the committed golden file.

use metarec_runtime::format::{self, FORMAT_MAJOR, HEADER_LEN, MAGIC};
use metarec_runtime::Model;

use crate::fixture::{assert_matches_golden, golden_path, tiny_body};

#[test]
fn tiny_model_matches_golden_file() {
    let bytes = format::encode(&tiny_body()).unwrap();
    let path = golden_path("tiny.mrec");
    assert_matches_golden(&path, &bytes);
    // The committed file loads back to the same model through the std helper.
    let model = Model::from_path(&path).unwrap();
    assert_eq!(&model.to_body(), &tiny_body());
    assert_eq!(model.item_count(), 6);
    assert_eq!(model.input_width(), 16);
    let missing = Model::from_path(path.with_extension("missing")).unwrap_err();
    assert!(matches!(missing, metarec_runtime::LoadFileError::Io(_)));
}

#[test]
fn header_bytes_are_literal() {
    let bytes = format::encode(&tiny_body()).unwrap();
    let body = &bytes[HEADER_LEN..];
    let mut expected = Vec::new();
    expected.extend_from_slice(b"METAREC\x1a");
    expected.extend_from_slice(&[0x02, 0x00, 0x01, 0x00]); // major 2, minor 1
    expected.extend_from_slice(&48u32.to_le_bytes()); // header length
    expected.extend_from_slice(&0u32.to_le_bytes()); // required features (MeLU: none)
    expected.extend_from_slice(&0u32.to_le_bytes()); // optional features
    expected.extend_from_slice(&format::schema_hash(&tiny_body()).to_le_bytes());
    expected.extend_from_slice(&(body.len() as u64).to_le_bytes());
    expected.extend_from_slice(&crc_of(body).to_le_bytes());
    let header_crc = crc_of(&expected);
    expected.extend_from_slice(&header_crc.to_le_bytes());
    assert_eq!(&bytes[..HEADER_LEN], &expected[..]);
    assert_eq!(MAGIC, *b"METAREC\x1a");
    assert_eq!(FORMAT_MAJOR, 2);
    // The literal header of the committed tiny model (hash, length and CRCs pinned too).
    assert_eq!(&bytes[..HEADER_LEN], &TINY_HEADER[..], "got {:02x?}", &bytes[..HEADER_LEN]);
}

/// The blessed tiny model's header: magic, major 2, minor 1, header length 48, no feature
/// flags, schema hash 0xe29221c783ff38ef, body length 1042, body CRC 0x6af48b4d, header CRC 0xbee094a9.
const TINY_HEADER: [u8; 48] = [
    b'M', b'E', b'T', b'A', b'R', b'E', b'C', 0x1a, // magic
    0x02, 0x00, 0x01, 0x00, // major, minor
    0x30, 0x00, 0x00, 0x00, // header length
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // required, optional features
    0xef, 0x38, 0xff, 0x83, 0xc7, 0x21, 0x92, 0xe2, // schema hash
    0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // body length
    0x4d, 0x8b, 0xf4, 0x6a, // body CRC
    0xa9, 0x94, 0xe0, 0xbe, // header CRC
];

/// Compatibility rule: a file written by format 2.0 (the committed copy from before 2.1) loads
/// unchanged, to the same model.
#[test]
fn format_2_0_files_still_load() {
    let path = golden_path("tiny-2.0.mrec");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &[0x02, 0x00, 0x00, 0x00], "a 2.0 file");
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(&model.to_body(), &tiny_body());
    // The same body re-encoded differs only in the minor version and the header CRC.
    let current = format::encode(&tiny_body()).unwrap();
    let differing: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != current[i]).collect();
    assert!(differing.iter().all(|&i| i == 10 || (44..48).contains(&i)), "{differing:?}");
}

/// A click model carries the click-task flag (bit 4), which a 2.0 reader refuses by name, and
/// any required flag this reader does not know is refused the same way.
#[test]
fn click_task_sets_its_required_flag() {
    let mut body = tiny_body();
    body.task = format::Task::Click { threshold: 4.0 };
    body.rating = format::RatingScale { min: 0.0, max: 1.0, global_mean: 0.3 };
    let bytes = format::encode(&body).unwrap();
    assert_eq!(&bytes[16..20], &format::required::CLICK_TASK.to_le_bytes());
    assert_eq!(format::required::CLICK_TASK, 1 << 4);
    assert!(Model::from_bytes(&bytes).unwrap().is_click());
    // A future flag: the header CRC is recomputed so only the flag is wrong.
    let mut future = bytes.clone();
    future[16..20].copy_from_slice(&(1u32 << 11 | format::required::CLICK_TASK).to_le_bytes());
    let crc = crc_of(&future[..44]);
    future[44..48].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Model::from_bytes(&future).unwrap_err(), metarec_runtime::Error::UnsupportedFeature);
    // A click model's labels live on 0..1: any other scale is refused.
    body.rating = format::RatingScale { min: 1.0, max: 5.0, global_mean: 3.0 };
    let bytes = format::encode(&body).unwrap();
    assert_eq!(Model::from_bytes(&bytes).unwrap_err(), metarec_runtime::Error::InconsistentDimensions);
}

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
