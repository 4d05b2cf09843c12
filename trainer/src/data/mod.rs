//! Datasets in memory: users and items with their feature rows, and ratings.
//!
//! Raw string values are mapped to embedding rows by the runtime's own
//! [`FieldSpec::rows_of`], so the trainer and the device can never disagree on a mapping.

pub mod schema;
pub mod synth;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use metarec_runtime::format::{FieldKind, FieldSpec};

use schema::{FieldDecl, Schema, Table};

/// A user or an item: id, raw field values and their embedding rows.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Id as the dataset spells it.
    pub id: String,
    /// Raw value per field (as read).
    pub raw: Vec<String>,
    /// Embedding rows per field.
    pub rows: Vec<Vec<u32>>,
    /// Known group label, if the dataset has one.
    pub group: Option<String>,
}

/// One rating, by user and item position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Index into [`Dataset::users`].
    pub user: u32,
    /// Index into [`Dataset::items`].
    pub item: u32,
    /// The rating.
    pub value: f32,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// User fields with vocabularies (embeddings empty).
    pub user_fields: Vec<FieldSpec>,
    /// Item fields with vocabularies (embeddings empty).
    pub item_fields: Vec<FieldSpec>,
    /// Users.
    pub users: Vec<Entity>,
    /// Items.
    pub items: Vec<Entity>,
    /// Ratings, in file order.
    pub ratings: Vec<Rating>,
    /// Lowest valid rating.
    pub rating_min: f32,
    /// Highest valid rating.
    pub rating_max: f32,
}

impl Dataset {
    /// Loads a plain-CSV dataset described by `DIR/schema.toml`.
    pub fn load(dir: &Path) -> Result<Dataset> {
        let schema = Schema::read(dir)?;
        let (user_fields, users) = read_table(dir, &schema.users)?;
        let (item_fields, items) = read_table(dir, &schema.items)?;
        let user_index: HashMap<&str, u32> = users.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();
        let item_index: HashMap<&str, u32> = items.iter().enumerate().map(|(i, u)| (u.id.as_str(), i as u32)).collect();

        let path = dir.join(&schema.ratings.file);
        let mut reader = csv_reader(&path)?;
        let headers = reader.headers().with_context(|| format!("{}: reading header", path.display()))?.clone();
        let column = |name: &str| column_index(&headers, name, &path);
        let (user_col, item_col, rating_col) =
            (column(&schema.ratings.user)?, column(&schema.ratings.item)?, column(&schema.ratings.rating)?);
        let mut ratings = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let line = row + 2;
            let record = record.with_context(|| format!("{}:{line}: malformed CSV row", path.display()))?;
            let field = |col: usize| record.get(col).unwrap_or("");
            let user = *user_index
                .get(field(user_col))
                .with_context(|| format!("{}:{line}: unknown user id '{}'", path.display(), field(user_col)))?;
            let item = *item_index
                .get(field(item_col))
                .with_context(|| format!("{}:{line}: unknown item id '{}'", path.display(), field(item_col)))?;
            let value: f32 = field(rating_col)
                .trim()
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite() && *v >= schema.rating_min && *v <= schema.rating_max)
                .with_context(|| {
                    format!(
                        "{}:{line}: rating '{}' is not a number in [{}, {}]",
                        path.display(),
                        field(rating_col),
                        schema.rating_min,
                        schema.rating_max
                    )
                })?;
            ratings.push(Rating { user, item, value });
        }
        if ratings.is_empty() {
            bail!("{}: no ratings", path.display());
        }
        Ok(Dataset {
            user_fields,
            item_fields,
            users,
            items,
            ratings,
            rating_min: schema.rating_min,
            rating_max: schema.rating_max,
        })
    }

    /// Ratings grouped by user, in file order.
    pub fn ratings_by_user(&self) -> Vec<Vec<Rating>> {
        let mut by_user = vec![Vec::new(); self.users.len()];
        for r in &self.ratings {
            by_user[r.user as usize].push(*r);
        }
        by_user
    }
}

fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new().has_headers(true).from_path(path).with_context(|| format!("opening {}", path.display()))
}

fn column_index(headers: &csv::StringRecord, name: &str, path: &Path) -> Result<usize> {
    headers.iter().position(|h| h == name).with_context(|| format!("{}: no column '{name}' in header", path.display()))
}

/// Reads a users or items table and builds its field vocabularies.
fn read_table(dir: &Path, table: &Table) -> Result<(Vec<FieldSpec>, Vec<Entity>)> {
    let path = dir.join(&table.file);
    let mut reader = csv_reader(&path)?;
    let headers = reader.headers().with_context(|| format!("{}: reading header", path.display()))?.clone();
    let id_col = column_index(&headers, &table.id, &path)?;
    let group_col = table.group.as_deref().map(|g| column_index(&headers, g, &path)).transpose()?;
    let field_cols = table.fields.iter().map(|f| column_index(&headers, &f.name, &path)).collect::<Result<Vec<_>>>()?;

    let mut entities = Vec::new();
    let mut seen = HashMap::new();
    for (row, record) in reader.records().enumerate() {
        let line = row + 2;
        let record = record.with_context(|| format!("{}:{line}: malformed CSV row", path.display()))?;
        let id = record.get(id_col).unwrap_or("").to_string();
        if id.is_empty() {
            bail!("{}:{line}: empty id in column '{}'", path.display(), table.id);
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            bail!("{}:{line}: duplicate id '{id}' (first on line {first})", path.display());
        }
        let raw = field_cols.iter().map(|&c| record.get(c).unwrap_or("").to_string()).collect();
        let group = group_col.map(|c| record.get(c).unwrap_or("").to_string());
        entities.push(Entity { id, raw, rows: Vec::new(), group });
    }
    if entities.is_empty() {
        bail!("{}: no rows", path.display());
    }
    let fields: Vec<FieldSpec> = table
        .fields
        .iter()
        .enumerate()
        .map(|(f, decl)| field_spec(decl, entities.iter().map(|e| e.raw[f].as_str())))
        .collect::<Result<_>>()?;
    let mut scratch = Vec::new();
    for entity in &mut entities {
        entity.rows = fields
            .iter()
            .zip(&entity.raw)
            .map(|(field, value)| {
                field.rows_of(value, &mut scratch);
                scratch.clone()
            })
            .collect();
    }
    Ok((fields, entities))
}

/// Builds a field's vocabulary (sorted distinct values) from its column.
fn field_spec<'a>(decl: &FieldDecl, values: impl Iterator<Item = &'a str>) -> Result<FieldSpec> {
    let kind = decl.kind()?;
    let vocabulary = match &kind {
        FieldKind::Categorical => values.filter(|v| !v.is_empty()).collect::<BTreeSet<&str>>(),
        FieldKind::MultiCategorical { separator } => {
            values.flat_map(|v| v.split(*separator)).filter(|v| !v.is_empty()).collect()
        }
        FieldKind::Numeric { .. } => BTreeSet::new(),
    };
    Ok(FieldSpec {
        name: decl.name.clone(),
        kind,
        vocabulary: vocabulary.into_iter().map(String::from).collect(),
        embedding: Vec::new(),
    })
}
