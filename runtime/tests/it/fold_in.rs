//! Fold-in heads (format 2.3, [`Adapt::FoldIn`]): the device's one ridge solve of the output
//! layer and the user's factors against a direct f64 solve written from the definition (fixed,
//! per-user and per-parameter rates, ratings and clicks, with and without item factors, HML's
//! choice of initialisation, a one-layer MLP), the session around it (no ratings, duplicates,
//! the most ratings a session takes, extreme values), and the file (golden bytes, flags, compact
//! factors, damaged trailers, validation).

use metarec_runtime::format::{
    self, required, Adapt, DenseLayer, EmbeddingPrecision, FoldInHead, LearningRate, Method, ModelBody, ProductModel,
    RatingScale, Task, HEADER_LEN,
};
use metarec_runtime::{Error, Model, Session, MAX_SUPPORT_RATINGS};

use crate::fixture::{
    all_scores, assert_matches_golden, assert_top_k_follows_scores, gauss, golden_path, input, params_of, reseal,
    tiny_body, user_rows, user_session, Lcg, Params, Trailer, SUPPORT,
};

/// Where a fold-in's ridge weights are divided (see [`format::FoldInHead`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rates {
    Fixed,
    Network,
    PerParameter,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    click: bool,
    rates: Rates,
    factors: usize,
    hml: bool,
    one_layer: bool,
}

impl Case {
    fn new(click: bool, rates: Rates, factors: usize) -> Case {
        Case { click, rates, factors, hml: false, one_layer: false }
    }
}

fn layer(inputs: u32, outputs: u32, rng: &mut Lcg, scale: f32) -> DenseLayer {
    let n = (inputs * outputs) as usize;
    DenseLayer { inputs, outputs, weight: rng.vec(n, scale), bias: rng.vec(outputs as usize, 0.4) }
}

/// [`tiny_body`] (or its one-layer variant) as a fold-in model: item biases, `factors` item
/// factors, ridge weights in 0.3..0.9, and the case's rates and initialisations.
fn fold_in_body(case: Case) -> ModelBody {
    let mut body = tiny_body();
    let mut rng = Lcg::new(0x666f_6c64_2d69_6e21 ^ case.factors as u64);
    if case.one_layer {
        body.layers = vec![layer(16, 1, &mut rng, 0.8)];
    }
    if case.click {
        body.task = Task::Click { threshold: 4.0 };
        body.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.4 };
    }
    let items = body.items.len();
    let d = body.layers.last().unwrap().inputs as usize;
    let k = case.factors;
    let head = FoldInHead {
        factors: k as u32,
        ridge: rng.vec(d + k + 1, 1.2).iter().map(|r| 0.6 + r.abs()).collect(),
        item_factors: rng.vec(items * k, 1.5),
    };
    body.product =
        ProductModel { item_bias: rng.vec(items, 1.5), adapt: Adapt::FoldIn, proximal: 0.0, fold_in: Some(head) };
    match case.rates {
        Rates::Fixed => {}
        Rates::Network => {
            body.method = Method::Paml;
            body.learning_rate = LearningRate::Network {
                hidden: layer(16, 3, &mut rng, 1.0),
                output: DenseLayer { inputs: 3, outputs: 1, weight: rng.vec(3, 1.0), bias: vec![-1.5] },
            };
        }
        Rates::PerParameter => {
            body.method = Method::MetaSgd;
            let rates = body.layers.iter().map(|l| DenseLayer {
                weight: rng.vec(l.weight.len(), 0.3).iter().map(|r| 0.2 + r).collect(),
                bias: vec![0.13; l.bias.len()],
                ..l.clone()
            });
            body.learning_rate = LearningRate::PerParameter(rates.collect());
        }
    }
    if case.hml {
        body.method = Method::Hml;
        let other = |rng: &mut Lcg| body.layers.iter().map(|l| layer(l.inputs, l.outputs, rng, 1.2)).collect();
        body.extra_inits = vec![other(&mut rng), other(&mut rng)];
    }
    body
}

// ---- the f64 reference, from the definition ----

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The output layer's input for `x`: the last hidden layer's activations, or `x` itself.
fn features(params: &Params, x: &[f64]) -> Vec<f64> {
    let mut a = x.to_vec();
    for (w, b) in &params[..params.len() - 1] {
        a = b
            .iter()
            .enumerate()
            .map(|(o, bo)| (bo + (0..a.len()).map(|i| w[o * a.len() + i] * a[i]).sum::<f64>()).max(0.0))
            .collect();
    }
    a
}

/// A fold-in model in f64: θ, the item factors and biases, `p_u`.
struct Reference<'a> {
    body: &'a ModelBody,
    params: Params,
    p: Vec<f64>,
}

