//! The model file: a little-endian header, then a postcard body.
//!
//! ```text
//! offset size field
//!      0    8 magic  b"METAREC\x1a"  (\x1a stops `type` on DOS-like consoles, as PNG does)
//!      8    2 format major version (u16): a reader refuses a major it does not know
//!     10    2 format minor version (u16): additions a reader of the same major may ignore
//!     12    4 header length in bytes (u32), 48 in 2.0 and 2.1; later minors may append fields before
//!             the header CRC, and readers skip what they do not know
//!     16    4 required feature flags (u32): a reader refuses a file with a flag it does not know
//!     20    4 optional feature flags (u32): a reader may ignore flags it does not know
//!     24    8 schema hash (u64, FNV-1a over the feature fields and vocabularies): lets an app
//!             check that a new model maps its raw feature strings as the old one did
//!     32    8 body length in bytes (u64)
//!     40    4 CRC32 (IEEE) of the body
//!     44    4 CRC32 (IEEE) of the header bytes before it (the last 4 bytes of the header)
//!     48    … body: postcard encoding of [`ModelBody`]
//! ```
//! The file ends exactly at the end of the body. Compatibility rule: a reader of major `M`
//! loads every file of major `M` whatever its minor; a new major is a breaking change. What a
//! minor adds that an older reader cannot run sits behind a required flag, which that reader
//! refuses by name ([`crate::Error::UnsupportedFeature`]) instead of misreading.
//!
//! History: 2.0 first version of this layout; 2.1 adds the click task ([`Task::Click`], flag
//! [`required::CLICK_TASK`]) and compact embedding tables (flag
//! [`required::COMPACT_EMBEDDINGS`]: the body's tables are empty and a [`CompactEmbeddings`]
//! follows the body inside the checksummed body bytes, half-precision or 8-bit; a reader
//! widens them back to f32 when it loads the file). 2.2 adds matrix factorisation with fold-in
//! ([`Method::Mf`], flag [`required::FACTORS`]: a [`StoredFactors`] follows the body and any
//! compact tables inside the checksummed body bytes, and the body has no decision MLP). 2.3 adds
//! the bias-aware product model ([`ProductModel`]): a learned bias per catalogue item added to the
//! MLP's raw output (flag [`required::ITEM_BIAS`]), and an inner loop that adapts a part of the
//! MLP and/or pulls it back to its initialisation (flag [`required::ADAPT_SCOPE`]); with either
//! flag a [`ProductModel`] follows the body, any compact tables and any factors, inside the
//! checksummed body bytes. A product model whose output layer adapts by the fold-in
//! ([`Adapt::FoldIn`]: one exact ridge solve over the last hidden layer's features and a user
//! factor vector) also needs its ridge weights and item factors (flag [`required::FOLD_IN`]):
//! a [`StoredFoldIn`] follows the [`ProductModel`]. 2.4 adds the aligned item tables (flag
//! [`required::ALIGNED_TABLES`]): the body's `items` is empty and the catalogue follows every
//! other part as flat little-endian arrays, aligned so that a reader can use them in place from
//! the caller's buffer ([`crate::Model::from_static`], [`crate::Model::from_bytes_borrowed`])
//! instead of decoding a record per item.
//!
//! ```text
//! payload = postcard(ModelBody)            the 2.0 body (tables empty when compact)
//!           [postcard(CompactEmbeddings)]  COMPACT_EMBEDDINGS (2.1)
//!           [postcard(StoredFactors)]      FACTORS (2.2)
//!           [postcard(ProductModel)]       ITEM_BIAS and/or ADAPT_SCOPE (2.3):
//!                                          item_bias (varint length, then f32 LE each),
//!                                          adapt (varint variant: 0 all, 1 head, 2 user,
//!                                          3 fold-in), proximal (f32 LE)
//!           [postcard(StoredFoldIn)]       FOLD_IN (2.3, with ADAPT_SCOPE and adapt = 3):
//!                                          k (varint), ridge weights (varint length d + k + 1,
//!                                          f32 LE each), item factors (as [`FactorValues`])
//!           [postcard(TableDirectory)          ALIGNED_TABLES (2.4): items, id bytes, rows
//!            zero bytes to a multiple of 8     (counted from the start of the file)
//!            id_ends  items × u32 LE           where each id ends in `ids`
//!            by_id    items × u32 LE           item indices sorted by id (bytewise)
//!            rows     rows × u32 LE            item i's rows of item field f at i × fields + f,
//!            offsets  (items × fields + 1)     or, with offsets, rows[offsets[e]..offsets[e + 1]]
//!                     × u32 LE, if present     for entry e = i × fields + f
//!            ids      id bytes (UTF-8)]        every id, one after the other
//! ```
//! Every array of the aligned tables starts at a multiple of 4 bytes from the start of the
//! file, so a buffer that starts 4-byte aligned (as `malloc` and `mmap` give) holds them
//! aligned.
//!
//! A writer stamps the lowest minor that describes the file: one without the 2.3 features says
//! 2.2 or 2.1, so every file an older writer produced is still written byte for byte the same.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// First eight bytes of every model file.
pub const MAGIC: [u8; 8] = *b"METAREC\x1a";
/// Format major version written and read by this runtime.
pub const FORMAT_MAJOR: u16 = 2;
/// Newest format minor version this runtime writes (files that need none of its additions
/// are stamped with the minor that introduced the newest feature they use: see [`encode_with`]).
pub const FORMAT_MINOR: u16 = 4;
/// Size of the header this runtime writes (and the least it reads).
pub const HEADER_LEN: usize = 48;

