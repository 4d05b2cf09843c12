//! Issue 15's cost goal, "a device contribution costs ≤ 2× one adaptation on the bench shape":
//! for the bench user on the paper model (MeLU, every MLP weight adapted by gradient steps) and
//! on the product model (the same network with item biases, item factors and the fold-in head),
//! the median time of one adaptation ([`Session::adapt`] on the support ratings) beside one
//! contribution ([`Session::contribute`] on the same ratings, clip norm 1), on one session each,
//! on the calling thread.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use metarec_runtime::format::{encode, Adapt};
use metarec_runtime::{Model, Session};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::Device;

use super::{bench_run_info, median, BenchUser, DeviceBench};
use crate::data::Dataset;
use crate::model::{MetaModel, ModelOptions, ModelSpec};

/// The clip norm of the timed contributions (clipping is one pass over the update either way).
const CLIP: f32 = 1.0;

/// Medians (ms) of one model's adaptation and contribution.
struct Costs {
    adapt_ms: f64,
    contribute_ms: f64,
    /// The model id's hash, once per model.
    ids_ms: f64,
    blob_bytes: usize,
}

/// The product model of the bench shape: `paper`'s network with the product's options (item
/// biases, the fold-in head with item factors, its starting ridge weights), item biases and
/// factors drawn N(0, 0.3) so the fold-in's system is a typical one rather than the zero
/// factors' diagonal.
fn product_model(data: &Dataset, paper: &ModelSpec) -> (ModelSpec, MetaModel) {
    let mut spec = paper.clone();
    spec.options = ModelOptions {
        item_bias: true,
        adapt: Adapt::FoldIn,
        fold_in_lambda: 5.0,
        item_factors: true,
        ..ModelOptions::default()
    };
    let model = MetaModel::new_seeded(data, &spec, 3.5, Device::Cpu, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let normal = Normal::new(0.0, 0.3).expect("a positive standard deviation");
    let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| normal.sample(&mut rng) as f32).collect() };
    let items = data.items.len();
    model.set_item_bias(&draw(items));
    model.set_item_factors(&draw(items * spec.config.mf_factors));
    (spec, model)
}

/// Times `repeat` adaptations, then `repeat` contributions, of `user` on `model`.
fn costs(model: &Model, user: &BenchUser, repeat: usize) -> Result<Costs> {
    let fail = |e: metarec_runtime::Error| anyhow::anyhow!("{e}");
    let mut session = Session::new(model);
    for (field, value) in &user.profile {
        session.set_profile(field, value).map_err(fail)?;
    }
    for r in &user.support {
        session.add_rating_by_index(r.item, r.value).map_err(fail)?;
    }
    let mut blob = Vec::new();
    for _ in 0..10 {
        session.adapt().map_err(fail)?;
        blob = session.contribute(CLIP).map_err(fail)?;
    }
    let mut time = |run: &mut dyn FnMut(&mut Session<&Model>) -> Result<()>| -> Result<f64> {
        let samples = (0..repeat)
            .map(|_| {
                let start = Instant::now();
                run(&mut session).map(|()| start.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(median(samples))
    };
    let adapt_ms = time(&mut |s| s.adapt().map_err(fail))?;
    let contribute_ms = time(&mut |s| s.contribute(CLIP).map(drop).map_err(fail))?;
    // What the first contribution on a loaded model adds once: its id and schema hash, kept by
    // the model from then on (`Model::contribution_ids`).
    let ids_ms = median(
        (0..repeat.min(20))
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(metarec_runtime::contribution::model_id(model));
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    Ok(Costs { adapt_ms, contribute_ms, ids_ms, blob_bytes: blob.len() })
}

/// The contribution lines of `trainer bench device`: the paper model `paper` (already
/// exported as `paper_model`) and the product model built from its spec.
pub(super) fn write_lines(
    out: &mut String,
    config: &DeviceBench,
    data: &Dataset,
    paper: (&ModelSpec, &Model),
    user: &BenchUser,
) -> Result<()> {
    if config.support < 2 {
        writeln!(
            out,
            "federated contribution: not timed (it needs at least 2 support ratings, --support {})",
            config.support
        )?;
        return Ok(());
    }
    let (spec, model) = product_model(data, paper.0);
    let body = crate::export::meta_body(&bench_run_info(&spec), data, &model)?;
    let product =
        Model::from_bytes(&encode(&body).map_err(|e| anyhow::anyhow!("{e}"))?).map_err(|e| anyhow::anyhow!("{e}"))?;
    writeln!(
        out,
        "federated contribution vs one adaptation ({} support ratings, clip norm {CLIP}, medians of {}, 1 thread; goal <= 2x)",
        config.support, config.repeat
    )?;
    for (name, model) in [("paper (MeLU, gradient steps)", paper.1), ("product (fold-in head)", &product)] {
        let c = costs(model, user, config.repeat)?;
        writeln!(
            out,
            "  {name:30} adapt {:8.4} ms, contribute {:8.4} ms: {:5.2}x; blob {} bytes; once per model: ids {:.4} ms",
            c.adapt_ms,
            c.contribute_ms,
            c.contribute_ms / c.adapt_ms,
            c.blob_bytes,
            c.ids_ms
        )?;
    }
    Ok(())
}
