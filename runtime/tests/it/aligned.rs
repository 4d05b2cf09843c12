//! The aligned layout of format 2.4: the catalogue as flat little-endian arrays after every other
//! part, loaded by copying them or used in place from a buffer that outlives the model.

use metarec_runtime::format::{self, required, EmbeddingPrecision, HEADER_LEN};
use metarec_runtime::{Error, Model};

use crate::fixture::{all_scores, assert_matches_golden, golden_path, session, tiny_body, tiny_factor_body, Trailer};

fn aligned(body: &format::ModelBody) -> Vec<u8> {
    format::encode_aligned(body, EmbeddingPrecision::F32).unwrap()
}

/// A copy of `bytes` that lives for the rest of the test run, starting 8-byte aligned
/// (`offset` 0) or `offset` bytes past an 8-byte boundary.
fn leaked(bytes: &[u8], offset: usize) -> &'static [u8] {
    let words: &'static mut [u64] = Box::leak(vec![0u64; (bytes.len() + offset).div_ceil(8)].into_boxed_slice());
    // SAFETY: the words are initialised, live forever (leaked) and nobody else holds them; a u8
    // view of `len` bytes from `offset` stays inside them.
    let all: &'static mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    all[offset..offset + bytes.len()].copy_from_slice(bytes);
    &all[offset..offset + bytes.len()]
}

/// The tiny model's table arrays, by hand: ids m3 m1 m10 m2 m7 m5, rows (rated; genres).
const ID_ENDS: [u32; 6] = [2, 4, 7, 9, 11, 13];
const BY_ID: [u32; 6] = [1, 2, 3, 0, 5, 4];
const ROWS: [u32; 14] = [1, 1, 4, 1, 3, 0, 2, 2, 3, 1, 3, 0, 2, 3];
const OFFSETS: [u32; 13] = [0, 1, 2, 3, 5, 6, 6, 7, 10, 11, 12, 13, 14];
const IDS: &[u8] = b"m3m1m10m2m7m5";

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Where the tables start in the tiny model's aligned file.
fn tables_start(bytes: &[u8]) -> usize {
    bytes.len() - IDS.len() - 4 * (ID_ENDS.len() + BY_ID.len() + ROWS.len() + OFFSETS.len())
}

/// The tiny model's aligned file is pinned byte for byte (golden file), stamped 2.4 with the
/// aligned flag alone, and ends in the arrays written out by hand, the first at a multiple of 8.
#[test]
fn the_aligned_tiny_model_matches_its_golden_file() {
    let bytes = aligned(&tiny_body());
    assert_matches_golden(&golden_path("tiny-aligned.mrec"), &bytes);
    assert_eq!(&bytes[8..12], &[0x02, 0x00, 0x04, 0x00], "major 2, minor 4");
    assert_eq!(bytes[16..20], required::ALIGNED_TABLES.to_le_bytes());
    let start = tables_start(&bytes);
    assert_eq!(start % 8, 0);
    let mut tables = Vec::new();
    for words in [&ID_ENDS[..], &BY_ID, &ROWS, &OFFSETS] {
        tables.extend(le(words));
    }
    tables.extend_from_slice(IDS);
    assert_eq!(&bytes[start..], &tables[..]);
    // The older layout of the same body is unchanged (2.1) and loads to the same model.
    let old = format::encode(&tiny_body()).unwrap();
    assert_eq!(old[10], 1);
    assert_eq!(Model::from_bytes(&bytes).unwrap().to_body(), Model::from_bytes(&old).unwrap().to_body());
}

