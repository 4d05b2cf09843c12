//! Major and minor users by the rule of the PAML paper: for each user field, the top 30% of its
//! distinct values by number of users (at least one value) form the field's major set; a user
//! with more than two fields in major sets is a major user, every other user is minor.
//!
//! Details the paper leaves open, fixed here:
//! - A field's value is its embedding row(s), so a numeric field's value is its bucket and the
//!   rule sees exactly what the model sees. The unknown value (row 0, an empty value) is never a
//!   major value and does not count as a distinct value.
//! - Top 30% of `n` distinct values = `max(1, floor(0.3 n))` values; ties in user count are
//!   broken by the value's rows, so the sets are deterministic.
//! - "More than two fields" needs 3 fields in major sets; a dataset with fewer than 3 user fields
//!   needs all of them (Book-Crossing has two). Without user fields there are no labels.

use std::collections::{HashMap, HashSet};

use metarec_runtime::format::{FieldKind, FieldSpec};

use super::Dataset;

/// Share of a field's distinct values that form its major set.
pub const TOP_SHARE: f64 = 0.3;
/// Fields in major sets that make a major user ("more than two").
pub const MAJOR_FIELDS: usize = 3;

/// One field's major set and how many users it covers.
#[derive(Debug, Clone)]
pub struct FieldMajor {
    /// Field name.
    pub name: String,
    /// Distinct known values among the users.
    pub distinct: usize,
    /// The major values, most users first (as display strings).
    pub major_values: Vec<String>,
    /// Users whose value is in the major set.
    pub major_users: usize,
    /// Users with a known value.
    pub known_users: usize,
}

/// The rule applied to a dataset's users.
#[derive(Debug, Clone)]
pub struct MajorMinor {
    /// Per user field, its major set.
    pub fields: Vec<FieldMajor>,
    /// Fields in major sets a user needs to be major.
    pub min_fields: usize,
    /// Per user, whether it is major.
    pub major: Vec<bool>,
}

impl MajorMinor {
    /// Applies the rule to every user of `data`; `None` when there are no user fields.
    pub fn of(data: &Dataset) -> Option<MajorMinor> {
        if data.user_fields.is_empty() {
            return None;
        }
        let mut in_major = vec![0usize; data.users.len()];
        let mut fields = Vec::new();
        for (f, spec) in data.user_fields.iter().enumerate() {
            let known = |rows: &[u32]| !rows.is_empty() && rows.iter().any(|&r| r != 0);
            let mut counts: HashMap<&[u32], usize> = HashMap::new();
            for user in &data.users {
                let rows = user.rows[f].as_slice();
                if known(rows) {
                    *counts.entry(rows).or_default() += 1;
                }
            }
            let mut ranked: Vec<(&[u32], usize)> = counts.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let take = ((ranked.len() as f64 * TOP_SHARE).floor() as usize).max(1).min(ranked.len());
            let major: HashSet<&[u32]> = ranked[..take].iter().map(|(rows, _)| *rows).collect();
            let mut major_users = 0;
            for (user, count) in data.users.iter().zip(&mut in_major) {
                if major.contains(user.rows[f].as_slice()) {
                    *count += 1;
                    major_users += 1;
                }
            }
            fields.push(FieldMajor {
                name: spec.name.clone(),
                distinct: ranked.len(),
                major_values: ranked[..take].iter().map(|(rows, _)| describe(spec, rows)).collect(),
                major_users,
                known_users: ranked.iter().map(|(_, n)| n).sum(),
            });
        }
        let min_fields = MAJOR_FIELDS.min(data.user_fields.len());
        let major = in_major.into_iter().map(|n| n >= min_fields).collect();
        Some(MajorMinor { fields, min_fields, major })
    }

    /// Number of major users.
    pub fn major_count(&self) -> usize {
        self.major.iter().filter(|&&m| m).count()
    }
}

/// A value (its rows) as text: the vocabulary entry, or a numeric bucket as `[lo, hi)`.
pub fn describe(spec: &FieldSpec, rows: &[u32]) -> String {
    let one = |row: u32| -> String {
        match &spec.kind {
            FieldKind::Numeric { bounds } => {
                let r = row as usize;
                match (r.checked_sub(2).and_then(|i| bounds.get(i)), r.checked_sub(1).and_then(|i| bounds.get(i))) {
                    (None, Some(hi)) => format!("<{hi}"),
                    (Some(lo), Some(hi)) => format!("[{lo}, {hi})"),
                    (Some(lo), None) => format!(">={lo}"),
                    (None, None) => "?".into(),
                }
            }
            _ => {
                row.checked_sub(1).and_then(|i| spec.vocabulary.get(i as usize)).cloned().unwrap_or_else(|| "?".into())
            }
        }
    };
    rows.iter().map(|&r| one(r)).collect::<Vec<_>>().join("|")
}
