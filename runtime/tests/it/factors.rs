//! Matrix factorisation with fold-in: the ridge solve against an independent reference, the
//! session on a factor model (no ratings, duplicates, extremes, the most ratings a session
//! takes), the file (golden bytes, compact tables) and what validation refuses.

use metarec_runtime::factors::{Ridge, MAX_FACTORS};
use metarec_runtime::format::{self, required, EmbeddingPrecision, Method};
use metarec_runtime::{Error, Model, Session, MAX_SUPPORT_RATINGS};

use crate::fixture::{
    assert_matches_golden, golden_path, reference_fold_in, reference_score, tiny_body, tiny_factor_body, Lcg,
};

fn model() -> Model {
    Model::from_body(tiny_factor_body()).expect("the factor fixture is valid")
}

fn scores(session: &mut Session<&Model>) -> Vec<f32> {
    let items: Vec<u32> = (0..session.model().item_count() as u32).collect();
    let mut out = vec![0.0; items.len()];
    session.score_indices(&items, &mut out).unwrap();
    out
}

fn assert_fold_in_matches_reference(model: &Model, support: &[(u32, f32)]) {
    let mut session = Session::new(model);
    for &(item, r) in support {
        session.add_rating_by_index(item, r).unwrap();
    }
    session.adapt().unwrap();
    let factors = model.factors().unwrap();
    let mean = model.body().rating.global_mean;
    let user = reference_fold_in(factors, mean, support);
    for (item, got) in scores(&mut session).into_iter().enumerate() {
        let want = reference_score(factors, mean, &user, item as u32);
        assert!((f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0), "item {item}: {got} vs {want}");
    }
}

#[test]
fn ridge_solves_what_gaussian_elimination_solves() {
    let mut rng = Lcg::new(7);
    let mut ridge = Ridge::default();
    for case in 0..200 {
        let k = case % 7;
        let rows = (case * 13) % 31;
        let (reg, bias_reg) = (0.1 + (case % 5) as f32, 0.5 + (case % 3) as f32);
        ridge.reset(k, bias_reg, reg);
        let mut a = Vec::new();
        for _ in 0..rows {
            let v = rng.vec(k, 4.0);
            let t = rng.next_f32() * 8.0;
            ridge.add(&v, t);
            a.push((v, t));
        }
        assert_eq!(ridge.rows(), rows);
        let mut out = vec![0.0; k + 1];
        ridge.solve(&mut out).unwrap();
        // The gradient of the ridge objective vanishes at the solution.
        for d in 0..=k {
            let lambda = f64::from(if d == 0 { bias_reg } else { reg });
            let mut g = lambda * f64::from(out[d]);
            for (v, t) in &a {
                let x = |e: usize| if e == 0 { 1.0 } else { f64::from(v[e - 1]) };
                let fit: f64 = (0..=k).map(|e| x(e) * f64::from(out[e])).sum();
                g += x(d) * (fit - f64::from(*t));
            }
            assert!(g.abs() < 1e-3, "case {case}, unknown {d}: gradient {g}");
        }
    }
    let mut wrong = vec![0.0; 2];
    ridge.reset(3, 1.0, 1.0);
    assert_eq!(ridge.solve(&mut wrong), Err(Error::LengthMismatch));
}

#[test]
fn without_ratings_a_user_scores_mean_plus_item_bias() {
    let model = model();
    let mut session = Session::new(&model);
    let factors = model.factors().unwrap();
    let mean = model.body().rating.global_mean;
    let bias_only: Vec<f32> = factors.item_bias.iter().map(|b| mean + b).collect();
    assert_eq!(scores(&mut session), bias_only);
    session.adapt().unwrap();
    assert!(!session.is_adapted() && session.explain().fold_in.is_none());
    assert_eq!(scores(&mut session), bias_only);
    // The profile is accepted (the schema is the dataset's) and changes nothing.
    session.set_profile("gender", "F").unwrap();
    session.set_profile("age", "31").unwrap();
    assert_eq!(scores(&mut session), bias_only);
    assert_eq!(session.set_profile("nope", "x"), Err(Error::UnknownField));
}

#[test]
fn fold_in_matches_the_reference_for_any_support() {
    let model = model();
    let (min, max) = (model.body().rating.min, model.body().rating.max);
    assert_fold_in_matches_reference(&model, &[(0, 4.0)]);
    assert_fold_in_matches_reference(&model, &[(1, 5.0), (3, 2.0), (4, 3.5), (2, 1.0)]);
    // Duplicates, the scale's extremes, and the item without factors.
    assert_fold_in_matches_reference(&model, &[(1, max), (1, min), (1, max), (5, min), (5, max)]);
    // The most ratings a session takes, all at one extreme.
    let many: Vec<(u32, f32)> =
        (0..MAX_SUPPORT_RATINGS).map(|j| ((j % 6) as u32, if j % 3 == 0 { min } else { max })).collect();
    assert_fold_in_matches_reference(&model, &many);
}

#[test]
fn adaptation_is_explained_repeatable_and_dropped_on_change() {
    let model = model();
    let mut session = Session::new(&model);
    for (item, r) in [("m1", 5.0), ("m2", 1.0), ("m1", 4.0)] {
        session.add_rating(item, r).unwrap();
    }
    let before = scores(&mut session);
    session.adapt_steps(0).unwrap();
    assert!(!session.is_adapted());
    session.adapt().unwrap();
    let adapted = scores(&mut session);
    assert_ne!(adapted, before);
    let explained = session.explain().clone();
    assert!(explained.adapted && explained.learning_rate.is_none() && explained.neighbours.is_empty());
    let fold_in = explained.fold_in.unwrap();
    assert_eq!((fold_in.support, fold_in.regularisation, fold_in.bias_regularisation), (3, 2.0, 1.0));
    assert!(fold_in.user_bias.is_finite() && fold_in.user_bias != 0.0);
    // Any step count solves the same system; adapting twice gives the same scores.
    session.adapt_steps(7).unwrap();
    assert_eq!(scores(&mut session), adapted);
    session.clear_ratings();
    assert!(!session.is_adapted());
    assert_eq!(scores(&mut session), before.iter().map(|_| 0.0).zip(&before).map(|(_, b)| *b).collect::<Vec<_>>());
    assert!(session.memory_bytes() > 0);
}

