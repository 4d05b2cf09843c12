//! The base model f(user features, item features; θ) on libtorch, and the MAML inner loop,
//! batched across users: fast weights carry a leading user dimension and padded support/query
//! sets carry masks, so one outer step is a handful of batched matrix products.

use metarec_runtime::format::FieldSpec;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::data::{Dataset, Entity};
use crate::split::Task;

/// Shape of the base model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelShape {
    /// Width of every field embedding.
    pub embedding_dim: i64,
    /// Hidden layer widths of the decision MLP (the output layer of width 1 is implied).
    pub hidden: Vec<i64>,
}

/// Padded embedding rows of one field for every user (or item): `idx` holds row indices and
/// `weight` 1/count for real rows, 0 for padding, so a weighted sum is the mean embedding.
#[derive(Debug)]
struct FieldRows {
    idx: Tensor,
    weight: Tensor,
}

impl FieldRows {
    fn new(entities: &[Entity], field: usize, device: Device) -> FieldRows {
        let width = entities.iter().map(|e| e.rows[field].len()).max().unwrap_or(0).max(1);
        let mut idx = vec![0i64; entities.len() * width];
        let mut weight = vec![0f32; entities.len() * width];
        for (e, entity) in entities.iter().enumerate() {
            let rows = &entity.rows[field];
            for (k, &row) in rows.iter().enumerate() {
                idx[e * width + k] = i64::from(row);
                weight[e * width + k] = 1.0 / rows.len() as f32;
            }
        }
        let shape = [entities.len() as i64, width as i64];
        FieldRows {
            idx: Tensor::from_slice(&idx).view(shape).to(device),
            weight: Tensor::from_slice(&weight).view(shape).to(device),
        }
    }
}

/// Embedding tables, decision MLP and the dataset's feature rows, on one device.
#[derive(Debug)]
pub struct MetaModel {
    /// Owns every trainable tensor (saved and loaded as a checkpoint).
    pub vs: nn::VarStore,
    /// Model shape.
    pub shape: ModelShape,
    user_embeddings: Vec<Tensor>,
    item_embeddings: Vec<Tensor>,
    /// `(weight [out, in], bias [out])` per layer, torch's Linear layout.
    layers: Vec<(Tensor, Tensor)>,
    user_rows: Vec<FieldRows>,
    item_rows: Vec<FieldRows>,
}

/// Fast (adapted) weights: per layer `(weight [B, in, out], bias [B, out])`.
pub type FastWeights = Vec<(Tensor, Tensor)>;

/// A batch of tasks as padded tensors.
#[derive(Debug)]
pub struct TaskBatch {
    users: Tensor,
    support: RatingsPad,
    query: RatingsPad,
}

#[derive(Debug)]
struct RatingsPad {
    items: Tensor,
    values: Tensor,
    mask: Tensor,
}

impl RatingsPad {
    fn new(sets: &[&[crate::data::Rating]], device: Device) -> RatingsPad {
        let width = sets.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let mut items = vec![0i64; sets.len() * width];
        let mut values = vec![0f32; sets.len() * width];
        let mut mask = vec![0f32; sets.len() * width];
        for (b, set) in sets.iter().enumerate() {
            for (k, r) in set.iter().enumerate() {
                items[b * width + k] = i64::from(r.item);
                values[b * width + k] = r.value;
                mask[b * width + k] = 1.0;
            }
        }
        let shape = [sets.len() as i64, width as i64];
        RatingsPad {
            items: Tensor::from_slice(&items).view(shape).to(device),
            values: Tensor::from_slice(&values).view(shape).to(device),
            mask: Tensor::from_slice(&mask).view(shape).to(device),
        }
    }

