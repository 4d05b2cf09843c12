//! The session's internals against their definitions: the analytic gradient against central
//! differences, the low-rank path against the full weights, click scoring, unset profile fields,
//! the ranking order, and the product model's scopes, proximal term and item biases.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use super::rank::{self, Ranked};
use super::Session;
use crate::error::Error;
use crate::format::{
    Adapt, Adaptation, DenseLayer, FieldKind, FieldSpec, FoldInHead, ItemRecord, LearningRate, Method, ModelBody,
    ProductModel, RatingScale, Task,
};
use crate::model::Model;

fn wave(n: usize, phase: f32, scale: f32) -> Vec<f32> {
    (0..n).map(|i| libm::sinf(i as f32 * 1.37 + phase) * scale).collect()
}

/// A small model body: two item fields (one multi-categorical), four items of one, two and no
/// rows in it. (Also the compact rows' test fixture.)
pub(crate) fn body() -> ModelBody {
    let field = |name: &str, kind, vocabulary: &[&str], phase| {
        let mut spec = FieldSpec {
            name: name.to_string(),
            kind,
            vocabulary: vocabulary.iter().map(|v| v.to_string()).collect(),
            embedding: Vec::new(),
        };
        spec.embedding = wave(spec.rows() * 3, phase, 1.0);
        spec
    };
    let layer = |inputs: u32, outputs: u32, phase| DenseLayer {
        inputs,
        outputs,
        weight: wave((inputs * outputs) as usize, phase, 0.8),
        bias: wave(outputs as usize, phase + 0.5, 0.1),
    };
    let item = |id: &str, a: u32, b: Vec<u32>| ItemRecord { id: id.to_string(), rows: vec![vec![a], b] };
    ModelBody {
        method: Method::Melu,
        task: Task::Rating,
        embedding_dim: 3,
        user_fields: vec![field("u", FieldKind::Categorical, &["a", "b"], 0.1)],
        item_fields: vec![
            field("c", FieldKind::Categorical, &["x", "y", "z"], 0.2),
            field("m", FieldKind::MultiCategorical { separator: '|' }, &["p", "q"], 0.3),
        ],
        items: vec![item("i0", 1, vec![1]), item("i1", 2, vec![1, 2]), item("i2", 3, vec![]), item("i3", 0, vec![2])],
        layers: vec![layer(9, 5, 0.4), layer(5, 4, 0.5), layer(4, 1, 0.6)],
        adaptation: Adaptation { inner_lr: 0.1, inner_steps: 2 },
        extra_inits: Vec::new(),
        learning_rate: LearningRate::Fixed,
        neighbours: None,
        rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.0 },
        factors: None,
        product: Default::default(),
    }
}

/// The support loss as the model defines it, from public predictions: MSE, or binary
/// cross-entropy of the predicted probabilities for a click model.
fn support_loss(session: &mut Session<&Model>) -> f64 {
    let support = session.support.clone();
    let click = session.model().is_click();
    let n = support.len() as f64;
    support
        .iter()
        .map(|&(item, r)| {
            let (y, r) = (session.predict(item).unwrap() as f64, r as f64);
            if click {
                -(r * y.ln() + (1.0 - r) * (1.0 - y).ln())
            } else {
                (y - r) * (y - r)
            }
        })
        .sum::<f64>()
        / n
}

fn assert_gradient_matches_central_differences(body: ModelBody, support: &[(u32, f32)]) {
    let model = Model::from_body(body).unwrap();
    let mut session = Session::new(&model);
    session.set_profile("u", "b").unwrap();
    for &(item, rating) in support {
        session.add_rating_by_index(item, rating).unwrap();
    }
    // The parameters are perturbed directly below: form every gradient and score with the
    // weights themselves, not the low-rank record.
    session.low_rank.materialize(&model, &mut session.params).unwrap();
    session.profile.refresh(&model).unwrap();
    session.support_gradient(None).unwrap();
    let analytic = session.adaptation.grads().to_vec();
    assert_eq!(analytic.len(), model.layout().param_len);
    let h = 1e-3f32;
    let mut nonzero = 0;
    for (k, &a) in analytic.iter().enumerate() {
        let a = a as f64;
        let original = session.params[k];
        session.params[k] = original + h;
        let plus = support_loss(&mut session);
        session.params[k] = original - h;
        let minus = support_loss(&mut session);
        session.params[k] = original;
        let numeric = (plus - minus) / (2.0 * h as f64);
        assert!((a - numeric).abs() <= 2e-3 + 2e-3 * numeric.abs(), "parameter {k}: analytic {a} vs numeric {numeric}");
        if a.abs() > 1e-3 {
            nonzero += 1;
        }
    }
    // The check is meaningful: most parameters get a real gradient.
    assert!(nonzero > analytic.len() / 2, "{nonzero} of {}", analytic.len());
}