/// Required feature flags: what a reader must implement to run the model.
pub mod required {
    /// One learning rate per adapted parameter (Meta-SGD).
    pub const PER_PARAMETER_LR: u32 = 1 << 0;
    /// A learning-rate network alpha'(h_i) (PAML family).
    pub const LR_NETWORK: u32 = 1 << 1;
    /// A table of stored users and their learning rates (AT-PAML).
    pub const NEIGHBOUR_TABLE: u32 = 1 << 2;
    /// Several initialisations, one chosen per user (HML).
    pub const MULTIPLE_INITS: u32 = 1 << 3;
    /// The click task: the output is a logit, adaptation minimises binary cross-entropy (2.1).
    pub const CLICK_TASK: u32 = 1 << 4;
    /// Embedding tables stored in 16 or 8 bits after the body (2.1).
    pub const COMPACT_EMBEDDINGS: u32 = 1 << 5;
    /// Matrix factorisation with fold-in: item biases and factors follow the body (2.2).
    pub const FACTORS: u32 = 1 << 6;
    /// A bias per catalogue item added to the MLP's raw output: a [`super::ProductModel`]
    /// follows the body (2.3).
    pub const ITEM_BIAS: u32 = 1 << 7;
    /// The inner loop adapts part of the MLP ([`super::Adapt`] other than `All`) or has a
    /// proximal term: a [`super::ProductModel`] follows the body (2.3).
    pub const ADAPT_SCOPE: u32 = 1 << 8;
    /// The output layer adapts by the fold-in ([`super::Adapt::FoldIn`]): a
    /// [`super::StoredFoldIn`] (ridge weights and item factors) follows the
    /// [`super::ProductModel`] (2.3). A reader without it refuses the file by name rather than
    /// adapting such a model by gradient steps.
    pub const FOLD_IN: u32 = 1 << 9;
    /// The body's `items` is empty and the catalogue follows every other part as aligned
    /// little-endian arrays ([`super::TableDirectory`]) that a reader can use in place (2.4). A
    /// reader without it refuses the file by name rather than loading a model without items.
    pub const ALIGNED_TABLES: u32 = 1 << 10;
    /// Every flag this runtime implements.
    pub const KNOWN: u32 = PER_PARAMETER_LR
        | LR_NETWORK
        | NEIGHBOUR_TABLE
        | MULTIPLE_INITS
        | CLICK_TASK
        | COMPACT_EMBEDDINGS
        | FACTORS
        | ITEM_BIAS
        | ADAPT_SCOPE
        | FOLD_IN
        | ALIGNED_TABLES;
}

/// The sizes of the aligned item tables (2.4, [`required::ALIGNED_TABLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TableDirectory {
    /// Items in the catalogue.
    pub items: u32,
    /// Bytes of every id together.
    pub id_bytes: u32,
    /// Item-field rows of every item together.
    pub rows: u32,
    /// Whether the offsets array is present (some item has other than one row in some field).
    pub offsets: bool,
}

/// Where the aligned arrays fall: each starts at a multiple of this many bytes from the start
/// of the file (the first at a multiple of 8).
const TABLE_ALIGN: usize = 8;

/// The aligned item tables of a file, as byte slices of it (sizes checked against the
/// directory, contents not yet: [`crate::catalogue::Catalogue`] checks them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemTables<'a> {
    /// Items in the catalogue.
    pub(crate) items: usize,
    /// `items` little-endian u32s: where each id ends in `ids`.
    pub(crate) id_ends: &'a [u8],
    /// `items` little-endian u32s: item indices sorted by id.
    pub(crate) by_id: &'a [u8],
    /// Little-endian u32 rows.
    pub(crate) rows: &'a [u8],
    /// `items × fields + 1` little-endian u32s, or empty.
    pub(crate) offsets: &'a [u8],
    /// Every id's bytes.
    pub(crate) ids: &'a [u8],
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Header length in bytes (where the body starts).
    pub header_len: u32,
    /// Required feature flags ([`required`]).
    pub required_features: u32,
    /// Optional feature flags (none defined in 2.0).
    pub optional_features: u32,
    /// FNV-1a hash of the feature schema ([`schema_hash`]).
    pub schema_hash: u64,
    /// Body length in bytes.
    pub body_len: u64,
    /// CRC32 of the body.
    pub body_crc: u32,
}

/// A method: the one that produced a model file's weights, and (one definition for every tool)
/// what `trainer --method` trains, the run folders, the reports and `metarec_model_method` name.
///
/// On the device it is informational: how a session adapts follows from
/// [`ModelBody::learning_rate`], [`ModelBody::neighbours`], [`ModelBody::extra_inits`] and
/// [`ModelBody::factors`]. [`Method::WideDeep`] and [`Method::DeepFm`] are supervised baselines the
/// trainer fits for its tables; they do not adapt, are never exported, and a file naming them is
/// refused ([`crate::Error::UnsupportedFeature`]). The postcard encoding is the variant's index:
/// new methods go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MAML with one fixed inner learning rate, adapting the decision MLP (MeLU).
    Melu,
    /// A learned learning rate per adapted parameter (Meta-SGD).
    MetaSgd,
    /// Per-user learning rate from the learning-rate network alpha'(h_i) (PAML).
    Paml,
    /// PAML trained with the memory-agnostic regularizer gamma·||dL/dθ||²·|alpha(h_i)|.
    RegPaml,
    /// PAML plus the learning rates of the nearest stored users (kd-tree memory).
    AtPaml,
    /// Several initialisations, one chosen per user (HML).
    Hml,
    /// Supervised pre-training on all training ratings, plain SGD fine-tuning per user.
    Transfer,
    /// Biased matrix factorisation; a user's bias and factors are solved from their ratings by
    /// ridge regression (fold-in) instead of gradient steps ([`ModelBody::factors`]).
    Mf,
    /// Wide & Deep: linear over the features plus the MLP; no adaptation (trainer only).
    WideDeep,
    /// DeepFM: linear + factorization-machine interactions + the MLP; no adaptation (trainer only).
    DeepFm,
}

impl Method {
    /// Every method, in encoding order.
    pub const ALL: [Method; 10] = [
        Method::Melu,
        Method::MetaSgd,
        Method::Paml,
        Method::RegPaml,
        Method::AtPaml,
        Method::Hml,
        Method::Transfer,
        Method::Mf,
        Method::WideDeep,
        Method::DeepFm,
    ];

    /// The canonical spelling: command line, run folders, run files, reports' files and the C
    /// API.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Melu => "melu",
            Method::MetaSgd => "meta-sgd",
            Method::Paml => "paml",
            Method::RegPaml => "reg-paml",
            Method::AtPaml => "at-paml",
            Method::Hml => "hml",
            Method::Transfer => "transfer",
            Method::Mf => "mf",
            Method::WideDeep => "wide-deep",
            Method::DeepFm => "deep-fm",
        }
    }

    /// The name the papers use, for the rows of tables (`Meta-SGD`, `REG-PAML`).
    pub const fn title(self) -> &'static str {
        match self {
            Method::Melu => "MeLU",
            Method::MetaSgd => "Meta-SGD",
            Method::Paml => "PAML",
            Method::RegPaml => "REG-PAML",
            Method::AtPaml => "AT-PAML",
            Method::Hml => "HML",
            Method::Transfer => "transfer learning",
            Method::Mf => "MF fold-in",
            Method::WideDeep => "Wide&Deep",
            Method::DeepFm => "DeepFM",
        }
    }

    /// The method spelt `name` ([`Method::name`]).
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method adapts to a user's support set (all but the supervised baselines).
    pub const fn adapts(self) -> bool {
        !matches!(self, Method::WideDeep | Method::DeepFm)
    }

    /// Whether a model file may name it: every method that adapts.
    pub const fn runs_on_device(self) -> bool {
        self.adapts()
    }

    /// Whether training is supervised on pooled ratings rather than episodic (matrix
    /// factorisation trains by its own alternating least squares).
    pub const fn pooled_training(self) -> bool {
        matches!(self, Method::Transfer | Method::WideDeep | Method::DeepFm)
    }

    /// Whether the inner learning rate comes from the learning-rate network alpha'(h_i).
    pub const fn has_lr_net(self) -> bool {
        matches!(self, Method::Paml | Method::RegPaml | Method::AtPaml)
    }
}

