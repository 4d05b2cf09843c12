//! The wire format of a device's federated contribution: one clipped first-order meta-update,
//! bound to the model it was computed against.
//!
//! A contribution carries the update and nothing else about the user: no rating count, loss or
//! metric travels in the clear (they are outside the differential-privacy guarantee the server's
//! noise gives). Layout, little-endian, [`HEADER_LEN`] + 4·n + 4 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MRFU` |
//! | 4 | 2 | version: [`VERSION_MLP`] or [`VERSION_FOLD_IN`] (what the values cover) |
//! | 6 | 2 | reserved flags, 0 |
//! | 8 | 8 | model id ([`model_id`]) |
//! | 16 | 8 | the model's schema hash ([`crate::format::schema_hash`]) |
//! | 24 | 4 | n, the number of values ([`update_len`]) |
//! | 28 | 4 | clip norm S the device clipped to (f32) |
//! | 32 | 4·n | the update (f32), L2 norm ≤ S |
//! | 32 + 4·n | 4 | CRC32 of every byte before it |
//!
//! The values ([`UpdateLayout`]): version 1, the decision MLP's parameters in the flat layout
//! (a model adapted by gradient steps); version 2, those followed by the fold-in head's log
//! ridge weights, `d + k + 1` of them (a model adapted by the fold-in,
//! [`crate::format::FoldInHead`]). A contribution that version 1 describes is always written as
//! version 1, byte for byte what earlier runtimes wrote; a reader that knows only version 1
//! refuses version 2 as an unsupported version.
//!
//! The update is a meta-*gradient* (the server steps against it: θ ← θ − β·mean, and each
//! ridge weight λ ← λ·exp(−β·mean), a step on log λ).

use alloc::vec::Vec;

use crate::error::Error;
use crate::format::Adapt;
use crate::model::Model;

/// The magic bytes that start every contribution.
pub const MAGIC: [u8; 4] = *b"MRFU";
/// The version of a contribution over the decision MLP's parameters alone.
pub const VERSION_MLP: u16 = 1;
/// The version of a contribution over the MLP's parameters and a fold-in head's log ridge
/// weights; the newest this runtime writes and reads.
pub const VERSION_FOLD_IN: u16 = 2;
/// Bytes before the values.
pub const HEADER_LEN: usize = 32;

/// Why a contribution is refused ([`decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header and checksum, or its length disagrees with its value count.
    Truncated,
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// A version (or reserved flags) this runtime does not read.
    UnsupportedVersion,
    /// The CRC32 does not match: damaged or tampered with.
    ChecksumMismatch,
    /// A value or the clip norm is NaN or infinite, or the clip norm is not positive.
    NonFinite,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "truncated contribution (length disagrees with its header)",
            DecodeError::BadMagic => "not a metarec contribution (bad magic bytes)",
            DecodeError::UnsupportedVersion => "unsupported contribution version",
            DecodeError::ChecksumMismatch => "contribution checksum mismatch (damaged or tampered with)",
            DecodeError::NonFinite => "contribution holds a NaN or infinite value or a non-positive clip norm",
        })
    }
}

impl core::error::Error for DecodeError {}

/// A decoded contribution. Whether it belongs to a given model is the caller's check
/// (`model_id` and `schema_hash` against [`model_id`] and the model's schema hash).
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// [`VERSION_MLP`] or [`VERSION_FOLD_IN`]: what the values cover.
    pub version: u16,
    /// The id of the model the update was computed against.
    pub model_id: u64,
    /// That model's schema hash.
    pub schema_hash: u64,
    /// The clip norm the device clipped to.
    pub clip_norm: f32,
    /// The clipped meta-gradient ([`UpdateLayout`]).
    pub update: Vec<f32>,
}

/// What a model's contributions hold, in order: `mlp` values over the decision MLP's
/// parameters (the flat layout), then `ridge` over a fold-in head's log ridge weights (0 for a
/// model without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateLayout {
    /// The decision MLP's parameter count.
    pub mlp: usize,
    /// The fold-in head's ridge weights `d + k + 1` (0 without a fold-in head).
    pub ridge: usize,
}

impl UpdateLayout {
    /// The layout of `model`'s contributions.
    pub fn of(model: &Model) -> UpdateLayout {
        let ridge = model.fold_in_head().map_or(0, |head| head.ridge.len());
        UpdateLayout { mlp: model.layout().param_len, ridge }
    }

    /// Values in all.
    pub fn len(&self) -> usize {
        self.mlp + self.ridge
    }

    /// Whether there are no values (a model without parameters).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version that describes these values.
    pub fn version(&self) -> u16 {
        if self.ridge == 0 {
            VERSION_MLP
        } else {
            VERSION_FOLD_IN
        }
    }
}

/// The id a contribution is bound to: FNV-1a (64-bit) over the schema hash, the parameter count
/// and the bytes of every meta-learned decision-MLP parameter (initialisation 0), then for a
/// fold-in head the bytes of its ridge weights: the values an update is relative to. Every
/// server step changes them, so the id changes with every round and an update computed against
/// an earlier model is refused as stale. (A model without a fold-in head has the id earlier
/// runtimes gave it.)
///
/// [`Model::contribution_ids`] keeps it (with the schema hash) once computed.
pub fn model_id(model: &Model) -> u64 {
    model_id_with(model, crate::format::schema_hash(model.body()))
}

