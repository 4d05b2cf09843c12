//! The item catalogue as a loaded model keeps it: a few flat arrays instead of one record per
//! item. [`crate::format::ItemRecord`] (an id `String` and a `Vec` of rows per item field) costs
//! about 170 bytes an item in allocations for a 4-field item; here an item costs its id's bytes,
//! 4 bytes for where the id ends, 4 for its place in the id order and 4 per field row (30 bytes
//! for the bench's items): 3 MB for 100,000 items, 31 MB for 1,000,000.
//!
//! The arrays are those of the aligned layout of 2.4 ([`crate::format::ItemTables`]): a model
//! loaded from such a file copies them ([`Catalogue::copied`]) or, from a buffer that outlives
//! it, uses them where they lie ([`Catalogue::in_place`]). Either way every value is checked
//! before use ([`Catalogue::checked`]), as [`Catalogue::new`] checks the records of older files.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Deref;

use crate::error::{Error, Result};
use crate::format::{FieldKind, FieldSpec, ItemRecord, ItemTables, ModelBody};
use crate::limits::{MAX_CANDIDATES, MAX_STRING_LEN};

/// Values the model owns, or borrows from the buffer it was loaded from (whose owner promised
/// to keep it alive and unchanged while the model lives: [`crate::Model::from_bytes_borrowed`]).
#[derive(Debug, Clone)]
pub(crate) enum Slab<T: 'static> {
    Owned(Vec<T>),
    Borrowed(&'static [T]),
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::Owned(Vec::new())
    }
}

impl<T> Deref for Slab<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Slab::Owned(values) => values,
            Slab::Borrowed(values) => values,
        }
    }
}

impl<T> Slab<T> {
    /// Bytes the slab holds on the heap (none when borrowed).
    fn heap_bytes(&self) -> usize {
        match self {
            Slab::Owned(values) => values.capacity() * core::mem::size_of::<T>(),
            Slab::Borrowed(_) => 0,
        }
    }
}

/// Little-endian u32s decoded into a vector.
fn words_copied(bytes: &[u8]) -> Result<Slab<u32>> {
    let mut words = Vec::new();
    words.try_reserve_exact(bytes.len() / 4).map_err(|_| Error::InconsistentDimensions)?;
    words.extend(bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    Ok(Slab::Owned(words))
}

/// Little-endian u32s used where they lie when this CPU is little-endian and `bytes` is 4-byte
/// aligned, else decoded into a vector.
fn words_in_place(bytes: &'static [u8]) -> Result<Slab<u32>> {
    if cfg!(target_endian = "little") {
        // SAFETY: every bit pattern is a valid u32, and `align_to` puts in the middle part only
        // whole, aligned u32s inside `bytes`; on a little-endian CPU they read as the file's
        // little-endian values. The borrow is as long as `bytes`'s.
        let (head, words, tail) = unsafe { bytes.align_to::<u32>() };
        if head.is_empty() && tail.is_empty() {
            return Ok(Slab::Borrowed(words));
        }
    }
    words_copied(bytes)
}

/// Every item's id and embedding rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalogue {
    /// Every id's bytes, one after the other (each valid UTF-8).
    ids: Slab<u8>,
    /// Where item `i`'s id ends in `ids` (it starts where item `i - 1`'s ends, or at 0).
    id_ends: Slab<u32>,
    /// Item indices sorted by id (binary-searchable).
    by_id: Slab<u32>,
    /// Every item's embedding rows.
    rows: ItemRows,
}