/// Where the inner learning rate comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LearningRate {
    /// `Adaptation::inner_lr` for every parameter and every user.
    Fixed,
    /// One rate per adapted parameter: same shapes as the layers, the rates in `weight`/`bias`.
    PerParameter(Vec<DenseLayer>),
    /// alpha'(h) = softplus(output(relu(hidden(h)))) of the user embedding h.
    Network {
        /// First layer, `inputs` = the user embedding width (= the MLP input width).
        hidden: DenseLayer,
        /// Second layer, one output.
        output: DenseLayer,
    },
}

/// AT-PAML's stored users: a user's rate adds the Gaussian-kernel-weighted rates of its
/// `neighbours` nearest stored keys, key = normalise(h · projection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourTable {
    /// Key width.
    pub key_dim: u32,
    /// `h_dim × key_dim` projection, row-major.
    pub projection: Vec<f32>,
    /// Stored keys, `entries × key_dim`, row-major.
    pub keys: Vec<f32>,
    /// Stored learning rates, one per entry.
    pub rates: Vec<f32>,
    /// Neighbours per user (K), at most [`MAX_NEIGHBOURS`].
    pub neighbours: u32,
    /// Kernel width delta in exp(-delta·d²).
    pub delta: f32,
    /// sigma in s_k / (sum_j s_j + sigma).
    pub sigma: f32,
}

/// Most neighbours a table may ask for (the explanation holds them without allocating).
pub const MAX_NEIGHBOURS: usize = 16;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Task {
    /// Explicit rating regression (linear output, squared-error inner loss).
    #[default]
    Rating,
    /// Click-through prediction: the output is a logit, scores are click probabilities
    /// σ(logit), and adaptation minimises binary cross-entropy on support labels in [0, 1]
    /// (1 clicked, 0 not). The rating scale of such a model is 0..1.
    Click {
        /// The rating at or above which training counted a click: an app that holds ratings
        /// rather than clicks maps them to labels with it.
        threshold: f32,
    },
}

impl Task {
    /// The canonical spelling (`--task`, run files, reports, `metarec_model_task`).
    pub const fn name(self) -> &'static str {
        match self {
            Task::Rating => "rating",
            Task::Click { .. } => "click",
        }
    }

    /// Whether this is the click task.
    pub const fn is_click(self) -> bool {
        matches!(self, Task::Click { .. })
    }
}

/// How a raw string value of a field maps to embedding rows.
///
/// Row 0 of every field is the "unknown" row: values outside the vocabulary (or numbers that do
/// not parse) map there, exactly as in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldKind {
    /// One value; row = 1 + position in the vocabulary.
    Categorical,
    /// Several values joined by `separator`; the field's vector is the mean of their rows.
    MultiCategorical {
        /// Separator between values, e.g. `|` for MovieLens genres.
        separator: char,
    },
    /// A number put in a bucket: row = 1 + count of `bounds` that are <= the value.
    Numeric {
        /// Ascending bucket boundaries.
        bounds: Vec<f32>,
    },
}

/// One feature field with its vocabulary and embedding table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// Column name in the dataset (and the name apps pass to the runtime).
    pub name: String,
    /// Mapping from raw strings to rows.
    pub kind: FieldKind,
    /// Known values of a categorical field, sorted ascending (binary-searchable); empty for numeric.
    pub vocabulary: Vec<String>,
    /// Embedding table, `rows() × embedding_dim`, row-major.
    pub embedding: Vec<f32>,
}

impl FieldSpec {
    /// Number of embedding rows this field needs (the unknown row included).
    pub fn rows(&self) -> usize {
        match &self.kind {
            FieldKind::Numeric { bounds } => bounds.len() + 2,
            _ => self.vocabulary.len() + 1,
        }
    }

    /// Row of one raw value (a single token for multi-categorical fields); 0 when unknown.
    pub fn row_of(&self, value: &str) -> u32 {
        match &self.kind {
            FieldKind::Numeric { bounds } => match value.trim().parse::<f32>() {
                Ok(v) if v.is_finite() => {
                    let below = bounds.iter().filter(|b| **b <= v).count();
                    u32::try_from(below).map_or(0, |n| n.saturating_add(1))
                }
                _ => 0,
            },
            _ => match self.vocabulary.binary_search_by(|known| known.as_str().cmp(value)) {
                Ok(position) => u32::try_from(position).map_or(0, |n| n.saturating_add(1)),
                Err(_) => 0,
            },
        }
    }

    /// Rows of a raw field value: one row, or one per token of a multi-categorical value
    /// (empty tokens skipped; an empty value gives no rows and so a zero vector).
    pub fn rows_of(&self, value: &str, out: &mut Vec<u32>) {
        out.clear();
        match &self.kind {
            FieldKind::MultiCategorical { separator } => {
                out.extend(value.split(*separator).filter(|token| !token.is_empty()).map(|token| self.row_of(token)))
            }
            _ => out.push(self.row_of(value)),
        }
    }
}

/// One catalogue item: its id and its field rows, already mapped at export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The item id as the dataset spells it.
    pub id: String,
    /// For each item field (in `ModelBody::item_fields` order), the embedding rows to average.
    pub rows: Vec<Vec<u32>>,
}

/// A fully connected layer `y = W x + b`, `W` stored `outputs × inputs` row-major (as torch does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseLayer {
    /// Input width.
    pub inputs: u32,
    /// Output width.
    pub outputs: u32,
    /// `outputs × inputs` weights, row-major.
    pub weight: Vec<f32>,
    /// `outputs` biases.
    pub bias: Vec<f32>,
}

/// How the device adapts the decision MLP to one user.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptation {
    /// Inner-loop (SGD) learning rate.
    pub inner_lr: f32,
    /// Number of full-batch gradient steps on the support set.
    pub inner_steps: u32,
}

/// What the inner loop adapts (`trainer train --adapt`; the device follows the same rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapt {
    /// Every weight and bias of the decision MLP (the papers).
    #[default]
    All,
    /// The output layer only: a user vector over the last hidden layer plus the user bias.
    Head,
    /// The user side only: layer 0's bias and its user-field weights, and the output bias (the
    /// user bias).
    User,
    /// The output layer and a user factor vector over the item factors, solved exactly from the
    /// support set by one ridge (Newton) step instead of gradient steps: the matrix
    /// factorisation fold-in over the last hidden layer's features and the item factors.
    #[serde(rename = "fold-in")]
    FoldIn,
}