impl<'a> Reference<'a> {
    fn new(body: &'a ModelBody, init: usize) -> Reference<'a> {
        let mut params = params_of(body);
        if init > 0 {
            let mut other = body.clone();
            other.layers = body.extra_inits[init - 1].clone();
            params = params_of(&other);
        }
        Reference { body, params, p: vec![0.0; head(body).factors as usize] }
    }

    fn q(&self, item: usize) -> Vec<f64> {
        let k = head(self.body).factors as usize;
        head(self.body).item_factors[item * k..][..k].iter().map(|&v| f64::from(v)).collect()
    }

    fn bias(&self, item: usize) -> f64 {
        self.body.product.item_bias.get(item).map_or(0.0, |&b| f64::from(b))
    }

    /// The raw output (rating, or logit) of `item` for the fixture's user.
    fn raw(&self, item: usize) -> f64 {
        let x = input(self.body, &user_rows(), item);
        let (w, b) = self.params.last().unwrap();
        let h = features(&self.params, &x);
        let mlp = b[0] + w.iter().zip(&h).map(|(w, h)| w * h).sum::<f64>();
        mlp + self.bias(item) + self.p.iter().zip(self.q(item)).map(|(p, q)| p * q).sum::<f64>()
    }

    fn score(&self, item: usize) -> f64 {
        let z = self.raw(item);
        if matches!(self.body.task, Task::Click { .. }) {
            sigmoid(z)
        } else {
            z
        }
    }

    /// Solves `(Σ s z zᵀ + Λ) δ = Σ z r` over `rows` from the current θ (p = 0) and applies it.
    fn fold_in(&mut self, rows: &[(u32, f32)], lambda: &[f64]) {
        let click = matches!(self.body.task, Task::Click { .. });
        let n = lambda.len();
        let mut a = vec![vec![0.0; n + 1]; n];
        for (m, l) in lambda.iter().enumerate() {
            a[m][m] = *l;
        }
        for &(item, y) in rows {
            let i = item as usize;
            let x = input(self.body, &user_rows(), i);
            let h = features(&self.params, &x);
            let (w, b) = self.params.last().unwrap();
            let start = b[0] + w.iter().zip(&h).map(|(w, h)| w * h).sum::<f64>() + self.bias(i);
            let (r, s) = if click {
                let p = sigmoid(start);
                (f64::from(y) - p, p * (1.0 - p))
            } else {
                (f64::from(y) - start, 1.0)
            };
            let z: Vec<f64> = h.iter().copied().chain(self.q(i)).chain([1.0]).collect();
            for p in 0..n {
                for q in 0..n {
                    a[p][q] += s * z[p] * z[q];
                }
                a[p][n] += z[p] * r;
            }
        }
        let delta = gauss(a);
        let d = self.params.last().unwrap().0.len();
        let k = n - d - 1;
        let (w, b) = self.params.last_mut().unwrap();
        for (w, dw) in w.iter_mut().zip(&delta) {
            *w += dw;
        }
        b[0] += delta[d + k];
        self.p = delta[d..d + k].to_vec();
    }

    /// Mean loss over `rows` (squared error, or binary cross-entropy of the logit).
    fn loss(&self, rows: &[(u32, f32)]) -> f64 {
        let click = matches!(self.body.task, Task::Click { .. });
        let total: f64 = rows
            .iter()
            .map(|&(item, y)| {
                let (z, y) = (self.raw(item as usize), f64::from(y));
                if click {
                    (1.0 + z.exp()).ln() - y * z
                } else {
                    (z - y).powi(2)
                }
            })
            .sum();
        total / rows.len().max(1) as f64
    }
}

fn head(body: &ModelBody) -> &FoldInHead {
    body.product.fold_in.as_ref().unwrap()
}

fn head_mut(body: &mut ModelBody) -> &mut FoldInHead {
    body.product.fold_in.as_mut().unwrap()
}

/// Gives the head of a model with `d` hidden features and six items `k` factors: `d + k + 1`
/// ridge weights of 1, and item factors all `value`.
fn resize_head(body: &mut ModelBody, d: usize, k: u32, value: f32) {
    let h = head_mut(body);
    h.factors = k;
    h.ridge = vec![1.0; d + k as usize + 1];
    h.item_factors = vec![value; 6 * k as usize];
}

/// The PAML family's personal rate alpha'(h) in f64, h = [user input; Σ_j (r_j − r̄)/n · x_item_j].
fn personal_rate(body: &ModelBody, support: &[(u32, f32)]) -> f64 {
    let LearningRate::Network { hidden, output } = &body.learning_rate else { panic!("no network") };
    let n = support.len() as f64;
    let mean = support.iter().map(|&(_, r)| f64::from(r)).sum::<f64>() / n;
    let mut h = input(body, &user_rows(), 0)[..8].to_vec();
    h.resize(16, 0.0);
    for &(item, r) in support {
        let x = input(body, &user_rows(), item as usize);
        for (hi, xi) in h[8..].iter_mut().zip(&x[8..]) {
            *hi += (f64::from(r) - mean) / n * xi;
        }
    }
    let mut z = f64::from(output.bias[0]);
    for o in 0..hidden.outputs as usize {
        let a = f64::from(hidden.bias[o]) + (0..16).map(|i| f64::from(hidden.weight[o * 16 + i]) * h[i]).sum::<f64>();
        z += f64::from(output.weight[o]) * a.max(0.0);
    }
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

/// Λ of the case: ridge · lr / rate per entry (see [`format::FoldInHead`]).
fn lambda(body: &ModelBody, alpha: Option<f64>, scalar_only: bool) -> Vec<f64> {
    let head = head(body);
    let lr = f64::from(body.adaptation.inner_lr);
    let d = body.layers.last().unwrap().inputs as usize;
    let k = head.factors as usize;
    let ridge = head.ridge.iter().map(|&l| f64::from(l));
    match (&body.learning_rate, alpha) {
        _ if scalar_only => ridge.collect(),
        (LearningRate::Fixed, _) => ridge.collect(),
        (LearningRate::Network { .. }, Some(alpha)) => ridge.map(|l| l * lr / alpha).collect(),
        (LearningRate::PerParameter(rates), _) => {
            let last = rates.last().unwrap();
            ridge
                .enumerate()
                .map(|(m, l)| {
                    let rate = if m < d {
                        f64::from(last.weight[m])
                    } else if m == d + k {
                        f64::from(last.bias[0])
                    } else {
                        lr
                    };
                    l * lr / rate
                })
                .collect()
        }
        _ => panic!("a network without its rate"),
    }
}

/// The reference's adapted scores of every item for `support`, the init it chose and the change
/// of its output bias (the user bias).
fn reference_scores(body: &ModelBody, support: &[(u32, f32)]) -> (Vec<f64>, usize, f64) {
    let inits = 1 + body.extra_inits.len();
    let mut init = 0;
    if inits > 1 {
        let (adapt, score) = metarec_runtime::resample::split(support.len());
        let pick = |mask: &[bool]| -> Vec<(u32, f32)> {
            support.iter().zip(mask).filter(|(_, &m)| m).map(|(&s, _)| s).collect()
        };
        let mut best = (f64::INFINITY, 0);
        for k in 0..inits {
            let mut candidate = Reference::new(body, k);
            candidate.fold_in(&pick(&adapt), &lambda(body, None, true));
            let loss = candidate.loss(&pick(&score));
            if loss < best.0 {
                best = (loss, k);
            }
        }
        init = best.1;
    }
    let alpha = matches!(body.learning_rate, LearningRate::Network { .. }).then(|| personal_rate(body, support));
    let mut reference = Reference::new(body, init);
    let start = reference.params.last().unwrap().1[0];
    reference.fold_in(support, &lambda(body, alpha, false));
    let user_bias = reference.params.last().unwrap().1[0] - start;
    ((0..body.items.len()).map(|i| reference.score(i)).collect(), init, user_bias)
}

fn support_for(case: Case) -> Vec<(u32, f32)> {
    if case.click {
        vec![(0, 1.0), (3, 0.0), (2, 1.0), (5, 0.0), (1, 1.0)]
    } else {
        SUPPORT.to_vec()
    }
}

fn adapted_session<'m>(model: &'m Model, support: &[(u32, f32)]) -> Session<&'m Model> {
    let mut s = user_session(model);
    for &(item, rating) in support {
        s.add_rating_by_index(item, rating).unwrap();
    }
    s.adapt().unwrap();
    s
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0), "{what} item {i}: {g} vs {w}");
    }
}

