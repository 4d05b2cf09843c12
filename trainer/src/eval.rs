//! Query-set metrics for the meta-learned model and the trivial baselines: MSE, MAE and nDCG@k
//! for ratings; AUC, normalised entropy and log loss for clicks.

use core::fmt::Write as _;

use crate::data::Dataset;
use crate::model::{tensor_values, MetaModel, Order, TaskBatch};
use crate::objective::{Loss as _, Objective};
use crate::split::{csv_field, Task};

/// One user's query ratings and a method's predictions for them.
#[derive(Debug, Clone)]
pub struct UserPredictions {
    /// Index into [`Dataset::users`].
    pub user: u32,
    /// True query ratings (0/1 labels for clicks).
    pub truth: Vec<f32>,
    /// Predicted query ratings (click probabilities), same order.
    pub predicted: Vec<f32>,
}

/// Aggregate query metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Mean squared error, pooled over all query ratings.
    pub mse: f64,
    /// Mean absolute error, pooled.
    pub mae: f64,
    /// nDCG@3 averaged over users.
    pub ndcg3: f64,
    /// Number of users.
    pub users: usize,
}

/// nDCG@k of one user's query items ranked by prediction (gain 2^r − 1, discount log2(1 + rank)).
pub fn ndcg_at(truth: &[f32], predicted: &[f32], k: usize) -> f64 {
    let gain = |r: f32| 2f64.powf(f64::from(r)) - 1.0;
    let dcg = |order: &[usize]| -> f64 {
        order.iter().take(k).enumerate().map(|(rank, &i)| gain(truth[i]) / (rank as f64 + 2.0).log2()).sum()
    };
    let mut by_prediction: Vec<usize> = (0..truth.len()).collect();
    // Ties broken by position so the metric is deterministic.
    by_prediction.sort_by(|&a, &b| predicted[b].total_cmp(&predicted[a]).then(a.cmp(&b)));
    let mut ideal: Vec<usize> = (0..truth.len()).collect();
    ideal.sort_by(|&a, &b| truth[b].total_cmp(&truth[a]).then(a.cmp(&b)));
    let best = dcg(&ideal);
    if best > 0.0 {
        dcg(&by_prediction) / best
    } else {
        0.0
    }
}

/// Pooled MSE and MAE, per-user-averaged nDCG@3.
pub fn metrics(users: &[UserPredictions]) -> Metrics {
    let (mut se, mut ae, mut n, mut ndcg) = (0.0, 0.0, 0usize, 0.0);
    for u in users {
        for (t, p) in u.truth.iter().zip(&u.predicted) {
            let d = f64::from(p - t);
            se += d * d;
            ae += d.abs();
            n += 1;
        }
        ndcg += ndcg_at(&u.truth, &u.predicted, 3);
    }
    let n = n.max(1) as f64;
    Metrics { mse: se / n, mae: ae / n, ndcg3: ndcg / users.len().max(1) as f64, users: users.len() }
}

/// Predictions of a trivial predictor that sees each task's support set.
pub fn baseline(tasks: &[Task], predict: impl Fn(&Task, u32) -> f32) -> Vec<UserPredictions> {
    tasks
        .iter()
        .map(|t| UserPredictions {
            user: t.user,
            truth: t.query.iter().map(|r| r.value).collect(),
            predicted: t.query.iter().map(|r| predict(t, r.item)).collect(),
        })
        .collect()
}

/// The trivial baselines, fitted on the training users' ratings only.
#[derive(Debug, Clone)]
pub struct Baselines {
    /// Mean training rating.
    pub global_mean: f32,
    item_mean: Vec<Option<f32>>,
    item_bias: Vec<f32>,
    user_shrinkage: f32,
    /// Predictions of the bias baseline are clamped to this range (clicks: a probability).
    range: (f32, f32),
}