#[test]
fn click_factor_models_score_probabilities() {
    let mut body = tiny_factor_body();
    body.task = format::Task::Click { threshold: 4.0 };
    body.rating = format::RatingScale { min: 0.0, max: 1.0, global_mean: 0.4 };
    let factors = body.factors.as_mut().unwrap();
    factors.item_bias[0] = 3.0;
    factors.item_bias[1] = -3.0;
    let model = Model::from_bytes(&format::encode(&body).unwrap()).unwrap();
    let mut session = Session::new(&model);
    for (item, label) in [(0, 1.0), (2, 0.0), (3, 1.0)] {
        session.add_rating_by_index(item, label).unwrap();
    }
    assert_eq!(session.add_rating_by_index(0, 2.0), Err(Error::InvalidRating));
    session.adapt().unwrap();
    let floor = metarec_runtime::CLICK_FACTOR_FLOOR;
    let got = scores(&mut session);
    assert!(got.iter().all(|p| (floor..=1.0 - floor).contains(p)), "{got:?}");
    assert_eq!((got[0], got[1]), (1.0 - floor, floor));
}

#[test]
fn factor_model_matches_its_golden_file() {
    let bytes = format::encode(&tiny_factor_body()).unwrap();
    let path = golden_path("tiny-mf.mrec");
    assert_matches_golden(&path, &bytes);
    // Format 2.2, the factors flag alone, and the MLP model's schema hash (same fields).
    assert_eq!(&bytes[8..12], &[0x02, 0x00, 0x02, 0x00]);
    assert_eq!(&bytes[16..20], &required::FACTORS.to_le_bytes());
    assert_eq!(required::FACTORS, 1 << 6);
    assert_eq!(format::schema_hash(&tiny_factor_body()), format::schema_hash(&tiny_body()));
    let model = Model::from_path(&path).unwrap();
    assert_eq!(&model.to_body(), &tiny_factor_body());
    assert_eq!(model.body().method, Method::Mf);
    // A file without factors is still stamped 2.1, byte for byte as before.
    assert_eq!(&format::encode(&tiny_body()).unwrap()[8..12], &[0x02, 0x00, 0x01, 0x00]);
}

#[test]
fn compact_factor_tables_round_within_their_precision() {
    let body = tiny_factor_body();
    let exact = body.factors.clone().unwrap();
    let full = format::encode(&body).unwrap().len();
    for (precision, tolerance) in [(EmbeddingPrecision::F16, 1e-3f32), (EmbeddingPrecision::Int8, 0.75 / 127.0)] {
        let bytes = format::encode_with(&body, precision).unwrap();
        assert!(bytes.len() < full, "{precision:?}: {} >= {full}", bytes.len());
        let model = Model::from_bytes(&bytes).unwrap();
        let got = model.factors().unwrap();
        assert_eq!(got.item_bias, exact.item_bias, "biases stay f32");
        for (a, b) in got.item_factors.iter().zip(&exact.item_factors) {
            assert!((a - b).abs() <= tolerance, "{precision:?}: {a} vs {b}");
        }
        assert_fold_in_matches_reference(&model, &[(0, 5.0), (1, 2.0), (4, 3.0)]);
    }
}

#[test]
fn validation_refuses_inconsistent_factor_models() {
    let check = |change: &dyn Fn(&mut metarec_runtime::ModelBody), want: Error| {
        let mut body = tiny_factor_body();
        change(&mut body);
        assert_eq!(Model::from_body(body.clone()).unwrap_err(), want);
        if let Ok(bytes) = format::encode(&body) {
            assert!(Model::from_bytes(&bytes).is_err());
        }
    };
    let bad = Error::InconsistentDimensions;
    check(
        &|b| {
            f(b).item_bias.pop();
        },
        bad,
    );
    check(&|b| f(b).item_factors.push(0.0), bad);
    check(&|b| f(b).factors = MAX_FACTORS as u32 + 1, bad);
    check(&|b| b.embedding_dim = 4, bad);
    check(&|b| b.layers = tiny_body().layers, bad);
    check(&|b| b.method = Method::Melu, bad);
    check(&|b| b.user_fields[0].embedding = vec![0.0; 12], bad);
    check(&|b| b.factors = None, bad);
    let non_finite = Error::NonFiniteParameter;
    check(&|b| f(b).item_factors[2] = f32::NAN, non_finite);
    check(&|b| f(b).item_bias[1] = f32::INFINITY, non_finite);
    check(&|b| f(b).regularisation = 0.0, non_finite);
    check(&|b| f(b).bias_regularisation = -1.0, non_finite);
    check(&|b| f(b).regularisation = f32::NAN, non_finite);
    // Factors so large against λ that the solve could lose positive definiteness in rounding.
    check(&|b| f(b).item_factors[0] = 1e6, non_finite);
    // A MeLU body claiming factors.
    let mut body = tiny_body();
    body.factors = tiny_factor_body().factors;
    assert_eq!(Model::from_body(body).unwrap_err(), bad);
}

/// The factors of a body that has them.
fn f(body: &mut metarec_runtime::ModelBody) -> &mut format::Factors {
    body.factors.as_mut().expect("a factor body")
}