impl Catalogue {
    /// The catalogue of `body`, checked: every item has one row list per item field, one row for
    /// a field that is not multi-categorical, rows inside the field's table, and a unique id.
    ///
    /// Errors: [`Error::InconsistentDimensions`] for an item that breaks those rules, more than
    /// `u32::MAX` items, id bytes or rows, or a catalogue that cannot be allocated.
    pub(crate) fn new(body: &ModelBody) -> Result<Catalogue> {
        let bad = Error::InconsistentDimensions;
        let count = u32::try_from(body.items.len()).map_err(|_| bad)?;
        for item in &body.items {
            check_rows(body, item)?;
        }
        let id_bytes: usize = body.items.iter().map(|item| item.id.len()).sum();
        u32::try_from(id_bytes).map_err(|_| bad)?;
        let (mut ids, mut id_ends) = (Vec::new(), Vec::new());
        ids.try_reserve_exact(id_bytes).map_err(|_| bad)?;
        id_ends.try_reserve_exact(body.items.len()).map_err(|_| bad)?;
        for item in &body.items {
            ids.extend_from_slice(item.id.as_bytes());
            // At most `id_bytes`, checked above to fit.
            id_ends.push(ids.len() as u32);
        }
        let mut catalogue = Catalogue {
            ids: Slab::Owned(ids),
            id_ends: Slab::Owned(id_ends),
            by_id: Slab::default(),
            rows: ItemRows::new(body)?,
        };
        let mut order: Vec<u32> = Vec::new();
        order.try_reserve_exact(body.items.len()).map_err(|_| bad)?;
        order.extend(0..count);
        let id = |i: u32| catalogue.id_bytes(i);
        order.sort_unstable_by(|&a, &b| id(a).cmp(id(b)));
        if order.windows(2).any(|pair| id(pair[0]) == id(pair[1])) {
            return Err(bad);
        }
        catalogue.by_id = Slab::Owned(order);
        Ok(catalogue)
    }

    /// The catalogue of a file's aligned tables, copied out of the file, then
    /// [`Catalogue::checked`].
    pub(crate) fn copied(tables: &ItemTables<'_>, fields: &[FieldSpec]) -> Result<Catalogue> {
        let mut ids = Vec::new();
        ids.try_reserve_exact(tables.ids.len()).map_err(|_| Error::InconsistentDimensions)?;
        ids.extend_from_slice(tables.ids);
        let catalogue = Catalogue {
            ids: Slab::Owned(ids),
            id_ends: words_copied(tables.id_ends)?,
            by_id: words_copied(tables.by_id)?,
            rows: ItemRows {
                fields: fields.len(),
                offsets: words_copied(tables.offsets)?,
                rows: words_copied(tables.rows)?,
            },
        };
        catalogue.checked(fields, tables.items)
    }

    /// The catalogue of a file's aligned tables used where they lie (each array that is
    /// 4-byte aligned, on a little-endian CPU; copied otherwise), then [`Catalogue::checked`].
    pub(crate) fn in_place(tables: &ItemTables<'static>, fields: &[FieldSpec]) -> Result<Catalogue> {
        let catalogue = Catalogue {
            ids: Slab::Borrowed(tables.ids),
            id_ends: words_in_place(tables.id_ends)?,
            by_id: words_in_place(tables.by_id)?,
            rows: ItemRows {
                fields: fields.len(),
                offsets: words_in_place(tables.offsets)?,
                rows: words_in_place(tables.rows)?,
            },
        };
        catalogue.checked(fields, tables.items)
    }

