//! Compact embedding tables (format 2.1): half precision and 8-bit per-row tables follow the
//! body, behind a required flag, and come back widened to f32 within their rounding.

use metarec_runtime::format::{self, required, EmbeddingPrecision};
use metarec_runtime::{Error, Model};

use crate::fixture::{seal, tiny_body};

fn tables(body: &format::ModelBody) -> Vec<Vec<f32>> {
    body.user_fields.iter().chain(&body.item_fields).map(|f| f.embedding.clone()).collect()
}

#[test]
fn half_precision_round_trips_within_its_rounding() {
    let body = tiny_body();
    let bytes = format::encode_with(&body, EmbeddingPrecision::F16).unwrap();
    let flags = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(flags & required::COMPACT_EMBEDDINGS, required::COMPACT_EMBEDDINGS);
    let model = Model::from_bytes(&bytes).unwrap();
    for (got, want) in tables(model.body()).iter().zip(tables(&body)) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= w.abs() * 1e-3 + 1e-7, "{g} vs {w}");
        }
    }
    // Everything else is exact.
    assert_eq!(model.body().layers, body.layers);
    assert!(model.body().items.is_empty(), "the model keeps its catalogue apart");
    assert_eq!(model.to_body().items, body.items);
}

#[test]
fn int8_round_trips_within_half_a_step_per_row() {
    let body = tiny_body();
    let bytes = format::encode_with(&body, EmbeddingPrecision::Int8).unwrap();
    let model = Model::from_bytes(&bytes).unwrap();
    let dim = body.embedding_dim as usize;
    let mut changed = false;
    for (got, want) in tables(model.body()).iter().zip(tables(&body)) {
        for (g_row, w_row) in got.chunks(dim).zip(want.chunks(dim)) {
            let step = w_row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (g, w) in g_row.iter().zip(w_row) {
                assert!((g - w).abs() <= step * 0.5 + 1e-7, "{g} vs {w} (step {step})");
                changed |= g != w;
            }
        }
    }
    assert!(changed, "8-bit tables are rounded");
}

#[test]
fn compact_files_are_smaller_and_f32_stays_the_default() {
    let body = tiny_body();
    let full = format::encode(&body).unwrap();
    assert_eq!(full, format::encode_with(&body, EmbeddingPrecision::F32).unwrap());
    let half = format::encode_with(&body, EmbeddingPrecision::F16).unwrap();
    let int8 = format::encode_with(&body, EmbeddingPrecision::Int8).unwrap();
    // (8-bit beats half precision only for wider rows: each row also stores a 4-byte scale.)
    assert!(int8.len() < full.len() && half.len() < full.len(), "{} {} {}", int8.len(), half.len(), full.len());
    // The schema hash does not depend on how the tables are stored.
    assert_eq!(full[24..32], half[24..32]);
}

/// A compact file whose tables do not fit the fields is refused; so is a flag without tables.
#[test]
fn inconsistent_compact_tables_are_refused() {
    let mut body = tiny_body();
    let good = format::encode_with(&body, EmbeddingPrecision::Int8).unwrap();
    // One more vocabulary value: the tables no longer match the field (hash and CRC recomputed
    // by the encoder, so only the sizes are wrong).
    body.user_fields[0].vocabulary.push("X".into());
    let stripped_len = |b: &format::ModelBody| {
        let mut s = b.clone();
        for f in s.user_fields.iter_mut().chain(s.item_fields.iter_mut()) {
            f.embedding.clear();
        }
        postcard::to_allocvec(&s).unwrap().len()
    };
    let original = tiny_body();
    let tables_part = &good[48 + stripped_len(&original)..];
    let mut payload = {
        let mut s = body.clone();
        for f in s.user_fields.iter_mut().chain(s.item_fields.iter_mut()) {
            f.embedding.clear();
        }
        postcard::to_allocvec(&s).unwrap()
    };
    payload.extend_from_slice(tables_part);
    let bytes = with_header(&good, &body, &payload);
    assert_eq!(Model::from_bytes(&bytes).unwrap_err(), Error::InconsistentDimensions);

    // The flag set on a plain f32 file: no tables follow the body.
    let plain = format::encode(&original).unwrap();
    let mut flagged = plain.clone();
    flagged[16..20].copy_from_slice(&required::COMPACT_EMBEDDINGS.to_le_bytes());
    let crc = crc32fast::hash(&flagged[..44]);
    flagged[44..48].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(Model::from_bytes(&flagged).unwrap_err(), Error::MalformedBody);
}

/// `template`'s header with `body`'s schema hash and `payload`'s length and CRC.
fn with_header(template: &[u8], body: &format::ModelBody, payload: &[u8]) -> Vec<u8> {
    let mut header = template[..48].to_vec();
    header[24..32].copy_from_slice(&format::schema_hash(body).to_le_bytes());
    seal(header, payload)
}
