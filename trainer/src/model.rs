//! The base model f(user features, item features; θ) on libtorch, and the inner loop of every
//! meta-learning method, batched across users: fast weights carry a leading user dimension and
//! padded support/query sets carry masks, so one outer step is a handful of batched matrix
//! products rather than a loop over users.

// `a = a + b` on tensors stays out of place on purpose: tch maps `+=` to an in-place add, which
// would corrupt tensors that autograd saved for the backward pass.
#![allow(clippy::assign_op_pattern)]

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};

use metarec_runtime::format::{Adapt, FieldSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::data::{Dataset, Entity, Rating};
use crate::memory::Memory;
use crate::method::{InitChoice, Method, MethodConfig};
use crate::objective::{Loss as _, Objective};
use crate::split::Task;

/// Shape of the base model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelShape {
    /// Width of every field embedding.
    pub embedding_dim: i64,
    /// Hidden layer widths of the decision MLP (the output layer of width 1 is implied).
    pub hidden: Vec<i64>,
}

/// Everything that fixes a model's parameters and its inner loop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSpec {
    /// Base model shape.
    pub shape: ModelShape,
    /// Training method.
    pub method: Method,
    /// Method settings.
    pub config: MethodConfig,
    /// Inner learning rate (fixed, or the initial value of a learned one).
    pub inner_lr: f64,
    /// Inner-loop steps.
    pub inner_steps: u32,
    /// Rating or click prediction (runs written before the click task read as ratings).
    #[serde(default)]
    pub objective: Objective,
    /// The product model's options (runs written before them read as the papers' model).
    #[serde(default, flatten)]
    pub options: ModelOptions,
}

/// What the product model adds to the papers' decision MLP, and how it is regularised. The
/// default is the papers' model: no item bias, every weight adapted, no regularisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ModelOptions {
    /// Output = MLP + a learned bias per item, initialised at the bias baseline's item biases,
    /// with the output layer starting at zero weights: the unadapted model starts at
    /// μ + b_item, and the adapted output bias is the user's bias.
    pub item_bias: bool,
    /// What the inner loop adapts.
    pub adapt: Adapt,
    /// Inner-loop proximal weight: the support loss gets (proximal/2)·‖θ − θ₀‖².
    pub proximal: f64,
    /// Dropout of hidden units during meta-training (one mask per user and layer).
    pub dropout: f64,
    /// Share of items whose id (embedding row and item bias) is replaced by the unknown item's
    /// in each training step, so that new items score from their features.
    pub item_id_dropout: f64,
    /// Decoupled weight decay of the embedding tables and item biases (per outer step,
    /// multiplied by the outer learning rate).
    pub embedding_decay: f64,
    /// With [`Adapt::FoldIn`]: the starting ridge weight of the hidden features (the user
    /// bias's starts at half of it; the ridge weights are meta-learned from there).
    pub fold_in_lambda: f64,
    /// With [`Adapt::FoldIn`]: per-item factors (`mf_factors` of them) beside the last hidden layer's
    /// features in the fold-in, warm-started from matrix factorisation (set by the trainer).
    pub item_factors: bool,
    /// Weight of the unadapted model's query loss in the outer objective (0: off): the
    /// initialisation learns to predict by itself, so users with few ratings, and groups whose
    /// taste differs from most users', start from a prior that already fits them.
    pub unadapted_loss: f64,
}

impl ModelSpec {
    /// MeLU with the given shape and inner loop.
    pub fn melu(shape: ModelShape, inner_lr: f64, inner_steps: u32) -> ModelSpec {
        ModelSpec {
            shape,
            method: Method::Melu,
            config: MethodConfig::default(),
            inner_lr,
            inner_steps,
            objective: Objective::Rating,
            options: ModelOptions::default(),
        }
    }
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

/// The learning-rate network alpha'(h): two fully connected layers with ReLU, softplus output.
#[derive(Debug)]
struct LrNet {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl LrNet {
    fn new(root: &nn::Path<'_>, h_dim: i64, hidden: i64, initial_lr: f64) -> LrNet {
        let bound = 1.0 / (h_dim as f64).sqrt();
        // softplus(b2) = initial_lr at start; small output weights keep users near it.
        let inverse_softplus = (initial_lr.max(1e-6).exp_m1()).ln();
        LrNet {
            w1: root.var("lr_net_w1", &[hidden, h_dim], nn::Init::Uniform { lo: -bound, up: bound }),
            b1: root.var("lr_net_b1", &[hidden], nn::Init::Uniform { lo: -bound, up: bound }),
            w2: root.var("lr_net_w2", &[1, hidden], nn::Init::Uniform { lo: -0.01, up: 0.01 }),
            b2: root.var("lr_net_b2", &[1], nn::Init::Const(inverse_softplus)),
        }
    }

    /// `[B, h_dim]` → `[B]` positive learning rates.
    fn forward(&self, h: &Tensor) -> Tensor {
        let hidden = (h.matmul(&self.w1.tr()) + &self.b1).relu();
        (hidden.matmul(&self.w2.tr()) + &self.b2).softplus().squeeze_dim(-1)
    }
}

/// Embedding tables, decision MLP initialisation(s), method parts and the dataset's feature
/// rows, on one device.
#[derive(Debug)]
pub struct MetaModel {
    /// Owns every trainable tensor but the AT-PAML memory (saved as the checkpoint).
    pub vs: nn::VarStore,
    /// What this model is.
    pub spec: ModelSpec,
    user_embeddings: Vec<Tensor>,
    item_embeddings: Vec<Tensor>,
    /// Per initialisation, `(weight [out, in], bias [out])` per layer (torch's Linear layout).
    inits: Vec<Vec<(Tensor, Tensor)>>,
    /// Meta-SGD: one learning rate per adapted parameter, in the fast layout (`[in, out]`, `[out]`).
    per_parameter_lr: Vec<(Tensor, Tensor)>,
    lr_net: Option<LrNet>,
    /// Wide&Deep / DeepFM: one scalar weight per feature row, user fields then item fields.
    wide: Option<(Vec<Tensor>, Vec<Tensor>)>,
    /// AT-PAML memory (mutable during training: lookups refresh its LRU order).
    pub memory: Option<RefCell<Memory>>,
    user_rows: Vec<FieldRows>,
    item_rows: Vec<FieldRows>,
    embedding_dim: i64,
    /// The product model's per-item bias `[items]`.
    item_bias: Option<Tensor>,
    /// Position of the `item_id` field among the item fields.
    item_id_field: Option<usize>,
    /// Width of the user part of the MLP input.
    user_width: i64,
    /// Number of items.
    items: i64,
    /// The fold-in's log ridge weights: one per last hidden unit, per item factor, and one for
    /// the user bias.
    fold_in_log_lambda: Option<Tensor>,
    /// Per-item factors `[items, k]` in the fold-in.
    item_factor_table: Option<Tensor>,
    /// Seed of the next training step's dropout draws (set by the training loop, so a resumed
    /// run draws what an uninterrupted one would).
    noise_seed: Cell<u64>,
}

/// One layer's `(inputs, outputs, weight [out, in] row-major, bias)` on the host.
pub type LayerValues = (i64, i64, Vec<f32>, Vec<f32>);

/// Fast (adapted) weights: per layer `(weight [B, in, out], bias [B, out])`.
pub type FastWeights = Vec<(Tensor, Tensor)>;

/// A batch of tasks as padded tensors.
#[derive(Debug)]
pub struct TaskBatch {
    users: Tensor,
    /// The items of the batch (support, query and padding's item 0), sorted and distinct: the
    /// only items whose field vectors a step computes, so its cost does not grow with the
    /// catalogue.
    items: Tensor,
    support: RatingsPad,
    query: RatingsPad,
    /// HML's resampled support at test time: the part adapted on and the part scored.
    resampled: (Tensor, Tensor),
}

#[derive(Debug)]
struct RatingsPad {
    items: Tensor,
    /// `items` as positions in [`TaskBatch::items`].
    local: Tensor,
    values: Tensor,
    mask: Tensor,
}

impl RatingsPad {
    fn new(sets: &[&[Rating]], device: Device) -> RatingsPad {
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
        let items = Tensor::from_slice(&items).view(shape).to(device);
        RatingsPad {
            local: items.shallow_clone(),
            items,
            values: Tensor::from_slice(&values).view(shape).to(device),
            mask: Tensor::from_slice(&mask).view(shape).to(device),
        }
    }
}

impl TaskBatch {
    /// Pads a slice of tasks (`&[Task]`, or `&[&Task]` borrowed from elsewhere) onto `device`.
    pub fn new<T: Borrow<Task>>(tasks: &[T], device: Device) -> TaskBatch {
        let support: Vec<&[Rating]> = tasks.iter().map(|t| t.borrow().support.as_slice()).collect();
        let query: Vec<&[Rating]> = tasks.iter().map(|t| t.borrow().query.as_slice()).collect();
        Self::from_sets(tasks, &support, &query, device)
    }

