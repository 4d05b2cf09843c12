//! A validated, immutable model: the decoded body plus the lookup tables built once at load.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::catalogue::Catalogue;
use crate::compact::{CompactRows, ItemParts};
use crate::error::{ensure, Error, Invariant, Result};
use crate::format::{self, FieldKind, FieldSpec, ModelBody};
use crate::gemm::{gemm, View};
use crate::limits::{MAX_CANDIDATES, MAX_MODEL_BYTES, MAX_STEPS, MAX_STRING_LEN};
use crate::mlp::Layout;
use crate::scope::Scope;

/// A loaded and validated model. Immutable; share it read-only between sessions (`&Model`,
/// `Arc<Model>`): every per-user state lives in [`crate::Session`].
///
/// Construction checks every size against every other one, so nothing computed from a `Model`
/// can index out of bounds, and every stored float is finite.
pub struct Model {
    /// The body, its catalogue items moved to `catalogue` (`body.items` is empty).
    body: ModelBody,
    /// Every item's id and embedding rows, in a few flat arrays.
    catalogue: Catalogue,
    /// User field indices sorted by field name (binary-searchable).
    user_fields_by_name: Vec<u32>,
    /// Width of the user part of the input (`user_fields × embedding_dim`).
    user_width: usize,
    /// Width of the whole input (`(user_fields + item_fields) × embedding_dim`).
    input_width: usize,
    /// Decision MLP shapes and offsets.
    layout: Layout,
    /// Meta-SGD's rates in the flat parameter layout (empty for other methods).
    parameter_rates: Vec<f32>,
    /// Every initialisation's parameters in the flat layout (θ₀ of the proximal term).
    init_params: Vec<Vec<f32>>,
    /// The parameters the inner loop updates ([`format::Adapt`]).
    scope: Scope,
    /// Per initialisation, layer 0's item part applied to every embedding row of every item
    /// field, `W0_k[:, field f] · e_f[row]` (`Σ_f rows_f × hidden0` each, field after field;
    /// bias and user part excluded). An item's input is one vector per item field, the mean of
    /// its rows, so its layer-0 item part is the sum over its fields of the mean of these rows:
    /// a few additions from a table that does not grow with the catalogue (410 KB for the
    /// bench's 1,598 item-field rows and 64 hidden units, whatever the number of items).
    /// Adaptation with one scalar rate changes W0 by a low-rank term over the support items
    /// only, so a session scores with this plus that correction instead of the full product
    /// (see `Session::raw_scores`). Empty for per-parameter rates (Meta-SGD), whose update is
    /// not low-rank, unless the scope leaves layer 0's item columns alone (then the item part
    /// never changes). Stored in the precision of the file's embedding tables ([`CompactRows`]:
    /// f32, f16, or 8 bits with a scale per row), and added without widening. A catalogue whose
    /// items' f32 sums take no more memory than that table keeps those instead ([`ItemParts`]).
    item_hidden: Vec<ItemParts>,
    /// Where each item field's rows start in `item_hidden`'s tables, then their total.
    item_field_starts: Vec<usize>,
    /// The model id and schema hash its contributions carry, once a contribution needed them
    /// ([`Model::contribution_ids`]).
    ids: OnceIds,
}

/// Two `u64`s computed from an immutable model on first use and kept, without `std` or 64-bit
/// atomics (32-bit microcontrollers have none): four 32-bit words, then a flag. Threads that race
/// compute the same values and store the same bits, so whatever order their stores land in,
/// a reader that sees the flag (acquire, after the words' release) reads the right words.
#[derive(Default)]
struct OnceIds {
    ready: AtomicBool,
    words: [AtomicU32; 4],
}

impl OnceIds {
    fn get_or(&self, compute: impl FnOnce() -> (u64, u64)) -> (u64, u64) {
        let word = |i: usize| u64::from(self.words[i].load(Ordering::Relaxed));
        if self.ready.load(Ordering::Acquire) {
            return (word(0) | (word(1) << 32), word(2) | (word(3) << 32));
        }
        let (a, b) = compute();
        for (slot, value) in self.words.iter().zip([a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32]) {
            slot.store(value, Ordering::Relaxed);
        }
        self.ready.store(true, Ordering::Release);
        (a, b)
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("method", &self.body.method)
            .field("task", &self.body.task)
            .field("embedding_dim", &self.body.embedding_dim)
            .field("user_fields", &self.body.user_fields.len())
            .field("item_fields", &self.body.item_fields.len())
            .field("items", &self.catalogue.len())
            .field("layers", &self.body.layers.len())
            .field("parameters", &self.layout.param_len)
            .finish()
    }
}