impl Adapt {
    /// Every scope, the trainer's default (the fold-in) first, as the command line lists them.
    pub const ALL: [Adapt; 4] = [Adapt::FoldIn, Adapt::All, Adapt::Head, Adapt::User];
    /// The scopes adapted by gradient steps (every one but the fold-in).
    pub const GRADIENT: [Adapt; 3] = [Adapt::All, Adapt::Head, Adapt::User];

    /// The canonical spelling (command line, run files, reports).
    pub const fn name(self) -> &'static str {
        match self {
            Adapt::All => "all",
            Adapt::Head => "head",
            Adapt::User => "user",
            Adapt::FoldIn => "fold-in",
        }
    }

    /// The scope spelt `name`.
    pub fn from_name(name: &str) -> Option<Adapt> {
        Adapt::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The rating scale the model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatingScale {
    /// Lowest valid rating.
    pub min: f32,
    /// Highest valid rating.
    pub max: f32,
    /// Mean training rating (the global-mean baseline).
    pub global_mean: f32,
}

/// Everything in a model file after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelBody {
    /// The method that trained this model.
    pub method: Method,
    /// What the model predicts.
    pub task: Task,
    /// Width of every field embedding.
    pub embedding_dim: u32,
    /// User profile fields, in input order.
    pub user_fields: Vec<FieldSpec>,
    /// Item fields, in input order (after the user fields).
    pub item_fields: Vec<FieldSpec>,
    /// The item catalogue.
    pub items: Vec<ItemRecord>,
    /// The decision MLP: ReLU between layers, linear output of width 1.
    pub layers: Vec<DenseLayer>,
    /// Further initialisations of the decision MLP (HML), each shaped like `layers`.
    pub extra_inits: Vec<Vec<DenseLayer>>,
    /// Inner-loop settings.
    pub adaptation: Adaptation,
    /// Where the inner learning rate comes from.
    pub learning_rate: LearningRate,
    /// AT-PAML's stored users.
    pub neighbours: Option<NeighbourTable>,
    /// Rating scale.
    pub rating: RatingScale,
    /// Matrix factorisation ([`Method::Mf`]): μ is `rating.global_mean`, and the body has no
    /// decision MLP, no embedding tables (`embedding_dim` 0; the fields keep their vocabularies,
    /// so the schema hash and the profile calls stay those of the dataset). Encoded after the
    /// body as a [`StoredFactors`] (flag [`required::FACTORS`]), not inside it, so the body's
    /// own encoding is that of 2.0 and 2.1.
    #[serde(skip)]
    pub factors: Option<Factors>,
    /// The bias-aware product model's additions (2.3): item biases, the adaptation scope and the
    /// proximal term. The default is the plain model (no item bias, adapt everything, no
    /// proximal term), which is encoded as nothing at all; anything else follows the body as a
    /// [`ProductModel`] (flags [`required::ITEM_BIAS`], [`required::ADAPT_SCOPE`]), so the
    /// body's own encoding is that of 2.0 to 2.2.
    #[serde(skip)]
    pub product: ProductModel,
}

/// The bias-aware product model: the raw output (a rating, or a click logit before σ) is
/// `MLP(x_user, x_item; θ) + item_bias[item]`, and the inner loop minimises the mean support
/// loss of that output plus `(proximal / 2) · ‖θ − θ₀‖²` over the parameters `adapt` names (θ₀
/// the initialisation adaptation started from); the others keep the initialisation's values.
/// With [`Adapt::FoldIn`] the output layer is instead solved exactly ([`FoldInHead`], which
/// such a model must have and no other may), the raw output gains `p_u · q_item`, and
/// `proximal` is unused.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProductModel {
    /// One bias per catalogue item, in `ModelBody::items` order; empty for none.
    pub item_bias: Vec<f32>,
    /// Which parameters of the decision MLP the inner loop updates.
    pub adapt: Adapt,
    /// Weight of the proximal term (≥ 0; 0 for none).
    pub proximal: f32,
    /// The fold-in's ridge weights and item factors ([`Adapt::FoldIn`] only). Encoded after the
    /// product model as a [`StoredFoldIn`] (flag [`required::FOLD_IN`]), not inside it, so the
    /// product model's own encoding is that of early 2.3 files.
    #[serde(skip)]
    pub fold_in: Option<FoldInHead>,
}

/// The fold-in of a product model ([`Adapt::FoldIn`]): a user's output layer `(w, b)` and
/// factor vector `p` (k values) move from the initialisation θ₀ (p from 0) by the δ that
/// solves `(Σ_j s_j z_j z_jᵀ + Λ) δ = Σ_j z_j r_j` over the support ratings j, with `z_j = [h_j; q_item_j; 1]` (`h_j` the last hidden layer's
/// activations at θ₀, or the input for a one-layer MLP), `start_j = w₀·h_j + b₀ + b_item_j`,
/// and for ratings `r_j = y_j − start_j`, `s_j = 1`, for clicks `p_j = σ(start_j)`,
/// `r_j = y_j − p_j`, `s_j = p_j(1 − p_j)`. `Λ = diag(ridge_m · inner_lr / rate_m)`, the rate
/// being `inner_lr` for a fixed rate (Λ = ridge), the user's own rate for the PAML family, and
/// for per-parameter rates the output weights' and bias's own (`inner_lr` for the factors).
/// Then `w = w₀ + δ[..d]`, `p = δ[d..d + k]`, `b = b₀ + δ[d + k]`, and the raw output of item
/// i is `MLP(x_user, x_i; θ) + item_bias[i] + p · q_i`. The hidden layers never change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FoldInHead {
    /// k: item factors per item (0 for none; at most [`crate::factors::MAX_FACTORS`]).
    pub factors: u32,
    /// The ridge weights, `d + k + 1` (d the output layer's input width), each finite and > 0.
    pub ridge: Vec<f32>,
    /// q_i, `items × k`, row-major.
    pub item_factors: Vec<f32>,
}

/// [`FoldInHead`] as the file stores it: the item factors in f32, f16 or 8 bits, as
/// [`StoredFactors`] stores a factor model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFoldIn {
    /// k.
    pub factors: u32,
    /// The ridge weights.
    pub ridge: Vec<f32>,
    /// q_i.
    pub item_factors: FactorValues,
}

impl StoredFoldIn {
    fn encode(head: &FoldInHead, precision: EmbeddingPrecision) -> StoredFoldIn {
        StoredFoldIn {
            factors: head.factors,
            ridge: head.ridge.clone(),
            item_factors: FactorValues::encode(&head.item_factors, head.factors as usize, precision),
        }
    }

