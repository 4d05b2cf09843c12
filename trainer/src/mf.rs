//! Biased matrix factorisation with fold-in (`--method mf`), the baseline a practitioner tries
//! first for new users: `r̂ = μ + b_u + b_i + p_u · q_i`.
//!
//! **Training** is alternating least squares with biases on the training users' ratings (all of
//! them, support and query): with the items fixed, every user's `(b_u, p_u)` is a ridge
//! regression on `[1, q_i]` with targets `r − μ − b_i`; with the users fixed, every item's
//! `(b_i, q_i)` is one on `[1, p_u]` with targets `r − μ − b_u`. Each half-sweep is exact and
//! cannot increase the regularised loss, needs no learning rate, and is deterministic given the
//! seeded initial item factors. ALS rather than SGD/Adam on libtorch: the fold-in of a new user
//! is the same ridge step, so training and the device solve one system, to the bit
//! ([`metarec_runtime::factors::Ridge`]), and a sweep of MovieLens-1M takes well under a second
//! on one core.
//!
//! **Selection on validation users only:** after every sweep the validation users are folded in
//! from their support ratings and scored on their query ratings; the sweep with the lowest mean
//! per-user loss is kept (as the meta-learners keep their best epoch).
//!
//! **New users** are folded in by the same ridge regression over their support ratings; with no
//! ratings they get `μ + b_i`. **Items no training user rated** have `b_i = 0`, `q_i = 0` (the
//! ridge solution without data), so they score `μ + b_u`.
//!
//! **Clicks:** the same least squares on the 0/1 labels (a linear probability model), its
//! scores kept in `[0.001, 0.999]` ([`metarec_runtime::CLICK_FACTOR_FLOOR`]). A logistic fold-in
//! would need Newton steps on the device and a non-closed-form training; AUC, the click task's
//! main measure, depends only on the order of the scores.

use metarec_runtime::factors::{self, Ridge};
use metarec_runtime::format::Factors;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::eval::UserPredictions;
use crate::method::Method;
use crate::method::MethodConfig;
use crate::objective::Objective;
use crate::run::EpochRecord;
use crate::split::Task;

/// Standard deviation of the initial item factors.
const INIT_STD: f64 = 0.1;

/// A trained factorisation: μ, the item tables and the ridge weights of the fold-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactorModel {
    /// μ: the mean training rating (click rate for clicks).
    pub mean: f32,
    /// Item biases and factors and the fold-in's ridge weights, as the model file carries them.
    pub factors: Factors,
    /// Whether the values are click labels (scores kept inside (0, 1)).
    pub click: bool,
}

/// The outcome of [`fit`].
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The model of the best sweep.
    pub model: FactorModel,
    /// Training and validation loss per sweep.
    pub history: Vec<EpochRecord>,
    /// Sweep kept (1-based).
    pub best_sweep: usize,
    /// Its validation loss.
    pub best_valid: f64,
}

impl FactorModel {
    /// Folds in a user from `support` (`(item, value)`) and returns `[b_u, p_u]`.
    pub fn fold_in(&self, support: impl Iterator<Item = (u32, f32)>, ridge: &mut Ridge) -> Vec<f32> {
        let support: Vec<(u32, f32)> = support.collect();
        let mut user = vec![0.0; self.factors.factors as usize + 1];
        if !support.is_empty() {
            // Validated weights make the system positive definite; a failure leaves the zeros.
            if factors::fold_in(&self.factors, self.mean, &support, ridge, &mut user).is_err() {
                user.fill(0.0);
            }
        }
        user
    }

    /// The score of `item` for the user vector `user`, as the device computes it.
    pub fn predict(&self, user: &[f32], item: u32) -> f32 {
        let y = factors::predict(&self.factors, self.mean, user, item);
        if self.click {
            factors::click_probability(y)
        } else {
            y
        }
    }

    /// Each task's query predictions after folding in its support set (`adapt` false: without
    /// the fold-in, `μ + b_i`).
    pub fn predict_tasks(&self, tasks: &[Task], adapt: bool) -> Vec<UserPredictions> {
        let mut ridge = Ridge::default();
        let zeros = vec![0.0; self.factors.factors as usize + 1];
        tasks
            .iter()
            .map(|t| {
                let user = if adapt {
                    self.fold_in(t.support.iter().map(|r| (r.item, r.value)), &mut ridge)
                } else {
                    zeros.clone()
                };
                UserPredictions {
                    user: t.user,
                    truth: t.query.iter().map(|r| r.value).collect(),
                    predicted: t.query.iter().map(|r| self.predict(&user, r.item)).collect(),
                }
            })
            .collect()
    }

