//! The bias-aware product model (format 2.3): item biases on every output, the adaptation
//! scopes and the proximal term against an independent f64 reference, and the file (golden
//! bytes, flags, the trailer and what a damaged one gives).

use metarec_runtime::format::{self, required, Adapt, ProductModel, HEADER_LEN};
use metarec_runtime::{Error, Model, ModelBody, Session};

use crate::fixture::{
    all_scores, assert_matches_golden, assert_top_k_follows_scores, forward, golden_path, input, params_of, reseal,
    session, tiny_body, tiny_factor_body, user_rows, Lcg, Params, Trailer, SUPPORT,
};

/// [`tiny_body`] with item biases in ±0.75 (exact in f32), `adapt` and `proximal`.
pub fn product_body(adapt: Adapt, proximal: f32) -> ModelBody {
    let mut body = tiny_body();
    let items = body.items.len();
    let item_bias = Lcg::new(0x6269_6173_6573_2121).vec(items, 1.5);
    body.product = ProductModel { item_bias, adapt, proximal, fold_in: None };
    body
}

// ---- the f64 reference: output + bias, masked gradient, proximal term ----

/// Whether parameter `k` of layer `l` (its weight when `weight`, else its bias) is adapted,
/// from the scope's definition: 16 inputs, the first 8 the user fields'; 3 layers.
fn adapted(adapt: Adapt, l: usize, weight: bool, k: usize) -> bool {
    let last = 2;
    match adapt {
        Adapt::All => true,
        Adapt::Head | Adapt::FoldIn => l == last,
        Adapt::User => (l == 0 && (!weight || k % 16 < 8)) || (l == last && !weight),
    }
}

/// `(1/n) Σ (f(x_j) + b_j − r_j)² + (proximal/2)·‖θ − θ₀‖²` over the adapted parameters.
struct Problem<'a> {
    xs: &'a [Vec<f64>],
    biases: &'a [f64],
    ratings: &'a [f64],
    adapt: Adapt,
    proximal: f64,
    start: &'a Params,
}

impl Problem<'_> {
    fn loss(&self, params: &Params) -> f64 {
        let n = self.xs.len() as f64;
        let fit: f64 = self
            .xs
            .iter()
            .zip(self.biases)
            .zip(self.ratings)
            .map(|((x, b), r)| (forward(params, x) + b - r).powi(2))
            .sum::<f64>()
            / n;
        let mut pull = 0.0;
        for (l, ((w, b), (w0, b0))) in params.iter().zip(self.start).enumerate() {
            for (weight, (values, start)) in [(true, (w, w0)), (false, (b, b0))] {
                for (k, (v, v0)) in values.iter().zip(start).enumerate() {
                    if adapted(self.adapt, l, weight, k) {
                        pull += (v - v0).powi(2);
                    }
                }
            }
        }
        fit + self.proximal / 2.0 * pull
    }

    /// `steps` descent steps with central-difference gradients of the adapted parameters.
    fn descend(&self, lr: f64, steps: u32) -> Params {
        let h = 1e-6;
        let mut p = self.start.clone();
        for _ in 0..steps {
            let mut next = p.clone();
            for l in 0..p.len() {
                for weight in [true, false] {
                    let len = if weight { p[l].0.len() } else { p[l].1.len() };
                    for k in (0..len).filter(|&k| adapted(self.adapt, l, weight, k)) {
                        let at = |q: &mut Params, d: f64| {
                            let v = if weight { &mut q[l].0[k] } else { &mut q[l].1[k] };
                            *v += d;
                        };
                        let (mut plus, mut minus) = (p.clone(), p.clone());
                        at(&mut plus, h);
                        at(&mut minus, -h);
                        let g = (self.loss(&plus) - self.loss(&minus)) / (2.0 * h);
                        at(&mut next, -lr * g);
                    }
                }
            }
            p = next;
        }
        p
    }
}