impl Model {
    /// Decodes a model file (header, checksum, body) and validates it.
    ///
    /// Errors: those of [`format::decode`] and [`Model::from_body`], and
    /// [`Error::ModelTooLarge`] for more than [`MAX_MODEL_BYTES`] bytes.
    ///
    /// The model owns everything it needs: `bytes` may be dropped after the call. The
    /// catalogue of a file in the aligned layout (2.4, [`format::encode_aligned`]) is copied
    /// out of its arrays (a few `memcpy`s); older files' item records are decoded one by one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(Error::ModelTooLarge);
        }
        let (body, precision, tables) = format::decode_parts(bytes)?;
        let catalogue = tables.map(|tables| Catalogue::copied(&tables, &body.item_fields)).transpose()?;
        Model::from_body_with(body, precision, catalogue)
    }

    /// [`Model::from_bytes`] for a buffer that lives as long as the program (a `static`, a
    /// leaked or never-unmapped buffer): the aligned layout's catalogue (2.4) is used where it
    /// lies, not copied, when the buffer starts 4-byte aligned and the CPU is little-endian
    /// (copied otherwise). Every value is checked as [`Model::from_bytes`] checks it. The rest
    /// of the model (vocabularies, embedding tables, layers, item biases and factors) is
    /// decoded into memory the model owns, as [`Model::from_bytes`] does.
    pub fn from_static(bytes: &'static [u8]) -> Result<Model> {
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(Error::ModelTooLarge);
        }
        let (body, precision, tables) = format::decode_parts(bytes)?;
        let catalogue = tables.map(|tables| Catalogue::in_place(&tables, &body.item_fields)).transpose()?;
        Model::from_body_with(body, precision, catalogue)
    }

    /// [`Model::from_static`] for a buffer that the caller keeps alive: loading a model
    /// without copying its catalogue out of the buffer (a memory-mapped file, an app's asset).
    ///
    /// # Safety
    /// `bytes` must stay alive and unchanged until the model is dropped, and with it every
    /// clone of an `Arc<Model>` and every [`crate::Session`] that holds it: the model reads its
    /// catalogue from `bytes` for its whole life.
    pub unsafe fn from_bytes_borrowed(bytes: &[u8]) -> Result<Model> {
        // SAFETY: the caller keeps `bytes` alive and unchanged while the model lives (this
        // function's contract), so the model may hold it as if it lived forever.
        let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        Model::from_static(bytes)
    }

    /// Validates an already decoded body (the trainer uses this to check what it exports).
    ///
    /// Errors: [`Error::InconsistentDimensions`] when sizes do not fit together (zero embedding
    /// width, embedding tables of the wrong length, unsorted vocabularies or bucket bounds,
    /// layers that do not chain from the input width to one output, item rows out of range or of
    /// the wrong count, duplicate item ids or user field names, rating `min >= max`, item biases
    /// that are neither none nor one per item, a fold-in head without the fold-in scope or the
    /// reverse, or one whose sizes do not fit: see [`crate::factors::check_fold_in`]);
    /// [`Error::NonFiniteParameter`] when a weight, embedding, bound, item bias, item factor or
    /// hyper-parameter is NaN or infinite, the inner learning rate or the proximal weight is
    /// negative, or a fold-in ridge weight is not positive (or too small for the item factors);
    /// [`Error::ModelTooLarge`] when the model
    /// goes past a limit of [`crate::limits`] (more than [`MAX_CANDIDATES`] items, more than
    /// [`MAX_STEPS`] inner steps, an id, field name or vocabulary value longer than
    /// [`MAX_STRING_LEN`] bytes).
    ///
    /// A model of a method that does not run on the device ([`format::Method::runs_on_device`])
    /// is [`Error::UnsupportedFeature`].
    ///
    /// A factor model ([`format::Method::Mf`]) instead has no layers, no embedding tables
    /// (`embedding_dim` 0), factors that pass [`crate::factors::check`] and the plain
    /// [`format::ProductModel`] (its own item biases are the factors').
    pub fn from_body(body: ModelBody) -> Result<Model> {
        Model::from_body_with(body, format::EmbeddingPrecision::F32, None)
    }

    /// `(model id, schema hash)` of this model's contributions
    /// ([`crate::contribution::model_id`], [`format::schema_hash`]), computed on the first call
    /// and kept: hashing every parameter byte by byte costs as much as a contribution's own
    /// arithmetic, and neither value can change (the model is immutable).
    pub fn contribution_ids(&self) -> (u64, u64) {
        self.ids.get_or(|| {
            let schema = format::schema_hash(&self.body);
            (crate::contribution::model_id_with(self, schema), schema)
        })
    }

    /// [`Model::from_body`] keeping the per-row precompute in `precision` (that of the file's
    /// embedding tables: a model stored compact stays compact in memory), with the catalogue
    /// of an aligned file's tables (`body.items` then empty) or else built from `body.items`.
    fn from_body_with(
        mut body: ModelBody,
        precision: format::EmbeddingPrecision,
        catalogue: Option<Catalogue>,
    ) -> Result<Model> {
        check_limits(&body)?;
        if !body.method.runs_on_device() {
            return Err(Error::UnsupportedFeature);
        }
        let items = catalogue.as_ref().map_or(body.items.len(), Catalogue::len);
        if body.factors.is_some() || body.method == format::Method::Mf {
            return Model::from_factor_body(body, catalogue);
        }
        let bad = Error::InconsistentDimensions;
        let dim = usize::try_from(body.embedding_dim).map_err(|_| bad)?;
        if dim == 0 {
            return Err(bad);
        }
        for field in body.user_fields.iter().chain(&body.item_fields) {
            validate_field(field, dim)?;
        }
        let user_width = body.user_fields.len().checked_mul(dim).ok_or(bad)?;
        let input_width =
            body.user_fields.len().checked_add(body.item_fields.len()).and_then(|n| n.checked_mul(dim)).ok_or(bad)?;

        let layout = Layout::new(&body.layers, input_width)?;
        for layer in &body.layers {
            if !all_finite(&layer.weight) || !all_finite(&layer.bias) {
                return Err(Error::NonFiniteParameter);
            }
        }

        for init in &body.extra_inits {
            if Layout::new(init, input_width)? != layout {
                return Err(bad);
            }
            if init.iter().any(|layer| !all_finite(&layer.weight) || !all_finite(&layer.bias)) {
                return Err(Error::NonFiniteParameter);
            }
        }
        validate_learning_rate(&body, &layout, input_width)?;
        validate_product(&body, &layout, items)?;
        let scope = Scope::new(&layout, user_width, body.product.adapt)?;

        let catalogue = catalogue.map_or_else(|| Catalogue::new(&body), Ok)?;
        let user_fields_by_name = sorted_unique_names(&body.user_fields)?;
        validate_settings(&body)?;
        body.items = Vec::new();

        let mut parameter_rates = Vec::new();
        if let crate::format::LearningRate::PerParameter(rates) = &body.learning_rate {
            write_flat(rates, &mut parameter_rates);
        }
        let init_params = core::iter::once(&body.layers)
            .chain(&body.extra_inits)
            .map(|layers| {
                let mut flat = Vec::new();
                write_flat(layers, &mut flat);
                flat
            })
            .collect();
        let item_field_starts = field_starts(&body.item_fields)?;
        let mut model = Model {
            body,
            catalogue,
            user_fields_by_name,
            user_width,
            input_width,
            layout,
            parameter_rates,
            init_params,
            scope,
            item_hidden: Vec::new(),
            ids: OnceIds::default(),
            item_field_starts,
        };
        model.precompute_items(precision)?;
        Ok(model)
    }

    /// Fills what scoring reads per item and not per user: (where the low-rank path applies)
    /// layer 0's item part of every initialisation.
    fn precompute_items(&mut self, precision: format::EmbeddingPrecision) -> Result<()> {
        let per_parameter = matches!(self.body.learning_rate, crate::format::LearningRate::PerParameter(_));
        if !per_parameter || !self.scope.item_columns() {
            for k in 0..self.init_count() {
                let params = self.init_params.get(k).invariant("an initialisation without parameters")?;
                let hidden = self.field_rows_through_layer0(params)?;
                let width = self.layout.layers.first().map_or(0, |shape| shape.outputs);
                let rows = CompactRows::new(hidden, width, precision)?;
                let starts =
                    self.item_field_starts.get(..self.body.item_fields.len()).invariant("item field starts")?;
                let stacked = |item| self.catalogue.stacked(item, starts);
                let parts = ItemParts::new(rows, self.catalogue.len(), stacked)?;
                // Validation kept every item's rows inside its fields' tables.
                self.item_hidden.push(parts.invariant("per-item precompute: an item's rows past the table")?);
            }
        }
        Ok(())
    }

    /// [`Model::from_body`] for a factor model: the fields keep their vocabularies (profile
    /// calls and the schema hash work as for any model) but carry no tables, and there is no MLP.
    fn from_factor_body(mut body: ModelBody, catalogue: Option<Catalogue>) -> Result<Model> {
        let bad = Error::InconsistentDimensions;
        let Some(factors) = &body.factors else { return Err(bad) };
        if body.method != format::Method::Mf
            || body.embedding_dim != 0
            || !body.layers.is_empty()
            || !body.extra_inits.is_empty()
            || body.learning_rate != format::LearningRate::Fixed
            || body.neighbours.is_some()
            || body.product != format::ProductModel::default()
        {
            return Err(bad);
        }
        for field in body.user_fields.iter().chain(&body.item_fields) {
            validate_field(field, 0)?;
        }
        crate::factors::check(factors, catalogue.as_ref().map_or(body.items.len(), Catalogue::len))?;
        let catalogue = catalogue.map_or_else(|| Catalogue::new(&body), Ok)?;
        let user_fields_by_name = sorted_unique_names(&body.user_fields)?;
        validate_settings(&body)?;
        body.items = Vec::new();
        Ok(Model {
            body,
            catalogue,
            user_fields_by_name,
            user_width: 0,
            input_width: 0,
            layout: Layout::default(),
            parameter_rates: Vec::new(),
            init_params: Vec::new(),
            scope: Scope::default(),
            item_hidden: Vec::new(),
            ids: OnceIds::default(),
            item_field_starts: Vec::new(),
        })
    }

    /// The matrix factorisation of a factor model ([`format::Method::Mf`]); None for the MLP
    /// methods.
    pub fn factors(&self) -> Option<&format::Factors> {
        self.body.factors.as_ref()
    }

    /// `W0[:, field f] · e_f[row]` for every row of every item field, field after field
    /// (`Σ_f rows_f × hidden0`): one small product per field.
    ///
    /// Errors: [`Error::InconsistentDimensions`] when it cannot be allocated.
    fn field_rows_through_layer0(&self, params: &[f32]) -> Result<Vec<f32>> {
        let bad = Error::InconsistentDimensions;
        let shape = self.layout.layers.first().invariant("a validated MLP without layers")?;
        let dim = self.embedding_dim();
        let total = *self.item_field_starts.last().invariant("item field starts without a total")?;
        let mut out = Vec::new();
        let len = total.checked_mul(shape.outputs).ok_or(bad)?;
        out.try_reserve_exact(len).map_err(|_| bad)?;
        out.resize(len, 0.0);
        let weights_end = shape.weight_at + shape.inputs * shape.outputs;
        for (f, field) in self.body.item_fields.iter().enumerate() {
            let start = *self.item_field_starts.get(f).invariant("an item field without a start")?;
            let rows = field.rows();
            let at = shape.weight_at + self.user_width + f * dim;
            let weight = params.get(at..weights_end).invariant("layer 0's field weights past the parameters")?;
            let w = View { data: weight, rows: shape.outputs, cols: dim, row_stride: shape.inputs, col_stride: 1 };
            let block = out
                .get_mut(start * shape.outputs..(start + rows) * shape.outputs)
                .invariant("precompute: a field past its rows")?;
            gemm(1.0, View::rows(&field.embedding, rows, dim), w.t(), 0.0, block, shape.outputs)?;
        }
        Ok(out)
    }

    /// `out = user + ` layer 0's item part of initialisation `init` for `item` (`hidden0`
    /// wide): the sum over its item fields of the mean of its rows' precomputed parts. None if
    /// the model does not keep them (per-parameter rates) or an index is out of range.
    pub(crate) fn add_item_hidden(&self, init: usize, item: u32, user: &[f32], out: &mut [f32]) -> Option<()> {
        let table = self.item_hidden.get(init)?;
        let starts = self.item_field_starts.get(..self.body.item_fields.len())?;
        table.add(self.catalogue.stacked(item, starts), user, out)
    }

    /// Whether the model keeps layer 0's item part of initialisation `init` (not for
    /// per-parameter rates).
    pub(crate) fn has_item_hidden(&self, init: usize) -> bool {
        self.item_hidden.get(init).is_some_and(|rows| !rows.is_empty())
    }

    /// Reads and loads a model file.
    #[cfg(feature = "std")]
    pub fn from_path(path: impl AsRef<std::path::Path>) -> core::result::Result<Model, LoadFileError> {
        let bytes = std::fs::read(path).map_err(LoadFileError::Io)?;
        Model::from_bytes(&bytes).map_err(LoadFileError::Model)
    }

    /// The validated body (vocabularies, embeddings, layers, hyper-parameters) without its
    /// catalogue: the model keeps the items apart, in a few flat arrays ([`Model::item_count`],
    /// [`Model::item_id`], [`Model::item_index`]), so `body().items` is empty.
    /// [`Model::to_body`] gives the whole body back.
    pub fn body(&self) -> &ModelBody {
        &self.body
    }

    /// The whole body, catalogue items included (a copy: to re-encode or compare a model).
    pub fn to_body(&self) -> ModelBody {
        let mut body = self.body.clone();
        body.items = self.catalogue.records();
        body
    }

    /// Bytes the model holds on the heap beyond its body's vocabularies and layers: the
    /// catalogue and the precompute of layer 0's item part (what grows with the catalogue, and what
    /// `trainer bench device` breaks the model's memory down by).
    pub fn catalogue_bytes(&self) -> (usize, usize) {
        let precompute = self.item_hidden.iter().map(ItemParts::heap_bytes).sum();
        (self.catalogue.heap_bytes(), precompute)
    }

    /// What the model predicts (ratings, or click probabilities).
    pub fn task(&self) -> crate::format::Task {
        self.body.task
    }

    /// Whether scores are click probabilities (the click task) rather than ratings.
    pub fn is_click(&self) -> bool {
        self.body.task.is_click()
    }

    /// Number of items in the catalogue.
    pub fn item_count(&self) -> usize {
        self.catalogue.len()
    }

    /// Index of the item with this id, in O(log n).
    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.catalogue.index(id)
    }

    /// Id of the item at this index.
    pub fn item_id(&self, index: u32) -> Option<&str> {
        self.catalogue.id(index)
    }

    /// Number of user profile fields.
    pub fn user_field_count(&self) -> usize {
        self.body.user_fields.len()
    }

    /// Name of user profile field `i` (in input order).
    pub fn user_field_name(&self, i: usize) -> Option<&str> {
        self.body.user_fields.get(i).map(|field| field.name.as_str())
    }

    /// Width of the MLP input: `(user fields + item fields) × embedding_dim`.
    pub fn input_width(&self) -> usize {
        self.input_width
    }

    // ---- crate-internal helpers for `Session` ----

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn user_width(&self) -> usize {
        self.user_width
    }

    pub(crate) fn embedding_dim(&self) -> usize {
        // Validated to fit in usize at load.
        self.body.embedding_dim as usize
    }

    /// Position of the user field with this name, in O(log n).
    pub(crate) fn user_field_position(&self, name: &str) -> Option<usize> {
        let fields = &self.body.user_fields;
        let position = self
            .user_fields_by_name
            .binary_search_by(|&i| fields.get(i as usize).map_or("", |field| field.name.as_str()).cmp(name))
            .ok()?;
        self.user_fields_by_name.get(position).map(|&i| i as usize)
    }

    /// Number of initialisations (1, or HML's K).
    pub fn init_count(&self) -> usize {
        1 + self.body.extra_inits.len()
    }

    /// Replaces `out` with initialisation `k`'s parameters (the first one if `k` is out of range).
    pub(crate) fn write_init_params(&self, k: usize, out: &mut Vec<f32>) {
        out.clear();
        if let Some(params) = self.init_params.get(k).or(self.init_params.first()) {
            out.extend_from_slice(params);
        }
    }

    /// Initialisation `k`'s parameters in the flat layout (θ₀ of the proximal term), if in range.
    pub(crate) fn init_params(&self, k: usize) -> Option<&[f32]> {
        self.init_params.get(k).map(Vec::as_slice)
    }

    /// The parameters the inner loop updates.
    pub(crate) fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The item biases added to the MLP's raw output, one per item ([`format::ProductModel`];
    /// empty when the model has none).
    pub fn item_biases(&self) -> &[f32] {
        &self.body.product.item_bias
    }

    /// Which parameters adaptation updates ([`format::ProductModel::adapt`]).
    pub fn adapt_scope(&self) -> format::Adapt {
        self.body.product.adapt
    }

    /// The fold-in's ridge weights and item factors of a model whose output layer adapts by the
    /// fold-in ([`format::Adapt::FoldIn`]); None otherwise.
    pub fn fold_in_head(&self) -> Option<&format::FoldInHead> {
        self.body.product.fold_in.as_ref()
    }

    /// Item `item`'s factors `q_i` of a fold-in head (k wide; empty without factors), if in
    /// range.
    pub(crate) fn fold_in_factors(&self, item: u32) -> Option<&[f32]> {
        let head = self.fold_in_head()?;
        let k = head.factors as usize;
        let start = (item as usize).checked_mul(k)?;
        head.item_factors.get(start..start.checked_add(k)?)
    }

    /// Per-parameter learning rates in the flat parameter layout (Meta-SGD; empty otherwise).
    pub(crate) fn parameter_rates(&self) -> &[f32] {
        &self.parameter_rates
    }

    /// Writes the item part of an item's input (its field vectors, `input_width - user_width`
    /// wide) into `out`. Callers check indices first: an out-of-range one (or an `out` of another
    /// width) is [`Error::Internal`].
    pub(crate) fn write_item_input(&self, item: u32, out: &mut [f32]) -> Result<()> {
        ensure(out.len() == self.input_width - self.user_width, "an item input of another width")?;
        let dim = self.embedding_dim();
        for (f, (field, chunk)) in self.body.item_fields.iter().zip(out.chunks_exact_mut(dim.max(1))).enumerate() {
            let rows = self.catalogue.rows(item, f).invariant("item rows of an unchecked index")?;
            field_vector(field, rows, chunk)?;
        }
        Ok(())
    }

    /// Appends the item part of an item's input to `out` (see [`Model::write_item_input`]).
    pub(crate) fn append_item_input(&self, item: u32, out: &mut Vec<f32>) -> Result<()> {
        let start = out.len();
        out.resize(start + (self.input_width - self.user_width), 0.0);
        let row = out.get_mut(start..).invariant("an appended item input past its vector")?;
        self.write_item_input(item, row)
    }

    /// The embedding rows of item `item`'s item field `field`, if both are in range.
    pub(crate) fn item_field_rows(&self, item: u32, field: usize) -> Option<&[u32]> {
        self.catalogue.rows(item, field)
    }
}

