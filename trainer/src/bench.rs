//! `trainer bench device`: the on-device runtime against libtorch doing the same work in the
//! same process, on one core: personalize a MovieLens-sized MeLU model (input 256 = 8 fields ×
//! 32, layers 64-64-1) with `steps` inner steps on `support` ratings, then score `items`
//! candidates. Also counts the FLOPs the runtime performs and measures this core's peak with a
//! large single-threaded matrix product, to say how far from the arithmetic floor it runs.
//! Then the same user on a matrix factorisation of the same catalogue (`--method mf`, k = 8):
//! the exact ridge fold-in of the same support ratings and the scoring of every item, beside
//! MeLU's personalize + score. Then one federated contribution beside one adaptation, on that
//! MeLU model and on the product model (fold-in head) of the same shape.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{ensure, Result};
use metarec_runtime::format::FieldKind;
use metarec_runtime::{Model, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::Device;

use crate::config::{check_flag, Whole, COUNT, INNER_STEPS};
use crate::data::{Dataset, Entity, Rating};
use crate::eval::predict_tasks;
use crate::method::MethodConfig;
use crate::mf::FactorModel;
use crate::model::{MetaModel, ModelShape, ModelSpec};
use crate::objective::Objective;
use crate::run::{RunInfo, Trained};
use crate::split::Task;

mod catalogue;
mod contribution;
mod heap;

pub use heap::CountingAllocator;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceBench {
    /// Candidate items scored.
    #[arg(long, default_value_t = 1000, value_parser = |t: &str| ITEMS.parse::<usize>(t), allow_hyphen_values = true)]
    pub items: usize,
    /// Support ratings adapted on.
    #[arg(long, default_value_t = 20, value_parser = |t: &str| SUPPORT.parse::<usize>(t), allow_hyphen_values = true)]
    pub support: usize,
    /// Inner steps.
    #[arg(long, default_value_t = 5, value_parser = crate::config::inner_steps, allow_hyphen_values = true)]
    pub steps: u32,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 200, value_parser = crate::config::count, allow_hyphen_values = true)]
    pub repeat: usize,
}

/// --items: a catalogue the runtime scores in one call.
const ITEMS: Whole = Whole {
    what: "count",
    min: 1,
    max: metarec_runtime::MAX_CANDIDATES as i128,
    why: " (the on-device runtime's limit)",
};
/// --support: what one session holds.
const SUPPORT: Whole = Whole {
    what: "count",
    min: 1,
    max: metarec_runtime::MAX_SUPPORT_RATINGS as i128,
    why: " (the on-device runtime's limit)",
};

fn categorical(name: &str, values: usize) -> metarec_runtime::format::FieldSpec {
    let mut vocabulary: Vec<String> = (0..values).map(|v| format!("{name}{v:05}")).collect();
    vocabulary.sort();
    metarec_runtime::format::FieldSpec {
        name: name.into(),
        kind: FieldKind::Categorical,
        vocabulary,
        embedding: Vec::new(),
    }
}

/// A MovieLens-shaped dataset in memory: 4 user and 4 item categorical fields, one user.
fn dataset(items: usize, rng: &mut ChaCha8Rng) -> Dataset {
    let user_fields =
        vec![categorical("gender", 2), categorical("age", 7), categorical("occupation", 21), categorical("zip", 100)];
    let item_fields = vec![
        categorical("genre", 18),
        categorical("year", 80),
        categorical("director", 500),
        categorical("actor", 1000),
    ];
    let entity = |id: String, fields: &[metarec_runtime::format::FieldSpec], rng: &mut ChaCha8Rng| {
        let raw: Vec<String> =
            fields.iter().map(|f| f.vocabulary[rng.gen_range(0..f.vocabulary.len())].clone()).collect();
        let rows = fields.iter().zip(&raw).map(|(f, v)| vec![f.row_of(v)]).collect();
        Entity { id, raw, rows, group: None }
    };
    let users = vec![entity("u0".into(), &user_fields, rng)];
    let items = (0..items).map(|i| entity(format!("i{i:05}"), &item_fields, rng)).collect();
    Dataset {
        user_fields,
        item_fields,
        users,
        items,
        ratings: Vec::new(),
        rating_min: 1.0,
        rating_max: 5.0,
        info: Default::default(),
    }
}