/// The runtime's adapted scores (item bias included) against the reference's, for a model
/// with item biases, `adapt` and `proximal`.
fn check_against_reference(adapt: Adapt, proximal: f32, lr: f32, steps: u32) {
    let mut body = product_body(adapt, proximal);
    body.adaptation.inner_lr = lr;
    let model = Model::from_body(body.clone()).unwrap();
    let mut s = session(&model);
    s.adapt_steps(steps).unwrap();
    let actual = all_scores(&mut s);

    let bias: Vec<f64> = body.product.item_bias.iter().map(|&b| b as f64).collect();
    let xs: Vec<Vec<f64>> = SUPPORT.iter().map(|&(i, _)| input(&body, &user_rows(), i as usize)).collect();
    let biases: Vec<f64> = SUPPORT.iter().map(|&(i, _)| bias[i as usize]).collect();
    let ratings: Vec<f64> = SUPPORT.iter().map(|&(_, r)| r as f64).collect();
    let start = params_of(&body);
    let problem =
        Problem { xs: &xs, biases: &biases, ratings: &ratings, adapt, proximal: proximal as f64, start: &start };
    let adapted_params = problem.descend(lr as f64, steps);
    for (i, a) in actual.iter().enumerate() {
        let expected = forward(&adapted_params, &input(&body, &user_rows(), i)) + bias[i];
        let what = format!("{adapt:?} proximal {proximal} lr {lr} steps {steps} item {i}");
        assert!((*a as f64 - expected).abs() < 1e-4, "{what}: {a} vs {expected}");
    }
    // Adaptation moved the scores, so the comparison means something.
    let unadapted: Vec<f64> =
        (0..actual.len()).map(|i| forward(&start, &input(&body, &user_rows(), i)) + bias[i]).collect();
    let moved = actual.iter().zip(&unadapted).map(|(a, u)| (*a as f64 - u).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-2, "{adapt:?}: adaptation moved the scores by at most {moved}");
}

/// Each scope updates exactly its parameters: the adapted scores equal those of descent on
/// those parameters alone (one large step magnifies any stray update), with and without the
/// proximal term.
#[test]
fn every_scope_matches_masked_finite_difference_descent() {
    for adapt in Adapt::GRADIENT {
        for proximal in [0.0, 0.7] {
            check_against_reference(adapt, proximal, 0.5, 1);
            check_against_reference(adapt, proximal, 0.05, 4);
        }
    }
}

/// The proximal term pulls toward the initialisation: a strong one leaves the scores nearer the
/// unadapted ones than no term does, and matches the reference either way.
#[test]
fn the_proximal_term_holds_the_weights_back() {
    let distance = |proximal: f32| {
        let model = Model::from_body(product_body(Adapt::All, proximal)).unwrap();
        let mut s = session(&model);
        let before = all_scores(&mut s);
        s.adapt_steps(20).unwrap();
        let after = all_scores(&mut s);
        before.iter().zip(&after).map(|(a, b)| (a - b).abs()).sum::<f32>()
    };
    let (free, held) = (distance(0.0), distance(8.0));
    assert!(held < 0.8 * free, "proximal 8 moved the scores {held}, none {free}");
    check_against_reference(Adapt::All, 8.0, 0.05, 5);
}

/// Unadapted, every output is the plain model's plus the item's bias: scores, ids, predict and
/// top-k alike; a click model adds the bias to the logit.
#[test]
fn item_biases_shift_every_unadapted_output() {
    for click in [false, true] {
        let mut plain = tiny_body();
        if click {
            plain.task = format::Task::Click { threshold: 4.0 };
            plain.rating = format::RatingScale { min: 0.0, max: 1.0, global_mean: 0.4 };
        }
        let mut biased = plain.clone();
        biased.product = product_body(Adapt::All, 0.0).product;
        let (plain_model, biased_model) = (Model::from_body(plain).unwrap(), Model::from_body(biased).unwrap());
        let (mut p, mut b) = (Session::new(&plain_model), Session::new(&biased_model));
        let (without, with) = (all_scores(&mut p), all_scores(&mut b));
        let logit = |y: f32| if click { (f64::from(y) / (1.0 - f64::from(y))).ln() } else { f64::from(y) };
        for (i, &bias) in biased_model.item_biases().iter().enumerate() {
            let shift = logit(with[i]) - logit(without[i]);
            assert!((shift - f64::from(bias)).abs() < 1e-4, "item {i}: {with:?} {without:?}");
            assert_eq!(b.predict(i as u32).unwrap(), with[i]);
        }
        let ids: Vec<&str> = (0..6).map(|i| biased_model.item_id(i).unwrap()).collect();
        let mut by_id = vec![0.0; 6];
        b.score_ids(&ids, &mut by_id).unwrap();
        assert_eq!(by_id, with);
        assert_top_k_follows_scores(&mut b, &with);
    }
}