fn check_case(case: Case) {
    let body = fold_in_body(case);
    let model = Model::from_body(body.clone()).unwrap();
    let support = support_for(case);
    let mut s = adapted_session(&model, &support);
    let got = all_scores(&mut s);
    let (want, init, user_bias) = reference_scores(&body, &support);
    let what = format!("{case:?}");
    assert_close(&got, &want, &what);
    let explanation = s.explain();
    assert!(explanation.adapted, "{what}");
    check_explained_fold_in(
        &body,
        &support,
        explanation.fold_in.expect("a fold-in head explains its solve"),
        user_bias,
    );
    assert_eq!(explanation.init as usize, init, "{what}");
    match case.rates {
        Rates::Fixed => assert_eq!(explanation.learning_rate, Some(body.adaptation.inner_lr), "{what}"),
        Rates::PerParameter => assert_eq!(explanation.learning_rate, None, "{what}"),
        Rates::Network => {
            let alpha = personal_rate(&body, &support);
            let got = f64::from(explanation.learning_rate.unwrap());
            assert!((got - alpha).abs() <= 1e-5 * alpha.max(1.0), "{what}: rate {got} vs {alpha}");
        }
    }
    // Adaptation moved the scores, so the comparison means something.
    let unadapted: Vec<f64> = {
        let reference = Reference::new(&body, 0);
        (0..body.items.len()).map(|i| reference.score(i)).collect()
    };
    let moved = got.iter().zip(&unadapted).map(|(a, u)| (f64::from(*a) - u).abs()).fold(0.0, f64::max);
    assert!(moved > 1e-2, "{what}: the fold-in moved the scores by at most {moved}");
}