    /// Mean per-user query loss after the fold-in (MSE, or log loss for clicks): the validation
    /// criterion of every method.
    pub fn mean_user_loss(&self, tasks: &[Task], objective: Objective) -> f64 {
        let users = self.predict_tasks(tasks, true);
        users.iter().map(|u| user_loss(u, objective)).sum::<f64>() / users.len().max(1) as f64
    }

    /// The method's rows: with the fold-in, and without it (`μ + b_i`: the adaptation gain).
    pub fn rows(&self, tasks: &[Task]) -> Vec<(String, Vec<UserPredictions>)> {
        vec![
            (format!("{} (k = {})", Method::Mf.title(), self.factors.factors), self.predict_tasks(tasks, true)),
            (format!("{} without adaptation", Method::Mf.title()), self.predict_tasks(tasks, false)),
        ]
    }
}

/// Mean loss of one user's query predictions.
fn user_loss(user: &UserPredictions, objective: Objective) -> f64 {
    let n = user.truth.len().max(1) as f64;
    let sum: f64 = user
        .truth
        .iter()
        .zip(&user.predicted)
        .map(|(&t, &p)| {
            let (t, p) = (f64::from(t), f64::from(p));
            match objective {
                Objective::Rating => (p - t) * (p - t),
                Objective::Click { .. } => {
                    let p = p.clamp(1e-7, 1.0 - 1e-7);
                    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                }
            }
        })
        .sum();
    sum / n
}

/// The training ratings grouped both ways, with dense user indices.
struct Ratings {
    /// Per training user: `(item, value)`.
    by_user: Vec<Vec<(u32, f32)>>,
    /// Per item: `(user position, value)`.
    by_item: Vec<Vec<(u32, f32)>>,
}

impl Ratings {
    fn new(items: usize, train: &[Task]) -> Ratings {
        let mut by_item = vec![Vec::new(); items];
        let by_user: Vec<Vec<(u32, f32)>> = train
            .iter()
            .enumerate()
            .map(|(u, t)| {
                let all: Vec<(u32, f32)> = t.support.iter().chain(&t.query).map(|r| (r.item, r.value)).collect();
                for &(item, value) in &all {
                    if let Some(list) = by_item.get_mut(item as usize) {
                        list.push((u as u32, value));
                    }
                }
                all
            })
            .collect();
        Ratings { by_user, by_item }
    }
}

/// Alternating least squares on the training users, the sweep kept by the validation users'
/// mean query loss after fold-in. `items` is the catalogue size; `seed` fixes the initial item
/// factors.
pub fn fit(
    items: usize,
    train: &[Task],
    valid: &[Task],
    objective: Objective,
    config: &MethodConfig,
    seed: u64,
) -> Fitted {
    let ratings = Ratings::new(items, train);
    let count = ratings.by_user.iter().map(Vec::len).sum::<usize>();
    let mean = (ratings.by_user.iter().flatten().map(|&(_, v)| f64::from(v)).sum::<f64>() / count.max(1) as f64) as f32;
    let k = config.mf_factors;
    let width = k + 1;
    let (lambda, bias_lambda) = (config.mf_lambda as f32, config.mf_bias_lambda as f32);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4D46_5F41_4C53);
    let normal = Normal::new(0.0, INIT_STD).expect("a positive standard deviation");
    // Per item [b_i, q_i]; per user [b_u, p_u].
    let mut item_rows: Vec<f32> =
        (0..items * width).map(|j| if j % width == 0 { 0.0 } else { normal.sample(&mut rng) as f32 }).collect();
    let mut user_rows = vec![0f32; ratings.by_user.len() * width];
    let mut best: Option<(f64, usize, FactorModel)> = None;
    let mut history = Vec::new();
    for sweep in 1..=config.mf_sweeps.max(1) {
        solve_side(&ratings.by_user, &item_rows, &mut user_rows, mean, width, bias_lambda, lambda);
        solve_side(&ratings.by_item, &user_rows, &mut item_rows, mean, width, bias_lambda, lambda);
        let model = to_model(&item_rows, width, mean, config, objective);
        let train_loss = training_loss(&ratings.by_user, &user_rows, &item_rows, mean, width, objective);
        let valid_loss = model.mean_user_loss(valid, objective);
        history.push(EpochRecord { epoch: sweep, train_loss, valid_loss });
        if valid_loss.is_finite() && best.as_ref().is_none_or(|(b, _, _)| valid_loss < *b) {
            best = Some((valid_loss, sweep, model));
        }
    }
    let (best_valid, best_sweep, model) = match best {
        Some(best) => best,
        // No validation user (or no finite loss): the last sweep.
        None => (f64::NAN, history.len(), to_model(&item_rows, width, mean, config, objective)),
    };
    Fitted { model, history, best_sweep, best_valid }
}