/// Where each field's rows start when the fields' tables are stacked, then their total.
fn field_starts(fields: &[FieldSpec]) -> Result<Vec<usize>> {
    let mut starts = Vec::with_capacity(fields.len() + 1);
    let mut start = 0usize;
    for field in fields {
        starts.push(start);
        start = start.checked_add(field.rows()).ok_or(Error::InconsistentDimensions)?;
    }
    starts.push(start);
    Ok(starts)
}

/// The caps of [`crate::limits`] that a model itself must respect.
fn check_limits(body: &ModelBody) -> Result<()> {
    let long = |text: &str| text.len() > MAX_STRING_LEN;
    let field_too_long = |field: &FieldSpec| long(&field.name) || field.vocabulary.iter().any(|value| long(value));
    if body.items.len() > MAX_CANDIDATES
        || body.adaptation.inner_steps > MAX_STEPS
        || body.items.iter().any(|item| long(&item.id))
        || body.user_fields.iter().chain(&body.item_fields).any(field_too_long)
    {
        return Err(Error::ModelTooLarge);
    }
    Ok(())
}

/// The inner learning rate, the rating scale and the click task's threshold and 0..1 scale.
fn validate_settings(body: &ModelBody) -> Result<()> {
    let adaptation = body.adaptation;
    if !adaptation.inner_lr.is_finite() || adaptation.inner_lr < 0.0 {
        return Err(Error::NonFiniteParameter);
    }
    let rating = body.rating;
    if !rating.min.is_finite() || !rating.max.is_finite() || !rating.global_mean.is_finite() {
        return Err(Error::NonFiniteParameter);
    }
    if rating.min >= rating.max {
        return Err(Error::InconsistentDimensions);
    }
    if let crate::format::Task::Click { threshold } = body.task {
        if !threshold.is_finite() {
            return Err(Error::NonFiniteParameter);
        }
        // Labels are probabilities: the scale must be exactly 0..1.
        if rating.min != 0.0 || rating.max != 1.0 {
            return Err(Error::InconsistentDimensions);
        }
    }
    Ok(())
}