impl Baselines {
    /// Fits the item means, and the biases of global + item bias + user bias with the
    /// shrinkage of item and user biases chosen on the validation users.
    pub fn fit(items: usize, train: &[Task], valid: &[Task]) -> Baselines {
        let ratings: Vec<&crate::data::Rating> = train.iter().flat_map(|t| t.support.iter().chain(&t.query)).collect();
        let global_mean = ratings.iter().map(|r| r.value).sum::<f32>() / ratings.len().max(1) as f32;
        let (mut sum, mut count) = (vec![0f32; items], vec![0u32; items]);
        for r in &ratings {
            sum[r.item as usize] += r.value;
            count[r.item as usize] += 1;
        }
        let item_mean = sum.iter().zip(&count).map(|(s, &c)| (c > 0).then(|| s / c as f32)).collect();
        let grid = [0.5f32, 2.0, 5.0, 10.0, 25.0];
        let mut best: Option<(f64, Baselines)> = None;
        for &item_shrinkage in &grid {
            let item_bias: Vec<f32> = sum
                .iter()
                .zip(&count)
                .map(|(s, &c)| (s - c as f32 * global_mean) / (c as f32 + item_shrinkage))
                .collect();
            for &user_shrinkage in &grid {
                let candidate = Baselines {
                    global_mean,
                    item_mean: Vec::new(),
                    item_bias: item_bias.clone(),
                    user_shrinkage,
                    range: (f32::NEG_INFINITY, f32::INFINITY),
                };
                let mse = metrics(&baseline(valid, |t, i| candidate.bias(t, i))).mse;
                if best.as_ref().is_none_or(|(b, _)| mse < *b) {
                    best = Some((mse, candidate));
                }
            }
        }
        let mut fitted = best.map(|(_, b)| b).expect("grid is not empty");
        fitted.item_mean = item_mean;
        fitted
    }

    /// The fitted item biases, one per item (0 for items no training user rated).
    pub fn item_biases(&self) -> &[f32] {
        &self.item_bias
    }

    /// Mean training rating of the item (the global mean for items no training user rated).
    pub fn item_mean(&self, item: u32) -> f32 {
        self.item_mean.get(item as usize).copied().flatten().unwrap_or(self.global_mean)
    }

    /// global mean + item bias + the user's shrunk mean residual on the support set.
    pub fn bias(&self, task: &Task, item: u32) -> f32 {
        let item_bias = |i: u32| self.item_bias.get(i as usize).copied().unwrap_or(0.0);
        let residual: f32 = task.support.iter().map(|r| r.value - self.global_mean - item_bias(r.item)).sum();
        let user_bias = residual / (task.support.len() as f32 + self.user_shrinkage);
        (self.global_mean + item_bias(item) + user_bias).clamp(self.range.0, self.range.1)
    }

    /// For the click task, keeps the additive bias baseline's predictions inside (0, 1), so that
    /// its log loss is defined (the means are probabilities already).
    pub fn for_objective(mut self, objective: Objective) -> Baselines {
        if objective.is_click() {
            self.range = (1e-3, 1.0 - 1e-3);
        }
        self
    }

    /// The four baselines on `tasks`, named as in the reports.
    pub fn predict_all(&self, tasks: &[Task]) -> Vec<(String, Vec<UserPredictions>)> {
        vec![
            ("global mean".into(), baseline(tasks, |_, _| self.global_mean)),
            ("item mean".into(), baseline(tasks, |_, i| self.item_mean(i))),
            ("user support mean".into(), baseline(tasks, |t, _| support_mean(t))),
            ("global + item + user bias".into(), baseline(tasks, |t, i| self.bias(t, i))),
        ]
    }
}

/// Mean of a task's support ratings.
pub fn support_mean(task: &Task) -> f32 {
    task.support.iter().map(|r| r.value).sum::<f32>() / task.support.len().max(1) as f32
}

/// Adapts the model to each task (`steps` inner steps; 0 = the meta-learned weights as they are)
/// and predicts its query set, `batch` users at a time.
pub fn predict_tasks(model: &MetaModel, tasks: &[Task], steps: u32, batch: usize) -> Vec<UserPredictions> {
    let mut out = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(batch.max(1)) {
        let padded = TaskBatch::new(chunk, model.device());
        let outputs = model.forward(&padded, steps, Order::Detached, false).predictions;
        let predictions = model.spec.objective.prediction(&outputs);
        let width = predictions.size()[1] as usize;
        let values = tensor_values(&predictions);
        for (b, task) in chunk.iter().enumerate() {
            out.push(UserPredictions {
                user: task.user,
                truth: task.query.iter().map(|r| r.value).collect(),
                predicted: values[b * width..b * width + task.query.len()].to_vec(),
            });
        }
    }
    out
}