    /// The catalogue if every value of its arrays is what [`Catalogue::new`] would build from
    /// valid records: `items` items, at most [`MAX_CANDIDATES`] ([`Error::ModelTooLarge`]);
    /// ids that end in order at the end of `ids`, each UTF-8 and at most [`MAX_STRING_LEN`]
    /// bytes ([`Error::ModelTooLarge`]); `by_id` the item indices in strictly ascending order of
    /// id (so unique ids); rows as [`check_rows`] asks. [`Error::InconsistentDimensions`]
    /// otherwise.
    fn checked(self, fields: &[FieldSpec], items: usize) -> Result<Catalogue> {
        let bad = Error::InconsistentDimensions;
        if items > MAX_CANDIDATES {
            return Err(Error::ModelTooLarge);
        }
        if self.id_ends.len() != items || self.by_id.len() != items {
            return Err(bad);
        }
        let text = core::str::from_utf8(&self.ids).map_err(|_| bad)?;
        let mut start = 0usize;
        for &end in self.id_ends.iter() {
            let end = end as usize;
            if end < start || !text.is_char_boundary(end) {
                return Err(bad);
            }
            if end - start > MAX_STRING_LEN {
                return Err(Error::ModelTooLarge);
            }
            start = end;
        }
        if start != self.ids.len() {
            return Err(bad);
        }
        if self.by_id.iter().any(|&i| i as usize >= items)
            || self.by_id.windows(2).any(|pair| self.id_bytes(pair[0]) >= self.id_bytes(pair[1]))
        {
            return Err(bad);
        }
        self.rows.check(fields, items)?;
        Ok(self)
    }

    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// Item `index`'s id bytes; empty when out of range.
    fn id_bytes(&self, index: u32) -> &[u8] {
        let index = index as usize;
        let Some(&end) = self.id_ends.get(index) else { return &[] };
        let start = match index.checked_sub(1) {
            Some(before) => self.id_ends.get(before).copied().unwrap_or(0),
            None => 0,
        };
        self.ids.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// Id of the item at `index`.
    pub(crate) fn id(&self, index: u32) -> Option<&str> {
        if index as usize >= self.len() {
            return None;
        }
        core::str::from_utf8(self.id_bytes(index)).ok()
    }

    /// Index of the item with this id, in O(log n).
    pub(crate) fn index(&self, id: &str) -> Option<u32> {
        let position = self.by_id.binary_search_by(|&i| self.id_bytes(i).cmp(id.as_bytes())).ok()?;
        self.by_id.get(position).copied()
    }

    /// Item `item`'s rows of item field `field`, if both are in range.
    #[inline]
    pub(crate) fn rows(&self, item: u32, field: usize) -> Option<&[u32]> {
        self.rows.rows(item, field)
    }

    /// Item `item`'s rows over its fields' stacked tables, field `f`'s starting at `starts[f]`
    /// (one start per item field).
    pub(crate) fn stacked<'a>(&'a self, item: u32, starts: &'a [usize]) -> StackedRows<'a> {
        StackedRows { catalogue: self, starts, item }
    }

    /// The items as the file's records (what [`crate::Model::to_body`] gives back).
    pub(crate) fn records(&self) -> Vec<ItemRecord> {
        (0..self.len() as u32)
            .map(|i| ItemRecord {
                id: self.id(i).map(String::from).unwrap_or_default(),
                rows: (0..self.rows.fields).map(|f| self.rows(i, f).unwrap_or(&[]).to_vec()).collect(),
            })
            .collect()
    }

    /// Bytes on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ids.heap_bytes() + self.id_ends.heap_bytes() + self.by_id.heap_bytes() + self.rows.heap_bytes()
    }
}

/// One item's embedding rows with each field's offset into a stack of the fields' tables
/// ([`Catalogue::stacked`]): what the kernels that sum an item's precomputed rows read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackedRows<'a> {
    catalogue: &'a Catalogue,
    starts: &'a [usize],
    item: u32,
}

impl<'a> StackedRows<'a> {
    /// Number of item fields.
    #[inline(always)]
    pub(crate) fn fields(&self) -> usize {
        self.starts.len()
    }

    /// The item.
    #[inline(always)]
    pub(crate) fn item(&self) -> u32 {
        self.item
    }

    /// Field `f`'s start in the stack and its rows; None if out of range.
    #[inline(always)]
    pub(crate) fn field(&self, f: usize) -> Option<(usize, &'a [u32])> {
        Some((*self.starts.get(f)?, self.catalogue.rows(self.item, f)?))
    }
}

/// One row list per item field, one row unless the field is multi-categorical, each inside its
/// field's table.
fn check_rows(body: &ModelBody, item: &ItemRecord) -> Result<()> {
    let bad = Error::InconsistentDimensions;
    if item.rows.len() != body.item_fields.len() {
        return Err(bad);
    }
    for (field, rows) in body.item_fields.iter().zip(&item.rows) {
        let single = !matches!(field.kind, FieldKind::MultiCategorical { .. });
        if single && rows.len() != 1 {
            return Err(bad);
        }
        let limit = field.rows();
        if rows.iter().any(|&row| row as usize >= limit) {
            return Err(bad);
        }
    }
    Ok(())
}