/// The product model's parts: one finite bias per item (or none), a finite proximal weight ≥ 0,
/// and a fold-in head exactly when the scope is the fold-in, valid for the output layer
/// ([`crate::factors::check_fold_in`]).
fn validate_product(body: &ModelBody, layout: &Layout, items: usize) -> Result<()> {
    let bad = Error::InconsistentDimensions;
    let product = &body.product;
    if !product.item_bias.is_empty() && product.item_bias.len() != items {
        return Err(bad);
    }
    if !all_finite(&product.item_bias) || !product.proximal.is_finite() || product.proximal < 0.0 {
        return Err(Error::NonFiniteParameter);
    }
    match (&product.fold_in, product.adapt) {
        (Some(head), format::Adapt::FoldIn) => {
            let features = layout.layers.last().ok_or(bad)?.inputs;
            crate::factors::check_fold_in(head, features, items)
        }
        (None, format::Adapt::FoldIn) | (Some(_), _) => Err(bad),
        (None, _) => Ok(()),
    }
}

fn write_flat(layers: &[crate::format::DenseLayer], out: &mut Vec<f32>) {
    out.clear();
    for layer in layers {
        out.extend_from_slice(&layer.weight);
        out.extend_from_slice(&layer.bias);
    }
}

/// Checks the learning-rate parts: per-parameter rates shaped like the layers; a network from
/// the user embedding (as wide as the input) to one rate; a neighbour table only beside a network.
fn validate_learning_rate(body: &ModelBody, layout: &Layout, input_width: usize) -> Result<()> {
    use crate::format::{LearningRate, MAX_NEIGHBOURS};
    let bad = Error::InconsistentDimensions;
    let finite_layers = |layers: &[crate::format::DenseLayer]| {
        layers.iter().all(|layer| all_finite(&layer.weight) && all_finite(&layer.bias))
    };
    match &body.learning_rate {
        LearningRate::Fixed => {}
        LearningRate::PerParameter(rates) => {
            if Layout::new(rates, input_width)? != *layout {
                return Err(bad);
            }
            if !finite_layers(rates) {
                return Err(Error::NonFiniteParameter);
            }
        }
        LearningRate::Network { hidden, output } => {
            let shapes = [hidden.clone(), output.clone()];
            // The same chain rules as the decision MLP: input_width → hidden → 1.
            Layout::new(&shapes, input_width)?;
            if !finite_layers(&shapes) {
                return Err(Error::NonFiniteParameter);
            }
        }
    }
    if let Some(table) = &body.neighbours {
        if !matches!(body.learning_rate, LearningRate::Network { .. }) {
            return Err(bad);
        }
        let key_dim = table.key_dim as usize;
        let entries = table.rates.len();
        let k = table.neighbours as usize;
        if key_dim == 0
            || k == 0
            || k > MAX_NEIGHBOURS
            || k > entries
            || table.projection.len() != input_width.checked_mul(key_dim).ok_or(bad)?
            || table.keys.len() != entries.checked_mul(key_dim).ok_or(bad)?
        {
            return Err(bad);
        }
        if !all_finite(&table.projection)
            || !all_finite(&table.keys)
            || !all_finite(&table.rates)
            || !table.delta.is_finite()
            || !table.sigma.is_finite()
            || table.sigma < 0.0
        {
            return Err(Error::NonFiniteParameter);
        }
    }
    Ok(())
}