/// Copied or in place, aligned or not, the aligned layout loads to the model the records give,
/// at every precision, for a network and a factor model; in place it holds no catalogue memory.
#[test]
fn aligned_files_load_as_the_records_do() {
    for body in [tiny_body(), tiny_factor_body()] {
        for precision in EmbeddingPrecision::ALL {
            let records = format::encode_with(&body, precision).unwrap();
            let bytes = format::encode_aligned(&body, precision).unwrap();
            let want = Model::from_bytes(&records).unwrap();
            assert_eq!(format::decode(&bytes).unwrap(), format::decode(&records).unwrap());
            let copied = Model::from_bytes(&bytes).unwrap();
            let in_place = Model::from_static(leaked(&bytes, 0)).unwrap();
            let unaligned = Model::from_static(leaked(&bytes, 1)).unwrap();
            for model in [&copied, &in_place, &unaligned] {
                assert_eq!(model.to_body(), want.to_body(), "{precision:?}");
                for i in 0..want.item_count() as u32 {
                    let id = want.item_id(i).unwrap();
                    assert_eq!(model.item_id(i), Some(id));
                    assert_eq!(model.item_index(id), Some(i));
                }
                assert_eq!(model.item_index("m4"), None);
            }
            if cfg!(target_endian = "little") {
                assert_eq!(in_place.catalogue_bytes().0, 0, "in place: no catalogue copy");
            }
            assert!(copied.catalogue_bytes().0 > 0 && unaligned.catalogue_bytes().0 > 0);
            if want.factors().is_none() {
                let scores = all_scores(&mut session(&want));
                assert_eq!(all_scores(&mut session(&in_place)), scores);
                assert_eq!(all_scores(&mut session(&copied)), scores);
            }
        }
    }
}

/// The tables as a trailer: every cut is malformed, a byte more is left over, every byte set to
/// every value loads or is refused (never a panic), and each rule has its error.
#[test]
fn damaged_tables_are_refused() {
    let mut body = tiny_body();
    let good = aligned(&body);
    body.items.clear();
    let plain_len = format::encode(&body).unwrap().len() - HEADER_LEN;
    let flags = required::ALIGNED_TABLES;
    let trailer = Trailer { good: &good, plain_len, flags, name: "aligned tables" };
    trailer.assert_cuts_and_extension_refused();
    trailer.assert_no_byte_panics();
    let at = |table_offset: usize| tables_start(&good) - HEADER_LEN - plain_len + table_offset;
    let bad = Error::InconsistentDimensions;
    let directory = 4; // items, id bytes, rows (one varint byte each), offsets present
    if at(0) > directory {
        trailer.edit(directory, &[1], Error::MalformedBody);
    }
    trailer.edit(at(20), &12u32.to_le_bytes(), bad); // the last id ends before the id bytes do
    trailer.edit(at(0), &5u32.to_le_bytes(), bad); // the first id ends after the second
    trailer.edit(at(24), &le(&[2, 1]), bad); // by_id out of order
    trailer.edit(at(24), &6u32.to_le_bytes(), bad); // by_id past the items
    trailer.edit(at(48), &5u32.to_le_bytes(), bad); // row past "rated"'s 5 rows
    trailer.edit(at(48 + 4), &4u32.to_le_bytes(), bad); // row past "genres"'s 4 rows
    trailer.edit(at(104 + 8), &0u32.to_le_bytes(), bad); // offsets going back
    trailer.edit(at(104 + 48), &13u32.to_le_bytes(), bad); // offsets ending before the rows do
    trailer.edit(at(104 + 8), &3u32.to_le_bytes(), bad); // the second item's "rated" without rows
    trailer.edit(at(156), &[0xff], bad); // an id that is not UTF-8
    trailer.edit(at(156 + 2), b"m3", bad); // a duplicate id
                                           // A reader that knows the flags up to 2.3's refuses the file by name.
    let known_by_2_3 = required::KNOWN & !required::ALIGNED_TABLES;
    assert_eq!(known_by_2_3, (1 << 10) - 1);
    assert_ne!(flags & !known_by_2_3, 0);
}

/// The writer refuses an item without one row list per item field (the arrays could not say
/// which rows are whose).
#[test]
fn the_writer_refuses_items_it_cannot_lay_out() {
    let mut body = tiny_body();
    body.items[2].rows.pop();
    assert_eq!(format::encode_aligned(&body, EmbeddingPrecision::F32), Err(Error::InconsistentDimensions));
}
