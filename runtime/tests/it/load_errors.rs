//! Every way a model file can fail to load, and that garbage never panics.

use metarec_runtime::format::{self, HEADER_LEN};
use metarec_runtime::{Error, Model};

use crate::fixture::{tiny_body, Lcg};

fn tiny_bytes() -> Vec<u8> {
    format::encode(&tiny_body()).unwrap()
}

/// A valid 2.0 header (flags 0, the tiny model's schema hash) around an arbitrary body.
fn with_header(body: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(b"METAREC\x1a");
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&format::schema_hash(&tiny_body()).to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(body);
    file
}

/// Rewrites the header CRC after a deliberate header edit.
fn reseal(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

fn load(bytes: &[u8]) -> Result<Model, Error> {
    Model::from_bytes(bytes)
}

#[test]
fn valid_file_loads() {
    let model = load(&tiny_bytes()).unwrap();
    assert_eq!(&model.to_body(), &tiny_body());
}

#[test]
fn wrong_magic() {
    let mut bytes = tiny_bytes();
    bytes[0] = b'X';
    assert_eq!(load(&bytes).unwrap_err(), Error::BadMagic);
    let mut bytes = tiny_bytes();
    bytes[7] = 0;
    assert_eq!(load(&bytes).unwrap_err(), Error::BadMagic);
    assert_eq!(load(b"MX").unwrap_err(), Error::BadMagic);
    assert_eq!(load(b"PK\x03\x04 something longer than the header..").unwrap_err(), Error::BadMagic);
}

#[test]
fn unsupported_major_version() {
    for major in [0u16, 1, 3, u16::MAX] {
        let mut bytes = tiny_bytes();
        bytes[8..10].copy_from_slice(&major.to_le_bytes());
        assert_eq!(load(&bytes).unwrap_err(), Error::UnsupportedVersion, "major {major}");
    }
}

#[test]
fn newer_minor_version_loads() {
    let mut bytes = tiny_bytes();
    bytes[10..12].copy_from_slice(&7u16.to_le_bytes());
    reseal(&mut bytes);
    assert!(load(&bytes).is_ok());
}

#[test]
fn header_checksum_and_flags() {
    // Any edit of the header without resealing it is a checksum error.
    for at in [10, 12, 16, 20, 24, 32, 40, HEADER_LEN - 1] {
        let mut bytes = tiny_bytes();
        bytes[at] ^= 0x04;
        assert_eq!(load(&bytes).unwrap_err(), Error::ChecksumMismatch, "flip at {at}");
    }
    // A required feature this runtime does not know is refused; an optional one is ignored.
    let mut bytes = tiny_bytes();
    bytes[16..20].copy_from_slice(&(1u32 << 31).to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(load(&bytes).unwrap_err(), Error::UnsupportedFeature);
    let mut bytes = tiny_bytes();
    bytes[20..24].copy_from_slice(&(1u32 << 31).to_le_bytes());
    reseal(&mut bytes);
    assert!(load(&bytes).is_ok());
    // Flags or a schema hash that do not describe the body.
    for (at, value) in [(16usize, format::required::LR_NETWORK as u64), (24, 12345u64)] {
        let mut bytes = tiny_bytes();
        if at == 16 {
            bytes[16..20].copy_from_slice(&(value as u32).to_le_bytes());
        } else {
            bytes[24..32].copy_from_slice(&value.to_le_bytes());
        }
        reseal(&mut bytes);
        assert_eq!(load(&bytes).unwrap_err(), Error::InconsistentDimensions, "field at {at}");
    }
    // A header length below 48 is malformed.
    let mut bytes = tiny_bytes();
    bytes[12..16].copy_from_slice(&40u32.to_le_bytes());
    assert_eq!(load(&bytes).unwrap_err(), Error::MalformedBody);
}

#[test]
fn truncated_at_every_length() {
    let bytes = tiny_bytes();
    for len in 0..bytes.len() {
        assert_eq!(load(&bytes[..len]).unwrap_err(), Error::Truncated, "length {len}");
    }
}

#[test]
fn body_length_beyond_address_space() {
    let mut bytes = tiny_bytes();
    bytes[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut bytes);
    assert_eq!(load(&bytes).unwrap_err(), Error::Truncated);
}

#[test]
fn checksum_mismatch() {
    let clean = tiny_bytes();
    for at in [HEADER_LEN, HEADER_LEN + 1, clean.len() / 2, clean.len() - 1] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        assert_eq!(load(&bytes).unwrap_err(), Error::ChecksumMismatch, "flip at {at}");
    }
    let mut bytes = clean;
    bytes[20] ^= 0x80;
    assert_eq!(load(&bytes).unwrap_err(), Error::ChecksumMismatch);
}

#[test]
fn trailing_bytes() {
    let mut bytes = tiny_bytes();
    bytes.push(0);
    assert_eq!(load(&bytes).unwrap_err(), Error::TrailingBytes);
    // Trailing bytes inside the body: the header length and CRC cover them.
    let mut body = tiny_bytes()[HEADER_LEN..].to_vec();
    body.push(0);
    assert_eq!(load(&with_header(&body)).unwrap_err(), Error::TrailingBytes);
}

#[test]
fn malformed_body() {
    assert_eq!(load(&with_header(&[0xff; 16])).unwrap_err(), Error::MalformedBody);
    assert_eq!(load(&with_header(&[])).unwrap_err(), Error::MalformedBody);
    let body = &tiny_bytes()[HEADER_LEN..];
    assert_eq!(load(&with_header(&body[..body.len() - 3])).unwrap_err(), Error::MalformedBody);
}

#[test]
fn inconsistent_layer_width_in_file() {
    let mut body = tiny_body();
    body.layers[1].inputs = 7;
    let bytes = format::encode(&body).unwrap();
    assert_eq!(load(&bytes).unwrap_err(), Error::InconsistentDimensions);
}

#[test]
fn non_finite_weight_in_file() {
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut body = tiny_body();
        body.layers[0].weight[3] = value;
        let bytes = format::encode(&body).unwrap();
        assert_eq!(load(&bytes).unwrap_err(), Error::NonFiniteParameter);
    }
}