/// Every item's embedding rows, one flat table: item `i`'s rows of item field `f` are entry
/// `i × fields + f`. When every item field holds exactly one row per item (categorical and
/// numeric fields) the entry is that row and `offsets` is empty; otherwise (a multi-categorical
/// field) entry `e` is `rows[offsets[e]..offsets[e + 1]]`.
#[derive(Debug, Clone, Default)]
struct ItemRows {
    fields: usize,
    offsets: Slab<u32>,
    rows: Slab<u32>,
}

impl ItemRows {
    /// The flat table of a body whose items were checked ([`check_rows`]).
    ///
    /// Errors: [`Error::InconsistentDimensions`] when it cannot be allocated, or holds more than
    /// `u32::MAX` rows.
    fn new(body: &ModelBody) -> Result<ItemRows> {
        let bad = Error::InconsistentDimensions;
        let fields = body.item_fields.len();
        let single = body.items.iter().all(|item| item.rows.iter().all(|rows| rows.len() == 1));
        let total: usize = body.items.iter().flat_map(|item| &item.rows).map(Vec::len).sum();
        u32::try_from(total).map_err(|_| bad)?;
        let (mut offsets, mut flat) = (Vec::new(), Vec::new());
        flat.try_reserve_exact(total).map_err(|_| bad)?;
        if !single {
            let entries = body.items.len().checked_mul(fields).and_then(|n| n.checked_add(1)).ok_or(bad)?;
            offsets.try_reserve_exact(entries).map_err(|_| bad)?;
            offsets.push(0);
        }
        for rows in body.items.iter().flat_map(|item| &item.rows) {
            flat.extend_from_slice(rows);
            if !single {
                // At most `total`, checked above to fit.
                offsets.push(flat.len() as u32);
            }
        }
        Ok(ItemRows { fields, offsets: Slab::Owned(offsets), rows: Slab::Owned(flat) })
    }

    /// Whether the table is one of `items` items over `fields` as [`ItemRows::new`] builds from
    /// records that pass [`check_rows`]: [`Error::InconsistentDimensions`] if not.
    fn check(&self, fields: &[FieldSpec], items: usize) -> Result<()> {
        let bad = Error::InconsistentDimensions;
        let entries = items.checked_mul(fields.len()).ok_or(bad)?;
        let limit = |e: usize| fields.get(e % fields.len().max(1)).map_or(0, FieldSpec::rows);
        if self.offsets.is_empty() {
            if self.rows.len() != entries || self.rows.iter().enumerate().any(|(e, &row)| row as usize >= limit(e)) {
                return Err(bad);
            }
            return Ok(());
        }
        if self.offsets.len() != entries.checked_add(1).ok_or(bad)? || self.offsets.first() != Some(&0) {
            return Err(bad);
        }
        for (e, pair) in self.offsets.windows(2).enumerate() {
            let (start, end) = (pair[0] as usize, pair[1] as usize);
            let rows = self.rows.get(start..end).ok_or(bad)?;
            let field = fields.get(e % fields.len().max(1)).ok_or(bad)?;
            let single = !matches!(field.kind, FieldKind::MultiCategorical { .. });
            if (single && rows.len() != 1) || rows.iter().any(|&row| row as usize >= field.rows()) {
                return Err(bad);
            }
        }
        if self.offsets.last().map(|&end| end as usize) != Some(self.rows.len()) {
            return Err(bad);
        }
        Ok(())
    }

    /// Item `item`'s rows of field `field`, if in range.
    #[inline]
    fn rows(&self, item: u32, field: usize) -> Option<&[u32]> {
        if field >= self.fields {
            return None;
        }
        let entry = (item as usize).checked_mul(self.fields)?.checked_add(field)?;
        if self.offsets.is_empty() {
            return self.rows.get(entry..entry.checked_add(1)?);
        }
        let start = *self.offsets.get(entry)? as usize;
        let end = *self.offsets.get(entry.checked_add(1)?)? as usize;
        self.rows.get(start..end)
    }

    fn heap_bytes(&self) -> usize {
        self.offsets.heap_bytes() + self.rows.heap_bytes()
    }
}
