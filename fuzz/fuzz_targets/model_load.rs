//! The model loader: any bytes given to `Model::from_bytes` give Ok or an error, never a panic;
//! a model that loads serves a whole session (profile, ratings, adaptation, scoring) without
//! panicking, and the same verdict whether it comes from its file or from its decoded body.
//!
//! The first byte picks the mode: even — the rest is a whole file, loaded both copied and in
//! place (`Model::from_bytes_borrowed`, the aligned layout of 2.4), with the same verdict and
//! model; odd — the rest is a body,
//! wrapped in a header with valid checksums, flags and schema hash so that mutations reach the
//! decoder and the validation instead of stopping at the CRC. A body followed by exactly one
//! `StoredFactors` (a matrix factorisation's item biases and factors) gets the `FACTORS` flag,
//! so mutations reach the fold-in's validation too; one followed by exactly one `ProductModel`
//! that uses any of its parts (item biases, an adaptation scope, a proximal term), and possibly
//! one `StoredFoldIn` after it (a fold-in head's ridge weights and item factors), gets that
//! model's 2.3 flags, so mutations reach its validation, scoring, scoped adaptation and fold-in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metarec_runtime::format::{
    self, FactorValues, Factors, FoldInHead, ModelBody, ProductModel, StoredFactors, StoredFoldIn, HEADER_LEN,
};
use metarec_runtime::{contribution, factors, Error, Model, Session, MAX_STEPS};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Any bytes: a contribution decodes or is refused, never panics.
    let _ = contribution::decode(rest);
    if mode % 2 == 0 {
        let loaded = Model::from_bytes(rest);
        // SAFETY: `rest` is alive and unchanged until the end of this block, where the model
        // is dropped.
        let borrowed = unsafe { Model::from_bytes_borrowed(rest) };
        assert_eq!(loaded.as_ref().err(), borrowed.as_ref().err(), "copied and in-place verdicts differ");
        if let (Ok(model), Ok(borrowed)) = (loaded, borrowed) {
            assert_eq!(model.to_body(), borrowed.to_body(), "copied and in-place models differ");
            exercise(&model, rest);
            exercise(&borrowed, rest);
        }
        return;
    }
    let decoded = postcard::take_from_bytes::<ModelBody>(rest).ok();
    // What follows the body, when it is exactly a factor model's factors.
    let stored = decoded.as_ref().and_then(|(_, unread)| match postcard::take_from_bytes::<StoredFactors>(unread) {
        Ok((stored, [])) if !unread.is_empty() => Some(stored),
        _ => None,
    });
    // Otherwise, when it is exactly a product model's parts (that the flags announce), possibly
    // followed by a fold-in head (its flag added; `head` holds it when its factors are f32, so
    // that the body can be built directly).
    let product =
        decoded.as_ref().filter(|_| stored.is_none()).and_then(|(_, unread)| {
            match postcard::take_from_bytes::<ProductModel>(unread) {
                Ok((product, [])) if product.required_features() != 0 => Some((product, None)),
                Ok((product, rest)) if product.required_features() != 0 => {
                    match postcard::take_from_bytes::<StoredFoldIn>(rest) {
                        Ok((head, [])) => Some((product, Some(head))),
                        _ => None,
                    }
                }
                _ => None,
            }
        });
    let mut extra = if stored.is_some() { format::required::FACTORS } else { 0 };
    if let Some((product, head)) = &product {
        extra |= product.required_features();
        if head.is_some() {
            extra |= format::required::FOLD_IN;
        }
    }
    let file = seal(rest, decoded.as_ref().map(|(body, _)| body), extra);
    let loaded = Model::from_bytes(&file);
    if let Some((mut body, unread)) = decoded {
        if unread.is_empty() {
            // The file and its decoded body get the same verdict.
            let direct = Model::from_body(body);
            assert_eq!(loaded.as_ref().err(), direct.as_ref().err(), "file and body verdicts differ");
        } else if let Some(stored) = stored {
            // Likewise with the factors, when they are stored in f32 (compact ones are widened
            // by the format, which may refuse them first).
            if let FactorValues::F32(item_factors) = stored.item_factors {
                body.factors = Some(Factors {
                    factors: stored.factors,
                    regularisation: stored.regularisation,
                    bias_regularisation: stored.bias_regularisation,
                    item_bias: stored.item_bias,
                    item_factors,
                });
                let direct = Model::from_body(body);
                assert_eq!(loaded.as_ref().err(), direct.as_ref().err(), "file and factor body verdicts differ");
            }
        } else if let Some((product, head)) = product {
            body.product = product;
            match head.map(|head| (head.factors, head.ridge, head.item_factors)) {
                None => {}
                Some((factors, ridge, FactorValues::F32(item_factors))) => {
                    body.product.fold_in = Some(FoldInHead { factors, ridge, item_factors });
                }
                // Compact factors are widened by the format, which may refuse them first.
                Some((_, _, FactorValues::Compact(_))) => body.product.fold_in = None,
            }
            if body.product.fold_in.is_some() || extra & format::required::FOLD_IN == 0 {
                let direct = Model::from_body(body);
                assert_eq!(loaded.as_ref().err(), direct.as_ref().err(), "file and product body verdicts differ");
            }
        } else {
            assert_eq!(loaded.as_ref().err(), Some(&Error::TrailingBytes));
        }
    }
    if let Ok(model) = loaded {
        // A model that loads survives a round trip through its own encoding.
        let again = format::encode(&model.to_body()).expect("a loaded model encodes");
        assert_eq!(Model::from_bytes(&again).expect("its encoding loads").to_body(), model.to_body());
        exercise(&model, rest);
    }
});

