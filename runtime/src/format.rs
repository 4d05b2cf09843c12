//! The model file: a fixed little-endian header, then a postcard body.
//!
//! ```text
//! offset size field
//!      0    8 magic  b"METAREC\x1a"  (\x1a stops `type` on DOS-like consoles, as PNG does)
//!      8    2 format major version (u16 LE): a reader refuses a major it does not know
//!     10    2 format minor version (u16 LE): additions a reader of the same major may ignore
//!     12    8 body length in bytes (u64 LE)
//!     20    4 CRC32 (IEEE) of the body (u32 LE)
//!     24    … body: postcard encoding of [`ModelBody`]
//! ```
//! The file ends exactly at the end of the body.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// First eight bytes of every model file.
pub const MAGIC: [u8; 8] = *b"METAREC\x1a";
/// Format major version written and read by this runtime.
pub const FORMAT_MAJOR: u16 = 1;
/// Format minor version written by this runtime.
pub const FORMAT_MINOR: u16 = 0;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;

/// Which meta-learning method produced the weights (decides how the device adapts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// MAML with one fixed inner learning rate, adapting the decision MLP.
    Melu,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Explicit rating regression (linear output, squared-error inner loss).
    Rating,
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
    /// Inner-loop settings.
    pub adaptation: Adaptation,
    /// Rating scale.
    pub rating: RatingScale,
}

/// Serialises a model body with its header into file bytes.
pub fn encode(body: &ModelBody) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(body).map_err(|_| Error::MalformedBody)?;
    let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    file.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    file.extend_from_slice(&payload);
    Ok(file)
}

/// Checks the header and checksum and decodes the body. Dimensions are checked by
/// [`crate::Model::from_bytes`], which calls this.
pub fn decode(bytes: &[u8]) -> Result<ModelBody> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) { Error::Truncated } else { Error::BadMagic });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::BadMagic);
    }
    let header = bytes.get(..HEADER_LEN).ok_or(Error::Truncated)?;
    let major = u16::from_le_bytes([header[8], header[9]]);
    if major != FORMAT_MAJOR {
        return Err(Error::UnsupportedVersion);
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[12..20]);
    let body_len = u64::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    let rest = &bytes[HEADER_LEN..];
    let body_len = usize::try_from(body_len).map_err(|_| Error::Truncated)?;
    if rest.len() < body_len {
        return Err(Error::Truncated);
    }
    if rest.len() > body_len {
        return Err(Error::TrailingBytes);
    }
    if crc32fast::hash(rest) != crc {
        return Err(Error::ChecksumMismatch);
    }
    let (body, unread) = postcard::take_from_bytes::<ModelBody>(rest).map_err(|_| Error::MalformedBody)?;
    if !unread.is_empty() {
        return Err(Error::TrailingBytes);
    }
    Ok(body)
}