/// `out = row` (over the shorter of the two) as a vectorised loop rather than a call to
/// `memcpy`: scoring copies a few short rows an item, and the calls cost ~4% of the bench's
/// scoring. Multiplying by a one the compiler cannot see keeps it from turning the loop back
/// into `memcpy`; `x · 1` is `x` exactly.
#[inline(always)]
fn copy_row(out: &mut [f32], row: &[f32]) {
    let one = core::hint::black_box(1.0f32);
    for (o, v) in out.iter_mut().zip(row) {
        *o = v * one;
    }
}

/// Writes the mean of the field's embedding rows into `out` (`embedding_dim` wide); zeros when
/// `rows` is empty. Every row is inside the table (validation checks the items' rows, and
/// [`FieldSpec::rows_of`] maps a profile value to one): a row outside is [`Error::Internal`].
pub(crate) fn field_vector(field: &FieldSpec, rows: &[u32], out: &mut [f32]) -> Result<()> {
    let dim = out.len();
    let row = |row: u32| {
        let start = (row as usize).saturating_mul(dim);
        field.embedding.get(start..start.saturating_add(dim)).invariant("an embedding row past its table")
    };
    // One pass for the usual single row (scoring gathers every item's input this way); the
    // sum in row order, then the division, otherwise: the same values as summing from zero.
    let Some((&first, rest)) = rows.split_first() else {
        out.fill(0.0);
        return Ok(());
    };
    copy_row(out, row(first)?);
    if rest.is_empty() {
        return Ok(());
    }
    for &r in rest {
        for (o, v) in out.iter_mut().zip(row(r)?) {
            *o += v;
        }
    }
    let count = rows.len() as f32;
    for o in out.iter_mut() {
        *o /= count;
    }
    Ok(())
}

