//! Federated contributions: the device's FOMAML meta-gradient against the f64 finite-difference
//! reference, clipping, the blob's format and its refusals.

use metarec_runtime::contribution::{self, DecodeError, HEADER_LEN};
use metarec_runtime::format::{schema_hash, Adapt};
use metarec_runtime::resample;
use metarec_runtime::{Error, Model};

use crate::fixture::{
    fd_adapt, fd_gradient, input, params_of, session, tiny_body, tiny_factor_body, user_rows, user_session, SUPPORT,
};

/// The reference: adapt on the split's support part with finite-difference descent, then the
/// finite-difference gradient of the query part at the adapted weights, flattened per layer
/// (weights, then biases).
fn reference_update(body: &metarec_runtime::ModelBody) -> Vec<f64> {
    // The device salts the split with the model id (a new split every round).
    let salt = contribution::model_id(&Model::from_body(body.clone()).unwrap());
    let (support, query) = resample::split_salted(SUPPORT.len(), salt);
    let part = |mask: &[bool]| -> (Vec<Vec<f64>>, Vec<f64>) {
        SUPPORT
            .iter()
            .zip(mask)
            .filter(|(_, &m)| m)
            .map(|(&(i, r), _)| (input(body, &user_rows(), i as usize), r as f64))
            .unzip()
    };
    let (xs, rs) = part(&support);
    let adapted = fd_adapt(&params_of(body), &xs, &rs, body.adaptation.inner_lr as f64, body.adaptation.inner_steps);
    let (xq, rq) = part(&query);
    fd_gradient(&adapted, &xq, &rq).into_iter().flat_map(|(w, b)| w.into_iter().chain(b)).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
}

#[test]
fn the_update_is_the_query_gradient_at_the_support_adapted_weights() {
    for (lr, steps) in [(0.05, 1), (0.02, 3), (0.5, 2)] {
        let mut body = tiny_body();
        body.adaptation.inner_lr = lr;
        body.adaptation.inner_steps = steps;
        let model = Model::from_body(body.clone()).unwrap();
        let blob = session(&model).contribute(1e6).unwrap();
        let decoded = contribution::decode(&blob).unwrap();
        let expected = reference_update(&body);
        assert_eq!(decoded.update.len(), expected.len());
        assert!(expected.iter().any(|v| v.abs() > 1e-3), "a vacuous reference");
        for (k, (a, e)) in decoded.update.iter().zip(&expected).enumerate() {
            assert!((*a as f64 - e).abs() < 1e-4, "lr {lr} steps {steps} parameter {k}: {a} vs {e}");
        }
    }
}

#[test]
fn the_blob_is_bound_to_the_model_and_carries_nothing_else() {
    let body = tiny_body();
    let model = Model::from_body(body.clone()).unwrap();
    let mut s = session(&model);
    let blob = s.contribute(0.5).unwrap();
    assert_eq!(blob.len(), s.contribution_len());
    let params: usize = body.layers.iter().map(|l| l.weight.len() + l.bias.len()).sum();
    assert_eq!(blob.len(), HEADER_LEN + 4 * params + 4, "header, values and CRC only");
    let decoded = contribution::decode(&blob).unwrap();
    // A model adapted by steps writes version 1, byte for byte what earlier runtimes wrote.
    assert_eq!(decoded.version, contribution::VERSION_MLP);
    assert_eq!(blob[4..6], [1, 0]);
    assert_eq!(decoded.model_id, contribution::model_id(&model));
    assert_eq!(decoded.schema_hash, schema_hash(&body));
    assert_eq!(decoded.clip_norm, 0.5);
    // Deterministic: the same ratings give the same bytes, and the session is left un-adapted.
    assert!(!s.is_adapted());
    assert_eq!(s.contribute(0.5).unwrap(), blob);
    // The model keeps its ids after the first contribution: the kept words are the same ids.
    assert_eq!(model.contribution_ids(), (decoded.model_id, decoded.schema_hash));
    // Another model (one weight moved, as a server step does) has another id.
    let mut next = body.clone();
    next.layers[0].bias[0] += 1e-3;
    assert_ne!(contribution::model_id(&Model::from_body(next).unwrap()), decoded.model_id);
}