    /// All of each task's ratings as query, none as support (supervised pre-training).
    pub fn pooled<T: Borrow<Task>>(tasks: &[T], device: Device) -> TaskBatch {
        let all: Vec<Vec<Rating>> = tasks
            .iter()
            .map(|t| {
                let t = t.borrow();
                t.support.iter().chain(&t.query).copied().collect()
            })
            .collect();
        let all: Vec<&[Rating]> = all.iter().map(Vec::as_slice).collect();
        let none: Vec<&[Rating]> = vec![&[]; tasks.len()];
        Self::from_sets(tasks, &none, &all, device)
    }

    fn from_sets<T: Borrow<Task>>(
        tasks: &[T],
        support: &[&[Rating]],
        query: &[&[Rating]],
        device: Device,
    ) -> TaskBatch {
        let users: Vec<i64> = tasks.iter().map(|t| i64::from(t.borrow().user)).collect();
        let support_pad = RatingsPad::new(support, device);
        // Resampled support (HML): the same deterministic split of the support positions the
        // device uses (metarec_runtime::resample).
        let width = support_pad.items.size()[1] as usize;
        let mut adapt_mask = vec![0f32; tasks.len() * width];
        let mut score_mask = vec![0f32; tasks.len() * width];
        for (b, set) in support.iter().enumerate() {
            let (adapt, score) = metarec_runtime::resample::split(set.len());
            for (k, (a, s)) in adapt.iter().zip(&score).enumerate() {
                adapt_mask[b * width + k] = f32::from(u8::from(*a));
                score_mask[b * width + k] = f32::from(u8::from(*s));
            }
        }
        let shape = [tasks.len() as i64, width as i64];
        let (mut support_pad, mut query_pad) = (support_pad, RatingsPad::new(query, device));
        let all = Tensor::cat(&[support_pad.items.view([-1]), query_pad.items.view([-1])], 0);
        let (items, local, _) = all.internal_unique2(true, true, false);
        let support_len = support_pad.items.numel() as i64;
        support_pad.local = local.narrow(0, 0, support_len).view_as(&support_pad.items);
        query_pad.local = local.narrow(0, support_len, local.size()[0] - support_len).view_as(&query_pad.items);
        TaskBatch {
            users: Tensor::from_slice(&users).to(device),
            items,
            support: support_pad,
            query: query_pad,
            resampled: (
                Tensor::from_slice(&adapt_mask).view(shape).to(device),
                Tensor::from_slice(&score_mask).view(shape).to(device),
            ),
        }
    }

