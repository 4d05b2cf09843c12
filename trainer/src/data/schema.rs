//! The plain-CSV dataset layout: a `schema.toml` naming the files, id columns and feature
//! fields. The synthetic generator writes this layout, and users can describe their own data
//! with it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use metarec_runtime::format::FieldKind;
use serde::{Deserialize, Serialize};

/// File name of the schema inside a dataset directory.
pub const SCHEMA_FILE: &str = "schema.toml";

/// The whole schema file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Lowest valid rating.
    pub rating_min: f32,
    /// Highest valid rating.
    pub rating_max: f32,
    /// The users table.
    pub users: Table,
    /// The items table.
    pub items: Table,
    /// The ratings table.
    pub ratings: RatingsTable,
}

/// A users or items table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// CSV file, relative to the dataset directory.
    pub file: String,
    /// Column holding the id.
    pub id: String,
    /// Optional column with a known group label (the synthetic data's major/minor truth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Items only, optional: column with the release year (a whole number; empty when unknown),
    /// which the MeLU protocol splits existing from new items by. It may also be a field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<String>,
    /// Feature fields, in model input order.
    #[serde(default)]
    pub fields: Vec<FieldDecl>,
}

/// One feature field of a table, e.g. `{ name = "genres", kind = "multi", separator = "|" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDecl {
    /// Column name.
    pub name: String,
    /// How the column's values become embedding rows.
    pub kind: FieldKindName,
    /// Separator of a `multi` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<char>,
    /// Ascending bucket boundaries of a `numeric` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Vec<f32>>,
}

/// Field kinds as spelled in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKindName {
    /// One value per row.
    Categorical,
    /// Several values joined by `separator`.
    Multi,
    /// A number, bucketed by `bounds`.
    Numeric,
}

impl FieldDecl {
    /// The runtime's field kind for this declaration (checked by [`Schema::read`]).
    pub fn kind(&self) -> Result<FieldKind> {
        Ok(match (self.kind, self.separator, &self.bounds) {
            (FieldKindName::Categorical, None, None) => FieldKind::Categorical,
            (FieldKindName::Multi, Some(separator), None) => FieldKind::MultiCategorical { separator },
            (FieldKindName::Numeric, None, Some(bounds)) => {
                if bounds.windows(2).any(|w| w[0] >= w[1]) || bounds.iter().any(|b| !b.is_finite()) {
                    bail!("field '{}': bounds must be finite and strictly ascending", self.name);
                }
                FieldKind::Numeric { bounds: bounds.clone() }
            }
            (FieldKindName::Multi, None, _) => bail!("field '{}': kind \"multi\" needs a separator", self.name),
            (FieldKindName::Numeric, _, None) => bail!("field '{}': kind \"numeric\" needs bounds", self.name),
            _ => {
                bail!("field '{}': separator belongs to kind \"multi\" and bounds to kind \"numeric\" only", self.name)
            }
        })
    }
}
/// The ratings table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingsTable {
    /// CSV file, relative to the dataset directory.
    pub file: String,
    /// Column with the user id.
    pub user: String,
    /// Column with the item id.
    pub item: String,
    /// Column with the rating.
    pub rating: String,
}

impl Schema {
    /// Reads and checks `DIR/schema.toml`.
    pub fn read(dir: &Path) -> Result<Schema> {
        let path = dir.join(SCHEMA_FILE);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("reading dataset schema {}", path.display()))?;
        let schema: Schema = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        schema.check().with_context(|| format!("in {}", path.display()))?;
        Ok(schema)
    }

    fn check(&self) -> Result<()> {
        if !(self.rating_min.is_finite() && self.rating_max.is_finite()) || self.rating_min >= self.rating_max {
            bail!("rating_min ({}) must be below rating_max ({})", self.rating_min, self.rating_max);
        }
        if let Some(year) = &self.users.year {
            bail!("[users] year = \"{year}\": release years belong to [items] (year = \"COLUMN\")");
        }
        for (table, fields) in [("users", &self.users.fields), ("items", &self.items.fields)] {
            if fields.is_empty() {
                bail!("[{table}] declares no fields; the model needs at least one");
            }
            for field in fields {
                field.kind().with_context(|| format!("[{table}]"))?;
            }
        }
        Ok(())
    }
}
