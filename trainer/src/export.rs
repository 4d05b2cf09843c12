//! `trainer export`: the run's weights, learning rate and vocabularies as one model file, and
//! optionally one held-out test user as a TSV the examples replay on the device.

use core::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use metarec_runtime::format::{self, Adaptation, DenseLayer, ItemRecord, Method, ModelBody, RatingScale, Task};

use crate::data::Dataset;
use crate::model::MetaModel;
use crate::run::RunInfo;
use crate::split;

/// The model body for a trained model.
pub fn model_body(info: &RunInfo, data: &Dataset, model: &MetaModel) -> ModelBody {
    let with_embeddings = |user: bool, fields: &[format::FieldSpec]| {
        fields
            .iter()
            .enumerate()
            .map(|(f, field)| format::FieldSpec { embedding: model.embedding_values(user, f), ..field.clone() })
            .collect()
    };
    ModelBody {
        method: Method::Melu,
        task: Task::Rating,
        embedding_dim: info.spec.shape.embedding_dim as u32,
        user_fields: with_embeddings(true, &data.user_fields),
        item_fields: with_embeddings(false, &data.item_fields),
        items: data.items.iter().map(|i| ItemRecord { id: i.id.clone(), rows: i.rows.clone() }).collect(),
        layers: model
            .layer_values()
            .into_iter()
            .map(|(inputs, outputs, weight, bias)| DenseLayer {
                inputs: inputs as u32,
                outputs: outputs as u32,
                weight,
                bias,
            })
            .collect(),
        adaptation: Adaptation { inner_lr: info.spec.inner_lr as f32, inner_steps: info.spec.inner_steps },
        rating: RatingScale { min: data.rating_min, max: data.rating_max, global_mean: info.global_mean },
    }
}

/// Encodes and writes the model file atomically; returns its size in bytes.
pub fn write_model(body: &ModelBody, path: &Path) -> Result<usize> {
    let bytes = format::encode(body).map_err(|e| anyhow::anyhow!("encoding the model: {e}"))?;
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
