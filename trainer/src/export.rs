//! `trainer export`: the run's weights, learning rate and vocabularies as one model file, and
//! optionally one held-out test user as a TSV the examples replay on the device.

use core::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use metarec_runtime::format::{
    self, Adapt, Adaptation, DenseLayer, EmbeddingPrecision, FoldInHead, ItemRecord, LearningRate, Method, ModelBody,
    NeighbourTable, ProductModel, RatingScale, Task,
};

use crate::data::Dataset;
use crate::mf::FactorModel;
use crate::model::MetaModel;
use crate::objective::Objective;
use crate::run::{RunInfo, Trained};
use crate::split;

fn dense((inputs, outputs, weight, bias): crate::model::LayerValues) -> DenseLayer {
    DenseLayer { inputs: inputs as u32, outputs: outputs as u32, weight, bias }
}

/// The model body of a run, whatever it trained.
pub fn model_body(info: &RunInfo, data: &Dataset, trained: &Trained) -> Result<ModelBody> {
    match trained {
        Trained::Meta(model) => meta_body(info, data, model),
        Trained::Factors(model) => Ok(factor_body(info, data, model)),
    }
}

/// The task and rating scale of a run as the file states them: a click model's support values
/// are labels, its scale 0..1 and its mean the click rate.
fn task_and_scale(info: &RunInfo, data: &Dataset, mean: f32) -> (Task, RatingScale) {
    match info.spec.objective {
        Objective::Rating => {
            (Task::Rating, RatingScale { min: data.rating_min, max: data.rating_max, global_mean: mean })
        }
        Objective::Click { threshold } => {
            (Task::Click { threshold }, RatingScale { min: 0.0, max: 1.0, global_mean: mean })
        }
    }
}

/// A matrix factorisation's body: the dataset's fields (vocabularies only, no tables), the
/// catalogue, μ, and the item biases and factors with the fold-in's ridge weights.
fn factor_body(info: &RunInfo, data: &Dataset, model: &FactorModel) -> ModelBody {
    let (task, rating) = task_and_scale(info, data, model.mean);
    let bare = |fields: &[format::FieldSpec]| {
        fields.iter().map(|field| format::FieldSpec { embedding: Vec::new(), ..field.clone() }).collect()
    };
    ModelBody {
        method: Method::Mf,
        task,
        embedding_dim: 0,
        user_fields: bare(&data.user_fields),
        item_fields: bare(&data.item_fields),
        items: data.items.iter().map(|i| ItemRecord { id: i.id.clone(), rows: i.rows.clone() }).collect(),
        layers: Vec::new(),
        extra_inits: Vec::new(),
        // The fold-in is one exact solve: `adapt` with the model's own count runs it once.
        adaptation: Adaptation { inner_lr: 0.0, inner_steps: 1 },
        learning_rate: LearningRate::Fixed,
        neighbours: None,
        rating,
        factors: Some(model.factors.clone()),
        product: ProductModel::default(),
    }
}

/// The model body for a meta-learned model: whatever its method needs on the device
/// (per-parameter rates, the learning-rate network, the neighbour table, the extra
/// initialisations, the product model's item biases, adaptation scope and proximal weight, a
/// fold-in's ridge weights and item factors).
pub fn meta_body(info: &RunInfo, data: &Dataset, model: &MetaModel) -> Result<ModelBody> {
    let spec = &info.spec;
    let method = spec.method;
    if method == Method::Mf {
        anyhow::bail!("a matrix factorisation is exported by model_body");
    }
    if !method.runs_on_device() {
        anyhow::bail!(
            "{} is a supervised baseline without on-device adaptation; it is evaluated, not exported",
            method.title()
        );
    }
    let with_embeddings = |user: bool, fields: &[format::FieldSpec]| {
        fields
            .iter()
            .enumerate()
            .map(|(f, field)| format::FieldSpec { embedding: model.embedding_values(user, f), ..field.clone() })
            .collect()
    };
    let layers: Vec<DenseLayer> = model.layer_values().into_iter().map(dense).collect();
    let extra_inits = (1..model.init_count()).map(|k| model.init_values(k).into_iter().map(dense).collect()).collect();
    let mut neighbours = None;
    let learning_rate = if let Some([hidden, output]) = model.lr_net_values() {
        match &model.memory {
            Some(memory) if !memory.borrow().ready() => LearningRate::Fixed,
            Some(memory) => {
                let memory = memory.borrow();
                let (keys, rates) = memory.entries();
                neighbours = Some(NeighbourTable {
                    key_dim: crate::memory::KEY_DIM as u32,
                    projection: memory.projection(),
                    keys,
                    rates,
                    neighbours: memory.neighbours as u32,
                    delta: memory.delta as f32,
                    sigma: memory.sigma() as f32,
                });
                LearningRate::Network { hidden: dense(hidden), output: dense(output) }
            }
            None => LearningRate::Network { hidden: dense(hidden), output: dense(output) },
        }
    } else if method == Method::MetaSgd {
        LearningRate::PerParameter(
            model
                .per_parameter_lr_values()
                .into_iter()
                .zip(&layers)
                .map(|((weight, bias), layer)| DenseLayer {
                    inputs: layer.inputs,
                    outputs: layer.outputs,
                    weight,
                    bias,
                })
                .collect(),
        )
    } else {
        LearningRate::Fixed
    };
    let (task, rating) = task_and_scale(info, data, info.global_mean);
    Ok(ModelBody {
        method,
        task,
        embedding_dim: spec.shape.embedding_dim as u32,
        user_fields: with_embeddings(true, &data.user_fields),
        item_fields: with_embeddings(false, &data.item_fields),
        items: data.items.iter().map(|i| ItemRecord { id: i.id.clone(), rows: i.rows.clone() }).collect(),
        layers,
        extra_inits,
        adaptation: Adaptation { inner_lr: spec.inner_lr as f32, inner_steps: spec.inner_steps },
        learning_rate,
        neighbours,
        rating,
        factors: None,
        product: product(spec, model)?,
    })
}

