//! `Model::from_body` rejects every inconsistent or non-finite body, without panicking.

use metarec_runtime::format::{FieldKind, ModelBody};
use metarec_runtime::{Error, Model};

use crate::fixture::tiny_body;

fn check(mutate: impl FnOnce(&mut ModelBody), expected: Error) {
    let mut body = tiny_body();
    mutate(&mut body);
    assert_eq!(Model::from_body(body).unwrap_err(), expected);
}

const DIMS: Error = Error::InconsistentDimensions;
const FINITE: Error = Error::NonFiniteParameter;

#[test]
fn tiny_body_is_valid() {
    let model = Model::from_body(tiny_body()).unwrap();
    assert_eq!(model.input_width(), 16);
    assert_eq!(model.user_field_count(), 2);
    assert_eq!(model.user_field_name(0), Some("gender"));
    assert_eq!(model.user_field_name(1), Some("age"));
    assert_eq!(model.user_field_name(2), None);
    assert_eq!(model.item_count(), 6);
}

#[test]
fn item_lookup_both_ways() {
    let model = Model::from_body(tiny_body()).unwrap();
    for (i, item) in tiny_body().items.iter().enumerate() {
        assert_eq!(model.item_index(&item.id), Some(i as u32));
        assert_eq!(model.item_id(i as u32), Some(item.id.as_str()));
    }
    assert_eq!(model.item_index("m4"), None);
    assert_eq!(model.item_index(""), None);
    assert_eq!(model.item_id(6), None);
    assert_eq!(model.item_id(u32::MAX), None);
}

#[test]
fn embedding_dim() {
    check(|b| b.embedding_dim = 0, DIMS);
    check(|b| b.embedding_dim = 3, DIMS);
    check(|b| b.embedding_dim = u32::MAX, DIMS);
}

#[test]
fn embedding_tables() {
    check(
        |b| {
            b.user_fields[0].embedding.pop();
        },
        DIMS,
    );
    check(|b| b.item_fields[1].embedding.push(0.0), DIMS);
    check(|b| b.user_fields[1].embedding[5] = f32::NAN, FINITE);
    check(|b| b.item_fields[0].embedding[0] = f32::INFINITY, FINITE);
}

#[test]
fn vocabularies_sorted_strictly() {
    check(|b| b.user_fields[0].vocabulary.swap(0, 1), DIMS);
    check(|b| b.item_fields[1].vocabulary[1] = "Action".into(), DIMS);
}

#[test]
fn numeric_bounds() {
    let set = |b: &mut ModelBody, bounds: Vec<f32>| {
        b.user_fields[1].kind = FieldKind::Numeric { bounds };
    };
    check(|b| set(b, vec![18.0, 50.0, 25.0, 35.0]), DIMS);
    check(|b| set(b, vec![18.0, f32::NAN, 25.0, 35.0]), FINITE);
    check(|b| set(b, vec![18.0, 25.0, 35.0, f32::INFINITY]), FINITE);
    // Same row count, repeated bound: allowed (an empty bucket).
    let mut body = tiny_body();
    set(&mut body, vec![18.0, 25.0, 25.0, 35.0]);
    assert!(Model::from_body(body).is_ok());
}

#[test]
fn layers() {
    check(|b| b.layers.clear(), DIMS);
    check(|b| b.layers[0].inputs = 15, DIMS);
    check(|b| b.layers[1].inputs = 5, DIMS);
    check(|b| b.layers[2].outputs = 2, DIMS);
    check(
        |b| {
            b.layers.pop();
        },
        DIMS,
    );
    check(
        |b| {
            b.layers[1].weight.pop();
        },
        DIMS,
    );
    check(|b| b.layers[2].bias.push(0.0), DIMS);
    check(|b| b.layers[1].outputs = 0, DIMS);
    check(
        |b| {
            b.layers[0].inputs = u32::MAX;
            b.layers[0].outputs = u32::MAX;
        },
        DIMS,
    );
    check(|b| b.layers[2].bias[0] = f32::NAN, FINITE);
    check(|b| b.layers[1].weight[0] = f32::NEG_INFINITY, FINITE);
}

#[test]
fn items() {
    check(
        |b| {
            b.items[0].rows.pop();
        },
        DIMS,
    );
    check(|b| b.items[0].rows.push(vec![0]), DIMS);
    check(|b| b.items[1].rows[0] = vec![], DIMS);
    check(|b| b.items[1].rows[0] = vec![1, 2], DIMS);
    check(|b| b.items[1].rows[0] = vec![5], DIMS);
    check(|b| b.items[1].rows[1] = vec![1, 4], DIMS);
    check(|b| b.items[1].rows[1] = vec![u32::MAX], DIMS);
    check(|b| b.items[4].id = "m3".into(), DIMS);
    // Empty catalogue is fine.
    let mut body = tiny_body();
    body.items.clear();
    assert_eq!(Model::from_body(body).unwrap().item_count(), 0);
}

#[test]
fn duplicate_user_field_names() {
    check(|b| b.user_fields[1].name = "gender".into(), DIMS);
}

#[test]
fn hyper_parameters() {
    check(|b| b.adaptation.inner_lr = f32::NAN, FINITE);
    check(|b| b.adaptation.inner_lr = -0.01, FINITE);
    check(|b| b.adaptation.inner_lr = f32::INFINITY, FINITE);
    check(|b| b.rating.min = f32::NEG_INFINITY, FINITE);
    check(|b| b.rating.max = f32::NAN, FINITE);
    check(|b| b.rating.global_mean = f32::INFINITY, FINITE);
    check(|b| b.rating.min = 5.0, DIMS);
    check(|b| b.rating.min = 6.0, DIMS);
    let mut body = tiny_body();
    body.adaptation.inner_lr = 0.0;
    body.adaptation.inner_steps = 0;
    assert!(Model::from_body(body).is_ok());
}