fn median(samples: Vec<f64>) -> f64 {
    percentile(samples, 50)
}

/// The `p`-th percentile (nearest rank below) of non-empty samples.
fn percentile(mut samples: Vec<f64>, p: usize) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() * p.min(99) / 100]
}

/// FLOPs (2 per multiply-add) the runtime performs for one personalize + score, from the layer
/// shapes, for the low-rank form a scalar learning rate allows: layer 0's item part is the
/// model's precomputed `W0·x` plus a correction over the support items (inner products with them,
/// `item_width` each, then their coefficients, `hidden0` each), so per support row and step the
/// adaptation costs `support × (item_width + hidden0)` there plus the upper layers forward and
/// (weights and inputs) backward; layer 0's user part costs `user_width × hidden0` twice per step.
/// Each candidate costs `support × (item_width + hidden0)` plus the upper layers.
fn runtime_flops(widths: &[usize], user_width: usize, support: usize, steps: u32, items: usize) -> f64 {
    let input = widths[0];
    let item_width = input - user_width;
    let layers: Vec<(usize, usize)> = widths.windows(2).map(|w| (w[0], w[1])).collect();
    let hidden0 = layers[0].1;
    let upper: usize = layers[1..].iter().map(|(i, o)| i * o).sum();
    let low_rank = support * (item_width + hidden0);
    let user_part = user_width * hidden0;
    let adapt = f64::from(steps) * (support * (low_rank + 3 * upper) + 2 * user_part) as f64;
    let score = (items * (low_rank + hidden0 + upper) + user_part) as f64;
    2.0 * (adapt + score)
}

/// Timed runs of each peak measurement (the best counts: a shared host slows some of them).
const PEAK_TRIES: usize = 10;

/// Side of the square products the peaks are measured with.
const PEAK_N: usize = 1024;