/// Replays each task on the on-device runtime as an app would (profile fields, support ratings,
/// the model's own adaptation, then scores for the query items): what a model file, compact
/// tables included, scores on the device.
pub fn device_predictions(
    model: &metarec_runtime::Model,
    data: &Dataset,
    tasks: &[Task],
) -> anyhow::Result<Vec<UserPredictions>> {
    use anyhow::Context as _;
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let user = &data.users[task.user as usize];
        let fail = |what: &str, e: metarec_runtime::Error| anyhow::anyhow!("user {}: {what}: {e}", user.id);
        let mut session = metarec_runtime::Session::new(model);
        for (field, value) in data.user_fields.iter().zip(&user.raw) {
            session.set_profile(&field.name, value).map_err(|e| fail(&format!("profile field {}", field.name), e))?;
        }
        let index = |item: u32| {
            let id = &data.items[item as usize].id;
            model.item_index(id).with_context(|| format!("item {id} is not in the model's catalogue"))
        };
        for r in &task.support {
            session.add_rating_by_index(index(r.item)?, r.value).map_err(|e| fail("support rating", e))?;
        }
        session.adapt().map_err(|e| fail("adaptation", e))?;
        let items = task.query.iter().map(|r| index(r.item)).collect::<anyhow::Result<Vec<u32>>>()?;
        let mut predicted = vec![0.0; items.len()];
        session.score_indices(&items, &mut predicted).map_err(|e| fail("scoring", e))?;
        out.push(UserPredictions { user: task.user, truth: task.query.iter().map(|r| r.value).collect(), predicted });
    }
    Ok(out)
}

/// Mean query loss per user (the validation criterion): MSE, or log loss for clicks.
pub fn mean_user_loss(model: &MetaModel, tasks: &[Task], steps: u32, batch: usize) -> f64 {
    let mut total = 0.0;
    for chunk in tasks.chunks(batch.max(1)) {
        let loss = model.forward(&TaskBatch::new(chunk, model.device()), steps, Order::Detached, false).query_loss;
        total += loss.sum(tch::Kind::Double).double_value(&[]);
    }
    total / tasks.len().max(1) as f64
}

/// A table of methods × metrics; with known groups, the main error per group too (MSE for
/// ratings, AUC for clicks).
pub fn report(data: &Dataset, objective: Objective, rows: &[(String, Vec<UserPredictions>)]) -> String {
    let groups: Vec<String> = {
        let mut g: Vec<String> = data.users.iter().filter_map(|u| u.group.clone()).collect();
        g.sort();
        g.dedup();
        g
    };
    let in_group = |users: &[UserPredictions], g: &String| -> Vec<UserPredictions> {
        users.iter().filter(|u| data.users[u.user as usize].group.as_ref() == Some(g)).cloned().collect()
    };
    let mut out = String::new();
    match objective {
        Objective::Rating => {
            let _ = write!(out, "{:<38} {:>7} {:>7} {:>8}", "method", "MSE", "MAE", "nDCG@3");
        }
        Objective::Click { .. } => {
            let _ = write!(
                out,
                "{:<38} {:>7} {:>8} {:>7} {:>8} {:>8}",
                "method", "AUC", "userAUC", "NE", "logloss", "nDCG@3"
            );
        }
    }
    let group_metric = if objective.is_click() { "AUC" } else { "MSE" };
    for g in &groups {
        let _ = write!(out, " {:>10}", format!("{group_metric} {g}"));
    }
    let _ = writeln!(out, " {:>6}", "users");
    for (name, users) in rows {
        match objective {
            Objective::Rating => {
                let m = metrics(users);
                let _ = write!(out, "{name:<38} {:>7.4} {:>7.4} {:>8.4}", m.mse, m.mae, m.ndcg3);
                for g in &groups {
                    let _ = write!(out, " {:>10.4}", metrics(&in_group(users, g)).mse);
                }
            }
            Objective::Click { .. } => {
                let m = click_metrics(users);
                let _ = write!(
                    out,
                    "{name:<38} {:>7.4} {:>8.4} {:>7.4} {:>8.4} {:>8.4}",
                    m.auc, m.user_auc, m.normalized_entropy, m.log_loss, m.ndcg3
                );
                for g in &groups {
                    let _ = write!(out, " {:>10.4}", click_metrics(&in_group(users, g)).auc);
                }
            }
        }
        let _ = writeln!(out, " {:>6}", users.len());
    }
    out
}

/// Click metrics of query predictions (probabilities) against 0/1 labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClickMetrics {
    /// Area under the ROC curve over all query entries pooled (ties count half; NaN without
    /// both labels).
    pub auc: f64,
    /// AUC per user, averaged over the users whose query set holds both labels (NaN if none).
    pub user_auc: f64,
    /// Mean binary cross-entropy in nats, probabilities clipped to [1e-7, 1 − 1e-7].
    pub log_loss: f64,
    /// Normalised entropy: the log loss divided by the entropy of the evaluated labels' own click
    /// rate. 1 is what predicting that constant rate scores; lower is better.
    pub normalized_entropy: f64,
    /// nDCG@3 averaged over users (gains 0 and 1).
    pub ndcg3: f64,
    /// Number of users.
    pub users: usize,
}