/// The bias-aware product model's parts of a meta-learned model (the plain model's defaults,
/// which the file then leaves out, when it uses none of them): item biases, the adaptation
/// scope and proximal weight, and for the fold-in its ridge weights and item factors (the
/// proximal term does not apply to a solve: written as 0).
fn product(spec: &crate::model::ModelSpec, model: &MetaModel) -> Result<ProductModel> {
    let options = &spec.options;
    let item_bias = model.item_bias_values().unwrap_or_default();
    anyhow::ensure!(
        options.item_bias != item_bias.is_empty(),
        "the run's options say item_bias = {} but the model {} item biases",
        options.item_bias,
        if item_bias.is_empty() { "has no" } else { "has" }
    );
    let fold_in = match options.adapt {
        Adapt::FoldIn => {
            let (ridge, factors, item_factors) =
                model.fold_in_values().context("a fold-in model without its ridge weights")?;
            let factors = u32::try_from(factors).context("more item factors than a model file holds")?;
            Some(FoldInHead { factors, ridge, item_factors })
        }
        Adapt::All | Adapt::Head | Adapt::User => None,
    };
    let proximal = if fold_in.is_some() { 0.0 } else { options.proximal as f32 };
    Ok(ProductModel { item_bias, adapt: options.adapt, proximal, fold_in })
}

/// How `trainer export --embeddings` stores the embedding tables: the format's precisions,
/// spelt by their canonical names and described in `--help`.
pub fn embeddings_parser() -> impl TypedValueParser<Value = EmbeddingPrecision> {
    let values = EmbeddingPrecision::ALL.map(|p| {
        PossibleValue::new(p.name()).help(match p {
            EmbeddingPrecision::F32 => "32-bit floats (exact)",
            EmbeddingPrecision::F16 => "half precision: the tables take half their bytes",
            EmbeddingPrecision::Int8 => "8 bits per value, one scale per row: about a quarter of their bytes",
        })
    });
    PossibleValuesParser::new(values).try_map(|name| EmbeddingPrecision::from_name(&name).ok_or("not a precision"))
}

/// Encodes and writes the model file atomically; returns its size in bytes.
pub fn write_model(body: &ModelBody, path: &Path) -> Result<usize> {
    write_model_with(body, path, EmbeddingPrecision::F32)
}

/// [`write_model`] with the embedding tables stored as `embeddings`, in the aligned layout of
/// format 2.4 (the catalogue as arrays a device uses in place from its buffer).
pub fn write_model_with(body: &ModelBody, path: &Path, embeddings: EmbeddingPrecision) -> Result<usize> {
    let bytes = format::encode_aligned(body, embeddings).map_err(|e| anyhow::anyhow!("encoding the model: {e}"))?;
    // Read back through the device's own loader before anything is written.
    metarec_runtime::Model::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("the exported model does not pass the runtime's validation: {e}"))?;
    crate::fsutil::write_atomic(path, &bytes)?;
    Ok(bytes.len())
}

/// Writes one test user (profile, support and query ratings) as the TSV the C example reads.
pub fn write_example_user(data: &Dataset, task: &split::Task, path: &Path) -> Result<()> {
    let user = &data.users[task.user as usize];
    let mut out = String::from("# metarec example user: a held-out test user (never seen in training)\n");
    writeln!(out, "user\t{}", user.id)?;
    for (field, value) in data.user_fields.iter().zip(&user.raw) {
        writeln!(out, "profile\t{}\t{value}", field.name)?;
    }
    for (role, ratings) in [("support", &task.support), ("query", &task.query)] {
        for r in ratings {
            writeln!(out, "{role}\t{}\t{}", data.items[r.item as usize].id, r.value)?;
        }
    }
    crate::fsutil::write_atomic(path, out.as_bytes())
        .with_context(|| format!("writing example user {}", path.display()))
}