/// What the explanation reports of a fold-in head's solve: the support, the mean Λ over the
/// factors (the hidden features without them), the bias's Λ and the change of the output bias.
fn check_explained_fold_in(body: &ModelBody, support: &[(u32, f32)], got: metarec_runtime::FoldIn, user_bias: f64) {
    let alpha = matches!(body.learning_rate, LearningRate::Network { .. }).then(|| personal_rate(body, support));
    let lambdas = lambda(body, alpha, false);
    let (d, k) = (body.layers.last().unwrap().inputs as usize, head(body).factors as usize);
    let spread = if k > 0 { &lambdas[d..d + k] } else { &lambdas[..d] };
    let mean = spread.iter().sum::<f64>() / spread.len() as f64;
    let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-4 * b.abs().max(1.0);
    assert_eq!(got.support as usize, support.len());
    assert!(close(got.regularisation, mean), "mean Λ {} vs {mean}", got.regularisation);
    assert!(close(got.bias_regularisation, lambdas[d + k]), "bias Λ {} vs {}", got.bias_regularisation, lambdas[d + k]);
    assert!(close(got.user_bias, user_bias), "user bias {} vs {user_bias}", got.user_bias);
}

/// The device's fold-in equals the direct f64 solve, for ratings and clicks, fixed, per-user and
/// per-parameter rates, without and with item factors.
#[test]
fn the_fold_in_equals_a_direct_solve() {
    for click in [false, true] {
        for rates in [Rates::Fixed, Rates::Network, Rates::PerParameter] {
            for factors in [0, 3] {
                check_case(Case::new(click, rates, factors));
            }
        }
    }
}

/// HML folds each initialisation in on the resampled support's adapt part, keeps the one that
/// scores the held-out part best (its `p_u · q_i` included), and folds it in on the whole set;
/// the choice is not always the first initialisation.
#[test]
fn hml_chooses_its_initialisation_by_folding_each_in() {
    let mut chosen = Vec::new();
    for click in [false, true] {
        for factors in [0, 2] {
            let case = Case { hml: true, ..Case::new(click, Rates::Fixed, factors) };
            check_case(case);
            let body = fold_in_body(case);
            chosen.push(reference_scores(&body, &support_for(case)).1);
        }
    }
    assert!(chosen.iter().any(|&k| k != 0), "every case chose init 0: {chosen:?}");
}

/// Without hidden layers the fold-in's features are the input itself, and the output layer is
/// layer 0 (whose item columns then change: the low-rank shortcut must not hide them).
#[test]
fn a_one_layer_mlp_folds_in_over_its_input() {
    for click in [false, true] {
        for rates in [Rates::Fixed, Rates::PerParameter] {
            check_case(Case { one_layer: true, ..Case::new(click, rates, 3) });
        }
    }
}

/// No ratings, zero steps, or a changed support set: the initialisation's scores (item biases,
/// no `p_u · q_i`); adapting twice gives the same scores to the bit; every scoring path agrees.
#[test]
fn unadapted_and_repeated_fold_ins() {
    let body = fold_in_body(Case::new(false, Rates::Fixed, 3));
    let model = Model::from_body(body.clone()).unwrap();
    let reference = Reference::new(&body, 0);
    let unadapted: Vec<f64> = (0..body.items.len()).map(|i| reference.score(i)).collect();
    let mut s = user_session(&model);
    s.adapt().unwrap();
    assert!(!s.is_adapted());
    assert_close(&all_scores(&mut s), &unadapted, "no ratings");
    for (item, rating) in SUPPORT {
        s.add_rating_by_index(item, rating).unwrap();
    }
    assert_close(&all_scores(&mut s), &unadapted, "ratings, not adapted");
    s.adapt_steps(0).unwrap();
    assert!(!s.is_adapted());
    assert_close(&all_scores(&mut s), &unadapted, "zero steps");
    // `inner_steps` does not matter: one solve for any count above zero.
    s.adapt_steps(1).unwrap();
    let once = all_scores(&mut s);
    s.adapt_steps(40).unwrap();
    assert_eq!(all_scores(&mut s), once);
    s.adapt().unwrap();
    assert_eq!(all_scores(&mut s), once);
    // Scores by id, one at a time and top-k agree with scores by index.
    let ids: Vec<&str> = (0..6).map(|i| model.item_id(i).unwrap()).collect();
    let mut by_id = vec![0.0; 6];
    s.score_ids(&ids, &mut by_id).unwrap();
    assert_eq!(by_id, once);
    for (i, score) in once.iter().enumerate() {
        assert_eq!(s.predict(i as u32).unwrap(), *score);
    }
    assert_top_k_follows_scores(&mut s, &once);
    // A new rating drops the fold-in.
    s.add_rating_by_index(1, 3.0).unwrap();
    assert!(!s.is_adapted());
    assert_close(&all_scores(&mut s), &unadapted, "after a new rating");
    s.clear_ratings();
    assert_close(&all_scores(&mut s), &unadapted, "after clearing");
}

