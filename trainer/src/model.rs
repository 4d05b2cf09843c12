//! The base model f(user features, item features; θ) on libtorch, and the inner loop of every
//! meta-learning method, batched across users: fast weights carry a leading user dimension and
//! padded support/query sets carry masks, so one outer step is a handful of batched matrix
//! products rather than a loop over users.

// `a = a + b` on tensors stays out of place on purpose: tch maps `+=` to an in-place add, which
// would corrupt tensors that autograd saved for the backward pass.
#![allow(clippy::assign_op_pattern)]

use std::cell::RefCell;

use metarec_runtime::format::FieldSpec;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::data::{Dataset, Entity, Rating};
use crate::memory::Memory;
use crate::method::{Method, MethodConfig};
use crate::objective::Objective;
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
}

/// One layer's `(inputs, outputs, weight [out, in] row-major, bias)` on the host.
pub type LayerValues = (i64, i64, Vec<f32>, Vec<f32>);

/// Fast (adapted) weights: per layer `(weight [B, in, out], bias [B, out])`.
pub type FastWeights = Vec<(Tensor, Tensor)>;

/// A batch of tasks as padded tensors.
#[derive(Debug)]
pub struct TaskBatch {
    users: Tensor,
    support: RatingsPad,
    query: RatingsPad,
    /// HML's resampled support at test time: the part adapted on and the part scored.
    resampled: (Tensor, Tensor),
}

#[derive(Debug)]
struct RatingsPad {
    items: Tensor,
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
        RatingsPad {
            items: Tensor::from_slice(&items).view(shape).to(device),
            values: Tensor::from_slice(&values).view(shape).to(device),
            mask: Tensor::from_slice(&mask).view(shape).to(device),
        }
    }
}

impl TaskBatch {
    /// Pads a slice of tasks onto `device`.
    pub fn new(tasks: &[Task], device: Device) -> TaskBatch {
        let support: Vec<&[Rating]> = tasks.iter().map(|t| t.support.as_slice()).collect();
        let query: Vec<&[Rating]> = tasks.iter().map(|t| t.query.as_slice()).collect();
        Self::from_sets(tasks, &support, &query, device)
    }

    /// All of each task's ratings as query, none as support (supervised pre-training).
    pub fn pooled(tasks: &[Task], device: Device) -> TaskBatch {
        let all: Vec<Vec<Rating>> = tasks.iter().map(|t| t.support.iter().chain(&t.query).copied().collect()).collect();
        let all: Vec<&[Rating]> = all.iter().map(Vec::as_slice).collect();
        let none: Vec<&[Rating]> = vec![&[]; tasks.len()];
        Self::from_sets(tasks, &none, &all, device)
    }