/// Random byte mutations with a repaired CRC: loading may fail but must never panic, and a
/// model that loads must score without panicking.
#[test]
fn mutated_bodies_never_panic() {
    let clean = tiny_bytes()[HEADER_LEN..].to_vec();
    let mut rng = Lcg::new(42);
    let mut next = |n: usize| ((rng.next_f32() + 0.5) * n as f32) as usize % n;
    for _ in 0..3000 {
        let mut body = clean.clone();
        for _ in 0..1 + next(4) {
            let at = next(body.len());
            body[at] = match next(4) {
                0 => 0,
                1 => 0xff,
                2 => body[at] ^ (1 << next(8)),
                _ => next(256) as u8,
            };
        }
        if let Ok(model) = load(&with_header(&body)) {
            let mut session = metarec_runtime::Session::new(&model);
            let items: Vec<u32> = (0..model.item_count() as u32).collect();
            let mut out = vec![0.0; items.len()];
            session.score_indices(&items, &mut out).unwrap();
            if !items.is_empty() {
                let r = model.body().rating.min;
                session.add_rating_by_index(0, r).unwrap();
                session.adapt_steps(2).unwrap();
                session.score_indices(&items, &mut out).unwrap();
            }
        }
    }
}

#[test]
fn methods_that_do_not_adapt_are_refused_and_names_round_trip() {
    use metarec_runtime::format::Method;
    for method in Method::ALL {
        assert_eq!(Method::from_name(method.name()), Some(method));
        let mut body = crate::fixture::tiny_body();
        body.method = method;
        let loaded = metarec_runtime::Model::from_body(body);
        match method {
            Method::WideDeep | Method::DeepFm => assert_eq!(loaded.unwrap_err(), Error::UnsupportedFeature),
            // The tiny body is an MLP: a factor model must carry factors.
            Method::Mf => assert_eq!(loaded.unwrap_err(), Error::InconsistentDimensions),
            _ => assert!(loaded.is_ok(), "{}", method.name()),
        }
    }
    assert_eq!(Method::from_name("MeLU"), None);
}