/// A 2.x header with correct checksums around `body`; flags and schema hash from the decoded
/// body when there is one, plus `extra` (the flags of what follows it).
fn seal(body: &[u8], decoded: Option<&ModelBody>, extra: u32) -> Vec<u8> {
    let (mut flags, hash) = decoded.map_or((0, 0), |b| (b.required_features(), format::schema_hash(b)));
    flags |= extra;
    let mut file = Vec::with_capacity(HEADER_LEN + body.len());
    file.extend_from_slice(&format::MAGIC);
    file.extend_from_slice(&format::FORMAT_MAJOR.to_le_bytes());
    file.extend_from_slice(&format::FORMAT_MINOR.to_le_bytes());
    file.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    file.extend_from_slice(&flags.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&hash.to_le_bytes());
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast_hash(body).to_le_bytes());
    let crc = crc32fast_hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(body);
    file
}

/// CRC32 (IEEE), bitwise: the fuzz crate keeps its dependencies to the project's own.
fn crc32fast_hash(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Runs a session on a model that loaded: every call returns Ok or a documented error.
fn exercise(model: &Model, seed: &[u8]) {
    let mut session = Session::new(model);
    let pick = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0) as usize;
    let body = model.body();
    for (i, field) in body.user_fields.iter().enumerate() {
        let value = match field.vocabulary.len() {
            0 => "30".to_owned(),
            n => field.vocabulary[pick(i) % n].clone(),
        };
        session.set_profile(&field.name, &value).unwrap();
    }
    if !body.user_fields.iter().any(|field| field.name.is_empty()) {
        assert_eq!(session.set_profile("", "x"), Err(Error::UnknownField));
    }
    let count = model.item_count();
    let all: Vec<u32> = (0..count as u32).collect();
    let mut before = vec![0.0; count];
    session.score_indices(&all, &mut before).unwrap();
    let scale = body.rating;
    for j in 0..count.min(12) {
        let t = pick(j + 7) as f32 / 255.0;
        let rating = (scale.min + t * (scale.max - scale.min)).clamp(scale.min, scale.max);
        session.add_rating(model.item_id(j as u32).expect("an item in range"), rating).unwrap();
    }
    // The item is checked first: a catalogue without items has no index 0.
    let refused = if count == 0 { Error::UnknownItem } else { Error::InvalidRating };
    assert_eq!(session.add_rating_by_index(0, f32::NAN), Err(refused));
    // Keep an execution short: the model's own step count when small, else a few steps.
    let steps = body.adaptation.inner_steps;
    adapted(model, session.adapt_steps(steps.min(16)));
    assert_eq!(session.adapt_steps(MAX_STEPS + 1), Err(Error::TooManySteps));
    let mut by_index = vec![0.0; count];
    session.score_indices(&all, &mut by_index).unwrap();
    let ids: Vec<&str> = (0..count as u32).map(|i| model.item_id(i).expect("an item in range")).collect();
    let mut by_id = vec![0.0; count];
    session.score_ids(&ids, &mut by_id).unwrap();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&by_index, &by_id), "scores by index and by id differ");
    if let Some(&first) = all.first() {
        let one = session.predict(first).unwrap();
        assert_eq!(one.to_bits(), by_index[0].to_bits(), "predict differs from a batch score");
    }
    check_top_k(&mut session, &by_index, pick(3) % (count + 2));
    // Adapting again from scratch gives the same weights (or the same refusal).
    adapted(model, session.adapt_steps(steps.min(16)));
    let mut again = vec![0.0; count];
    session.score_indices(&all, &mut again).unwrap();
    assert!(same(&by_index, &again), "adaptation is not repeatable");
    check_fold_in(model, &session, &by_index);
    check_contribution(&mut session, 0.01 + pick(5) as f32 / 16.0);
    let _ = session.memory_bytes();
    session.clear_ratings();
    let mut after = vec![0.0; count];
    session.score_indices(&all, &mut after).unwrap();
    assert!(same(&before, &after), "clearing the ratings does not restore the meta-learned scores");
}