    /// Number of tasks.
    pub fn len(&self) -> i64 {
        self.users.size()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The inner learning rate of one batch.
#[derive(Debug)]
enum Alpha<'a> {
    /// One number for everyone.
    Scalar(f64),
    /// One per adapted parameter (Meta-SGD).
    PerParameter(&'a [(Tensor, Tensor)]),
    /// One per user, `[B]` (PAML family).
    PerUser(Tensor),
}

/// What one forward pass over a batch produced.
#[derive(Debug)]
pub struct Forward {
    /// Raw query outputs `[B, Q]` (padding included): ratings, or click logits.
    pub predictions: Tensor,
    /// Per-user query loss `[B]` (MSE, or log loss for clicks).
    pub query_loss: Tensor,
    /// Per-user learning rates `[B]` (PAML family).
    pub alpha: Option<Tensor>,
    /// REG-PAML's ||dL_support/dθ||²·|alpha| per user `[B]`.
    pub regularizer: Option<Tensor>,
    /// `--unadapted-loss` w × the unadapted model's query loss per user `[B]` (training only).
    pub unadapted: Option<Tensor>,
    /// `--rate-penalty` k × (ln(α_u / α))² per user `[B]` (PAML family, training only).
    pub rate_penalty: Option<Tensor>,
    /// AT-PAML memory keys of the batch users `[B, KEY_DIM]`.
    pub memory_keys: Option<Tensor>,
    /// HML: the initialisation each user was given.
    pub chosen_init: Option<Vec<i64>>,
}

impl Forward {
    /// The outer objective: mean query loss (+ gamma · mean regularizer for REG-PAML, + the
    /// weighted unadapted query loss and learning-rate penalty in training).
    pub fn outer_loss(&self, gamma: f64) -> Tensor {
        self.outer_terms(gamma).mean(Kind::Float)
    }

    /// Each user's term of the outer objective `[B]`: query loss, gamma · regularizer (REG-PAML),
    /// and in training the weighted unadapted query loss (`--unadapted-loss`) and learning-rate
    /// penalty (`--rate-penalty`).
    pub fn outer_terms(&self, gamma: f64) -> Tensor {
        let mut terms = self.query_loss.shallow_clone();
        if let Some(reg) = &self.regularizer {
            terms = terms + reg * gamma;
        }
        for term in [&self.unadapted, &self.rate_penalty].into_iter().flatten() {
            terms = terms + term;
        }
        terms
    }
}

/// libtorch's random generator is process-wide: initialisation holds this lock so that a seeded
/// model's draws never interleave with another thread's (tests run in parallel).
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl MetaModel {
    /// A freshly initialised model for `data` (output bias at the mean rating `global_mean`),
    /// drawing from libtorch's generator as it stands.
    pub fn new(data: &Dataset, spec: &ModelSpec, global_mean: f32, device: Device) -> MetaModel {
        let _rng = TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::build(data, spec, global_mean, device)
    }

    /// Like [`MetaModel::new`], with libtorch's generator seeded first: the same seed gives the
    /// same initial weights, whatever other threads do.
    pub fn new_seeded(data: &Dataset, spec: &ModelSpec, global_mean: f32, device: Device, seed: u64) -> MetaModel {
        let _rng = TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed as i64);
        Self::build(data, spec, global_mean, device)
    }

    fn build(data: &Dataset, spec: &ModelSpec, global_mean: f32, device: Device) -> MetaModel {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let dim = spec.shape.embedding_dim;
        let embed = |prefix: &str, fields: &[FieldSpec], width: i64| embedding_tables(&root, prefix, fields, width);
        let user_embeddings = embed("user_embedding_", &data.user_fields, dim);
        let item_embeddings = embed("item_embedding_", &data.item_fields, dim);
        let wide = (!spec.method.adapts())
            .then(|| (embed("wide_user_", &data.user_fields, 1), embed("wide_item_", &data.item_fields, 1)));
        let input_width = (data.user_fields.len() + data.item_fields.len()) as i64 * dim;
        let inits = initial_layers(&root, spec, input_width, global_mean);
        let item_bias = spec.options.item_bias.then(|| root.zeros("item_bias", &[data.items.len() as i64]));
        let k = spec.config.mf_factors as i64;
        let fold_in = spec.options.adapt == Adapt::FoldIn;
        let item_factor_table =
            (fold_in && spec.options.item_factors).then(|| root.zeros("item_factors", &[data.items.len() as i64, k]));
        let fold_in_log_lambda = fold_in.then(|| {
            let last = spec.shape.hidden.last().copied().unwrap_or(input_width);
            let lambda = spec.options.fold_in_lambda.max(1e-6);
            let mut start = vec![lambda.ln() as f32; last as usize];
            if item_factor_table.is_some() {
                start.extend(std::iter::repeat_n(spec.config.mf_lambda.ln() as f32, k as usize));
                start.push(spec.config.mf_bias_lambda.ln() as f32);
            } else {
                start.push((lambda * 0.5).ln() as f32);
            }
            let var = root.zeros("fold_in_log_lambda", &[start.len() as i64]);
            let _guard = tch::no_grad_guard();
            var.shallow_clone().copy_(&Tensor::from_slice(&start).to(device));
            var
        });
        let per_parameter_lr =
            if spec.method == Method::MetaSgd { meta_sgd_rates(&root, spec, &inits[0]) } else { Vec::new() };
        let h_dim = (data.user_fields.len() + data.item_fields.len()) as i64 * dim;
        // AT-PAML adds the neighbours' stored rates (warm-up entries hold inner_lr) to alpha'(h),
        // so its network starts near zero and the sum starts near inner_lr.
        let lr_net_start = if spec.method == Method::AtPaml { spec.inner_lr * 0.05 } else { spec.inner_lr };
        let lr_net = spec.method.has_lr_net().then(|| LrNet::new(&root, h_dim, spec.config.lr_hidden, lr_net_start));
        let memory = (spec.method == Method::AtPaml).then(|| {
            let c = &spec.config;
            RefCell::new(Memory::new(h_dim, c.memory_size, c.neighbours, c.delta, c.warmup, device))
        });
        let user_rows = (0..data.user_fields.len()).map(|f| FieldRows::new(&data.users, f, device)).collect();
        let item_rows = (0..data.item_fields.len()).map(|f| FieldRows::new(&data.items, f, device)).collect();
        MetaModel {
            vs,
            spec: spec.clone(),
            user_embeddings,
            item_embeddings,
            inits,
            per_parameter_lr,
            lr_net,
            wide,
            memory,
            user_rows,
            item_rows,
            embedding_dim: dim,
            item_bias,
            item_id_field: data.item_fields.iter().position(|f| f.name == "item_id"),
            user_width: data.user_fields.len() as i64 * dim,
            items: data.items.len() as i64,
            fold_in_log_lambda,
            item_factor_table,
            noise_seed: Cell::new(0),
        }
    }

    /// Sets the item biases (the bias baseline's, at the start of training); `values` holds one
    /// per item. Does nothing for a model without item biases.
    pub fn set_item_bias(&self, values: &[f32]) {
        if let Some(bias) = &self.item_bias {
            let _guard = tch::no_grad_guard();
            let values = Tensor::from_slice(values).to(self.device());
            bias.shallow_clone().copy_(&values);
        }
    }

    /// Sets the item factors (matrix factorisation's, at the start of training), row-major
    /// `[items, k]`. Does nothing for a model without them.
    pub fn set_item_factors(&self, values: &[f32]) {
        if let Some(table) = &self.item_factor_table {
            let _guard = tch::no_grad_guard();
            let values = Tensor::from_slice(values).view(table.size().as_slice()).to(self.device());
            table.shallow_clone().copy_(&values);
        }
    }

    /// The fold-in's ridge weights (last hidden width + item factors + 1), the number of item
    /// factors k and the item factors (`[items, k]` row-major), for [`Adapt::FoldIn`].
    pub fn fold_in_values(&self) -> Option<(Vec<f32>, usize, Vec<f32>)> {
        let lambda = tensor_values(&self.fold_in_log_lambda.as_ref()?.exp());
        Some(match &self.item_factor_table {
            Some(table) => (lambda, table.size()[1] as usize, tensor_values(table)),
            None => (lambda, 0, Vec::new()),
        })
    }

    /// The item biases, one per item, when the model has them.
    pub fn item_bias_values(&self) -> Option<Vec<f32>> {
        self.item_bias.as_ref().map(tensor_values)
    }

    /// Seeds the dropout draws of the next training forward pass.
    pub fn set_noise_seed(&self, seed: u64) {
        self.noise_seed.set(seed);
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Concatenated mean field embeddings: `[N, fields × dim]` for the selected entities (all if None).
    fn field_vectors(&self, tables: &[Tensor], rows: &[FieldRows], select: Option<&Tensor>, n: i64) -> Tensor {
        self.field_vectors_of_width(tables, rows, select, n, self.embedding_dim, None)
    }

    /// The field vectors of `batch`'s items (`[batch.items, width]`, in the order of
    /// [`TaskBatch::items`]: index them by the local item positions), with the id of the items
    /// where `keep` (`[items]`) is 0 replaced by the unknown item's (item-id dropout).
    fn item_vectors(&self, batch: &TaskBatch, keep: Option<&Tensor>) -> Tensor {
        let keep = keep.zip(self.item_id_field);
        let n = batch.items.size()[0];
        let (tables, rows) = (&self.item_embeddings, &self.item_rows);
        self.field_vectors_of_width(tables, rows, Some(&batch.items), n, self.embedding_dim, keep)
    }

    fn field_vectors_of_width(
        &self,
        tables: &[Tensor],
        rows: &[FieldRows],
        select: Option<&Tensor>,
        n: i64,
        width: i64,
        id_keep: Option<(&Tensor, usize)>,
    ) -> Tensor {
        if tables.is_empty() {
            return Tensor::zeros([n, 0], (Kind::Float, self.device()));
        }
        let parts: Vec<Tensor> = tables
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(f, (table, rows))| {
                let (mut idx, weight) = match select {
                    Some(s) => (rows.idx.index_select(0, s), rows.weight.index_select(0, s)),
                    None => (rows.idx.shallow_clone(), rows.weight.shallow_clone()),
                };
                if let Some((keep, field)) = id_keep {
                    if field == f {
                        // Row 0 is the unknown value.
                        let keep = select.map_or_else(|| keep.shallow_clone(), |s| keep.index_select(0, s));
                        idx = idx * keep.unsqueeze(1);
                    }
                }
                let (n, m) = idx.size2().expect("2-d rows");
                let embedded = table.index_select(0, &idx.view([-1])).view([n, m, width]);
                (embedded * weight.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float)
            })
            .collect();
        Tensor::cat(&parts, 1)
    }

    /// Model inputs `[B, S, width]` for padded item positions `[B, S]` in `item_vectors`.
    fn inputs(user_vectors: &Tensor, item_vectors: &Tensor, items: &Tensor) -> Tensor {
        let (b, s) = items.size2().expect("2-d items");
        let item_part = item_vectors.index_select(0, &items.view([-1])).view([b, s, -1]);
        let user_part = user_vectors.unsqueeze(1).expand([b, s, user_vectors.size()[1]], false);
        Tensor::cat(&[user_part, item_part], 2)
    }

    /// The user embedding h_i = [profile embedding; mean of support item embeddings weighted by
    /// the centred rating], both computable on the device.
    fn user_embedding(user_vectors: &Tensor, item_vectors: &Tensor, support: &RatingsPad) -> Tensor {
        let (b, s) = support.items.size2().expect("2-d items");
        let items = item_vectors.index_select(0, &support.local.view([-1])).view([b, s, -1]);
        let count = support.mask.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0);
        let mean = (&support.values * &support.mask).sum_dim_intlist(1, true, Kind::Float) / &count;
        let centred = (&support.values - mean) * &support.mask / count;
        let history = (items * centred.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float);
        Tensor::cat(&[user_vectors.shallow_clone(), history], 1)
    }