/// Adapted, top-k ranks by the scores `score_indices` gives, on every path (the low-rank record
/// for fixed rates, the weights themselves for per-parameter rates).
#[test]
fn adapted_top_k_ranks_by_biased_scores() {
    for adapt in Adapt::GRADIENT {
        for per_parameter in [false, true] {
            let mut body = product_body(adapt, 0.3);
            if per_parameter {
                let rates = body.layers.iter().map(|l| format::DenseLayer {
                    weight: vec![0.03; l.weight.len()],
                    bias: vec![0.05; l.bias.len()],
                    ..l.clone()
                });
                body.learning_rate = format::LearningRate::PerParameter(rates.collect());
            }
            let model = Model::from_body(body).unwrap();
            let mut s = session(&model);
            s.adapt().unwrap();
            let scores = all_scores(&mut s);
            assert_top_k_follows_scores(&mut s, &scores);
        }
    }
}

// ---- the file ----

fn golden_body() -> ModelBody {
    product_body(Adapt::User, 0.5)
}

#[test]
fn product_model_matches_its_golden_file() {
    let bytes = format::encode(&golden_body()).unwrap();
    let path = golden_path("tiny-product.mrec");
    assert_matches_golden(&path, &bytes);
    // Format 2.3, both flags, the plain model's schema hash (same fields).
    assert_eq!(&bytes[8..12], &[0x02, 0x00, 0x03, 0x00]);
    assert_eq!(&bytes[16..20], &(required::ITEM_BIAS | required::ADAPT_SCOPE).to_le_bytes());
    assert_eq!((required::ITEM_BIAS, required::ADAPT_SCOPE), (1 << 7, 1 << 8));
    assert_eq!(format::schema_hash(&golden_body()), format::schema_hash(&tiny_body()));
    // The body is the plain body's bytes, then the trailer: 6 biases, scope 2 (user), 0.5.
    let plain = format::encode(&tiny_body()).unwrap();
    let trailer = &bytes[plain.len()..];
    assert_eq!(&bytes[HEADER_LEN..plain.len()], &plain[HEADER_LEN..]);
    assert_eq!(trailer.len(), 1 + 6 * 4 + 1 + 4);
    assert_eq!((trailer[0], trailer[25]), (6, 2));
    assert_eq!(&trailer[26..], &0.5f32.to_le_bytes());
    let model = Model::from_path(&path).unwrap();
    assert_eq!(&model.to_body(), &golden_body());
    assert_eq!(model.adapt_scope(), Adapt::User);
}

/// Files without the 2.3 features keep their stamps and bytes: the committed 2.1 and 2.2
/// golden files re-encode byte for byte, and the 2.0 file still loads.
#[test]
fn older_files_still_load_and_encode_byte_for_byte() {
    for (name, body, minor) in [("tiny.mrec", tiny_body(), 1u8), ("tiny-mf.mrec", tiny_factor_body(), 2)] {
        let committed = std::fs::read(golden_path(name)).unwrap();
        assert_eq!(committed[10], minor, "{name}");
        let model = Model::from_bytes(&committed).unwrap();
        assert_eq!(&model.to_body(), &body, "{name}");
        assert_eq!(model.body().product, ProductModel::default());
        assert_eq!(format::encode(&model.to_body()).unwrap(), committed, "{name} re-encodes unchanged");
    }
    let old = Model::from_bytes(&std::fs::read(golden_path("tiny-2.0.mrec")).unwrap()).unwrap();
    assert_eq!(&old.to_body(), &tiny_body());
}

/// Each feature sets its own flag and only then; the plain parts stay 2.1.
#[test]
fn each_feature_sets_its_flag_and_the_minor() {
    let flags_and_minor = |product: ProductModel| {
        let mut body = tiny_body();
        body.product = product;
        let bytes = format::encode(&body).unwrap();
        assert_eq!(Model::from_bytes(&bytes).unwrap().to_body(), body);
        (u32::from_le_bytes(bytes[16..20].try_into().unwrap()), bytes[10])
    };
    let bias = product_body(Adapt::All, 0.0).product.item_bias;
    let cases = [
        (ProductModel::default(), 0, 1),
        (ProductModel { item_bias: bias.clone(), ..Default::default() }, required::ITEM_BIAS, 3),
        (ProductModel { adapt: Adapt::Head, ..Default::default() }, required::ADAPT_SCOPE, 3),
        (ProductModel { proximal: 0.25, ..Default::default() }, required::ADAPT_SCOPE, 3),
        (
            ProductModel { item_bias: bias, adapt: Adapt::User, proximal: 1.0, fold_in: None },
            required::ITEM_BIAS | required::ADAPT_SCOPE,
            3,
        ),
    ];
    for (product, flags, minor) in cases {
        assert_eq!(flags_and_minor(product.clone()), (flags, minor), "{product:?}");
    }
}