#[test]
fn clipping_bounds_the_norm_and_leaves_small_updates_alone() {
    let model = Model::from_body(tiny_body()).unwrap();
    let full = contribution::decode(&session(&model).contribute(1e6).unwrap()).unwrap().update;
    let n = norm(&full);
    assert!(n > 1e-3);
    for s in [n * 0.01, n * 0.5, n * 0.999] {
        let clipped = contribution::decode(&session(&model).contribute(s as f32).unwrap()).unwrap().update;
        let c = norm(&clipped);
        assert!(c <= s * (1.0 + 1e-6), "norm {c} above the clip {s}");
        assert!(c >= s * (1.0 - 1e-5), "norm {c} well below the clip {s}");
        // Same direction.
        let cos = full.iter().zip(&clipped).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>() / (n * c);
        assert!(cos > 1.0 - 1e-6, "direction changed: cos {cos}");
    }
    let same = contribution::decode(&session(&model).contribute((n * 1.01) as f32).unwrap()).unwrap().update;
    assert_eq!(same, full, "an update under the clip is not touched");
}

#[test]
fn zero_and_non_finite_vectors_clip_without_nan() {
    let mut zero = vec![0.0f32; 8];
    assert_eq!(contribution::clip(&mut zero, 1.0), 0.0);
    assert!(zero.iter().all(|v| *v == 0.0));
    let mut huge = vec![f32::MAX; 4];
    contribution::clip(&mut huge, 2.0);
    assert!(huge.iter().all(|v| v.is_finite()) && norm(&huge) <= 2.0 * (1.0 + 1e-6), "{huge:?}");
    let mut nan = vec![1.0, f32::NAN];
    contribution::clip(&mut nan, 1.0);
    assert_eq!(nan, vec![0.0, 0.0]);
}

#[test]
fn bad_arguments_and_models_are_typed_errors() {
    let model = Model::from_body(tiny_body()).unwrap();
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_eq!(session(&model).contribute(bad), Err(Error::InvalidClipNorm), "{bad}");
    }
    // A refusal before computing leaves an adapted session adapted; a contribution drops it.
    let mut adapted = session(&model);
    adapted.adapt().unwrap();
    assert_eq!(adapted.contribute(f32::NAN), Err(Error::InvalidClipNorm));
    assert!(adapted.is_adapted());
    adapted.contribute(1.0).unwrap();
    assert!(!adapted.is_adapted());
    let mut one = user_session(&model);
    assert_eq!(one.contribute(1.0), Err(Error::TooFewRatings));
    one.add_rating_by_index(0, 4.0).unwrap();
    assert_eq!(one.contribute(1.0), Err(Error::TooFewRatings));
    one.add_rating_by_index(1, 2.0).unwrap();
    assert!(one.contribute(1.0).is_ok());

    let factors = Model::from_body(tiny_factor_body()).unwrap();
    assert_eq!(session(&factors).contribute(1.0), Err(Error::NotContributable));
    let mut head = tiny_body();
    head.product.adapt = Adapt::Head;
    if let Ok(model) = Model::from_body(head) {
        assert_eq!(session(&model).contribute(1.0), Err(Error::NotContributable));
    }
    let mut no_steps = tiny_body();
    no_steps.adaptation.inner_steps = 0;
    let model = Model::from_body(no_steps).unwrap();
    assert_eq!(session(&model).contribute(1.0), Err(Error::NotContributable));
}

#[test]
fn tampered_truncated_and_foreign_blobs_are_refused() {
    let model = Model::from_body(tiny_body()).unwrap();
    let blob = session(&model).contribute(1.0).unwrap();
    assert!(contribution::decode(&blob).is_ok());
    for at in [0, 5, 9, 20, 25, HEADER_LEN + 1, blob.len() - 1] {
        let mut bad = blob.clone();
        bad[at] ^= 0x10;
        assert!(contribution::decode(&bad).is_err(), "a flipped byte at {at} passed");
    }
    let mut flipped = blob.clone();
    flipped[HEADER_LEN + 2] ^= 1;
    assert_eq!(contribution::decode(&flipped), Err(DecodeError::ChecksumMismatch));
    assert_eq!(contribution::decode(&blob[..blob.len() - 1]), Err(DecodeError::Truncated));
    assert_eq!(contribution::decode(&[]), Err(DecodeError::Truncated));
    let mut magic = blob.clone();
    magic[0] = b'X';
    assert_eq!(contribution::decode(&magic), Err(DecodeError::BadMagic));
    // A well-formed blob of a version this runtime does not know.
    let mut v3 = blob[..blob.len() - 4].to_vec();
    v3[4] = 3;
    let crc = crc32fast::hash(&v3);
    v3.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(contribution::decode(&v3), Err(DecodeError::UnsupportedVersion));
    // Non-finite values, correctly sealed.
    let nan = contribution::encode(1, 2, 1.0, &[0.0, f32::NAN]);
    assert_eq!(contribution::decode(&nan), Err(DecodeError::NonFinite));
    // Decoding never panics on prefixes or garbage.
    for len in 0..blob.len() {
        let _ = contribution::decode(&blob[..len]);
    }
}