/// A contribution decodes, is bound to the model and stays within its clip norm, or is one of the
/// documented refusals (a model without a gradient inner loop, too few ratings, an overflow).
fn check_contribution(session: &mut Session<&Model>, clip: f32) {
    let was_adapted = session.is_adapted();
    let computed = match session.contribute(clip) {
        Ok(blob) => {
            assert_eq!(blob.len(), session.contribution_len());
            let decoded = contribution::decode(&blob).expect("a contribution decodes");
            assert_eq!(decoded.model_id, contribution::model_id(session.model()));
            let norm = decoded.update.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
            assert!(norm <= f64::from(clip) * (1.0 + 1e-5), "norm {norm} above the clip {clip}");
            true
        }
        Err(Error::NonFiniteParameter) => true,
        Err(Error::NotContributable | Error::TooFewRatings) => false,
        Err(other) => panic!("contribution failed: {other}"),
    };
    // A computed contribution drops the adaptation; a refusal before computing changes nothing.
    let expected = !computed && was_adapted;
    assert_eq!(session.is_adapted(), expected, "adaptation state after a contribution");
}

/// An adaptation succeeds, but for a fold-in head's, whose system may not be positive definite
/// in f64 for extreme features (validation cannot bound the hidden layer's activations): then
/// [`Error::NonFiniteParameter`], the session back at the meta-learned weights.
fn adapted(model: &Model, result: Result<(), Error>) {
    match result {
        Ok(()) => {}
        Err(Error::NonFiniteParameter) if model.fold_in_head().is_some() => {}
        Err(other) => panic!("adaptation failed: {other}"),
    }
}

/// `top_k` ranks the scores `score_indices` gave: the first `k` candidates of a full sort (score
/// descending, NaN last, ties to the lower index), rated items left out on request, scores to
/// the bit.
fn check_top_k(session: &mut Session<&Model>, scores: &[f32], k: usize) {
    let rated: Vec<u32> = session.support().iter().map(|&(item, _)| item).collect();
    let order = |&a: &u32, &b: &u32| {
        let (x, y) = (scores[a as usize], scores[b as usize]);
        let by_score = match (x.is_nan(), y.is_nan()) {
            (false, false) => y.partial_cmp(&x).unwrap(),
            (nan_x, nan_y) => nan_x.cmp(&nan_y),
        };
        by_score.then(a.cmp(&b))
    };
    for exclude_rated in [false, true] {
        let mut expected: Vec<u32> =
            (0..scores.len() as u32).filter(|i| !exclude_rated || !rated.contains(i)).collect();
        expected.sort_by(order);
        expected.truncate(k);
        let top = session.top_k(k, exclude_rated).unwrap();
        assert_eq!(top.iter().map(|r| r.item).collect::<Vec<_>>(), expected, "top-k order");
        for r in top {
            assert_eq!(r.score.to_bits(), scores[r.item as usize].to_bits(), "top-k score of item {}", r.item);
        }
    }
}

/// A factor model's adaptation is the runtime's ridge solve over the support, and its scores are
/// `factors::predict` of the solved user, to the bit (clamped for a click model); the explanation
/// says so. A fold-in head explains its solve over the whole support once it adapted; models that
/// take gradient steps explain no fold-in.
fn check_fold_in(model: &Model, session: &Session<&Model>, scores: &[f32]) {
    let explanation = session.explain();
    let Some(factors) = model.factors() else {
        match (model.fold_in_head(), explanation.fold_in) {
            (Some(_), Some(fold_in)) => {
                assert!(explanation.adapted, "a fold-in explained before any adaptation");
                assert_eq!(fold_in.support as usize, session.support().len());
                assert!(fold_in.regularisation >= 0.0 && fold_in.bias_regularisation >= 0.0, "ridge weights");
            }
            (Some(_), None) => {}
            (None, fold_in) => assert!(fold_in.is_none(), "a fold-in explained on a model that steps"),
        }
        return;
    };
    let body = model.body();
    assert!(explanation.learning_rate.is_none() && explanation.neighbours.is_empty());
    let mut user = vec![0.0; factors.factors as usize + 1];
    match explanation.fold_in {
        Some(fold_in) => {
            assert!(explanation.adapted);
            assert_eq!(fold_in.support as usize, session.support().len());
            assert_eq!(fold_in.regularisation, factors.regularisation);
            assert_eq!(fold_in.bias_regularisation, factors.bias_regularisation);
            let mut ridge = factors::Ridge::default();
            factors::fold_in(factors, body.rating.global_mean, session.support(), &mut ridge, &mut user)
                .expect("a validated model's fold-in solves");
            assert_eq!(fold_in.user_bias.to_bits(), user[0].to_bits(), "explained bias differs");
        }
        None => assert!(!explanation.adapted, "a factor model adapted without a fold-in"),
    }
    for (item, score) in scores.iter().enumerate() {
        let mut want = factors::predict(factors, body.rating.global_mean, &user, item as u32);
        if model.is_click() {
            want = want.clamp(metarec_runtime::CLICK_FACTOR_FLOOR, 1.0 - metarec_runtime::CLICK_FACTOR_FLOOR);
        }
        assert_eq!(score.to_bits(), want.to_bits(), "fold-in score of item {item} differs");
    }
}