    fn from_sets(tasks: &[Task], support: &[&[Rating]], query: &[&[Rating]], device: Device) -> TaskBatch {
        let users: Vec<i64> = tasks.iter().map(|t| i64::from(t.user)).collect();
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
        TaskBatch {
            users: Tensor::from_slice(&users).to(device),
            support: support_pad,
            query: RatingsPad::new(query, device),
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
    /// AT-PAML memory keys of the batch users `[B, KEY_DIM]`.
    pub memory_keys: Option<Tensor>,
    /// HML: the initialisation each user was given.
    pub chosen_init: Option<Vec<i64>>,
}

impl Forward {
    /// The outer objective: mean query loss (+ gamma · mean regularizer for REG-PAML).
    pub fn outer_loss(&self, gamma: f64) -> Tensor {
        let loss = self.query_loss.mean(Kind::Float);
        match &self.regularizer {
            Some(reg) => loss + reg.mean(Kind::Float) * gamma,
            None => loss,
        }
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
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Concatenated mean field embeddings: `[N, fields × dim]` for the selected entities (all if None).
    fn field_vectors(&self, tables: &[Tensor], rows: &[FieldRows], select: Option<&Tensor>, n: i64) -> Tensor {
        self.field_vectors_of_width(tables, rows, select, n, self.embedding_dim)
    }

    fn field_vectors_of_width(
        &self,
        tables: &[Tensor],
        rows: &[FieldRows],
        select: Option<&Tensor>,
        n: i64,
        width: i64,
    ) -> Tensor {
        if tables.is_empty() {
            return Tensor::zeros([n, 0], (Kind::Float, self.device()));
        }
        let parts: Vec<Tensor> = tables
            .iter()
            .zip(rows)
            .map(|(table, rows)| {
                let (idx, weight) = match select {
                    Some(s) => (rows.idx.index_select(0, s), rows.weight.index_select(0, s)),
                    None => (rows.idx.shallow_clone(), rows.weight.shallow_clone()),
                };
                let (n, m) = idx.size2().expect("2-d rows");
                let embedded = table.index_select(0, &idx.view([-1])).view([n, m, width]);
                (embedded * weight.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float)
            })
            .collect();
        Tensor::cat(&parts, 1)
    }

    /// Model inputs `[B, S, width]` for padded item indices `[B, S]`.
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
        let items = item_vectors.index_select(0, &support.items.view([-1])).view([b, s, -1]);
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

    /// `steps` full-batch gradient steps on each user's support loss (entries where `mask` is 1),
    /// all users at once. Returns the adapted weights and, per user, the squared norm of the
    /// first step's gradient.
    #[allow(clippy::too_many_arguments)]
    fn adapt(
        objective: Objective,
        x: &Tensor,
        values: &Tensor,
        mask: &Tensor,
        mut fast: FastWeights,
        steps: u32,
        alpha: &Alpha<'_>,
        order: Order,
    ) -> (FastWeights, Option<Tensor>) {
        let mut first_sqnorm = None;
        for step in 0..steps {
            // Each user's loss depends only on its own slice of the fast weights, so the
            // gradient of the sum is the stack of per-user gradients.
            let loss = objective.per_user_loss(&Self::mlp(x, &fast), values, mask).sum(Kind::Float);
            let inputs: Vec<&Tensor> = fast.iter().flat_map(|(w, b)| [w, b]).collect();
            let create_graph = order == Order::Second;
            let grads = Tensor::run_backward(&[loss], &inputs, true, create_graph);
            let grads: Vec<Tensor> = if create_graph { grads } else { grads.iter().map(Tensor::detach).collect() };
            if step == 0 {
                let sqnorm = grads
                    .iter()
                    .map(|g| g.square().flatten(1, -1).sum_dim_intlist(1, false, Kind::Float))
                    .reduce(|a, b| a + b);
                first_sqnorm = sqnorm;
            }
            fast = fast
                .iter()
                .zip(grads.chunks(2))
                .enumerate()
                .map(|(l, ((w, b), g))| match alpha {
                    Alpha::Scalar(lr) => (w - &g[0] * *lr, b - &g[1] * *lr),
                    Alpha::PerParameter(rates) => {
                        (w - &g[0] * rates[l].0.unsqueeze(0), b - &g[1] * rates[l].1.unsqueeze(0))
                    }
                    Alpha::PerUser(rates) => (w - &g[0] * rates.view([-1, 1, 1]), b - &g[1] * rates.view([-1, 1])),
                })
                .collect();
        }
        (fast, first_sqnorm)
    }

    /// Adapts on each task's support set and predicts its query set. `steps` overrides the
    /// model's inner step count (0 = no adaptation). `training` refreshes the AT-PAML memory's
    /// LRU order and lets HML assign tasks by their query loss (Alg. 1); otherwise HML picks an
    /// initialisation from the resampled support set.
    pub fn forward(&self, batch: &TaskBatch, steps: u32, order: Order, training: bool) -> Forward {
        let n = batch.len();
        let steps = if self.spec.method.adapts() { steps } else { 0 };
        let detach = |t: Tensor| if order == Order::Detached { t.detach() } else { t };
        let item_vectors = detach(self.field_vectors(&self.item_embeddings, &self.item_rows, None, 0));
        let user_vectors = detach(self.field_vectors(&self.user_embeddings, &self.user_rows, Some(&batch.users), n));
        let xs = Self::inputs(&user_vectors, &item_vectors, &batch.support.items);
        let xq = Self::inputs(&user_vectors, &item_vectors, &batch.query.items);

        let mut memory_keys = None;
        let alpha = match self.spec.method {
            Method::MetaSgd => Alpha::PerParameter(&self.per_parameter_lr),
            method if method.has_lr_net() => {
                let h = Self::user_embedding(&user_vectors, &item_vectors, &batch.support);
                let lr_net = self.lr_net.as_ref().expect("PAML family has an LR net");
                let mut rates = lr_net.forward(&h);
                if let Some(memory) = &self.memory {
                    let mut memory = memory.borrow_mut();
                    let keys = memory.key(&h);
                    if memory.ready() {
                        let neighbours = memory.nearest(&keys, training);
                        rates = rates + memory.neighbour_term(&keys, &neighbours);
                    } else {
                        // Warm-up: these users adapt (and are stored) with the fixed rate.
                        rates = Tensor::full([n], self.spec.inner_lr, (Kind::Float, self.device()));
                    }
                    memory_keys = Some(keys);
                }
                Alpha::PerUser(rates)
            }
            _ => Alpha::Scalar(self.spec.inner_lr),
        };

        let choice = (self.inits.len() > 1).then(|| self.choose_init(batch, &xs, &xq, steps, training));
        let choice_tensor = choice.as_ref().map(|c| Tensor::from_slice(c).to(self.device()));
        let fast = self.initial_fast_weights(n, choice_tensor.as_ref(), order);
        let (fast, first_sqnorm) = Self::adapt(
            self.spec.objective,
            &xs,
            &batch.support.values,
            &batch.support.mask,
            fast,
            steps,
            &alpha,
            order,
        );
        let mut predictions = Self::mlp(&xq, &fast);
        if let Some(wide) = &self.wide {
            predictions = predictions + self.wide_and_fm(wide, batch, &xq, detach);
        }
        let query_loss = self.spec.objective.per_user_loss(&predictions, &batch.query.values, &batch.query.mask);
        let alpha_per_user = match alpha {
            Alpha::PerUser(rates) => Some(rates),
            _ => None,
        };
        let regularizer = match (self.spec.method, &alpha_per_user, first_sqnorm) {
            (Method::RegPaml, Some(rates), Some(sqnorm)) => Some(sqnorm * rates.abs()),
            _ => None,
        };
        Forward { predictions, query_loss, alpha: alpha_per_user, regularizer, memory_keys, chosen_init: choice }
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
        let user = detach(self.field_vectors_of_width(&wide.0, &self.user_rows, Some(&batch.users), n, 1));
        let items = detach(self.field_vectors_of_width(&wide.1, &self.item_rows, None, 0, 1));
        let (b, q) = batch.query.items.size2().expect("2-d items");
        let item_part = items.index_select(0, &batch.query.items.view([-1])).view([b, q, -1]);
        let mut out = user.sum_dim_intlist(1, true, Kind::Float) + item_part.sum_dim_intlist(2, false, Kind::Float);
        if self.spec.method == Method::DeepFm {
            let fields = xq.view([b, q, -1, self.embedding_dim]);
            let sum = fields.sum_dim_intlist(2, false, Kind::Float);
            let interactions = (sum.square() - fields.square().sum_dim_intlist(2, false, Kind::Float)) * 0.5;
            out = out + interactions.sum_dim_intlist(2, false, Kind::Float);
        }
        out
    }

    /// HML: the initialisation whose adapted model scores best — on the query set in training
    /// (hard task clustering), on the held-out part of the resampled support set otherwise.
    fn choose_init(&self, batch: &TaskBatch, xs: &Tensor, xq: &Tensor, steps: u32, training: bool) -> Vec<i64> {
        let xs = xs.detach();
        let (adapt_mask, score_x, score_values, score_mask) = if training {
            (&batch.support.mask, xq.detach(), &batch.query.values, &batch.query.mask)
        } else {
            (&batch.resampled.0, xs.shallow_clone(), &batch.support.values, &batch.resampled.1)
        };
        let n = batch.len();
        let losses: Vec<Tensor> = (0..self.inits.len() as i64)
            .map(|k| {
                let choice = Tensor::full([n], k, (Kind::Int64, self.device()));
                let fast = self.initial_fast_weights(n, Some(&choice), Order::Detached);
                let alpha = Alpha::Scalar(self.spec.inner_lr);
                let objective = self.spec.objective;
                let (fast, _) = Self::adapt(
                    objective,
                    &xs,
                    &batch.support.values,
                    adapt_mask,
                    fast,
                    steps,
                    &alpha,
                    Order::Detached,
                );
                objective.per_user_loss(&Self::mlp(&score_x, &fast), score_values, score_mask).detach()
            })
            .collect();
        let best = Tensor::stack(&losses, 0).argmin(0, false);
        Vec::<i64>::try_from(&best).expect("int64 choice")
    }

    /// The user embedding h_i of each task of `batch` (`[B, h_dim]`, no gradient): what the
    /// learning-rate network and the AT-PAML memory see (the report's projection of users).
    pub fn user_embeddings(&self, batch: &TaskBatch) -> Tensor {
        let _guard = tch::no_grad_guard();
        let item_vectors = self.field_vectors(&self.item_embeddings, &self.item_rows, None, 0);
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

/// The network's initial layers, (weight, bias) per layer: one set, or HML's `inits` sets. The
/// output layer's bias starts at the objective's bias for the global mean.
fn initial_layers(
    root: &nn::Path<'_>,
    spec: &ModelSpec,
    input_width: i64,
    global_mean: f32,
) -> Vec<Vec<(Tensor, Tensor)>> {
    let widths: Vec<i64> = spec.shape.hidden.iter().copied().chain([1]).collect();
    let n_inits = if spec.method == Method::Hml { spec.config.inits.max(1) } else { 1 };
    (0..n_inits)
        .map(|k| {
            let prefix = if k == 0 { String::new() } else { format!("init{k}_") };
            let mut width = input_width;
            let mut layers = Vec::new();
            for (l, &out) in widths.iter().enumerate() {
                let bound = 1.0 / (width as f64).sqrt();
                let uniform = nn::Init::Uniform { lo: -bound, up: bound };
                let w = root.var(&format!("{prefix}layer{l}_weight"), &[out, width], uniform);
                let bias_init = if l + 1 == widths.len() {
                    nn::Init::Const(spec.objective.initial_output_bias(global_mean))
                } else {
                    uniform
                };
                let b = root.var(&format!("{prefix}layer{l}_bias"), &[out], bias_init);
                layers.push((w, b));
                width = out;
            }
            layers
        })
        .collect()
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