/// The same item rated several times (differently), and a single rating: still the solve.
#[test]
fn duplicates_and_a_single_rating() {
    let body = fold_in_body(Case::new(false, Rates::Fixed, 3));
    let model = Model::from_body(body.clone()).unwrap();
    for support in [vec![(2, 1.0); 1], vec![(2, 1.0), (2, 5.0), (2, 3.0), (4, 2.0), (2, 1.0), (4, 2.0)]] {
        let mut s = adapted_session(&model, &support);
        assert_close(&all_scores(&mut s), &reference_scores(&body, &support).0, &format!("{support:?}"));
    }
    let hml = fold_in_body(Case { hml: true, ..Case::new(true, Rates::Fixed, 3) });
    let model = Model::from_body(hml.clone()).unwrap();
    let support = [(2, 1.0)];
    let mut s = adapted_session(&model, &support);
    assert_close(&all_scores(&mut s), &reference_scores(&hml, &support).0, "HML, one rating");
}

/// The most ratings a session takes: one solve over all of them, equal to the reference.
#[test]
fn ten_thousand_ratings_fold_in() {
    for click in [false, true] {
        let body = fold_in_body(Case::new(click, Rates::Network, 3));
        let model = Model::from_body(body.clone()).unwrap();
        let mut rng = Lcg::new(99);
        let support: Vec<(u32, f32)> = (0..MAX_SUPPORT_RATINGS)
            .map(|_| {
                let item = ((rng.next_f32() + 0.5) * 6.0) as u32 % 6;
                let value = if click { f32::from(rng.next_f32() > 0.0) } else { 3.0 + 4.0 * rng.next_f32() };
                (item, value)
            })
            .collect();
        let mut s = adapted_session(&model, &support);
        assert_eq!(s.add_rating_by_index(0, 1.0), Err(Error::TooManyRatings));
        let got = all_scores(&mut s);
        assert!(got.iter().all(|v| v.is_finite()));
        assert_close(&got, &reference_scores(&body, &support).0, &format!("10,000 ratings, click {click}"));
    }
}

/// A change to a model body.
type Change = fn(&mut ModelBody);

/// Extreme but valid models and ratings: a solve, or [`Error::NonFiniteParameter`] (a system
/// that is not positive definite in f64), never a panic or an internal error; after an error
/// the session scores with the meta-learned weights.
#[test]
fn extreme_values_give_a_result_or_a_typed_error() {
    let base = fold_in_body(Case::new(false, Rates::Fixed, 3));
    let variants: [(&str, Change); 9] = [
        ("tiny ridge weights", |b| b.product.fold_in.as_mut().unwrap().ridge[..5].fill(1e-38)),
        ("huge ridge weights", |b| b.product.fold_in.as_mut().unwrap().ridge.fill(3e38)),
        ("huge hidden weights", |b| b.layers[1].weight.fill(1e30)),
        ("huge embeddings", |b| b.item_fields[0].embedding.fill(3e38)),
        ("huge item biases", |b| b.product.item_bias.fill(3e38)),
        ("huge output layer", |b| b.layers[2].weight.fill(-3e38)),
        ("a dead hidden layer", |b| b.layers[1].bias.fill(-1e30)),
        ("huge rates", |b| {
            b.learning_rate = LearningRate::PerParameter(
                b.layers.iter().map(|l| DenseLayer { weight: vec![3e38; l.weight.len()], ..l.clone() }).collect(),
            )
        }),
        ("zero inner rate", |b| b.adaptation.inner_lr = 0.0),
    ];
    for (what, change) in variants {
        let mut body = base.clone();
        change(&mut body);
        let model = Model::from_body(body).unwrap_or_else(|e| panic!("{what}: {e}"));
        for support in [vec![(0, 1.0); 7], vec![(0, 5.0), (1, 1.0), (1, 5.0), (5, 1.0)]] {
            let mut s = user_session(&model);
            for &(item, rating) in &support {
                s.add_rating_by_index(item, rating).unwrap();
            }
            let before = all_scores(&mut s);
            match s.adapt() {
                Ok(()) => assert!(s.is_adapted(), "{what}"),
                Err(e) => {
                    assert_eq!(e, Error::NonFiniteParameter, "{what}");
                    assert!(!s.is_adapted(), "{what}");
                    let after = all_scores(&mut s);
                    let same = before.iter().zip(&after).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: {before:?} vs {after:?}");
                }
            }
        }
    }
}

// ---- the file ----

fn golden_body() -> ModelBody {
    let mut body = fold_in_body(Case::new(false, Rates::Fixed, 2));
    // Two factors over six items, and eight ridge weights (d = 5): small enough to read.
    let head = body.product.fold_in.as_mut().unwrap();
    head.ridge = vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 0.25];
    head.item_factors = (0..12).map(|i| i as f32 * 0.25 - 1.5).collect();
    body
}