/// Ratings below which a half-sweep runs on one thread (threads would cost more than they save).
const PARALLEL_RATINGS: usize = 1 << 16;

/// One half-sweep: every row of `rows` (users, or items) solved against the fixed `other` side.
/// The rows are independent: on a large input, contiguous runs of them holding about equal
/// shares of the ratings are solved on all cores, each row by the same arithmetic as on one.
fn solve_side(
    lists: &[Vec<(u32, f32)>],
    other: &[f32],
    rows: &mut [f32],
    mean: f32,
    width: usize,
    bias_lambda: f32,
    lambda: f32,
) {
    let total: usize = lists.iter().map(Vec::len).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || total < PARALLEL_RATINGS {
        return solve_rows(lists, other, rows, mean, width, bias_lambda, lambda);
    }
    let share = total.div_ceil(threads);
    std::thread::scope(|scope| {
        let (mut lists, mut rows) = (lists, rows);
        while !lists.is_empty() {
            let (mut count, mut seen) = (0, 0);
            while count < lists.len() && (seen < share || count == 0) {
                seen += lists[count].len();
                count += 1;
            }
            let (these, rest) = lists.split_at(count);
            let (these_rows, rest_rows) = std::mem::take(&mut rows).split_at_mut(count * width);
            scope.spawn(move || solve_rows(these, other, these_rows, mean, width, bias_lambda, lambda));
            (lists, rows) = (rest, rest_rows);
        }
    });
}

/// [`solve_side`] on one thread.
fn solve_rows(
    lists: &[Vec<(u32, f32)>],
    other: &[f32],
    rows: &mut [f32],
    mean: f32,
    width: usize,
    bias_lambda: f32,
    lambda: f32,
) {
    let mut ridge = Ridge::default();
    for (list, row) in lists.iter().zip(rows.chunks_exact_mut(width)) {
        ridge.reset(width - 1, bias_lambda, lambda);
        for &(j, value) in list {
            let fixed = &other[j as usize * width..(j as usize + 1) * width];
            ridge.add(&fixed[1..], value - mean - fixed[0]);
        }
        if ridge.solve(row).is_err() {
            row.fill(0.0);
        }
    }
}

/// Mean per-user loss of the training users' own fit (their solved vectors, all ratings).
fn training_loss(
    by_user: &[Vec<(u32, f32)>],
    user_rows: &[f32],
    item_rows: &[f32],
    mean: f32,
    width: usize,
    objective: Objective,
) -> f64 {
    let mut total = 0.0;
    for (list, user) in by_user.iter().zip(user_rows.chunks_exact(width)) {
        let predicted: Vec<f32> = list
            .iter()
            .map(|&(i, _)| {
                let item = &item_rows[i as usize * width..(i as usize + 1) * width];
                mean + user[0] + item[0] + user[1..].iter().zip(&item[1..]).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect();
        let predicted = if objective.is_click() {
            predicted.into_iter().map(factors::click_probability).collect()
        } else {
            predicted
        };
        let truth = list.iter().map(|&(_, v)| v).collect();
        total += user_loss(&UserPredictions { user: 0, truth, predicted }, objective);
    }
    total / by_user.len().max(1) as f64
}

fn to_model(item_rows: &[f32], width: usize, mean: f32, config: &MethodConfig, objective: Objective) -> FactorModel {
    let item_bias = item_rows.chunks_exact(width).map(|row| row[0]).collect();
    let item_factors = item_rows.chunks_exact(width).flat_map(|row| row[1..].iter().copied()).collect();
    FactorModel {
        mean,
        factors: Factors {
            factors: (width - 1) as u32,
            regularisation: config.mf_lambda as f32,
            bias_regularisation: config.mf_bias_lambda as f32,
            item_bias,
            item_factors,
        },
        click: objective.is_click(),
    }
}

/// The MF fold-in row every table carries beside the trivial baselines: fitted on the split's
/// training users with `config` (the sweep chosen on its validation users), evaluated on `tasks`.
pub fn baseline_row(
    items: usize,
    split: &crate::split::Split,
    objective: Objective,
    config: &MethodConfig,
    seed: u64,
    tasks: &[Task],
) -> (String, Vec<UserPredictions>) {
    let fitted = fit(items, &split.train, &split.valid, objective, config, seed);
    (Method::Mf.title().to_string(), fitted.model.predict_tasks(tasks, true))
}