/// GFLOP/s of `product`, one `PEAK_N`³ f32 matrix product, from the best of `PEAK_TRIES` runs.
fn peak_of(mut product: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..PEAK_TRIES {
        let start = Instant::now();
        product();
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (PEAK_N * PEAK_N * PEAK_N) as f64 / best / 1e9
}

/// Single-threaded GFLOP/s of a 1024³ f32 matrix product with the runtime's kernel
/// (matrixmultiply).
fn peak_gflops() -> f64 {
    let n = PEAK_N;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    peak_of(|| {
        // SAFETY: a, b and c are n×n dense row-major buffers of n² elements each, c does not
        // alias a or b, and the strides describe exactly those buffers.
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                a.as_ptr(),
                n as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    })
}

/// Single-threaded GFLOP/s of a 1024³ f32 matrix product in libtorch (its BLAS: MKL here), the
/// best kernel at hand, so the floor it gives is the core's rather than matrixmultiply's.
fn torch_peak_gflops() -> f64 {
    let n = PEAK_N as i64;
    let a = tch::Tensor::ones([n, n], (tch::Kind::Float, Device::Cpu));
    let b = tch::Tensor::ones([n, n], (tch::Kind::Float, Device::Cpu)) * 0.5;
    peak_of(|| {
        let c = a.matmul(&b);
        let _ = c.double_value(&[0, 0]);
    })
}

/// Users a planted factorisation generates to train the bench's factor model, and the ratings
/// each gives (as many again validate: the sweep kept is chosen on them).
const FACTOR_USERS: usize = 300;
const FACTOR_RATINGS: usize = 40;

/// The bench's factor model, fitted with the trainer's own ALS ([`crate::mf::fit`], the default
/// k = 8, λ = 10) on ratings generated from a planted one: item and user biases and factors
/// N(0, 0.3), the ratings `3.5 + b_u + b_i + p_u · q_i + N(0, 0.5)` rounded into 1..=5. The
/// timings do not depend on the values; fitting makes the model the one `--method mf` would give.
fn factor_model(items: usize) -> FactorModel {
    let config = MethodConfig::default();
    let k = config.mf_factors;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let planted = Normal::new(0.0, 0.3).expect("a positive standard deviation");
    let noise = Normal::new(0.0, 0.5).expect("a positive standard deviation");
    // Per item and per user [b, q] (k + 1 values).
    let item_rows: Vec<f32> = (0..items * (k + 1)).map(|_| planted.sample(&mut rng) as f32).collect();
    let task = |user: usize, rng: &mut ChaCha8Rng| {
        let user_row: Vec<f32> = (0..=k).map(|_| planted.sample(rng) as f32).collect();
        let ratings: Vec<Rating> = (0..FACTOR_RATINGS)
            .map(|_| {
                let item = rng.gen_range(0..items);
                let q = &item_rows[item * (k + 1)..(item + 1) * (k + 1)];
                let dot: f32 = user_row[1..].iter().zip(&q[1..]).map(|(a, b)| a * b).sum();
                let value = 3.5 + user_row[0] + q[0] + dot + noise.sample(rng) as f32;
                Rating { user: user as u32, item: item as u32, value: value.round().clamp(1.0, 5.0) }
            })
            .collect();
        let (support, query) = ratings.split_at(FACTOR_RATINGS / 2);
        Task { user: user as u32, support: support.to_vec(), query: query.to_vec() }
    };
    let train: Vec<Task> = (0..FACTOR_USERS).map(|u| task(u, &mut rng)).collect();
    let valid: Vec<Task> = (FACTOR_USERS..2 * FACTOR_USERS).map(|u| task(u, &mut rng)).collect();
    crate::mf::fit(items, &train, &valid, Objective::Rating, &config, 5).model
}

/// Medians and 10th percentiles (ms) of a factor model's personalization, and its footprint.
#[derive(Debug)]
struct FactorTimings {
    /// Factors per user and item.
    factors: u32,
    /// `adapt()`: the ridge fold-in alone (median, 10th percentile).
    fold_in_ms: (f64, f64),
    /// `score_indices` over every item.
    score_ms: (f64, f64),
    /// Clear, add the support ratings, fold in, score.
    total_ms: (f64, f64),
    /// The encoded model file.
    file_bytes: usize,
    /// [`Session::memory_bytes`] after the runs.
    session_bytes: usize,
}

/// Times MF fold-in + scoring of `candidates` on `support` for the bench catalogue `data`: the
/// model from [`factor_model`] exported the normal way (model body, encode, `Model::from_bytes`),
/// one session reused; each timed run clears the ratings, adds the support, folds in and scores.
/// (No profile is set: a factor model does not read it.)
fn factor_timings(
    config: &DeviceBench,
    info: &RunInfo,
    data: &Dataset,
    support: &[Rating],
    candidates: &[u32],
) -> Result<FactorTimings> {
    let trained = Trained::Factors(factor_model(data.items.len()));
    let body = crate::export::model_body(info, data, &trained)?;
    let bytes = metarec_runtime::format::encode(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let device_model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let factors = device_model.factors().map_or(0, |f| f.factors);
    let mut session = Session::new(&device_model);
    let mut scores = vec![0f32; candidates.len()];
    // One run: (fold-in, score, total) in ms.
    let mut run = || -> Result<(f64, f64, f64)> {
        let start = Instant::now();
        session.clear_ratings();
        for r in support {
            session.add_rating_by_index(r.item, r.value).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let adapt_start = Instant::now();
        session.adapt().map_err(|e| anyhow::anyhow!("{e}"))?;
        let score_start = Instant::now();
        session.score_indices(candidates, &mut scores).map_err(|e| anyhow::anyhow!("{e}"))?;
        let end = Instant::now();
        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
        Ok((ms(adapt_start, score_start), ms(score_start, end), ms(start, end)))
    };
    for _ in 0..10 {
        run()?;
    }
    let samples = (0..config.repeat).map(|_| run()).collect::<Result<Vec<_>>>()?;
    let summary = |pick: fn(&(f64, f64, f64)) -> f64| {
        let values: Vec<f64> = samples.iter().map(pick).collect();
        (median(values.clone()), percentile(values, 10))
    };
    let (fold_in_ms, score_ms, total_ms) = (summary(|s| s.0), summary(|s| s.1), summary(|s| s.2));
    ensure!(session.is_adapted(), "the factor model's session did not fold in");
    Ok(FactorTimings {
        factors,
        fold_in_ms,
        score_ms,
        total_ms,
        file_bytes: bytes.len(),
        session_bytes: session.memory_bytes(),
    })
}

/// The report's MF lines, beside MeLU's median personalize + score `melu_ms`.
fn write_factor_lines(out: &mut String, config: &DeviceBench, mf: &FactorTimings, melu_ms: f64) -> Result<()> {
    writeln!(
        out,
        "MF fold-in: k = {} factors, {} support ratings, {} candidates (every item), 1 thread",
        mf.factors, config.support, config.items
    )?;
    writeln!(
        out,
        "  runtime (metarec)      {:8.4} ms per clear + ratings + fold-in + score (median of {}); 10th percentile {:.4} ms",
        mf.total_ms.0, config.repeat, mf.total_ms.1
    )?;
    writeln!(
        out,
        "    of which fold-in      {:8.4} ms (adapt; 10th percentile {:.4} ms)",
        mf.fold_in_ms.0, mf.fold_in_ms.1
    )?;
    writeln!(out, "    of which score        {:8.4} ms (10th percentile {:.4} ms)", mf.score_ms.0, mf.score_ms.1)?;
    writeln!(
        out,
        "  vs MeLU                {:8.1}x faster: MeLU personalize + score {melu_ms:.3} ms, MF {:.4} ms (medians)",
        melu_ms / mf.total_ms.0,
        mf.total_ms.0
    )?;
    writeln!(out, "  model file             {:8} bytes; session {} bytes", mf.file_bytes, mf.session_bytes)?;
    Ok(())
}

/// The run record the benchmark's model is exported under.
fn bench_run_info(spec: &ModelSpec) -> RunInfo {
    RunInfo {
        data: "bench".into(),
        fingerprint: 0,
        format: None,
        skip_invalid: false,
        item_id: false,
        warm_users: false,
        lazy_adam: false,
        seed: 3,
        spec: spec.clone(),
        first_order: false,
        global_mean: 3.5,
        best_epoch: 1,
        best_valid_loss: 0.0,
        history: Vec::new(),
        train_seconds: 0.0,
        device: "Cpu".into(),
    }
}

/// The benchmark user: support ratings drawn from `rng`, every item as candidate, and the
/// first user's profile; with the task (every item as query) libtorch adapts on.
struct BenchUser {
    support: Vec<Rating>,
    candidates: Vec<u32>,
    profile: Vec<(String, String)>,
}

fn bench_user(config: &DeviceBench, data: &Dataset, rng: &mut ChaCha8Rng) -> (BenchUser, Task) {
    let support: Vec<Rating> = (0..config.support)
        .map(|_| Rating { user: 0, item: rng.gen_range(0..config.items) as u32, value: rng.gen_range(1..=5) as f32 })
        .collect();
    let query: Vec<Rating> = (0..config.items as u32).map(|item| Rating { user: 0, item, value: 3.0 }).collect();
    let task = Task { user: 0, support: support.clone(), query };
    let candidates: Vec<u32> = (0..config.items as u32).collect();
    let profile: Vec<(String, String)> =
        data.user_fields.iter().zip(&data.users[0].raw).map(|(f, v)| (f.name.clone(), v.clone())).collect();
    (BenchUser { support, candidates, profile }, task)
}

/// The on-device runtime's timings, in milliseconds, with its last scores.
struct RuntimeTimings {
    runtime_ms: f64,
    runtime_p10_ms: f64,
    adapt_ms: f64,
    score_ms: f64,
    scores: Vec<f32>,
    session_bytes: usize,
}

/// The device: one session reused, as an app would (profile, ratings, adapt, score).
fn time_runtime(config: &DeviceBench, device_model: &Model, user: &BenchUser) -> Result<RuntimeTimings> {
    let mut session = Session::new(device_model);
    let mut scores = vec![0f32; config.items];
    let personalize = |session: &mut Session<&Model>, scores: &mut [f32]| -> Result<()> {
        session.clear_ratings();
        for (field, value) in &user.profile {
            session.set_profile(field, value).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        for r in &user.support {
            session.add_rating_by_index(r.item, r.value).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        session.adapt().map_err(|e| anyhow::anyhow!("{e}"))?;
        session.score_indices(&user.candidates, scores).map_err(|e| anyhow::anyhow!("{e}"))
    };
    for _ in 0..10 {
        personalize(&mut session, &mut scores)?;
    }
    let runtime_samples = (0..config.repeat)
        .map(|_| {
            let start = Instant::now();
            personalize(&mut session, &mut scores).map(|_| start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<_>>>()?;
    // The peaks are best-of runs: the 10th percentile is the like-for-like figure beside them.
    let runtime_p10_ms = percentile(runtime_samples.clone(), 10);
    let runtime_ms = median(runtime_samples);

    // The two halves apart: adaptation alone, and scoring the candidates once adapted.
    let adapt_ms = median(
        (0..config.repeat)
            .map(|_| {
                let start = Instant::now();
                session.adapt().map(|()| start.elapsed().as_secs_f64() * 1e3).map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let score_ms = median(
        (0..config.repeat)
            .map(|_| {
                let start = Instant::now();
                session
                    .score_indices(&user.candidates, &mut scores)
                    .map(|()| start.elapsed().as_secs_f64() * 1e3)
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let session_bytes = session.memory_bytes();
    Ok(RuntimeTimings { runtime_ms, runtime_p10_ms, adapt_ms, score_ms, scores, session_bytes })
}

/// libtorch: the trainer's own batched inner loop and scoring for the same user; the median
/// time in milliseconds and the last predictions.
fn time_libtorch(config: &DeviceBench, model: &MetaModel, task: Task) -> (f64, Vec<f32>) {
    let tasks = [task];
    let mut torch_scores = Vec::new();
    for _ in 0..5 {
        torch_scores = predict_tasks(model, &tasks, config.steps, 1);
    }
    let tch_ms = median(
        (0..config.repeat.min(100))
            .map(|_| {
                let start = Instant::now();
                torch_scores = predict_tasks(model, &tasks, config.steps, 1);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    (tch_ms, torch_scores.swap_remove(0).predicted)
}

/// The figures the device report prints besides the timings.
struct DeviceFigures {
    widths: Vec<usize>,
    tch_ms: f64,
    max_difference: f32,
    flops: f64,
    peak: f64,
    floor_ms: f64,
    torch_peak: f64,
    torch_floor_ms: f64,
    model_bytes: usize,
}

fn write_device_lines(out: &mut String, config: &DeviceBench, rt: &RuntimeTimings, f: &DeviceFigures) -> Result<()> {
    let RuntimeTimings { runtime_ms, runtime_p10_ms, adapt_ms, score_ms, .. } = *rt;
    let DeviceFigures { ref widths, tch_ms, max_difference, flops, peak, floor_ms, torch_peak, torch_floor_ms, .. } =
        *f;
    writeln!(out, "device benchmark: MeLU input {} ({} fields x 32), layers {:?}, {} support ratings, {} steps, {} candidates, 1 thread",
        widths[0], widths[0] / 32, &widths[1..], config.support, config.steps, config.items)?;
    writeln!(
        out,
        "  runtime (metarec)      {runtime_ms:8.3} ms per personalize + score (median of {})",
        config.repeat
    )?;
    writeln!(out, "    10th percentile      {runtime_p10_ms:8.3} ms")?;
    writeln!(out, "    of which adapt        {adapt_ms:8.3} ms, score {score_ms:.3} ms (medians, timed apart)")?;
    writeln!(out, "  libtorch (tch)         {tch_ms:8.3} ms (median of {})", config.repeat.min(100))?;
    writeln!(out, "  speed-up               {:8.2}x", tch_ms / runtime_ms)?;
    writeln!(out, "  max |runtime - tch|    {max_difference:8.2e}")?;
    writeln!(out, "  runtime FLOPs          {:8.2} MFLOP (user-independent work done once per model)", flops / 1e6)?;
    writeln!(
        out,
        "  core peak, runtime kernel {peak:4.1} GFLOP/s -> floor {floor_ms:.3} ms; runtime at {:.2}x the floor",
        runtime_ms / floor_ms
    )?;
    writeln!(
        out,
        "  core peak, libtorch      {torch_peak:6.1} GFLOP/s -> floor {torch_floor_ms:.3} ms; runtime at {:.2}x the floor",
        runtime_ms / torch_floor_ms
    )?;
    let best_floor_ms = floor_ms.min(torch_floor_ms);
    writeln!(
        out,
        "  10th percentile vs the lower floor  {:.2}x (median {:.2}x)",
        runtime_p10_ms / best_floor_ms,
        runtime_ms / best_floor_ms
    )?;
    writeln!(out, "  model file             {:8} bytes; session {} bytes", f.model_bytes, rt.session_bytes)?;
    Ok(())
}

/// Runs the benchmark and returns its report.
pub fn device_benchmark(config: &DeviceBench) -> Result<String> {
    check_flag("--items", config.items, ITEMS.check(config.items))?;
    check_flag("--support", config.support, SUPPORT.check(config.support))?;
    check_flag("--steps", config.steps, INNER_STEPS.check(config.steps))?;
    check_flag("--repeat", config.repeat, COUNT.check(config.repeat))?;
    tch::set_num_threads(1);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = dataset(config.items, &mut rng);
    let spec = ModelSpec::melu(ModelShape { embedding_dim: 32, hidden: vec![64, 64] }, 0.05, config.steps);
    let model = MetaModel::new_seeded(&data, &spec, 3.5, Device::Cpu, 3);
    let info = bench_run_info(&spec);
    let body = crate::export::meta_body(&info, &data, &model)?;
    let bytes = metarec_runtime::format::encode(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let device_model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (user, task) = bench_user(config, &data, &mut rng);

    // The peaks are measured before and after the timings, the higher kept: the host's load
    // varies, and a low peak would flatter the ratio to the floor.
    let peaks_before = (peak_gflops(), torch_peak_gflops());
    let rt = time_runtime(config, &device_model, &user)?;
    let (tch_ms, torch_predicted) = time_libtorch(config, &model, task);
    let max_difference = torch_predicted.iter().zip(&rt.scores).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);

    let widths: Vec<usize> =
        std::iter::once(device_model.input_width()).chain(body.layers.iter().map(|l| l.outputs as usize)).collect();
    let user_width = data.user_fields.len() * 32;
    let flops = runtime_flops(&widths, user_width, config.support, config.steps, config.items);
    let peak = peak_gflops().max(peaks_before.0);
    let floor_ms = flops / (peak * 1e9) * 1e3;
    let torch_peak = torch_peak_gflops().max(peaks_before.1);
    let torch_floor_ms = flops / (torch_peak * 1e9) * 1e3;
    let factor = factor_timings(config, &info, &data, &user.support, &user.candidates)?;

    let figures = DeviceFigures {
        widths,
        tch_ms,
        max_difference,
        flops,
        peak,
        floor_ms,
        torch_peak,
        torch_floor_ms,
        model_bytes: bytes.len(),
    };
    let mut out = String::new();
    write_device_lines(&mut out, config, &rt, &figures)?;
    write_factor_lines(&mut out, config, &factor, rt.runtime_ms)?;
    contribution::write_lines(&mut out, config, &data, (&spec, &device_model), &user)?;
    catalogue::write_lines(&mut out, &body, &user, config.repeat)?;
    Ok(out)
}