    /// The head widened to f32. Sizes are checked by [`crate::Model::from_body`]; a compact
    /// table whose size disagrees with `items × factors` is refused here.
    fn decode(self, items: usize) -> Result<FoldInHead> {
        let item_factors = self.item_factors.decode(items, self.factors as usize)?;
        Ok(FoldInHead { factors: self.factors, ridge: self.ridge, item_factors })
    }
}

impl ProductModel {
    /// The required flags this part needs: none for the plain model (the default).
    pub fn required_features(&self) -> u32 {
        let mut flags = 0;
        if !self.item_bias.is_empty() {
            flags |= required::ITEM_BIAS;
        }
        // `!=` rather than `>`: a NaN or negative weight is written, and refused by validation.
        if self.adapt != Adapt::All || self.proximal != 0.0 {
            flags |= required::ADAPT_SCOPE;
        }
        if self.fold_in.is_some() {
            flags |= required::FOLD_IN;
        }
        flags
    }
}

/// A biased matrix factorisation `r̂ = μ + b_u + b_i + p_u · q_i` with fold-in: the user's
/// `(b_u, p_u)` minimise `Σ_j (r_j − μ − b_i − b_u − p_u · q_i)² + λ_b b_u² + λ |p_u|²` over
/// their own ratings, solved exactly on the device ([`crate::factors`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factors {
    /// Latent factors per item and per user (k; 0 is the bias-only model).
    pub factors: u32,
    /// λ: ridge weight on the user's factors.
    pub regularisation: f32,
    /// λ_b: ridge weight on the user's bias.
    pub bias_regularisation: f32,
    /// b_i, one per catalogue item (0 for items no training user rated).
    pub item_bias: Vec<f32>,
    /// q_i, `items × factors`, row-major (zeros for items no training user rated).
    pub item_factors: Vec<f32>,
}

/// [`Factors`] as the file stores them: the item factors in f32, f16 or 8 bits (the biases
/// stay f32: 4 bytes an item, and the largest term of a score).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFactors {
    /// Latent factors per item and per user.
    pub factors: u32,
    /// λ.
    pub regularisation: f32,
    /// λ_b.
    pub bias_regularisation: f32,
    /// b_i.
    pub item_bias: Vec<f32>,
    /// q_i.
    pub item_factors: FactorValues,
}

/// How the item factors are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FactorValues {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Half precision, or 8 bits with one scale per item, as the embedding tables.
    Compact(CompactTable),
}

impl FactorValues {
    /// `values` (`rows × k`) in `precision` (f32 as they are when k is 0).
    fn encode(values: &[f32], k: usize, precision: EmbeddingPrecision) -> FactorValues {
        if precision == EmbeddingPrecision::F32 || k == 0 {
            FactorValues::F32(values.to_vec())
        } else {
            FactorValues::Compact(CompactTable::encode(values, k, precision))
        }
    }

    /// The values widened to f32: f32 ones as they are (their size is validation's to check),
    /// a compact table only if it holds `rows × k` values ([`Error::InconsistentDimensions`]).
    fn decode(self, rows: usize, k: usize) -> Result<Vec<f32>> {
        match self {
            FactorValues::F32(values) => Ok(values),
            FactorValues::Compact(table) => {
                let len = rows.checked_mul(k).ok_or(Error::InconsistentDimensions)?;
                let mut out = Vec::new();
                if !table.decode(k, len, &mut out) {
                    return Err(Error::InconsistentDimensions);
                }
                Ok(out)
            }
        }
    }
}

impl StoredFactors {
    fn encode(factors: &Factors, precision: EmbeddingPrecision) -> StoredFactors {
        StoredFactors {
            factors: factors.factors,
            regularisation: factors.regularisation,
            bias_regularisation: factors.bias_regularisation,
            item_bias: factors.item_bias.clone(),
            item_factors: FactorValues::encode(&factors.item_factors, factors.factors as usize, precision),
        }
    }

    /// The factors widened to f32. Sizes are checked by [`crate::Model::from_body`]; a compact
    /// table whose size disagrees with `item_bias.len() × factors` is refused here.
    fn decode(self) -> Result<Factors> {
        let item_factors = self.item_factors.decode(self.item_bias.len(), self.factors as usize)?;
        Ok(Factors {
            factors: self.factors,
            regularisation: self.regularisation,
            bias_regularisation: self.bias_regularisation,
            item_bias: self.item_bias,
            item_factors,
        })
    }
}

impl ModelBody {
    /// The required feature flags this body needs.
    pub fn required_features(&self) -> u32 {
        let mut flags = 0;
        match self.learning_rate {
            LearningRate::Fixed => {}
            LearningRate::PerParameter(_) => flags |= required::PER_PARAMETER_LR,
            LearningRate::Network { .. } => flags |= required::LR_NETWORK,
        }
        if self.neighbours.is_some() {
            flags |= required::NEIGHBOUR_TABLE;
        }
        if !self.extra_inits.is_empty() {
            flags |= required::MULTIPLE_INITS;
        }
        if self.task.is_click() {
            flags |= required::CLICK_TASK;
        }
        if self.factors.is_some() {
            flags |= required::FACTORS;
        }
        flags | self.product.required_features()
    }
}

/// How [`encode_with`] stores the embedding tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddingPrecision {
    /// 32-bit floats inside the body (what training produced).
    #[default]
    F32,
    /// IEEE half precision (round to nearest): half the bytes, ~3 significant digits.
    F16,
    /// Symmetric 8-bit per table row: `value = q · scale_row`, `scale_row = max|row| / 127`.
    Int8,
}

impl EmbeddingPrecision {
    /// Every precision, the exact one first.
    pub const ALL: [EmbeddingPrecision; 3] =
        [EmbeddingPrecision::F32, EmbeddingPrecision::F16, EmbeddingPrecision::Int8];

    /// The canonical spelling (`trainer export --embeddings`, reports).
    pub const fn name(self) -> &'static str {
        match self {
            EmbeddingPrecision::F32 => "f32",
            EmbeddingPrecision::F16 => "f16",
            EmbeddingPrecision::Int8 => "int8",
        }
    }

    /// The precision spelt `name`.
    pub fn from_name(name: &str) -> Option<EmbeddingPrecision> {
        EmbeddingPrecision::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Embedding tables in fewer bits, one per field (user fields, then item fields), following the
/// body when [`required::COMPACT_EMBEDDINGS`] is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactEmbeddings {
    /// The tables, in field order.
    pub tables: Vec<CompactTable>,
}

/// One field's table (`rows × embedding_dim` values, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CompactTable {
    /// Half-precision values, two little-endian bytes each.
    F16(Vec<u8>),
    /// 8-bit values (two's complement bytes) and one scale per row.
    Int8 {
        /// Per-row scale.
        scales: Vec<f32>,
        /// `rows × embedding_dim` quantised values.
        values: Vec<u8>,
    },
}