/// A damaged trailer (checksums made right, so the decoder sees it) is refused with a typed
/// error, never a panic.
#[test]
fn damaged_trailers_are_refused_by_name() {
    let good = format::encode(&golden_body()).unwrap();
    let plain_len = format::encode(&tiny_body()).unwrap().len() - HEADER_LEN;
    let both = required::ITEM_BIAS | required::ADAPT_SCOPE;
    let trailer = Trailer { good: &good, plain_len, flags: both, name: "trailer" };
    let (payload, load) = (trailer.payload(), |payload: &[u8], flags: u32| trailer.load(payload, flags));
    assert_eq!(load(payload, both), Ok(()));
    // The flags without a trailer; a trailer without the flags.
    assert_eq!(load(&payload[..plain_len], both), Err(Error::MalformedBody));
    assert_eq!(load(&payload[..plain_len], required::ADAPT_SCOPE), Err(Error::MalformedBody));
    assert_eq!(load(payload, 0), Err(Error::TrailingBytes));
    // Flags that do not describe the trailer (it has biases and a scope).
    assert_eq!(load(payload, required::ITEM_BIAS), Err(Error::InconsistentDimensions));
    assert_eq!(load(payload, required::ADAPT_SCOPE), Err(Error::InconsistentDimensions));
    // Every shorter trailer, and one byte more.
    trailer.assert_cuts_and_extension_refused();
    // The fold-in without its head; a scope this reader does not know; more biases than items;
    // a NaN bias; a bad weight.
    trailer.edit(25, &[3], Error::InconsistentDimensions);
    trailer.edit(25, &[4], Error::MalformedBody);
    trailer.edit(25, &[0x80], Error::MalformedBody);
    trailer.edit(0, &[100], Error::MalformedBody);
    trailer.edit(1, &f32::NAN.to_le_bytes(), Error::NonFiniteParameter);
    trailer.edit(26, &(-0.5f32).to_le_bytes(), Error::NonFiniteParameter);
    trailer.edit(26, &f32::INFINITY.to_le_bytes(), Error::NonFiniteParameter);
    // Every trailer byte set to every value: an error or a model, never a panic.
    trailer.assert_no_byte_panics();
}

/// Validation of the product parts, from the body and from its file alike.
#[test]
fn validation_refuses_inconsistent_product_models() {
    let check = |change: &dyn Fn(&mut ModelBody), want: Error| {
        let mut body = golden_body();
        change(&mut body);
        assert_eq!(Model::from_body(body.clone()).unwrap_err(), want);
        let bytes = format::encode(&body).unwrap();
        assert_eq!(Model::from_bytes(&bytes).unwrap_err(), want);
    };
    let bad = Error::InconsistentDimensions;
    check(&|b| b.product.item_bias.push(0.0), bad);
    check(
        &|b| {
            b.product.item_bias.pop();
        },
        bad,
    );
    let non_finite = Error::NonFiniteParameter;
    check(&|b| b.product.item_bias[3] = f32::INFINITY, non_finite);
    check(&|b| b.product.proximal = -1e-3, non_finite);
    check(&|b| b.product.proximal = f32::NAN, non_finite);
    check(&|b| b.product.proximal = f32::INFINITY, non_finite);
    // A factor model has its own item biases and no MLP to scope.
    for product in [golden_body().product, ProductModel { adapt: Adapt::Head, ..Default::default() }] {
        let mut factors = tiny_factor_body();
        factors.product = product;
        assert_eq!(Model::from_body(factors).unwrap_err(), bad);
    }
    // Biases on an empty catalogue are none at all.
    let mut empty = golden_body();
    empty.items.clear();
    empty.product.item_bias.clear();
    assert!(Model::from_body(empty).is_ok());
}

/// A reader that does not know the 2.3 flags (a 2.2 runtime) refuses the file by name, as any
/// reader refuses a flag past its own (here: the next free bit, past the fold-in's).
#[test]
fn unknown_required_flags_are_refused_by_name() {
    let good = format::encode(&golden_body()).unwrap();
    let flags = u32::from_le_bytes(good[16..20].try_into().unwrap());
    let known_by_2_2 =
        required::KNOWN & !(required::ITEM_BIAS | required::ADAPT_SCOPE | required::FOLD_IN | required::ALIGNED_TABLES);
    assert_eq!(known_by_2_2, (1 << 7) - 1, "2.2 knew bits 0 to 6");
    assert_ne!(flags & !known_by_2_2, 0, "a 2.2 reader's mask refuses this file");
    let future = reseal(&good, &good[HEADER_LEN..], flags | 1 << 11);
    assert_eq!(Model::from_bytes(&future).unwrap_err(), Error::UnsupportedFeature);
}