#[test]
fn fold_in_model_matches_its_golden_file() {
    let bytes = format::encode(&golden_body()).unwrap();
    let path = golden_path("tiny-fold-in.mrec");
    assert_matches_golden(&path, &bytes);
    assert_eq!(&bytes[8..12], &[0x02, 0x00, 0x03, 0x00], "format 2.3");
    let flags = required::ITEM_BIAS | required::ADAPT_SCOPE | required::FOLD_IN;
    assert_eq!(&bytes[16..20], &flags.to_le_bytes());
    assert_eq!(required::FOLD_IN, 1 << 9);
    // The body and product model as without the head (scope 3), then the head: k = 2, eight
    // ridge weights, the factors as f32 (variant 0, twelve values).
    let mut without = golden_body();
    without.product.fold_in = None;
    let plain = format::encode(&without).unwrap();
    assert_eq!(&bytes[HEADER_LEN..plain.len()], &plain[HEADER_LEN..]);
    assert_eq!(plain[plain.len() - 5], 3, "adapt: fold-in");
    let trailer = &bytes[plain.len()..];
    assert_eq!(trailer.len(), 1 + 1 + 8 * 4 + 1 + 1 + 12 * 4);
    assert_eq!((trailer[0], trailer[1]), (2, 8));
    assert_eq!(&trailer[2..6], &0.5f32.to_le_bytes());
    assert_eq!((trailer[34], trailer[35]), (0, 12));
    assert_eq!(&trailer[36..40], &(-1.5f32).to_le_bytes());
    let model = Model::from_path(&path).unwrap();
    assert_eq!(&model.to_body(), &golden_body());
    assert_eq!(model.adapt_scope(), Adapt::FoldIn);
    assert_eq!(model.fold_in_head(), golden_body().product.fold_in.as_ref());
}

/// The flag is the fold-in's alone; an early 2.3 reader (bits 0 to 8) refuses the file by name,
/// as this one refuses the next bit.
#[test]
fn the_fold_in_flag_is_refused_by_older_readers() {
    let good = format::encode(&golden_body()).unwrap();
    let flags = u32::from_le_bytes(good[16..20].try_into().unwrap());
    let early_2_3 = required::KNOWN & !(required::FOLD_IN | required::ALIGNED_TABLES);
    assert_eq!(early_2_3, (1 << 9) - 1);
    assert_ne!(flags & !early_2_3, 0, "an early 2.3 reader's mask refuses this file");
    let future = reseal(&good, &good[HEADER_LEN..], flags | 1 << 11);
    assert_eq!(Model::from_bytes(&future).unwrap_err(), Error::UnsupportedFeature);
    // No other feature sets it.
    let mut body = golden_body();
    body.product.adapt = Adapt::Head;
    body.product.fold_in = None;
    let bytes = format::encode(&body).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()) & required::FOLD_IN, 0);
}

/// f16 and 8-bit item factors (as `trainer export --embeddings` asks): a smaller head that
/// loads, factors within the precision, and a fold-in close to the f32 model's.
#[test]
fn compact_item_factors() {
    let body = fold_in_body(Case::new(false, Rates::Fixed, 3));
    let exact = format::encode(&body).unwrap();
    let model = Model::from_body(body.clone()).unwrap();
    let want = all_scores(&mut adapted_session(&model, &SUPPORT));
    for (precision, tolerance) in [(EmbeddingPrecision::F16, 2e-3), (EmbeddingPrecision::Int8, 2e-2)] {
        let bytes = format::encode_with(&body, precision).unwrap();
        assert!(bytes.len() < exact.len());
        let loaded = Model::from_bytes(&bytes).unwrap();
        let head = loaded.fold_in_head().unwrap();
        assert_eq!(head.ridge, body.product.fold_in.as_ref().unwrap().ridge, "ridge weights stay f32");
        for (a, b) in head.item_factors.iter().zip(&body.product.fold_in.as_ref().unwrap().item_factors) {
            assert!((a - b).abs() <= tolerance * 0.75, "{precision:?}: {a} vs {b}");
        }
        let got = all_scores(&mut adapted_session(&loaded, &SUPPORT));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 0.25, "{precision:?}: {got:?} vs {want:?}");
        }
    }
}