impl CompactTable {
    fn encode(values: &[f32], dim: usize, precision: EmbeddingPrecision) -> CompactTable {
        match precision {
            EmbeddingPrecision::F16 | EmbeddingPrecision::F32 => {
                CompactTable::F16(values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
            }
            EmbeddingPrecision::Int8 => {
                let mut scales = Vec::new();
                let mut quantised = Vec::with_capacity(values.len());
                for row in values.chunks(dim.max(1)) {
                    let largest = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
                    scales.push(scale);
                    // Within ±127 by construction of the scale; `as` saturates regardless.
                    quantised.extend(row.iter().map(|v| libm::roundf(v / scale) as i8 as u8));
                }
                CompactTable::Int8 { scales, values: quantised }
            }
        }
    }

    /// Widens the table to f32 into `out` (`rows × dim` values); false if the sizes disagree.
    fn decode(&self, dim: usize, len: usize, out: &mut Vec<f32>) -> bool {
        out.clear();
        match self {
            CompactTable::F16(bytes) => {
                if bytes.len() != len.saturating_mul(2) {
                    return false;
                }
                out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()));
            }
            CompactTable::Int8 { scales, values } => {
                if values.len() != len || dim == 0 || scales.len() != len / dim {
                    return false;
                }
                for (row, &scale) in values.chunks_exact(dim).zip(scales) {
                    out.extend(row.iter().map(|&q| f32::from(q as i8) * scale));
                }
            }
        }
        true
    }
}

/// FNV-1a (64-bit) over every field's name, kind, separator or bounds, and vocabulary, user
/// fields then item fields: two models with the same hash map raw feature strings identically.
pub fn schema_hash(body: &ModelBody) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (side, fields) in [(b'u', &body.user_fields), (b'i', &body.item_fields)] {
        for field in fields {
            eat(&[side]);
            eat(field.name.as_bytes());
            eat(&[0]);
            match &field.kind {
                FieldKind::Categorical => eat(&[1]),
                FieldKind::MultiCategorical { separator } => {
                    eat(&[2]);
                    eat(&(*separator as u32).to_le_bytes());
                }
                FieldKind::Numeric { bounds } => {
                    eat(&[3]);
                    for bound in bounds {
                        eat(&bound.to_le_bytes());
                    }
                }
            }
            for value in &field.vocabulary {
                eat(value.as_bytes());
                eat(&[0]);
            }
            eat(&[0xff]);
        }
    }
    hash
}

/// Serialises a model body with its header into file bytes (f32 embedding tables).
pub fn encode(body: &ModelBody) -> Result<Vec<u8>> {
    encode_with(body, EmbeddingPrecision::F32)
}

/// Serialises a model body with its header, storing the embedding tables in `precision`.
/// A reader gets back the tables rounded to that precision (and widened to f32).
pub fn encode_with(body: &ModelBody, precision: EmbeddingPrecision) -> Result<Vec<u8>> {
    encode_layout(body, precision, false)
}

/// [`encode_with`] in the aligned layout of 2.4 ([`required::ALIGNED_TABLES`]): the catalogue
/// as flat little-endian arrays after every other part, which a reader uses in place.
///
/// Errors: [`Error::InconsistentDimensions`] for an item without one row list per item field,
/// [`Error::ModelTooLarge`] for more than `u32::MAX` items, id bytes or rows.
pub fn encode_aligned(body: &ModelBody, precision: EmbeddingPrecision) -> Result<Vec<u8>> {
    encode_layout(body, precision, true)
}

/// `body` without its items (what the aligned layout's postcard body holds).
fn without_items(body: &ModelBody) -> ModelBody {
    ModelBody {
        method: body.method,
        task: body.task,
        embedding_dim: body.embedding_dim,
        user_fields: body.user_fields.clone(),
        item_fields: body.item_fields.clone(),
        items: Vec::new(),
        layers: body.layers.clone(),
        extra_inits: body.extra_inits.clone(),
        adaptation: body.adaptation,
        learning_rate: body.learning_rate.clone(),
        neighbours: body.neighbours.clone(),
        rating: body.rating,
        factors: body.factors.clone(),
        product: body.product.clone(),
    }
}

