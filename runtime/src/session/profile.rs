//! The user's profile fields and the user part of every input they give.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Invariant, Result};
use crate::format::FieldKind;
use crate::model::{field_vector, Model};

/// The profile: the embedding rows of each user field, and the user part of the input computed
/// from them (recomputed on first use after a change, by [`Profile::refresh`]).
#[derive(Debug, Clone)]
pub(super) struct Profile {
    /// Embedding rows of each user field, in `user_fields` order.
    rows: Vec<Vec<u32>>,
    /// The user part of every input (the profile's field vectors), `user_width` wide; current
    /// unless `stale`.
    input: Vec<f32>,
    /// Whether `rows` changed since `input` was computed.
    stale: bool,
}

impl Profile {
    /// Every field unset: row 0 (unknown) for categorical and numeric fields, no rows for
    /// multi-categorical ones.
    pub(super) fn new(model: &Model) -> Profile {
        let rows = model
            .body()
            .user_fields
            .iter()
            .map(|field| match field.kind {
                FieldKind::MultiCategorical { .. } => Vec::new(),
                FieldKind::Categorical | FieldKind::Numeric { .. } => vec![0],
            })
            .collect();
        Profile { rows, input: vec![0.0; model.user_width()], stale: true }
    }

    /// Sets field `field` from its raw value (see `Session::set_profile`).
    ///
    /// Errors: [`Error::UnknownField`].
    pub(super) fn set(&mut self, model: &Model, field: &str, value: &str) -> Result<()> {
        let i = model.user_field_position(field).ok_or(Error::UnknownField)?;
        let spec = model.body().user_fields.get(i).invariant("profile: a field position past the fields")?;
        let rows = self.rows.get_mut(i).invariant("profile: fewer rows than the model's fields")?;
        spec.rows_of(value, rows);
        self.stale = true;
        Ok(())
    }

    /// Recomputes the user part of the input if a field changed.
    pub(super) fn refresh(&mut self, model: &Model) -> Result<()> {
        if !self.stale {
            return Ok(());
        }
        let dim = model.embedding_dim();
        let fields = &model.body().user_fields;
        if fields.len() != self.rows.len() || self.input.len() != fields.len() * dim {
            return Err(crate::error::broken("profile: not sized for the model's user fields"));
        }
        for (i, (spec, rows)) in fields.iter().zip(&self.rows).enumerate() {
            field_vector(spec, rows, &mut self.input[i * dim..(i + 1) * dim])?;
        }
        self.stale = false;
        Ok(())
    }

    /// The user part of every input, as of the last [`Profile::refresh`] (one must have run
    /// since the last change).
    pub(super) fn input(&self) -> Result<&[f32]> {
        crate::error::ensure(!self.stale, "profile: the user input read before a refresh")?;
        Ok(&self.input)
    }

    /// Embedding rows of each user field.
    pub(super) fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }

    /// Bytes on the heap: the input, and each field's rows with its list entry.
    pub(super) fn heap_bytes(&self) -> usize {
        let rows: usize = self
            .rows
            .iter()
            .map(|rows| rows.capacity() * core::mem::size_of::<u32>() + core::mem::size_of::<Vec<u32>>())
            .sum();
        self.input.capacity() * core::mem::size_of::<f32>() + rows
    }
}