#[test]
fn analytic_gradient_matches_central_differences() {
    assert_gradient_matches_central_differences(body(), &[(0, 4.0), (1, 1.5), (2, 5.0), (3, 2.0)]);
}

#[test]
fn click_gradient_matches_central_differences() {
    let mut click = body();
    click.task = Task::Click { threshold: 4.0 };
    click.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.5 };
    assert_gradient_matches_central_differences(click, &[(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.25)]);
}

/// Scoring through the low-rank record equals scoring with the adapted weights themselves.
#[test]
fn low_rank_scores_equal_full_product_scores() {
    for network in [false, true] {
        let mut b = body();
        if network {
            b.learning_rate = LearningRate::Network {
                hidden: DenseLayer { inputs: 9, outputs: 3, weight: wave(27, 0.7, 0.5), bias: wave(3, 0.1, 0.1) },
                output: DenseLayer { inputs: 3, outputs: 1, weight: wave(3, 0.2, 0.3), bias: vec![-2.0] },
            };
        }
        let model = Model::from_body(b).unwrap();
        let mut session = Session::new(&model);
        session.set_profile("u", "a").unwrap();
        for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0)] {
            session.add_rating_by_index(item, rating).unwrap();
        }
        session.adapt_steps(7).unwrap();
        assert!(session.low_rank.valid && session.low_rank.rows == 3);
        let items = [0, 1, 2, 3, 3, 1];
        let mut fast = [0.0; 6];
        session.score_indices(&items, &mut fast).unwrap();
        session.low_rank.materialize(&model, &mut session.params).unwrap();
        assert!(!session.low_rank.valid);
        let mut full = [0.0; 6];
        session.score_indices(&items, &mut full).unwrap();
        for (a, b) in fast.iter().zip(&full) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{fast:?} vs {full:?}");
        }
        // A session that never uses the low-rank path adapts to the same scores.
        let mut reference = Session::new(&model);
        reference.full_weights_only = true;
        reference.load_init(0);
        reference.set_profile("u", "a").unwrap();
        for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0)] {
            reference.add_rating_by_index(item, rating).unwrap();
        }
        reference.adapt_steps(7).unwrap();
        assert!(!reference.low_rank.valid);
        let mut expected = [0.0; 6];
        reference.score_indices(&items, &mut expected).unwrap();
        for (a, b) in fast.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{fast:?} vs {expected:?}");
        }
        let mut unadapted = [0.0; 6];
        session.reset_adaptation();
        session.score_indices(&items, &mut unadapted).unwrap();
        assert!(fast.iter().zip(&unadapted).any(|(a, b)| (a - b).abs() > 1e-3), "adaptation moved scores");
    }
}

#[test]
fn click_scores_are_probabilities_and_adaptation_follows_the_labels() {
    let mut click = body();
    click.task = Task::Click { threshold: 4.0 };
    click.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.5 };
    let model = Model::from_body(click).unwrap();
    let mut session = Session::new(&model);
    assert_eq!(session.add_rating_by_index(0, 4.0), Err(Error::InvalidRating));
    session.add_rating_by_index(0, 1.0).unwrap();
    session.add_rating_by_index(3, 0.0).unwrap();
    let before = [session.predict(0).unwrap(), session.predict(3).unwrap()];
    session.adapt_steps(50).unwrap();
    let after = [session.predict(0).unwrap(), session.predict(3).unwrap()];
    assert!(before.iter().chain(&after).all(|p| *p > 0.0 && *p < 1.0), "{before:?} {after:?}");
    assert!(after[0] > before[0] && after[1] < before[1], "{before:?} -> {after:?}");
}

#[test]
fn unset_fields_follow_their_kind() {
    let mut b = body();
    b.user_fields.push(b.item_fields[1].clone());
    b.user_fields[1].name = "tags".to_string();
    b.layers[0] = DenseLayer { inputs: 12, outputs: 5, weight: wave(60, 0.4, 0.8), bias: wave(5, 0.9, 0.1) };
    let model = Model::from_body(b).unwrap();
    let mut session = Session::new(&model);
    assert_eq!(session.profile.rows(), [vec![0], vec![]]);
    // Categorical unset → row 0; multi-categorical unset → zeros.
    session.profile.refresh(&model).unwrap();
    let input = session.profile.input().unwrap();
    assert_eq!(input[..3], model.body().user_fields[0].embedding[..3]);
    assert_eq!(input[3..6], [0.0; 3]);
}