fn encode_layout(full: &ModelBody, precision: EmbeddingPrecision, aligned: bool) -> Result<Vec<u8>> {
    let stripped_items;
    let body = if aligned {
        stripped_items = without_items(full);
        &stripped_items
    } else {
        full
    };
    let mut required_features = body.required_features();
    // A factor model has no embedding tables to store compactly.
    let mut payload = if precision == EmbeddingPrecision::F32 || body.embedding_dim == 0 {
        postcard::to_allocvec(body).map_err(|_| Error::MalformedBody)?
    } else {
        let dim = body.embedding_dim as usize;
        let mut stripped = body.clone();
        let mut tables = Vec::new();
        for field in stripped.user_fields.iter_mut().chain(stripped.item_fields.iter_mut()) {
            tables.push(CompactTable::encode(&field.embedding, dim, precision));
            field.embedding = Vec::new();
        }
        required_features |= required::COMPACT_EMBEDDINGS;
        let mut payload = postcard::to_allocvec(&stripped).map_err(|_| Error::MalformedBody)?;
        payload.extend(postcard::to_allocvec(&CompactEmbeddings { tables }).map_err(|_| Error::MalformedBody)?);
        payload
    };
    if let Some(factors) = &body.factors {
        let stored = StoredFactors::encode(factors, precision);
        payload.extend(postcard::to_allocvec(&stored).map_err(|_| Error::MalformedBody)?);
    }
    if body.product.required_features() != 0 {
        payload.extend(postcard::to_allocvec(&body.product).map_err(|_| Error::MalformedBody)?);
    }
    if let Some(head) = &body.product.fold_in {
        let stored = StoredFoldIn::encode(head, precision);
        payload.extend(postcard::to_allocvec(&stored).map_err(|_| Error::MalformedBody)?);
    }
    if aligned {
        write_item_tables(&full.items, full.item_fields.len(), &mut payload)?;
        required_features |= required::ALIGNED_TABLES;
    }
    // The lowest minor that describes the file (see the module docs).
    let minor: u16 = if aligned {
        4
    } else if required_features & (required::ITEM_BIAS | required::ADAPT_SCOPE | required::FOLD_IN) != 0 {
        3
    } else if required_features & required::FACTORS != 0 {
        2
    } else {
        1
    };
    let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    file.extend_from_slice(&minor.to_le_bytes());
    file.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    file.extend_from_slice(&required_features.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&schema_hash(body).to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let header_crc = crc32fast::hash(&file);
    file.extend_from_slice(&header_crc.to_le_bytes());
    file.extend_from_slice(&payload);
    Ok(file)
}

/// Appends the aligned item tables of `items` (the directory, the padding, the arrays) to
/// `payload`, which follows a [`HEADER_LEN`]-byte header.
fn write_item_tables(items: &[ItemRecord], fields: usize, payload: &mut Vec<u8>) -> Result<()> {
    let large = Error::ModelTooLarge;
    if items.iter().any(|item| item.rows.len() != fields) {
        return Err(Error::InconsistentDimensions);
    }
    let single = items.iter().all(|item| item.rows.iter().all(|rows| rows.len() == 1));
    let count = u32::try_from(items.len()).map_err(|_| large)?;
    let id_bytes = u32::try_from(items.iter().map(|item| item.id.len()).sum::<usize>()).map_err(|_| large)?;
    let rows = items.iter().flat_map(|item| &item.rows).map(Vec::len).sum::<usize>();
    let rows = u32::try_from(rows).map_err(|_| large)?;
    let directory = TableDirectory { items: count, id_bytes, rows, offsets: !single };
    payload.extend(postcard::to_allocvec(&directory).map_err(|_| Error::MalformedBody)?);
    while (HEADER_LEN + payload.len()) % TABLE_ALIGN != 0 {
        payload.push(0);
    }
    let mut end = 0u32;
    for item in items {
        // The sum fits: checked above.
        end += item.id.len() as u32;
        payload.extend_from_slice(&end.to_le_bytes());
    }
    let id = |i: u32| items.get(i as usize).map_or(&[][..], |item| item.id.as_bytes());
    let mut order: Vec<u32> = (0..count).collect();
    order.sort_unstable_by(|&a, &b| id(a).cmp(id(b)));
    payload.extend(order.iter().flat_map(|i| i.to_le_bytes()));
    payload.extend(items.iter().flat_map(|item| &item.rows).flatten().flat_map(|row| row.to_le_bytes()));
    if !single {
        let mut at = 0u32;
        payload.extend_from_slice(&at.to_le_bytes());
        for rows in items.iter().flat_map(|item| &item.rows) {
            at += rows.len() as u32;
            payload.extend_from_slice(&at.to_le_bytes());
        }
    }
    payload.extend(items.iter().flat_map(|item| item.id.bytes()));
    Ok(())
}

/// The aligned item tables that start at `at` in `file` after their directory: the padding
/// (zeros), then the arrays; and what follows them. [`Error::MalformedBody`] when the file is
/// too short for them or the padding is not zeros.
fn item_tables<'a>(
    file: &'a [u8],
    at: usize,
    directory: &TableDirectory,
    fields: usize,
) -> Result<(ItemTables<'a>, &'a [u8])> {
    let bad = Error::MalformedBody;
    let items = directory.items as usize;
    let words = |n: usize| n.checked_mul(4).ok_or(bad);
    let offsets =
        if directory.offsets { items.checked_mul(fields).and_then(|n| n.checked_add(1)).ok_or(bad)? } else { 0 };
    let take = |rest: &'a [u8], n: usize| -> Result<(&'a [u8], &'a [u8])> {
        if rest.len() < n {
            return Err(bad);
        }
        Ok(rest.split_at(n))
    };
    let rest = file.get(at..).ok_or(bad)?;
    let (padding, rest) = take(rest, (TABLE_ALIGN - at % TABLE_ALIGN) % TABLE_ALIGN)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(bad);
    }
    let (id_ends, rest) = take(rest, words(items)?)?;
    let (by_id, rest) = take(rest, words(items)?)?;
    let (rows, rest) = take(rest, words(directory.rows as usize)?)?;
    let (offsets, rest) = take(rest, words(offsets)?)?;
    let (ids, rest) = take(rest, directory.id_bytes as usize)?;
    Ok((ItemTables { items, id_ends, by_id, rows, offsets, ids }, rest))
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(b)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Reads and checks the header (magic, version, header CRC, feature flags) without touching
/// the body.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) { Error::Truncated } else { Error::BadMagic });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::BadMagic);
    }
    let fixed = bytes.get(..16).ok_or(Error::Truncated)?;
    let major = u16_at(fixed, 8);
    if major != FORMAT_MAJOR {
        return Err(Error::UnsupportedVersion);
    }
    let header_len = u32_at(fixed, 12);
    let len = usize::try_from(header_len).map_err(|_| Error::Truncated)?;
    if len < HEADER_LEN {
        return Err(Error::MalformedBody);
    }
    let header = bytes.get(..len).ok_or(Error::Truncated)?;
    if crc32fast::hash(&header[..len - 4]) != u32_at(header, len - 4) {
        return Err(Error::ChecksumMismatch);
    }
    let parsed = Header {
        major,
        minor: u16_at(header, 10),
        header_len,
        required_features: u32_at(header, 16),
        optional_features: u32_at(header, 20),
        schema_hash: u64_at(header, 24),
        body_len: u64_at(header, 32),
        body_crc: u32_at(header, 40),
    };
    refuse_unknown(parsed.required_features, required::KNOWN)?;
    Ok(parsed)
}

/// [`Error::UnsupportedFeature`] when `flags` holds a required flag outside `known` (a reader's
/// [`required::KNOWN`]).
fn refuse_unknown(flags: u32, known: u32) -> Result<()> {
    if flags & !known != 0 {
        return Err(Error::UnsupportedFeature);
    }
    Ok(())
}

/// Checks the header, both checksums, the feature flags and the schema hash, and decodes the
/// body. Dimensions are checked by [`crate::Model::from_bytes`], which calls this.
pub fn decode(bytes: &[u8]) -> Result<ModelBody> {
    decode_with_precision(bytes).map(|(body, _)| body)
}

/// [`decode`], and the precision the file stores its embedding tables in (the first compact
/// table's; f32 without compact tables).
pub fn decode_with_precision(bytes: &[u8]) -> Result<(ModelBody, EmbeddingPrecision)> {
    let (mut body, precision, tables) = decode_parts(bytes)?;
    if let Some(tables) = tables {
        body.items = crate::catalogue::Catalogue::copied(&tables, &body.item_fields)?.records();
    }
    Ok((body, precision))
}