    /// The initial fast weights: initialisation `choice[b]` (0 when None) for each of `batch` users.
    fn initial_fast_weights(&self, batch: i64, choice: Option<&Tensor>, order: Order) -> FastWeights {
        (0..self.inits[0].len())
            .map(|l| {
                let pick = |select: &dyn Fn(&(Tensor, Tensor)) -> &Tensor| -> Tensor {
                    let tensor = match choice {
                        None => {
                            let t = select(&self.inits[0][l]);
                            let size: Vec<i64> = [batch].into_iter().chain(t.size()).collect();
                            t.unsqueeze(0).expand(size, false)
                        }
                        Some(choice) => {
                            let stacked = Tensor::stack(
                                &self.inits.iter().map(|layers| select(&layers[l])).collect::<Vec<_>>(),
                                0,
                            );
                            stacked.index_select(0, choice)
                        }
                    };
                    if order == Order::Detached {
                        tensor.detach()
                    } else {
                        tensor
                    }
                };
                let w = pick(&|layer| &layer.0).transpose(1, 2);
                let b = pick(&|layer| &layer.1);
                if order == Order::Detached {
                    (w.contiguous().set_requires_grad(true), b.contiguous().set_requires_grad(true))
                } else {
                    (w, b)
                }
            })
            .collect()
    }

    /// The decision MLP with per-user weights: `[B, S, width]` → `[B, S]`, with the hidden
    /// units of each user multiplied by `masks` (dropout, `[B, 1, width]` per hidden layer).
    pub fn mlp(x: &Tensor, fast: &FastWeights, masks: Option<&[Tensor]>) -> Tensor {
        let last = fast.len() - 1;
        let (w, b) = &fast[last];
        (Self::hidden(x, &fast[..last], masks).bmm(w) + b.unsqueeze(1)).squeeze_dim(-1)
    }

    /// The hidden layers `layers` (ReLU after each): `[B, S, width]` → `[B, S, last width]`.
    fn hidden(x: &Tensor, layers: &[(Tensor, Tensor)], masks: Option<&[Tensor]>) -> Tensor {
        let mut h = x.shallow_clone();
        for (l, (w, b)) in layers.iter().enumerate() {
            h = (h.bmm(w) + b.unsqueeze(1)).relu();
            if let Some(mask) = masks.and_then(|m| m.get(l)) {
                h = h * mask;
            }
        }
        h
    }

    /// The fold-in: each user's output layer `(w, b)` (and, with item factors, a user factor
    /// vector p) moved by one Newton step on `Σ_support loss(y, ŷ) + ½ Σ_k λ_k δ_k²` over the
    /// change δ from the initialisation. The output is linear in δ (the hidden layers stay at
    /// the initialisation), so for ratings the step is the exact ridge solve
    /// `(ZᵀZ + Λ) δ = Zᵀ r`; for clicks it is the Laplace/IRLS step `(ZᵀSZ + Λ) δ = Zᵀ(y − σ)`.
    /// Λ is the meta-learned ridge weights divided by the method's rate relative to
    /// `inner_lr` (a larger learning rate: a weaker prior).
    ///
    /// With [`Order::First`] the solve's rows (hidden features and item factors) and the item
    /// biases in its residuals are constants: the outer gradient reaches the hidden layers only
    /// through the query outputs, and the output layer's initialisation and the ridge weights
    /// exactly through the solve, the first-order meta-gradient a device contributes
    /// (`metarec_runtime::session`'s `contribute`).
    ///
    /// Returns the adapted weights, the user factors (with item factors) and, per user, the
    /// squared norm of the support loss's gradient over the solved weights at the
    /// initialisation (REG-PAML's regularizer, as the first gradient step's in [`InnerLoop`]).
    fn fold_in(
        &self,
        (x, offset): (&Tensor, Option<&Tensor>),
        (items, values, mask): (&Tensor, &Tensor, &Tensor),
        (mut fast, alpha, order): (FastWeights, &Alpha<'_>, Order),
        masks: Option<&[Tensor]>,
    ) -> (FastWeights, Option<Tensor>, Option<Tensor>) {
        let Some(log_lambda) = &self.fold_in_log_lambda else { return (fast, None, None) };
        let constant = |t: Tensor| if order == Order::First { t.detach() } else { t };
        let last = fast.len() - 1;
        let mut features = Self::hidden(x, &fast[..last], masks);
        let hidden_width = features.size()[2];
        if let Some(q) = self.item_factors_of(items) {
            features = Tensor::cat(&[features, q], 2);
        }
        let features = constant(features);
        let (w0, b0) = &fast[last];
        let mut start = features.narrow(2, 0, hidden_width).bmm(w0).squeeze_dim(-1) + b0;
        if let Some(offset) = offset {
            start = start + constant(offset.shallow_clone());
        }
        let rows = mask.unsqueeze(-1);
        let z = Tensor::cat(&[features * &rows, rows.shallow_clone()], 2);
        let (residual, curvature) = match self.spec.objective {
            Objective::Rating => (values - &start, None::<Tensor>),
            Objective::Click { .. } => {
                let p = start.sigmoid();
                (values - &p, Some(&p * (1.0 - &p)))
            }
        };
        let zt = z.transpose(1, 2);
        let weighted = match &curvature {
            Some(s) => &z * s.unsqueeze(-1),
            None => z.shallow_clone(),
        };
        let a = zt.bmm(&weighted) + self.fold_in_lambda(log_lambda, alpha, hidden_width).diag_embed(0, -2, -1);
        let rhs = zt.bmm(&(residual * mask).unsqueeze(-1));
        let delta = Tensor::linalg_solve(&a, &rhs, true);
        let sqnorm = self.spec.objective.support_gradient_sqnorm(&rhs, mask);
        let sqnorm = if order == Order::Second { sqnorm } else { sqnorm.detach() };
        let width = z.size()[2];
        let w = w0 + delta.narrow(1, 0, hidden_width);
        let b = b0 + delta.narrow(1, width - 1, 1).squeeze_dim(-1);
        let factors = (width - 1 > hidden_width).then(|| delta.narrow(1, hidden_width, width - 1 - hidden_width));
        fast[last] = (w, b);
        (fast, factors, Some(sqnorm))
    }

    /// The fold-in's ridge weights `[B or 1, width]`: exp(log λ), divided by the method's
    /// rate relative to `inner_lr` (per user for the PAML family, per output weight for
    /// Meta-SGD; the item factors' and a fixed rate's unchanged).
    fn fold_in_lambda(&self, log_lambda: &Tensor, alpha: &Alpha<'_>, hidden_width: i64) -> Tensor {
        let lambda = log_lambda.exp().unsqueeze(0);
        let base = self.spec.inner_lr.max(1e-12);
        match alpha {
            Alpha::Scalar(_) => lambda,
            Alpha::PerUser(rates) => lambda * base / rates.clamp_min(1e-12).unsqueeze(1),
            Alpha::PerParameter(rates) => {
                let Some((w, b)) = rates.last() else { return lambda };
                let width = lambda.size()[1];
                let factors = Tensor::full([width - hidden_width - 1], base, (Kind::Float, lambda.device()));
                let scale = Tensor::cat(&[w.view([-1]), factors, b.view([-1])], 0).clamp_min(1e-12);
                lambda * base / scale.unsqueeze(0)
            }
        }
    }

    /// Adapts each user's `fast` weights on a support set (inputs `x` with the items' biases;
    /// the items, values and mask of the rows adapted on): the fold-in for [`Adapt::FoldIn`],
    /// else `steps` gradient steps of `inner`.
    fn adapt_users(
        &self,
        inner: &InnerLoop<'_>,
        support: (&Tensor, Option<&Tensor>),
        set: (&Tensor, &Tensor, &Tensor),
        fast: FastWeights,
        steps: u32,
    ) -> AdaptedUsers {
        if self.fold_in_log_lambda.is_some() && steps > 0 {
            let (fast, factors, first_sqnorm) =
                self.fold_in(support, set, (fast, inner.alpha, inner.order), inner.masks);
            AdaptedUsers { fast, first_sqnorm, factors }
        } else {
            let (fast, first_sqnorm) = inner.adapt(support, set.1, set.2, fast, steps);
            AdaptedUsers { fast, first_sqnorm, factors: None }
        }
    }

    /// The adapted users' raw outputs `[B, S]` for inputs `x` of `items`: the MLP, plus the
    /// fold-in's p·q_i, plus the items' biases `offset`.
    fn adapted_outputs(
        &self,
        adapted: &AdaptedUsers,
        (x, items): (&Tensor, &Tensor),
        offset: Option<&Tensor>,
        inner: &InnerLoop<'_>,
    ) -> Tensor {
        let mut outputs = Self::mlp(x, &adapted.fast, inner.masks);
        if let (Some(p), Some(q)) = (&adapted.factors, self.item_factors_of(items)) {
            outputs = outputs + q.bmm(p).squeeze_dim(-1);
        }
        if let Some(offset) = offset {
            outputs = outputs + offset;
        }
        outputs
    }

    /// The item factors of `items` `[B, S]` → `[B, S, k]`, when the model has them.
    fn item_factors_of(&self, items: &Tensor) -> Option<Tensor> {
        let table = self.item_factor_table.as_ref()?;
        let (b, s) = items.size2().expect("2-d items");
        Some(table.index_select(0, &items.view([-1])).view([b, s, -1]))
    }

    /// The inner loop's settings for one batch.
    fn inner_loop<'a>(&self, alpha: &'a Alpha<'a>, order: Order, masks: Option<&'a [Tensor]>) -> InnerLoop<'a> {
        InnerLoop {
            objective: self.spec.objective,
            alpha,
            order,
            parts: adapted_parameters(self.spec.options.adapt, self.inits[0].len(), self.user_width),
            proximal: self.spec.options.proximal,
            masks,
        }
    }