/// [`model_id`] for `model` whose schema hash is `schema`.
pub(crate) fn model_id_with(model: &Model, schema: u64) -> u64 {
    let params = model.init_params(0).unwrap_or(&[]);
    let mut hash = Fnv::new();
    hash.write(&schema.to_le_bytes());
    hash.write(&(params.len() as u64).to_le_bytes());
    let ridge = model.fold_in_head().map_or(&[][..], |head| &head.ridge[..]);
    for p in params.iter().chain(ridge) {
        hash.write(&p.to_bits().to_le_bytes());
    }
    hash.0
}

/// The number of values in `model`'s contributions ([`UpdateLayout`]).
pub fn update_len(model: &Model) -> usize {
    UpdateLayout::of(model).len()
}

/// Writes a version-1 contribution (the decision MLP's parameters alone; see the module docs).
pub fn encode(model_id: u64, schema_hash: u64, clip_norm: f32, update: &[f32]) -> Vec<u8> {
    encode_version(VERSION_MLP, model_id, schema_hash, clip_norm, update)
}

/// Writes a contribution of `version` ([`UpdateLayout::version`]; see the module docs).
pub fn encode_version(version: u16, model_id: u64, schema_hash: u64, clip_norm: f32, update: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(update.len()));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&model_id.to_le_bytes());
    out.extend_from_slice(&schema_hash.to_le_bytes());
    out.extend_from_slice(&(update.len() as u32).to_le_bytes());
    out.extend_from_slice(&clip_norm.to_le_bytes());
    for v in update {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The length of a contribution of `n` values.
pub const fn encoded_len(n: usize) -> usize {
    HEADER_LEN + 4 * n + 4
}

/// Reads and checks a contribution: length, magic, version, CRC, finite values and clip norm.
pub fn decode(bytes: &[u8]) -> Result<Contribution, DecodeError> {
    if bytes.len() < encoded_len(0) {
        return Err(DecodeError::Truncated);
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16_at(bytes, 4);
    if !(version == VERSION_MLP || version == VERSION_FOLD_IN) || u16_at(bytes, 6) != 0 {
        return Err(DecodeError::UnsupportedVersion);
    }
    let n = u32_at(bytes, 24) as usize;
    if n.checked_mul(4).and_then(|b| b.checked_add(HEADER_LEN + 4)) != Some(bytes.len()) {
        return Err(DecodeError::Truncated);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32_at(crc, 0) {
        return Err(DecodeError::ChecksumMismatch);
    }
    let clip_norm = f32::from_bits(u32_at(bytes, 28));
    let update: Vec<f32> =
        body[HEADER_LEN..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if !clip_norm.is_finite() || clip_norm <= 0.0 || update.iter().any(|v| !v.is_finite()) {
        return Err(DecodeError::NonFinite);
    }
    Ok(Contribution { version, model_id: u64_at(bytes, 8), schema_hash: u64_at(bytes, 16), clip_norm, update })
}

/// How far under the clip norm a clipped update lands: its norm is `S·(1 − CLIP_MARGIN)`, so
/// rounding to f32 never takes it above S (and a server can tell clipped updates from the rest).
pub const CLIP_MARGIN: f64 = 1e-6;

/// Scales `update` in place to L2 norm at most `clip_norm` (flat clipping, DP-FedAvg's
/// `Δ · min(1, S/‖Δ‖)`), the norm summed in f64. A zero vector stays zero; so does a vector
/// whose norm is not finite (it cannot be scaled meaningfully, and zero is always within bound).
/// Returns the norm before clipping.
pub fn clip(update: &mut [f32], clip_norm: f32) -> f64 {
    let norm = libm::sqrt(update.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>());
    if !norm.is_finite() {
        update.fill(0.0);
    } else if norm > f64::from(clip_norm) {
        let scale = (f64::from(clip_norm) / norm) * (1.0 - CLIP_MARGIN);
        for v in update.iter_mut() {
            *v = (f64::from(*v) * scale) as f32;
        }
    }
    norm
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).map_or(0, |b| {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        u64::from_le_bytes(word)
    })
}

/// FNV-1a, 64-bit.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// [`Error::NotContributable`] unless a device can contribute to the model and a server can
/// aggregate for it: one decision MLP (no factor model, one initialisation) adapted either by
/// gradient steps over every parameter, or by the fold-in ([`crate::format::FoldInHead`]; see
/// `session::contribute` for what each update covers).
pub fn check_contributable(model: &Model) -> crate::Result<()> {
    let adapts = model.factors().is_none() && model.init_count() == 1 && model.body().adaptation.inner_steps > 0;
    let steps = model.fold_in_head().is_none() && model.adapt_scope() == Adapt::All;
    let fold_in = model.fold_in_head().is_some() && model.adapt_scope() == Adapt::FoldIn;
    if adapts && (steps || fold_in) {
        Ok(())
    } else {
        Err(Error::NotContributable)
    }
}