/// [`decode_with_precision`] leaving the aligned item tables (2.4) in the file: the body's
/// `items` is then empty and the tables come back as slices of `bytes`, sizes checked.
pub(crate) fn decode_parts(bytes: &[u8]) -> Result<(ModelBody, EmbeddingPrecision, Option<ItemTables<'_>>)> {
    let mut precision = EmbeddingPrecision::F32;
    let header = read_header(bytes)?;
    let flags = header.required_features;
    let rest = &bytes[header.header_len as usize..];
    let body_len = usize::try_from(header.body_len).map_err(|_| Error::Truncated)?;
    if rest.len() < body_len {
        return Err(Error::Truncated);
    }
    if rest.len() > body_len {
        return Err(Error::TrailingBytes);
    }
    if crc32fast::hash(rest) != header.body_crc {
        return Err(Error::ChecksumMismatch);
    }
    let (mut body, mut unread) = postcard::take_from_bytes::<ModelBody>(rest).map_err(|_| Error::MalformedBody)?;
    if flags & required::COMPACT_EMBEDDINGS != 0 {
        let (compact, after) =
            postcard::take_from_bytes::<CompactEmbeddings>(unread).map_err(|_| Error::MalformedBody)?;
        widen_embeddings(&mut body, &compact)?;
        precision = match compact.tables.first() {
            Some(CompactTable::F16(_)) => EmbeddingPrecision::F16,
            Some(CompactTable::Int8 { .. }) => EmbeddingPrecision::Int8,
            None => EmbeddingPrecision::F32,
        };
        unread = after;
    }
    if flags & required::FACTORS != 0 {
        let (stored, after) = postcard::take_from_bytes::<StoredFactors>(unread).map_err(|_| Error::MalformedBody)?;
        body.factors = Some(stored.decode()?);
        unread = after;
    }
    if flags & (required::ITEM_BIAS | required::ADAPT_SCOPE) != 0 {
        let (product, after) = postcard::take_from_bytes::<ProductModel>(unread).map_err(|_| Error::MalformedBody)?;
        body.product = product;
        unread = after;
    }
    let mut fold_in = None;
    if flags & required::FOLD_IN != 0 {
        let (stored, after) = postcard::take_from_bytes::<StoredFoldIn>(unread).map_err(|_| Error::MalformedBody)?;
        fold_in = Some(stored);
        unread = after;
    }
    let mut tables = None;
    if flags & required::ALIGNED_TABLES != 0 {
        if !body.items.is_empty() {
            return Err(Error::MalformedBody);
        }
        let (directory, after) =
            postcard::take_from_bytes::<TableDirectory>(unread).map_err(|_| Error::MalformedBody)?;
        // `after` ends where `bytes` ends: its start is this far into the file.
        let (found, after) = item_tables(bytes, bytes.len() - after.len(), &directory, body.item_fields.len())?;
        tables = Some(found);
        unread = after;
    }
    if let Some(stored) = fold_in {
        let items = tables.as_ref().map_or(body.items.len(), |tables| tables.items);
        body.product.fold_in = Some(stored.decode(items)?);
    }
    if !unread.is_empty() {
        return Err(Error::TrailingBytes);
    }
    let described = flags & !(required::COMPACT_EMBEDDINGS | required::ALIGNED_TABLES);
    if body.required_features() != described || schema_hash(&body) != header.schema_hash {
        return Err(Error::InconsistentDimensions);
    }
    Ok((body, precision, tables))
}

/// Puts the compact tables back into the body's fields as f32: one table per field, each
/// `rows × embedding_dim` long, and the body's own tables empty.
fn widen_embeddings(body: &mut ModelBody, compact: &CompactEmbeddings) -> Result<()> {
    let dim = body.embedding_dim as usize;
    let fields = body.user_fields.len() + body.item_fields.len();
    if compact.tables.len() != fields {
        return Err(Error::InconsistentDimensions);
    }
    for (field, table) in body.user_fields.iter_mut().chain(body.item_fields.iter_mut()).zip(&compact.tables) {
        let len = field.rows().checked_mul(dim).ok_or(Error::InconsistentDimensions)?;
        if !field.embedding.is_empty() || !table.decode(dim, len, &mut field.embedding) {
            return Err(Error::InconsistentDimensions);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2.2 reader knew bits 0 to 6: the 2.3 flags are past its mask, so it refuses a file
    /// that has them by name ([`Error::UnsupportedFeature`]) instead of scoring without the item
    /// biases or adapting every weight; this reader takes them, and refuses the next bit.
    #[test]
    fn a_2_2_reader_refuses_the_2_3_flags_by_name() {
        const KNOWN_2_2: u32 = (1 << 7) - 1;
        let new = required::ITEM_BIAS | required::ADAPT_SCOPE;
        assert_eq!(KNOWN_2_2, required::KNOWN & !(new | required::FOLD_IN | required::ALIGNED_TABLES));
        for flags in [required::ITEM_BIAS, required::ADAPT_SCOPE, new, new | required::CLICK_TASK] {
            assert_eq!(refuse_unknown(flags, KNOWN_2_2), Err(Error::UnsupportedFeature), "{flags:#x}");
            assert_eq!(refuse_unknown(flags, required::KNOWN), Ok(()), "{flags:#x}");
        }
        assert_eq!(refuse_unknown(required::FACTORS | required::CLICK_TASK, KNOWN_2_2), Ok(()));
        assert_eq!(refuse_unknown(1 << 11, required::KNOWN), Err(Error::UnsupportedFeature));
    }

    /// An early 2.3 reader knew bits 0 to 8: a fold-in model's flag is past its mask, so it
    /// refuses the file by name instead of adapting the output layer by gradient steps.
    #[test]
    fn an_early_2_3_reader_refuses_the_fold_in_by_name() {
        const KNOWN_EARLY_2_3: u32 = (1 << 9) - 1;
        assert_eq!(KNOWN_EARLY_2_3, required::KNOWN & !(required::FOLD_IN | required::ALIGNED_TABLES));
        let fold_in = ProductModel { adapt: Adapt::FoldIn, fold_in: Some(FoldInHead::default()), ..Default::default() };
        let flags = fold_in.required_features();
        assert_eq!(flags, required::ADAPT_SCOPE | required::FOLD_IN);
        assert_eq!(refuse_unknown(flags, KNOWN_EARLY_2_3), Err(Error::UnsupportedFeature));
        assert_eq!(refuse_unknown(flags, required::KNOWN), Ok(()));
    }

    /// The plain product model needs no flag; each part its own.
    #[test]
    fn product_flags_follow_what_is_used() {
        let plain = ProductModel::default();
        assert_eq!(plain.required_features(), 0);
        let scoped = ProductModel { adapt: Adapt::Head, ..ProductModel::default() };
        assert_eq!(scoped.required_features(), required::ADAPT_SCOPE);
        let pulled = ProductModel { proximal: 0.5, ..ProductModel::default() };
        assert_eq!(pulled.required_features(), required::ADAPT_SCOPE);
        let biased = ProductModel { item_bias: alloc::vec![0.0], ..ProductModel::default() };
        assert_eq!(biased.required_features(), required::ITEM_BIAS);
        let refused = ProductModel { proximal: f32::NAN, ..ProductModel::default() };
        assert_eq!(refused.required_features(), required::ADAPT_SCOPE, "written, so validation refuses it");
    }
}