    /// The training step's random draws: which items keep their id (item-id dropout, `[items]`
    /// of 0/1) and the hidden units' dropout masks, from the seed the training loop set. Each
    /// user's masks come from a generator keyed by the seed and the user's id, never by its
    /// place in the batch, so a rank's shard of a batch draws what the whole batch would.
    fn training_noise(&self, users: &Tensor) -> (Option<Tensor>, Option<Vec<Tensor>>) {
        let options = &self.spec.options;
        let mut rng = ChaCha8Rng::seed_from_u64(self.noise_seed.get());
        let has_id = self.item_id_field.is_some() || self.item_bias.is_some();
        let keep = (options.item_id_dropout > 0.0 && has_id).then(|| {
            let keep: Vec<i64> =
                (0..self.items).map(|_| i64::from(rng.gen::<f64>() >= options.item_id_dropout)).collect();
            Tensor::from_slice(&keep).to(self.device())
        });
        let hidden = &self.spec.shape.hidden;
        let masks = (options.dropout > 0.0 && !hidden.is_empty()).then(|| {
            let scale = (1.0 / (1.0 - options.dropout)) as f32;
            let ids = Vec::<i64>::try_from(&users.to(Device::Cpu)).expect("int64 user ids");
            let mut layers: Vec<Vec<f32>> =
                hidden.iter().map(|&w| Vec::with_capacity(ids.len() * w as usize)).collect();
            for &id in &ids {
                let key = (id as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut user_rng = ChaCha8Rng::seed_from_u64(self.noise_seed.get() ^ key);
                for (values, &width) in layers.iter_mut().zip(hidden) {
                    values
                        .extend((0..width).map(|_| if user_rng.gen::<f64>() >= options.dropout { scale } else { 0.0 }));
                }
            }
            let n = ids.len() as i64;
            layers
                .iter()
                .zip(hidden)
                .map(|(values, &width)| Tensor::from_slice(values).view([n, 1, width]).to(self.device()))
                .collect()
        });
        (keep, masks)
    }

    /// The item biases of the support and query items (`[B, S]`, `[B, Q]`), those of dropped ids
    /// at zero, when the model has item biases.
    fn item_offsets(&self, batch: &TaskBatch, keep: Option<&Tensor>, order: Order) -> Option<(Tensor, Tensor)> {
        let mut bias = self.item_bias.as_ref()?.shallow_clone();
        if order == Order::Detached {
            bias = bias.detach();
        }
        // Only the batch's biases (a product per item, the same as over the whole table).
        let pick = |items: &Tensor| {
            let flat = items.view([-1]);
            let picked = bias.index_select(0, &flat);
            let picked = match keep {
                Some(keep) => picked * keep.index_select(0, &flat).to_kind(Kind::Float),
                None => picked,
            };
            picked.view(items.size().as_slice())
        };
        Some((pick(&batch.support.items), pick(&batch.query.items)))
    }

    /// The inner learning rate(s) of a batch and (AT-PAML) the memory keys of its users.
    fn inner_rates(
        &self,
        batch: &TaskBatch,
        user_vectors: &Tensor,
        item_vectors: &Tensor,
        training: bool,
    ) -> (Alpha<'_>, Option<Tensor>) {
        match self.spec.method {
            Method::MetaSgd => (Alpha::PerParameter(&self.per_parameter_lr), None),
            method if method.has_lr_net() => {
                let h = Self::user_embedding(user_vectors, item_vectors, &batch.support);
                let Some(lr_net) = self.lr_net.as_ref() else {
                    unreachable!("the PAML family is built with a learning-rate network")
                };
                let mut rates = lr_net.forward(&h);
                let mut memory_keys = None;
                if let Some(memory) = &self.memory {
                    let mut memory = memory.borrow_mut();
                    let keys = memory.key(&h);
                    if memory.ready() {
                        let neighbours = memory.nearest(&keys, training);
                        rates = rates + memory.neighbour_term(&keys, &neighbours);
                    } else {
                        // Warm-up: these users adapt (and are stored) with the fixed rate.
                        rates = Tensor::full([batch.len()], self.spec.inner_lr, (Kind::Float, self.device()));
                    }
                    memory_keys = Some(keys);
                }
                (Alpha::PerUser(rates), memory_keys)
            }
            _ => (Alpha::Scalar(self.spec.inner_lr), None),
        }
    }

    /// Adapts on each task's support set and predicts its query set. `steps` overrides the
    /// model's inner step count (0 = no adaptation). `training` refreshes the AT-PAML memory's
    /// LRU order, lets HML assign tasks by their query loss (Alg. 1) and draws the dropouts;
    /// otherwise HML picks an initialisation from the resampled support set.
    pub fn forward(&self, batch: &TaskBatch, steps: u32, order: Order, training: bool) -> Forward {
        let n = batch.len();
        let steps = if self.spec.method.adapts() { steps } else { 0 };
        let detach = |t: Tensor| if order == Order::Detached { t.detach() } else { t };
        let (keep, masks) = if training { self.training_noise(&batch.users) } else { (None, None) };
        let item_vectors = detach(self.item_vectors(batch, keep.as_ref()));
        let user_vectors = detach(self.field_vectors(&self.user_embeddings, &self.user_rows, Some(&batch.users), n));
        let xs = Self::inputs(&user_vectors, &item_vectors, &batch.support.local);
        let xq = Self::inputs(&user_vectors, &item_vectors, &batch.query.local);
        let offsets = self.item_offsets(batch, keep.as_ref(), order);
        let (alpha, memory_keys) = self.inner_rates(batch, &user_vectors, &item_vectors, training);

        let choice =
            (self.inits.len() > 1).then(|| self.choose_init(batch, (&xs, &xq), offsets.as_ref(), steps, training));
        let choice_tensor = choice.as_ref().map(|c| Tensor::from_slice(c).to(self.device()));
        let fast = self.initial_fast_weights(n, choice_tensor.as_ref(), order);
        let inner = self.inner_loop(&alpha, order, masks.as_deref());
        let support = (&xs, offsets.as_ref().map(|o| &o.0));
        let set = (&batch.support.items, &batch.support.values, &batch.support.mask);
        let query_offset = offsets.as_ref().map(|o| &o.1);
        let unadapted = self.unadapted_loss(&fast, (&xq, query_offset), batch, &inner, steps, training);
        let adapted = self.adapt_users(&inner, support, set, fast, steps);
        let mut predictions = self.adapted_outputs(&adapted, (&xq, &batch.query.items), query_offset, &inner);
        if let Some(wide) = &self.wide {
            predictions = predictions + self.wide_and_fm(wide, batch, &xq, detach);
        }
        let query_loss = self.spec.objective.per_user_loss(&predictions, &batch.query.values, &batch.query.mask);
        let alpha_per_user = match alpha {
            Alpha::PerUser(rates) => Some(rates),
            _ => None,
        };
        let regularizer = match (self.spec.method, &alpha_per_user, adapted.first_sqnorm) {
            (Method::RegPaml, Some(rates), Some(sqnorm)) => Some(sqnorm * rates.abs()),
            _ => None,
        };
        let rate_penalty = alpha_per_user.as_ref().and_then(|rates| self.rate_penalty(rates, training));
        Forward {
            predictions,
            query_loss,
            alpha: alpha_per_user,
            regularizer,
            unadapted,
            rate_penalty,
            memory_keys,
            chosen_init: choice,
        }
    }

    /// In training with `--unadapted-loss` w > 0 and adaptation on (`steps` > 0: never for the
    /// supervised baselines with a wide part, which do not adapt): w × each user's query loss
    /// of the initialisation itself (`[B]`), the unadapted prediction the adaptation starts from
    /// (under the fold-in, the ridge prior's mean).
    fn unadapted_loss(
        &self,
        fast: &FastWeights,
        (xq, offset): (&Tensor, Option<&Tensor>),
        batch: &TaskBatch,
        inner: &InnerLoop<'_>,
        steps: u32,
        training: bool,
    ) -> Option<Tensor> {
        let weight = self.spec.options.unadapted_loss;
        if !training || weight <= 0.0 || steps == 0 {
            return None;
        }
        let mut outputs = Self::mlp(xq, fast, inner.masks);
        if let Some(offset) = offset {
            outputs = outputs + offset;
        }
        Some(self.spec.objective.per_user_loss(&outputs, &batch.query.values, &batch.query.mask) * weight)
    }

    /// In training with `--rate-penalty` k > 0: k × (ln(α_u / α))² for each user's learning
    /// rate α_u `[B]` (α: `--inner-lr`), the prior that keeps the learning-rate network from
    /// giving the training users ever larger rates.
    fn rate_penalty(&self, rates: &Tensor, training: bool) -> Option<Tensor> {
        let weight = self.spec.config.rate_penalty;
        if !training || weight <= 0.0 || self.spec.inner_lr <= 0.0 {
            return None;
        }
        Some((rates.clamp_min(1e-12) / self.spec.inner_lr).log().square() * weight)
    }

    /// The first-order meta-gradient of `batch`'s mean query loss ([`Order::First`], `steps`
    /// inner steps, evaluation mode: no dropout, HML picks by the resampled support), in the
    /// layout of a device's contribution (`metarec_runtime::contribution::UpdateLayout`): the
    /// decision MLP's parameters (per layer the weight `[out, in]` row-major, then the bias),
    /// then the fold-in's log ridge weights. The libtorch oracle of the runtime's `contribute`,
    /// and the central first-order step a federated round with every user estimates. Leaves no
    /// gradient behind.
    pub fn first_order_meta_gradient(&self, batch: &TaskBatch, steps: u32) -> Vec<f32> {
        let tensors: Vec<&Tensor> =
            self.inits[0].iter().flat_map(|(w, b)| [w, b]).chain(&self.fold_in_log_lambda).collect();
        let zero = || self.vs.trainable_variables().iter_mut().for_each(Tensor::zero_grad);
        zero();
        self.forward(batch, steps, Order::First, false).outer_loss(0.0).backward();
        let out = tensors
            .iter()
            .flat_map(|t| {
                let grad = t.grad();
                if grad.defined() {
                    tensor_values(&grad)
                } else {
                    vec![0.0; t.numel()]
                }
            })
            .collect();
        zero();
        out
    }

    /// The linear term over feature rows, plus (DeepFM) the factorization machine's pairwise
    /// interactions 0.5·((Σ_f v_f)² − Σ_f v_f²) of the field vectors: `[B, Q]`.
    fn wide_and_fm(
        &self,
        wide: &(Vec<Tensor>, Vec<Tensor>),
        batch: &TaskBatch,
        xq: &Tensor,
        detach: impl Fn(Tensor) -> Tensor,
    ) -> Tensor {
        let n = batch.len();
        let user = detach(self.field_vectors_of_width(&wide.0, &self.user_rows, Some(&batch.users), n, 1, None));
        let n_items = batch.items.size()[0];
        let items = detach(self.field_vectors_of_width(&wide.1, &self.item_rows, Some(&batch.items), n_items, 1, None));
        let (b, q) = batch.query.items.size2().expect("2-d items");
        let item_part = items.index_select(0, &batch.query.local.view([-1])).view([b, q, -1]);
        let mut out = user.sum_dim_intlist(1, true, Kind::Float) + item_part.sum_dim_intlist(2, false, Kind::Float);
        if self.spec.method == Method::DeepFm {
            let fields = xq.view([b, q, -1, self.embedding_dim]);
            let sum = fields.sum_dim_intlist(2, false, Kind::Float);
            let interactions = (sum.square() - fields.square().sum_dim_intlist(2, false, Kind::Float)) * 0.5;
            out = out + interactions.sum_dim_intlist(2, false, Kind::Float);
        }
        out
    }

    /// HML: the initialisation whose adapted model scores best on the held-out part of the
    /// resampled support set; in training with `--init-choice query`, on the query set (the
    /// paper's hard task clustering).
    fn choose_init(
        &self,
        batch: &TaskBatch,
        (xs, xq): (&Tensor, &Tensor),
        offsets: Option<&(Tensor, Tensor)>,
        steps: u32,
        training: bool,
    ) -> Vec<i64> {
        let xs = xs.detach();
        let support_offset = offsets.map(|o| o.0.detach());
        let (adapt_mask, score_x, score_offset, score_set) =
            if training && self.spec.config.init_choice == InitChoice::Query {
                let query_offset = offsets.map(|o| o.1.detach());
                (
                    &batch.support.mask,
                    xq.detach(),
                    query_offset,
                    (&batch.query.items, &batch.query.values, &batch.query.mask),
                )
            } else {
                let offset = support_offset.as_ref().map(Tensor::shallow_clone);
                let set = (&batch.support.items, &batch.support.values, &batch.resampled.1);
                (&batch.resampled.0, xs.shallow_clone(), offset, set)
            };
        let n = batch.len();
        let alpha = Alpha::Scalar(self.spec.inner_lr);
        let inner = self.inner_loop(&alpha, Order::Detached, None);
        let losses: Vec<Tensor> = (0..self.inits.len() as i64)
            .map(|k| {
                let choice = Tensor::full([n], k, (Kind::Int64, self.device()));
                let fast = self.initial_fast_weights(n, Some(&choice), Order::Detached);
                let support = (&xs, support_offset.as_ref());
                let set = (&batch.support.items, &batch.support.values, adapt_mask);
                let adapted = self.adapt_users(&inner, support, set, fast, steps);
                let outputs = self.adapted_outputs(&adapted, (&score_x, score_set.0), score_offset.as_ref(), &inner);
                self.spec.objective.per_user_loss(&outputs, score_set.1, score_set.2).detach()
            })
            .collect();
        let best = Tensor::stack(&losses, 0).argmin(0, false);
        Vec::<i64>::try_from(&best).expect("int64 choice")
    }

    /// The user embedding h_i of each task of `batch` (`[B, h_dim]`, no gradient): what the
    /// learning-rate network and the AT-PAML memory see (the report's projection of users).
    pub fn user_embeddings(&self, batch: &TaskBatch) -> Tensor {
        let _guard = tch::no_grad_guard();
        let item_vectors = self.item_vectors(batch, None);
        let user_vectors = self.field_vectors(&self.user_embeddings, &self.user_rows, Some(&batch.users), batch.len());
        Self::user_embedding(&user_vectors, &item_vectors, &batch.support)
    }

    /// Embedding table of a user field (`user == true`) or item field, as a flat row-major copy.
    pub fn embedding_values(&self, user: bool, field: usize) -> Vec<f32> {
        let table = if user { &self.user_embeddings[field] } else { &self.item_embeddings[field] };
        tensor_values(table)
    }

    /// `(inputs, outputs, weight, bias)` of every layer of initialisation 0, weight `[out, in]`.
    pub fn layer_values(&self) -> Vec<LayerValues> {
        self.init_values(0)
    }

    /// Number of initialisations (HML's K, else 1).
    pub fn init_count(&self) -> usize {
        self.inits.len()
    }

    /// `(inputs, outputs, weight [out, in], bias)` of every layer of initialisation `k`.
    pub fn init_values(&self, k: usize) -> Vec<LayerValues> {
        self.inits[k]
            .iter()
            .map(|(w, b)| {
                let (out, inp) = w.size2().expect("2-d weight");
                (inp, out, tensor_values(w), tensor_values(b))
            })
            .collect()
    }

    /// Meta-SGD's rates per layer in the weights' `[out, in]` order: `(weight rates, bias rates)`.
    pub fn per_parameter_lr_values(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.per_parameter_lr.iter().map(|(w, b)| (tensor_values(&w.transpose(0, 1)), tensor_values(b))).collect()
    }

    /// The learning-rate network's `(inputs, outputs, weight [out, in], bias)` for its two layers.
    pub fn lr_net_values(&self) -> Option<[LayerValues; 2]> {
        let net = self.lr_net.as_ref()?;
        let layer = |w: &Tensor, b: &Tensor| {
            let (out, inp) = w.size2().expect("2-d weight");
            (inp, out, tensor_values(w), tensor_values(b))
        };
        Some([layer(&net.w1, &net.b1), layer(&net.w2, &net.b2)])
    }

    /// Meta-SGD's learned learning rates: mean and range over all adapted parameters.
    pub fn per_parameter_lr_summary(&self) -> Option<(f64, f64, f64)> {
        if self.per_parameter_lr.is_empty() {
            return None;
        }
        let all: Vec<f32> =
            self.per_parameter_lr.iter().flat_map(|(w, b)| [tensor_values(w), tensor_values(b)]).flatten().collect();
        let mean = all.iter().map(|&v| f64::from(v)).sum::<f64>() / all.len() as f64;
        let min = all.iter().copied().fold(f32::INFINITY, f32::min);
        let max = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        Some((mean, f64::from(min), f64::from(max)))
    }
}

/// One adapted parameter of the fast weights: its layer, whether it is the weight (else the
/// bias), and which of its input rows adapt.
#[derive(Debug)]
struct Adapted {
    layer: usize,
    weight: bool,
    /// Only the weight's first this many input rows adapt (None: all of it).
    rows: Option<i64>,
}

/// The parameters `adapt` lets the inner loop change, for an MLP of `layers` layers whose first
/// `user_width` inputs are the user's fields (see [`Adapt`]).
fn adapted_parameters(adapt: Adapt, layers: usize, user_width: i64) -> Vec<Adapted> {
    let part = |layer, weight| Adapted { layer, weight, rows: None };
    let last = layers.saturating_sub(1);
    match adapt {
        Adapt::All => (0..layers).flat_map(|l| [part(l, true), part(l, false)]).collect(),
        Adapt::Head | Adapt::FoldIn => vec![part(last, true), part(last, false)],
        Adapt::User => {
            let mut parts = vec![part(0, false)];
            if user_width > 0 {
                parts.push(Adapted { layer: 0, weight: true, rows: Some(user_width) });
            }
            if last > 0 {
                parts.push(part(last, false));
            }
            parts
        }
    }
}

/// A batch of users adapted on their support sets.
struct AdaptedUsers {
    fast: FastWeights,
    /// Per user, the squared norm of the first gradient step's gradient (gradient steps only).
    first_sqnorm: Option<Tensor>,
    /// The fold-in's user factors `[B, k, 1]` (with item factors).
    factors: Option<Tensor>,
}

/// The inner loop of one batch: what adapts, at which rate, with which regularisation.
struct InnerLoop<'a> {
    objective: Objective,
    alpha: &'a Alpha<'a>,
    order: Order,
    parts: Vec<Adapted>,
    proximal: f64,
    masks: Option<&'a [Tensor]>,
}

impl InnerLoop<'_> {
    fn tensor<'f>(fast: &'f FastWeights, part: &Adapted) -> &'f Tensor {
        let (w, b) = &fast[part.layer];
        if part.weight {
            w
        } else {
            b
        }
    }

    /// `part`'s gradient with its frozen entries zeroed.
    fn masked(gradient: Tensor, part: &Adapted) -> Tensor {
        match part.rows {
            Some(rows) => {
                let (_, inputs, _) = gradient.size3().expect("3-d weight gradient");
                let kept = Tensor::arange(inputs, (Kind::Int64, gradient.device())).lt(rows);
                gradient * kept.to_kind(Kind::Float).view([1, inputs, 1])
            }
            None => gradient,
        }
    }

    /// `rate · gradient` for `part` under the batch's learning rate.
    fn scaled(&self, gradient: &Tensor, part: &Adapted) -> Tensor {
        match self.alpha {
            Alpha::Scalar(lr) => gradient * *lr,
            Alpha::PerParameter(rates) => {
                let (w, b) = &rates[part.layer];
                gradient * if part.weight { w } else { b }.unsqueeze(0)
            }
            Alpha::PerUser(rates) => {
                let shape: &[i64] = if part.weight { &[-1, 1, 1] } else { &[-1, 1] };
                gradient * rates.view(shape)
            }
        }
    }

    /// `steps` full-batch gradient steps on each user's support loss (entries where `mask` is
    /// 1; outputs offset by the item biases), all users at once. Returns the adapted weights
    /// and, per user, the squared norm of the first step's gradient.
    fn adapt(
        &self,
        (x, offset): (&Tensor, Option<&Tensor>),
        values: &Tensor,
        mask: &Tensor,
        mut fast: FastWeights,
        steps: u32,
    ) -> (FastWeights, Option<Tensor>) {
        let start: Vec<Tensor> = if self.proximal > 0.0 {
            self.parts.iter().map(|p| Self::tensor(&fast, p).shallow_clone()).collect()
        } else {
            Vec::new()
        };
        let mut first_sqnorm = None;
        for step in 0..steps {
            let mut outputs = MetaModel::mlp(x, &fast, self.masks);
            if let Some(offset) = offset {
                outputs = outputs + offset;
            }
            // Each user's loss depends only on its own slice of the fast weights, so the
            // gradient of the sum is the stack of per-user gradients.
            let loss = self.objective.per_user_loss(&outputs, values, mask).sum(Kind::Float);
            let inputs: Vec<&Tensor> = self.parts.iter().map(|p| Self::tensor(&fast, p)).collect();
            let create_graph = self.order == Order::Second;
            let grads = Tensor::run_backward(&[loss], &inputs, true, create_graph);
            let grads: Vec<Tensor> = grads
                .into_iter()
                .zip(&self.parts)
                .enumerate()
                .map(|(k, (g, part))| {
                    let g = Self::masked(if create_graph { g } else { g.detach() }, part);
                    match start.get(k) {
                        Some(theta0) => g + (Self::tensor(&fast, part) - theta0) * self.proximal,
                        None => g,
                    }
                })
                .collect();
            if step == 0 {
                let sqnorm = grads.iter().map(|g| g.square().flatten(1, -1).sum_dim_intlist(1, false, Kind::Float));
                first_sqnorm = sqnorm.reduce(|a, b| a + b);
            }
            for (g, part) in grads.iter().zip(&self.parts) {
                let update = self.scaled(g, part);
                let (w, b) = &mut fast[part.layer];
                let target = if part.weight { w } else { b };
                *target = &*target - update;
            }
        }
        (fast, first_sqnorm)
    }
}

