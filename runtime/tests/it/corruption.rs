//! Damage of every kind to a small model file — every byte changed in every way, every
//! truncation, every appended byte — is refused with the error that names the damage, never
//! loaded and never a panic.

use metarec_runtime::format::{self, HEADER_LEN, MAGIC};
use metarec_runtime::{Error, Model};

use crate::fixture::tiny_body;

fn file() -> Vec<u8> {
    format::encode(&tiny_body()).unwrap()
}

/// The error a file with byte `at` changed (to give `damaged`) must be refused with, from the
/// format's definition (see `runtime/src/format.rs`): the magic is checked first, then the
/// major version, then the header length, then the header CRC; the body is covered by its CRC.
fn expected(at: usize, damaged: &[u8]) -> Error {
    match at {
        0..8 => Error::BadMagic,
        8..10 => Error::UnsupportedVersion,
        12..16 => {
            let header_len = u32::from_le_bytes(damaged[12..16].try_into().unwrap()) as usize;
            if header_len < HEADER_LEN {
                // A header shorter than the 2.0 header cannot be one.
                Error::MalformedBody
            } else if header_len > damaged.len() {
                // The header claims more bytes than the file has.
                Error::Truncated
            } else {
                // The header CRC is now read at another place (and over other bytes).
                Error::ChecksumMismatch
            }
        }
        // Minor version, flags, schema hash, body length, body CRC, header CRC: the header CRC.
        _ if at < HEADER_LEN => Error::ChecksumMismatch,
        // Body bytes: the body CRC.
        _ => Error::ChecksumMismatch,
    }
}

/// Every way one byte is changed here: each single-bit flip, the complement, 0x00 and 0xff.
fn changes(byte: u8) -> Vec<u8> {
    let mut out: Vec<u8> = (0..8).map(|bit| byte ^ (1 << bit)).collect();
    out.extend([!byte, 0x00, 0xff]);
    out.retain(|&b| b != byte);
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn every_changed_byte_is_refused_with_its_error() {
    let clean = file();
    assert!(clean.len() > HEADER_LEN + 100, "the model file is small but not trivial");
    Model::from_bytes(&clean).expect("the clean file loads");
    let mut tried = 0;
    let mut seen = std::collections::BTreeSet::new();
    for at in 0..clean.len() {
        for value in changes(clean[at]) {
            let mut damaged = clean.clone();
            damaged[at] = value;
            let want = expected(at, &damaged);
            let got = std::panic::catch_unwind(|| Model::from_bytes(&damaged).map(drop))
                .unwrap_or_else(|_| panic!("panic loading the file with byte {at} set to {value:#04x}"));
            assert_eq!(got, Err(want), "byte {at} (of {}) changed {:#04x} -> {value:#04x}", clean.len(), clean[at]);
            seen.insert(format!("{want:?}"));
            tried += 1;
        }
    }
    // Every part of the header was reached, so the expectations above were all exercised.
    for error in ["BadMagic", "UnsupportedVersion", "MalformedBody", "Truncated", "ChecksumMismatch"] {
        assert!(seen.contains(error), "no change gave {error}: {seen:?}");
    }
    assert!(tried >= clean.len() * 9, "{tried} damaged files for {} bytes", clean.len());
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let clean = file();
    for len in 0..clean.len() {
        let got = std::panic::catch_unwind(|| Model::from_bytes(&clean[..len]).map(drop))
            .unwrap_or_else(|_| panic!("panic loading the first {len} bytes"));
        assert_eq!(got, Err(Error::Truncated), "first {len} of {} bytes", clean.len());
    }
}

#[test]
fn truncated_and_damaged_files_are_refused() {
    // A cut-off file whose remaining bytes are damaged too: the first check that fails wins,
    // and it is never Ok.
    let clean = file();
    for len in (0..clean.len()).step_by(7) {
        for at in 0..len {
            let mut damaged = clean[..len].to_vec();
            damaged[at] ^= 0x20;
            let got = Model::from_bytes(&damaged).map(drop).unwrap_err();
            let allowed: &[Error] = match at {
                0..8 => &[Error::BadMagic],
                8..10 => &[Error::UnsupportedVersion, Error::Truncated],
                _ => &[Error::Truncated, Error::ChecksumMismatch, Error::MalformedBody],
            };
            assert!(allowed.contains(&got), "first {len} bytes, byte {at} flipped: {got:?}");
        }
    }
}

#[test]
fn every_appended_byte_is_refused_as_trailing() {
    let clean = file();
    for value in 0..=255u8 {
        let mut longer = clean.clone();
        longer.push(value);
        assert_eq!(Model::from_bytes(&longer).map(drop), Err(Error::TrailingBytes), "appended {value:#04x}");
    }
    let mut doubled = clean.clone();
    doubled.extend_from_slice(&clean);
    assert_eq!(Model::from_bytes(&doubled).map(drop), Err(Error::TrailingBytes));
}

#[test]
fn the_magic_alone_or_a_foreign_file_is_refused() {
    assert_eq!(Model::from_bytes(&MAGIC).map(drop), Err(Error::Truncated));
    for foreign in [&b"\x89PNG\r\n\x1a\n...."[..], b"PK\x03\x04", b"{\"json\": true}", b"\0\0\0\0\0\0\0\0\0"] {
        assert_eq!(Model::from_bytes(foreign).map(drop), Err(Error::BadMagic));
    }
}