/// A damaged head (checksums made right, so the decoder sees it) is refused with a typed
/// error, never a panic.
#[test]
fn damaged_heads_are_refused_by_name() {
    let good = format::encode(&golden_body()).unwrap();
    let mut without = golden_body();
    without.product.fold_in = None;
    let plain_len = format::encode(&without).unwrap().len() - HEADER_LEN;
    let all = required::ITEM_BIAS | required::ADAPT_SCOPE | required::FOLD_IN;
    let head = Trailer { good: &good, plain_len, flags: all, name: "head" };
    let (payload, load) = (head.payload(), |payload: &[u8], flags: u32| head.load(payload, flags));
    assert_eq!(load(payload, all), Ok(()));
    // The flag without a head; a head without the flag; the scope without a head.
    assert_eq!(load(&payload[..plain_len], all), Err(Error::MalformedBody));
    assert_eq!(load(payload, all & !required::FOLD_IN), Err(Error::TrailingBytes));
    assert_eq!(load(&payload[..plain_len], all & !required::FOLD_IN), Err(Error::InconsistentDimensions));
    // Every shorter head, and one byte more.
    head.assert_cuts_and_extension_refused();
    let edit = |at: usize, bytes: &[u8], want: Error| head.edit(at, bytes, want);
    // k disagreeing with the ridge weights (and the factors); a longer varint that shifts what
    // follows (k = 1024, no ridge weights, no factors, then bytes left over).
    edit(0, &[3], Error::InconsistentDimensions);
    edit(0, &[0], Error::InconsistentDimensions);
    edit(0, &[0x80], Error::TrailingBytes);
    // Ridge weights: NaN, zero, negative, infinite.
    edit(2, &f32::NAN.to_le_bytes(), Error::NonFiniteParameter);
    edit(6, &0.0f32.to_le_bytes(), Error::NonFiniteParameter);
    edit(30, &(-1.0f32).to_le_bytes(), Error::NonFiniteParameter);
    edit(30, &f32::INFINITY.to_le_bytes(), Error::NonFiniteParameter);
    // The factors: a storage this reader does not know, a compact table of the wrong size, NaN.
    edit(34, &[2], Error::MalformedBody);
    edit(34, &[1, 0, 0], Error::InconsistentDimensions);
    edit(36, &f32::NAN.to_le_bytes(), Error::NonFiniteParameter);
    // The scope: a head needs the fold-in, and the fold-in a head.
    let mut damaged = payload.to_vec();
    damaged[plain_len - 5] = 1;
    assert_eq!(load(&damaged, all), Err(Error::InconsistentDimensions));
    // Every head byte set to every value: an error or a model, never a panic.
    head.assert_no_byte_panics();
}

/// What validation refuses, from the body and from its file alike.
#[test]
fn validation_refuses_inconsistent_heads() {
    let check = |change: &dyn Fn(&mut ModelBody), want: Result<(), Error>| {
        let mut body = golden_body();
        change(&mut body);
        assert_eq!(Model::from_body(body.clone()).map(drop), want);
        let bytes = format::encode(&body).unwrap();
        assert_eq!(Model::from_bytes(&bytes).map(drop), want);
    };
    let bad = Err(Error::InconsistentDimensions);
    let non_finite = Err(Error::NonFiniteParameter);
    check(&|b| b.product.fold_in = None, bad);
    check(&|b| b.product.adapt = Adapt::Head, bad);
    check(&|b| b.product.adapt = Adapt::All, bad);
    check(&|b| head_mut(b).ridge.push(1.0), bad);
    check(
        &|b| {
            head_mut(b).ridge.pop();
        },
        bad,
    );
    check(&|b| head_mut(b).item_factors.push(1.0), bad);
    check(&|b| resize_head(b, 5, 257, 0.0), bad);
    check(&|b| head_mut(b).ridge[0] = 0.0, non_finite);
    check(&|b| head_mut(b).ridge[7] = -1e-3, non_finite);
    check(&|b| head_mut(b).ridge[3] = f32::NAN, non_finite);
    check(&|b| head_mut(b).item_factors[4] = f32::INFINITY, non_finite);
    // The factors' and bias's weights against the item factors' norms (as a factor model's).
    check(&|b| head_mut(b).item_factors[0] = 1e4, non_finite);
    check(&|b| head_mut(b).ridge[7] = 1e-6, non_finite);
    // The hidden features' weights need only be positive.
    check(&|b| head_mut(b).ridge[..5].fill(1e-30), Ok(()));
    // A head of 256 factors, and the proximal weight (unused by the fold-in) still validated.
    check(&|b| resize_head(b, 5, 256, 0.01), Ok(()));
    check(&|b| b.product.proximal = -1.0, non_finite);
    // A factor model has no MLP to fold a head into.
    let mut factors = crate::fixture::tiny_factor_body();
    factors.product = golden_body().product;
    assert_eq!(Model::from_body(factors).unwrap_err(), Error::InconsistentDimensions);
    // An output layer wider than a head may solve for: a one-layer MLP over 1,028 inputs.
    let mut wide = golden_body();
    wide.embedding_dim = 257;
    for field in wide.user_fields.iter_mut().chain(wide.item_fields.iter_mut()) {
        field.embedding = vec![0.01; field.rows() * 257];
    }
    wide.layers = vec![DenseLayer { inputs: 1028, outputs: 1, weight: vec![0.01; 1028], bias: vec![0.0] }];
    let h = wide.product.fold_in.as_mut().unwrap();
    h.ridge = vec![1.0; 1028 + 2 + 1];
    assert_eq!(Model::from_body(wide).unwrap_err(), Error::InconsistentDimensions);
}

// ---- federated contributions of a fold-in model ----