#[test]
fn top_k_orders_by_score_then_index_with_nan_last() {
    let scores = [1.0, f32::NAN, 3.0, 3.0, -1.0, 2.0, f32::NAN, -0.0, 0.0];
    let ranked = |k: usize| {
        let mut candidates: Vec<Ranked> =
            scores.iter().enumerate().map(|(item, &score)| Ranked { item: item as u32, score }).collect();
        rank::top_k(&mut candidates, k);
        candidates.iter().map(|r| r.item).collect::<Vec<_>>()
    };
    // -0.0 and 0.0 tie: the lower index first; NaN last, lower index first.
    assert_eq!(ranked(9), [2, 3, 5, 0, 7, 8, 4, 1, 6]);
    assert_eq!(ranked(3), [2, 3, 5]);
    assert_eq!(ranked(1), [2]);
    assert_eq!(ranked(0), Vec::<u32>::new());
    assert_eq!(ranked(8), [2, 3, 5, 0, 7, 8, 4, 1]);
    assert_eq!(ranked(100), ranked(9));
}

// ---- the bias-aware product model: item biases, adaptation scopes, the proximal term ----

/// [`body`] with one bias per item, `adapt` and `proximal` (and for the fold-in, 2 item
/// factors and ridge weights in 0.3..0.7).
fn product_body(adapt: Adapt, proximal: f32) -> ModelBody {
    let mut b = body();
    let fold_in = (adapt == Adapt::FoldIn).then(|| FoldInHead {
        factors: 2,
        ridge: wave(4 + 2 + 1, 0.3, 0.2).iter().map(|r| 0.5 + r).collect(),
        item_factors: wave(4 * 2, 1.1, 0.9),
    });
    b.product = ProductModel { item_bias: wave(4, 0.9, 0.6), adapt, proximal, fold_in };
    b
}

/// The learning-rate variants the inner loop has: fixed, the PAML network, per parameter.
fn with_rates(mut b: ModelBody, which: usize) -> ModelBody {
    match which {
        0 => {}
        1 => {
            b.learning_rate = LearningRate::Network {
                hidden: DenseLayer { inputs: 9, outputs: 3, weight: wave(27, 0.7, 0.5), bias: wave(3, 0.1, 0.1) },
                output: DenseLayer { inputs: 3, outputs: 1, weight: wave(3, 0.2, 0.3), bias: vec![-2.0] },
            }
        }
        _ => {
            let rates = b.layers.iter().enumerate().map(|(l, layer)| DenseLayer {
                weight: wave(layer.weight.len(), l as f32, 0.02).iter().map(|r| 0.06 + r).collect(),
                bias: vec![0.08; layer.bias.len()],
                ..layer.clone()
            });
            b.learning_rate = LearningRate::PerParameter(rates.collect());
        }
    }
    b
}

/// The analytic gradient of a product model, on the parameters its scope adapts, equals the
/// central differences of the support loss (item biases in the outputs) plus the proximal
/// term, away from the initialisation.
#[test]
fn product_gradient_matches_central_differences() {
    for adapt in Adapt::GRADIENT {
        for click in [false, true] {
            let mut b = product_body(adapt, 0.8);
            let mut support = [(0, 4.0), (1, 1.5), (2, 5.0), (3, 2.0)];
            if click {
                b.task = Task::Click { threshold: 4.0 };
                b.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.5 };
                support = [(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.25)];
            }
            let model = Model::from_body(b).unwrap();
            let mut session = Session::new(&model);
            session.set_profile("u", "b").unwrap();
            for (item, rating) in support {
                session.add_rating_by_index(item, rating).unwrap();
            }
            session.low_rank.materialize(&model, &mut session.params).unwrap();
            session.profile.refresh(&model).unwrap();
            // Away from θ₀, so that the proximal term has a gradient.
            let start = session.params.clone();
            for (k, p) in session.params.iter_mut().enumerate() {
                *p += 0.05 * libm::sinf(k as f32 * 0.61);
            }
            session.support_gradient(None).unwrap();
            let analytic = session.adaptation.grads().to_vec();
            let proximal = f64::from(model.body().product.proximal);
            let scope = model.scope();
            let total = |s: &mut Session<&Model>| {
                let pull: f64 = (0..start.len())
                    .filter(|&k| scope.contains(k))
                    .map(|k| f64::from(s.params[k] - start[k]).powi(2))
                    .sum();
                support_loss(s) + proximal / 2.0 * pull
            };
            let h = 1e-3f32;
            let mut checked = 0;
            for k in (0..analytic.len()).filter(|&k| scope.contains(k)) {
                let original = session.params[k];
                session.params[k] = original + h;
                let plus = total(&mut session);
                session.params[k] = original - h;
                let minus = total(&mut session);
                session.params[k] = original;
                let numeric = (plus - minus) / (2.0 * f64::from(h));
                let a = f64::from(analytic[k]);
                let what = format!("{adapt:?} click {click} parameter {k}");
                assert!((a - numeric).abs() <= 2e-3 + 2e-3 * numeric.abs(), "{what}: {a} vs {numeric}");
                checked += 1;
            }
            let expected = match adapt {
                Adapt::All => model.layout().param_len,
                Adapt::Head | Adapt::FoldIn => 5,
                Adapt::User => 5 * 3 + 5 + 1,
            };
            assert_eq!(checked, expected, "{adapt:?}");
        }
    }
}