/// AUC of `scores` for 0/1 `labels` (label > 0.5 is positive) by the rank-sum statistic, ties
/// sharing their average rank. None unless both labels occur.
pub fn auc(labels: &[f32], scores: &[f32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..labels.len().min(scores.len())).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut positives) = (0.0f64, 0usize);
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (1-based start+1..=end) share their mean.
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            if labels[i] > 0.5 {
                rank_sum += mean_rank;
                positives += 1;
            }
        }
        start = end;
    }
    let negatives = order.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// AUC (pooled and per user), log loss, normalised entropy and nDCG@3 of click predictions.
pub fn click_metrics(users: &[UserPredictions]) -> ClickMetrics {
    let labels: Vec<f32> = users.iter().flat_map(|u| u.truth.iter().copied()).collect();
    let scores: Vec<f32> = users.iter().flat_map(|u| u.predicted.iter().copied()).collect();
    let n = labels.len().max(1) as f64;
    let log_loss = labels
        .iter()
        .zip(&scores)
        .map(|(&y, &p)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n;
    let rate = labels.iter().filter(|&&y| y > 0.5).count() as f64 / n;
    let base_entropy =
        if rate > 0.0 && rate < 1.0 { -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln()) } else { 0.0 };
    let per_user: Vec<f64> = users.iter().filter_map(|u| auc(&u.truth, &u.predicted)).collect();
    ClickMetrics {
        auc: auc(&labels, &scores).unwrap_or(f64::NAN),
        user_auc: if per_user.is_empty() { f64::NAN } else { per_user.iter().sum::<f64>() / per_user.len() as f64 },
        log_loss,
        normalized_entropy: if base_entropy > 0.0 { log_loss / base_entropy } else { f64::NAN },
        ndcg3: mean_ndcg(users, 3),
        users: users.len(),
    }
}

/// A trained model's rows: adapted with its inner loop, and with adaptation switched off (the
/// adaptation gain, reported for every method).
pub fn method_rows(model: &MetaModel, tasks: &[Task]) -> Vec<(String, Vec<UserPredictions>)> {
    let spec = &model.spec;
    if !spec.method.adapts() {
        return vec![(spec.method.title().to_string(), predict_tasks(model, tasks, 0, 256))];
    }
    vec![
        (
            format!("{} ({} steps)", spec.method.title(), spec.inner_steps),
            predict_tasks(model, tasks, spec.inner_steps, 256),
        ),
        (format!("{} without adaptation", spec.method.title()), predict_tasks(model, tasks, 0, 256)),
    ]
}

/// Mean squared error of one user's query predictions (0 for an empty query set).
pub fn user_mse(user: &UserPredictions) -> f64 {
    let se: f64 = user.truth.iter().zip(&user.predicted).map(|(t, p)| f64::from(p - t).powi(2)).sum();
    se / user.truth.len().max(1) as f64
}

/// nDCG@k averaged over users (0 for no users).
pub fn mean_ndcg(users: &[UserPredictions], k: usize) -> f64 {
    users.iter().map(|u| ndcg_at(&u.truth, &u.predicted, k)).sum::<f64>() / users.len().max(1) as f64
}

/// Header of the file `trainer eval --predictions` writes.
pub const PREDICTIONS_HEADER: &str = "method,user_id,item_id,truth,prediction";

/// Writes every row's query predictions in long form, one line per (row, user, query entry):
/// the row's name as the table prints it, the user's and the item's ids, the true rating (0/1
/// label for clicks) and the prediction (a click probability for clicks). Each row must hold
/// one entry per task of `tasks`, in order, as [`method_rows`] and the baselines make them.
pub fn write_predictions(
    out: &mut dyn std::io::Write,
    data: &Dataset,
    tasks: &[Task],
    rows: &[(String, Vec<UserPredictions>)],
) -> anyhow::Result<()> {
    writeln!(out, "{PREDICTIONS_HEADER}")?;
    for (name, users) in rows {
        let method = csv_field(name);
        anyhow::ensure!(users.len() == tasks.len(), "row {name:?} holds {} users, not {}", users.len(), tasks.len());
        for (user, task) in users.iter().zip(tasks) {
            let aligned = user.user == task.user && user.predicted.len() == task.query.len();
            anyhow::ensure!(aligned, "row {name:?}: user {} is not in the evaluated users' order", user.user);
            let user_id = csv_field(&data.users[task.user as usize].id);
            for ((rating, truth), predicted) in task.query.iter().zip(&user.truth).zip(&user.predicted) {
                let item_id = csv_field(&data.items[rating.item as usize].id);
                writeln!(out, "{method},{user_id},{item_id},{truth},{predicted}")?;
            }
        }
    }
    Ok(())
}