    /// Mean squared error per user over the real (unpadded) entries: `[B]`.
    fn per_user_mse(&self, predictions: &Tensor) -> Tensor {
        let squared = (predictions - &self.values).square() * &self.mask;
        squared.sum_dim_intlist(1, false, Kind::Float) / self.mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}

impl TaskBatch {
    /// Pads a slice of tasks onto `device`.
    pub fn new(tasks: &[Task], device: Device) -> TaskBatch {
        let users: Vec<i64> = tasks.iter().map(|t| i64::from(t.user)).collect();
        let support: Vec<&[_]> = tasks.iter().map(|t| t.support.as_slice()).collect();
        let query: Vec<&[_]> = tasks.iter().map(|t| t.query.as_slice()).collect();
        TaskBatch {
            users: Tensor::from_slice(&users).to(device),
            support: RatingsPad::new(&support, device),
            query: RatingsPad::new(&query, device),
        }
    }
}

/// Which inner-loop gradient the outer step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Differentiate through the inner loop (full MAML).
    Second,
    /// Treat inner gradients as constants (FOMAML).
    First,
    /// No outer gradient at all (evaluation): the graph to θ is cut.
    Detached,
}

impl MetaModel {
    /// A freshly initialised model for `data` (output bias at the mean rating `global_mean`).
    pub fn new(data: &Dataset, shape: &ModelShape, global_mean: f32, device: Device) -> MetaModel {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let dim = shape.embedding_dim;
        let embed = |prefix: &str, fields: &[FieldSpec]| -> Vec<Tensor> {
            fields
                .iter()
                .enumerate()
                .map(|(f, field)| {
                    root.var(
                        &format!("{prefix}{f}"),
                        &[field.rows() as i64, dim],
                        nn::Init::Randn { mean: 0.0, stdev: 0.1 },
                    )
                })
                .collect()
        };
        let user_embeddings = embed("user_embedding_", &data.user_fields);
        let item_embeddings = embed("item_embedding_", &data.item_fields);
        let mut width = (data.user_fields.len() + data.item_fields.len()) as i64 * dim;
        let mut layers = Vec::new();
        let widths: Vec<i64> = shape.hidden.iter().copied().chain([1]).collect();
        for (l, &out) in widths.iter().enumerate() {
            let bound = 1.0 / (width as f64).sqrt();
            let w = root.var(&format!("layer{l}_weight"), &[out, width], nn::Init::Uniform { lo: -bound, up: bound });
            let b = if l + 1 == widths.len() {
                root.var(&format!("layer{l}_bias"), &[out], nn::Init::Const(f64::from(global_mean)))
            } else {
                root.var(&format!("layer{l}_bias"), &[out], nn::Init::Uniform { lo: -bound, up: bound })
            };
            layers.push((w, b));
            width = out;
        }
        let user_rows = (0..data.user_fields.len()).map(|f| FieldRows::new(&data.users, f, device)).collect();
        let item_rows = (0..data.item_fields.len()).map(|f| FieldRows::new(&data.items, f, device)).collect();
        MetaModel { vs, shape: shape.clone(), user_embeddings, item_embeddings, layers, user_rows, item_rows }
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Concatenated mean field embeddings: `[N, fields × dim]` for the selected entities (all if None).
    fn field_vectors(tables: &[Tensor], rows: &[FieldRows], select: Option<&Tensor>) -> Tensor {
        let parts: Vec<Tensor> = tables
            .iter()
            .zip(rows)
            .map(|(table, rows)| {
                let (idx, weight) = match select {
                    Some(s) => (rows.idx.index_select(0, s), rows.weight.index_select(0, s)),
                    None => (rows.idx.shallow_clone(), rows.weight.shallow_clone()),
                };
                let (n, m) = idx.size2().expect("2-d rows");
                let embedded = table.index_select(0, &idx.view([-1])).view([n, m, -1]);
                (embedded * weight.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float)
            })
            .collect();
        Tensor::cat(&parts, 1)
    }

    /// Model inputs `[B, S, width]` for padded item indices `[B, S]`.
    fn inputs(&self, users: &Tensor, item_vectors: &Tensor, items: &Tensor) -> Tensor {
        let user_vectors = Self::field_vectors(&self.user_embeddings, &self.user_rows, Some(users));
        let (b, s) = items.size2().expect("2-d items");
        let item_part = item_vectors.index_select(0, &items.view([-1])).view([b, s, -1]);
        let user_part = user_vectors.unsqueeze(1).expand([b, s, user_vectors.size()[1]], false);
        Tensor::cat(&[user_part, item_part], 2)
    }

    /// The meta-learned weights, broadcast to `batch` users.
    fn initial_fast_weights(&self, batch: i64, order: Order) -> FastWeights {
        self.layers
            .iter()
            .map(|(w, b)| {
                let (w, b) = match order {
                    Order::Detached => (w.detach(), b.detach()),
                    _ => (w.shallow_clone(), b.shallow_clone()),
                };
                let (out, inp) = w.size2().expect("2-d weight");
                let w = w.transpose(0, 1).unsqueeze(0).expand([batch, inp, out], false);
                let b = b.unsqueeze(0).expand([batch, out], false);
                if order == Order::Detached {
                    (w.contiguous().set_requires_grad(true), b.contiguous().set_requires_grad(true))
                } else {
                    (w, b)
                }
            })
            .collect()
    }

    /// The decision MLP with per-user weights: `[B, S, width]` → `[B, S]`.
    pub fn mlp(x: &Tensor, fast: &FastWeights) -> Tensor {
        let mut h = x.shallow_clone();
        for (l, (w, b)) in fast.iter().enumerate() {
            h = h.bmm(w) + b.unsqueeze(1);
            if l + 1 < fast.len() {
                h = h.relu();
            }
        }
        h.squeeze_dim(-1)
    }

    /// `steps` full-batch SGD steps on each user's support MSE, all users at once.
    pub fn adapt(
        x: &Tensor,
        support_mse: impl Fn(&Tensor) -> Tensor,
        mut fast: FastWeights,
        steps: u32,
        lr: f64,
        order: Order,
    ) -> FastWeights {
        for _ in 0..steps {
            // Each user's loss depends only on its own slice of the fast weights, so the
            // gradient of the sum is the stack of per-user gradients.
            let loss = support_mse(&Self::mlp(x, &fast)).sum(Kind::Float);
            let inputs: Vec<&Tensor> = fast.iter().flat_map(|(w, b)| [w, b]).collect();
            let create_graph = order == Order::Second;
            let grads = Tensor::run_backward(&[loss], &inputs, true, create_graph);
            fast = fast
                .iter()
                .zip(grads.chunks(2))
                .map(|((w, b), g)| {
                    let (gw, gb) = if create_graph {
                        (g[0].shallow_clone(), g[1].shallow_clone())
                    } else {
                        (g[0].detach(), g[1].detach())
                    };
                    (w - gw * lr, b - gb * lr)
                })
                .collect();
        }
        fast
    }

    /// Adapts on each task's support set and predicts its query set: returns the query
    /// predictions `[B, Q]` and the per-user query MSE `[B]`.
    pub fn adapt_and_predict(&self, batch: &TaskBatch, steps: u32, lr: f64, order: Order) -> (Tensor, Tensor) {
        let mut item_vectors = Self::field_vectors(&self.item_embeddings, &self.item_rows, None);
        if order == Order::Detached {
            item_vectors = item_vectors.detach();
        }
        let detach = |t: Tensor| if order == Order::Detached { t.detach() } else { t };
        let xs = detach(self.inputs(&batch.users, &item_vectors, &batch.support.items));
        let xq = detach(self.inputs(&batch.users, &item_vectors, &batch.query.items));
        let fast = self.initial_fast_weights(batch.users.size()[0], order);
        let fast = Self::adapt(&xs, |p| batch.support.per_user_mse(p), fast, steps, lr, order);
        let predictions = Self::mlp(&xq, &fast);
        let mse = batch.query.per_user_mse(&predictions);
        (predictions, mse)
    }

    /// Embedding table of a user field (`user == true`) or item field, as a flat row-major copy.
    pub fn embedding_values(&self, user: bool, field: usize) -> Vec<f32> {
        let table = if user { &self.user_embeddings[field] } else { &self.item_embeddings[field] };
        tensor_values(table)
    }

    /// `(weight, bias)` values of every layer, weight `[out, in]` row-major.
    pub fn layer_values(&self) -> Vec<(i64, i64, Vec<f32>, Vec<f32>)> {
        self.layers
            .iter()
            .map(|(w, b)| {
                let (out, inp) = w.size2().expect("2-d weight");
                (inp, out, tensor_values(w), tensor_values(b))
            })
            .collect()
    }
}

/// A tensor's values as a flat f32 vector on the host.
pub fn tensor_values(t: &Tensor) -> Vec<f32> {
    let flat = t.detach().to(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    Vec::<f32>::try_from(&flat).expect("float tensor converts")
}