/// One embedding table per field, `width` wide, named `prefix` and the field's index.
fn embedding_tables(root: &nn::Path<'_>, prefix: &str, fields: &[FieldSpec], width: i64) -> Vec<Tensor> {
    fields
        .iter()
        .enumerate()
        .map(|(f, field)| {
            root.var(
                &format!("{prefix}{f}"),
                &[field.rows() as i64, width],
                nn::Init::Randn { mean: 0.0, stdev: if width == 1 { 0.01 } else { 0.1 } },
            )
        })
        .collect()
}

/// The network's initial layers, (weight, bias) per layer: one set, or HML's `inits` sets, whose
/// first `--shared-layers` layers are the same variables (one gradient, one file entry each). The
/// output layer's bias starts at the objective's bias for the global mean.
fn initial_layers(
    root: &nn::Path<'_>,
    spec: &ModelSpec,
    input_width: i64,
    global_mean: f32,
) -> Vec<Vec<(Tensor, Tensor)>> {
    let widths: Vec<i64> = spec.shape.hidden.iter().copied().chain([1]).collect();
    let n_inits = if spec.method == Method::Hml { spec.config.inits.max(1) } else { 1 };
    // HML's `--shared-layers`: initialisations past the first reuse its lowest layers.
    let shared = if n_inits > 1 { spec.config.shared_layers.min(widths.len() - 1) } else { 0 };
    let mut sets: Vec<Vec<(Tensor, Tensor)>> = Vec::with_capacity(n_inits);
    for k in 0..n_inits {
        let prefix = if k == 0 { String::new() } else { format!("init{k}_") };
        let mut width = input_width;
        let mut layers = Vec::new();
        for (l, &out) in widths.iter().enumerate() {
            if k > 0 && l < shared {
                let (w, b) = &sets[0][l];
                layers.push((w.shallow_clone(), b.shallow_clone()));
                width = out;
                continue;
            }
            let bound = 1.0 / (width as f64).sqrt();
            let uniform = nn::Init::Uniform { lo: -bound, up: bound };
            // The product model's output layer starts at zero: the unadapted model is μ + b_item.
            // When it is all an initialisation has of its own, the others start apart from the
            // first (identical initialisations would never be told apart).
            let output = l + 1 == widths.len();
            let alone = k > 0 && l == shared;
            let w_init = if output && spec.options.item_bias && !alone { nn::Init::Const(0.0) } else { uniform };
            let w = root.var(&format!("{prefix}layer{l}_weight"), &[out, width], w_init);
            let bias_init =
                if output { nn::Init::Const(spec.objective.initial_output_bias(global_mean)) } else { uniform };
            let b = root.var(&format!("{prefix}layer{l}_bias"), &[out], bias_init);
            layers.push((w, b));
            width = out;
        }
        sets.push(layers);
    }
    sets
}

/// Meta-SGD's per-parameter inner learning rates, shaped like `layers` (weights transposed),
/// all starting at `inner_lr`.
fn meta_sgd_rates(root: &nn::Path<'_>, spec: &ModelSpec, layers: &[(Tensor, Tensor)]) -> Vec<(Tensor, Tensor)> {
    layers
        .iter()
        .enumerate()
        .map(|(l, (w, b))| {
            let (out, inp) = w.size2().expect("2-d weight");
            let init = nn::Init::Const(spec.inner_lr);
            (
                root.var(&format!("meta_sgd_lr_w{l}"), &[inp, out], init),
                root.var(&format!("meta_sgd_lr_b{l}"), &[b.size()[0]], init),
            )
        })
        .collect()
}

/// A tensor's values as a flat f32 vector on the host.
pub fn tensor_values(t: &Tensor) -> Vec<f32> {
    let flat = t.detach().to(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    Vec::<f32>::try_from(&flat).expect("float tensor converts")
}