fn all_finite(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

fn validate_field(field: &FieldSpec, dim: usize) -> Result<()> {
    let bad = Error::InconsistentDimensions;
    let rows = field.rows();
    // Rows are addressed with u32 everywhere.
    if u32::try_from(rows).is_err() {
        return Err(bad);
    }
    if field.embedding.len() != rows.checked_mul(dim).ok_or(bad)? {
        return Err(bad);
    }
    match &field.kind {
        FieldKind::Categorical | FieldKind::MultiCategorical { .. } => {
            if field.vocabulary.windows(2).any(|pair| pair[0] >= pair[1]) {
                return Err(bad);
            }
        }
        FieldKind::Numeric { bounds } => {
            if !all_finite(bounds) {
                return Err(Error::NonFiniteParameter);
            }
            if bounds.windows(2).any(|pair| pair[0] > pair[1]) {
                return Err(bad);
            }
        }
    }
    if !all_finite(&field.embedding) {
        return Err(Error::NonFiniteParameter);
    }
    Ok(())
}

/// User field indices sorted by name; duplicate names are rejected.
fn sorted_unique_names(fields: &[FieldSpec]) -> Result<Vec<u32>> {
    let bad = Error::InconsistentDimensions;
    let count = u32::try_from(fields.len()).map_err(|_| bad)?;
    let name = |i: u32| fields.get(i as usize).map_or("", |field| field.name.as_str());
    let mut order: Vec<u32> = (0..count).collect();
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    if order.windows(2).any(|pair| name(pair[0]) == name(pair[1])) {
        return Err(bad);
    }
    Ok(order)
}

/// Why [`Model::from_path`] failed.
#[cfg(feature = "std")]
#[derive(Debug)]
pub enum LoadFileError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file was read but is not a valid model.
    Model(Error),
}

#[cfg(feature = "std")]
impl fmt::Display for LoadFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadFileError::Io(error) => write!(f, "cannot read model file: {error}"),
            LoadFileError::Model(error) => write!(f, "invalid model file: {error}"),
        }
    }
}

#[cfg(feature = "std")]
impl core::error::Error for LoadFileError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LoadFileError::Io(error) => Some(error),
            LoadFileError::Model(error) => Some(error),
        }
    }
}

#[cfg(feature = "std")]
impl From<Error> for LoadFileError {
    fn from(error: Error) -> Self {
        LoadFileError::Model(error)
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for LoadFileError {
    fn from(error: std::io::Error) -> Self {
        LoadFileError::Io(error)
    }
}