/// The first-order query loss the device differentiates (`session::contribute`): the fold-in
/// solved on `support` with the parameters `solve` (its rows, and the head's initialisation),
/// then the query loss with the hidden layers of `hidden` and the solved head.
fn first_order_loss(
    body: &ModelBody,
    (hidden, solve): (&Params, &Params),
    lambda: &[f64],
    split: [&[(u32, f32)]; 2],
) -> f64 {
    let mut reference = Reference::new(body, 0);
    reference.params = solve.clone();
    reference.fold_in(split[0], lambda);
    let last = reference.params.len() - 1;
    reference.params[..last].clone_from_slice(&hidden[..last]);
    reference.loss(split[1])
}

/// The reference contribution by central differences of [`first_order_loss`]: over the hidden
/// layers (the query's), the output layer (the solve's initialisation) and the log ridge weights.
fn reference_contribution(body: &ModelBody, ratings: &[(u32, f32)]) -> Vec<f64> {
    let salt = metarec_runtime::contribution::model_id(&Model::from_body(body.clone()).unwrap());
    let (adapt, score) = metarec_runtime::resample::split_salted(ratings.len(), salt);
    let pick =
        |mask: &[bool]| -> Vec<(u32, f32)> { ratings.iter().zip(mask).filter(|(_, &m)| m).map(|(&s, _)| s).collect() };
    let split = [&pick(&adapt)[..], &pick(&score)[..]];
    let base = params_of(body);
    let lambda = lambda(body, None, true);
    let eps = 1e-5;
    let loss = |hidden: &Params, solve: &Params, lambda: &[f64]| first_order_loss(body, (hidden, solve), lambda, split);
    let mut out = Vec::new();
    let last = base.len() - 1;
    for (l, (weight, bias)) in base.iter().enumerate() {
        for part in 0..2 {
            let len = if part == 0 { weight.len() } else { bias.len() };
            for i in 0..len {
                let moved = |sign: f64| {
                    let mut p = base.clone();
                    let v = if part == 0 { &mut p[l].0[i] } else { &mut p[l].1[i] };
                    *v += sign * eps;
                    if l == last {
                        loss(&base, &p, &lambda)
                    } else {
                        loss(&p, &base, &lambda)
                    }
                };
                out.push((moved(1.0) - moved(-1.0)) / (2.0 * eps));
            }
        }
    }
    for m in 0..lambda.len() {
        let moved = |sign: f64| {
            let mut l = lambda.clone();
            l[m] *= (sign * eps).exp();
            loss(&base, &base, &l)
        };
        out.push((moved(1.0) - moved(-1.0)) / (2.0 * eps));
    }
    out
}

#[test]
fn a_fold_in_contribution_is_the_first_order_query_gradient_through_the_solve() {
    let ratings: Vec<(u32, f32)> =
        vec![(0, 4.0), (3, 1.0), (2, 5.0), (5, 2.5), (1, 3.0), (4, 4.5), (2, 2.0), (0, 1.5), (3, 3.5), (5, 5.0)];
    for case in [
        Case::new(false, Rates::Fixed, 3),
        Case::new(false, Rates::Fixed, 0),
        Case { one_layer: true, ..Case::new(false, Rates::Fixed, 2) },
    ] {
        let body = fold_in_body(case);
        let model = Model::from_body(body.clone()).unwrap();
        let mut session = user_session(&model);
        for &(item, rating) in &ratings {
            session.add_rating_by_index(item, rating).unwrap();
        }
        let blob = session.contribute(1e6).unwrap();
        assert!(!session.is_adapted(), "a contribution leaves the session un-adapted");
        assert_eq!(blob.len(), session.contribution_len());
        let decoded = metarec_runtime::contribution::decode(&blob).unwrap();
        assert_eq!(decoded.version, metarec_runtime::contribution::VERSION_FOLD_IN);
        let expected = reference_contribution(&body, &ratings);
        let params: usize = body.layers.iter().map(|l| l.weight.len() + l.bias.len()).sum();
        assert_eq!(decoded.update.len(), params + head(&body).ridge.len());
        assert_eq!(decoded.update.len(), expected.len());
        assert!(expected[params..].iter().any(|v| v.abs() > 1e-3), "a vacuous ridge reference");
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (k, (a, e)) in decoded.update.iter().zip(&expected).enumerate() {
            assert!((f64::from(*a) - e).abs() <= 2e-4 * scale.max(1.0), "{case:?} value {k}: {a} vs {e}");
        }
    }
}

#[test]
fn fold_in_models_with_several_initialisations_or_no_steps_do_not_contribute() {
    let hml = fold_in_body(Case { hml: true, ..Case::new(false, Rates::Fixed, 3) });
    let model = Model::from_body(hml).unwrap();
    assert_eq!(adapted_session(&model, &SUPPORT).contribute(1.0), Err(Error::NotContributable));
    let mut none = fold_in_body(Case::new(false, Rates::Fixed, 3));
    none.adaptation.inner_steps = 0;
    let model = Model::from_body(none).unwrap();
    let mut session = user_session(&model);
    for &(item, rating) in &SUPPORT {
        session.add_rating_by_index(item, rating).unwrap();
    }
    assert_eq!(session.contribute(1.0), Err(Error::NotContributable));
}