/// Each scope changes exactly its parameters, whatever the learning rate: every one with a
/// gradient at the start moves, and the rest keep the initialisation's values to the bit (the
/// fold-in's solve as the gradient scopes' steps).
#[test]
fn each_scope_updates_exactly_its_parameters() {
    for adapt in Adapt::ALL {
        for rates in 0..3 {
            let model = Model::from_body(with_rates(product_body(adapt, 0.3), rates)).unwrap();
            let mut session = Session::new(&model);
            session.full_weights_only = true;
            session.load_init(0);
            session.set_profile("u", "a").unwrap();
            for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0)] {
                session.add_rating_by_index(item, rating).unwrap();
            }
            session.profile.refresh(&model).unwrap();
            session.support_gradient(None).unwrap();
            let first = session.adaptation.grads().to_vec();
            session.adapt_steps(3).unwrap();
            let mut start = Vec::new();
            model.write_init_params(0, &mut start);
            let scope = model.scope();
            let mut moved = 0;
            for (k, (p, p0)) in session.params.iter().zip(&start).enumerate() {
                let what = format!("{adapt:?} rates {rates}: parameter {k}");
                if !scope.contains(k) {
                    assert_eq!(p.to_bits(), p0.to_bits(), "{what} moved");
                } else if first[k] != 0.0 {
                    assert_ne!(p, p0, "{what} has a gradient but did not move");
                    moved += 1;
                }
            }
            assert!(moved >= 5, "{adapt:?} rates {rates}: {moved} moved");
        }
    }
}

/// Scoring a product model through the low-rank record (or, for the scopes that leave layer
/// 0's item columns alone, the precomputed item part, whatever the rate) equals scoring with
/// the adapted weights themselves, HML's choice of initialisation included.
#[test]
fn product_low_rank_scores_equal_full_product_scores() {
    for adapt in Adapt::ALL {
        for rates in 0..3 {
            for hml in [false, true] {
                let mut b = with_rates(product_body(adapt, 0.4), rates);
                if hml {
                    let other =
                        |l: &DenseLayer, p: f32| DenseLayer { weight: wave(l.weight.len(), p, 0.7), ..l.clone() };
                    b.extra_inits = vec![b.layers.iter().map(|l| other(l, 2.0)).collect()];
                    b.method = Method::Hml;
                }
                let model = Model::from_body(b).unwrap();
                let what = format!("{adapt:?} rates {rates} hml {hml}");
                let adapted = |full_weights_only: bool| {
                    let mut session = Session::new(&model);
                    session.full_weights_only = full_weights_only;
                    session.load_init(0);
                    session.set_profile("u", "b").unwrap();
                    for (item, rating) in [(0, 4.0), (1, 1.5), (2, 5.0), (3, 1.0)] {
                        session.add_rating_by_index(item, rating).unwrap();
                    }
                    session.adapt_steps(4).unwrap();
                    let mut out = [0.0; 6];
                    session.score_indices(&[0, 1, 2, 3, 3, 1], &mut out).unwrap();
                    (out, session.low_rank.valid, session.low_rank.rows, session.explain().init)
                };
                let (fast, valid, rows, init) = adapted(false);
                let (full, _, _, full_init) = adapted(true);
                assert_eq!(init, full_init, "{what}");
                // The fast path holds: with a scalar rate always, and for any rate when the
                // item columns stay the initialisation's (then without support rows).
                let item_columns = adapt == Adapt::All;
                assert_eq!(valid, !(item_columns && rates == 2), "{what}");
                assert_eq!(rows, if valid && item_columns { 4 } else { 0 }, "{what}");
                for (a, b) in fast.iter().zip(&full) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}: {fast:?} vs {full:?}");
                }
            }
        }
    }
}
