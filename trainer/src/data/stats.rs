//! `trainer data stats`: what a dataset holds, the figures of the PAML paper's Table 1 (per user field,
//! the share of users whose value is in the field's top-30% set) and the major/minor shares by
//! that rule, and, when the dataset has a group column, the groups it gives, each line labelled
//! with where its groups come from and which of the two `eval` and `report` use.

use core::fmt::{self, Write as _};

use super::groups::MajorMinor;
use super::Dataset;

/// Summary figures of a dataset.
#[derive(Debug, Clone)]
pub struct DataStats {
    /// Format name.
    pub format: String,
    /// Users (with at least one rating).
    pub users: usize,
    /// Items (with at least one rating).
    pub items: usize,
    /// Ratings.
    pub ratings: usize,
    /// Mean rating.
    pub mean_rating: f64,
    /// Rating scale.
    pub scale: (f32, f32),
    /// Ratings per user: min, 10%, 25%, 50%, 75%, 90%, max.
    pub per_user: [usize; 7],
    /// Ratings per item, same quantiles.
    pub per_item: [usize; 7],
    /// Share of user-item pairs that have a rating.
    pub density: f64,
    /// Users with a feature problem (the PAML protocol's filter).
    pub users_with_problems: usize,
    /// Items with a known year; of those, released up to 1997 (MeLU's existing items).
    pub items_with_year: usize,
    /// Items released up to 1997.
    pub items_up_to_1997: usize,
    /// The major/minor rule, when there are user fields.
    pub groups: Option<MajorMinor>,
    /// The labels of the dataset's group column with their user counts, sorted by label; empty
    /// when the dataset has no group column. When there is one, `eval` and `report` use it.
    pub known_groups: Vec<(String, usize)>,
    /// Whether the dataset has a group column (so `eval` and `report` group by it, not the rule).
    pub group_column: bool,
    /// Per user field: name and number of distinct values in its vocabulary.
    pub user_fields: Vec<(String, usize)>,
    /// Per item field: name and number of distinct values in its vocabulary.
    pub item_fields: Vec<(String, usize)>,
    /// The load report, as lines.
    pub report: Vec<String>,
}

/// Quantiles (nearest rank) of counts: min, 10%, 25%, 50%, 75%, 90%, max.
pub fn quantiles(mut counts: Vec<usize>) -> [usize; 7] {
    if counts.is_empty() {
        return [0; 7];
    }
    counts.sort_unstable();
    let at = |q: f64| counts[((q * (counts.len() - 1) as f64).round() as usize).min(counts.len() - 1)];
    [at(0.0), at(0.1), at(0.25), at(0.5), at(0.75), at(0.9), at(1.0)]
}

impl DataStats {
    /// Computes the figures.
    pub fn of(data: &Dataset) -> DataStats {
        let mut per_item = vec![0usize; data.items.len()];
        for r in &data.ratings {
            per_item[r.item as usize] += 1;
        }
        let groups = MajorMinor::of(data);
        let mut known_groups: Vec<(String, usize)> = Vec::new();
        if data.info.group_column {
            for user in &data.users {
                let g = match user.group.as_deref() {
                    None | Some("") => "(empty)",
                    Some(g) => g,
                };
                match known_groups.iter_mut().find(|(name, _)| name == g) {
                    Some((_, n)) => *n += 1,
                    None => known_groups.push((g.to_string(), 1)),
                }
            }
            known_groups.sort();
        }
        let years: Vec<i32> = data.info.item_year.iter().flatten().copied().collect();
        let report = &data.info.report;
        let mut lines = Vec::new();
        for (file, encoding) in &report.files {
            lines.push(format!("read {file} ({encoding})"));
        }
        for (file, reason, count, first) in &report.skipped {
            lines.push(format!("skipped {count} rows of {file}: {reason} (first: {first})"));
        }
        for (what, count) in &report.dropped {
            lines.push(format!("dropped {count} {what}"));
        }
        DataStats {
            format: data.info.format.map_or("?", |f| f.name()).to_string(),
            users: data.users.len(),
            items: data.items.len(),
            ratings: data.ratings.len(),
            mean_rating: data.ratings.iter().map(|r| f64::from(r.value)).sum::<f64>()
                / data.ratings.len().max(1) as f64,
            scale: (data.rating_min, data.rating_max),
            per_user: quantiles(data.ratings_per_user()),
            per_item: quantiles(per_item),
            density: data.ratings.len() as f64 / (data.users.len() as f64 * data.items.len() as f64).max(1.0),
            users_with_problems: data.info.user_problem.iter().filter(|p| p.is_some()).count(),
            items_with_year: years.len(),
            items_up_to_1997: years.iter().filter(|&&y| y <= 1997).count(),
            groups,
            known_groups,
            group_column: data.info.group_column,
            user_fields: data.user_fields.iter().map(|f| (f.name.clone(), f.rows() - 1)).collect(),
            item_fields: data.item_fields.iter().map(|f| (f.name.clone(), f.rows() - 1)).collect(),
            report: lines,
        }
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

impl fmt::Display for DataStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_counts(&mut out);
        self.write_fields(&mut out);
        self.write_groups(&mut out);
        for line in &self.report {
            let _ = writeln!(out, "load: {line}");
        }
        f.write_str(&out)
    }
}

impl DataStats {
    /// Users, items, ratings and the ratings per user and per item.
    fn write_counts(&self, out: &mut String) {
        let _ = writeln!(out, "format        {}", self.format);
        let _ = writeln!(out, "users         {}", self.users);
        let _ = writeln!(out, "items         {}", self.items);
        let _ = writeln!(
            out,
            "ratings       {} (scale {}..{}, mean {:.3}, density {:.4}%)",
            self.ratings,
            self.scale.0,
            self.scale.1,
            self.mean_rating,
            100.0 * self.density
        );
        let q = |q: &[usize; 7]| {
            format!(
                "min {} | p10 {} | p25 {} | median {} | p75 {} | p90 {} | max {}",
                q[0], q[1], q[2], q[3], q[4], q[5], q[6]
            )
        };
        let _ = writeln!(out, "ratings/user  {}", q(&self.per_user));
        let _ = writeln!(out, "ratings/item  {}", q(&self.per_item));
    }

    /// The user and item fields, the items' release years and the users with feature problems.
    fn write_fields(&self, out: &mut String) {
        let fields = |fields: &[(String, usize)]| {
            if fields.is_empty() {
                "none".to_string()
            } else {
                fields.iter().map(|(n, v)| format!("{n} ({v})")).collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(out, "user fields   {}", fields(&self.user_fields));
        let _ = writeln!(out, "item fields   {}", fields(&self.item_fields));
        if self.items_with_year > 0 {
            let _ = writeln!(
                out,
                "item years    {} known; {} ({:.1}%) up to 1997 (MeLU existing), {} from 1998 (new)",
                self.items_with_year,
                self.items_up_to_1997,
                percent(self.items_up_to_1997, self.items_with_year),
                self.items_with_year - self.items_up_to_1997
            );
        }
        let _ = writeln!(
            out,
            "feature problems (PAML filter: age outside 10..100, garbled location): {} users",
            self.users_with_problems
        );
    }

    /// The major/minor grouping by the paper's rule and the dataset's own group column, saying
    /// which of the two `eval` and `report` use.
    fn write_groups(&self, out: &mut String) {
        // Which of the two groupings `eval` and `report` use, said on its own line.
        let used = " [eval and report group by these]";
        let rule = "major/minor by the paper's rule (top-30% field shares):";
        match &self.groups {
            None => {
                let _ = writeln!(out, "{rule} n/a, no user fields (the user is described by their ratings alone)");
            }
            Some(groups) => {
                let _ = writeln!(out, "top-30% value sets per user field (the PAML paper, Table 1):");
                for field in &groups.fields {
                    let shown: Vec<&str> = field.major_values.iter().take(6).map(String::as_str).collect();
                    let more = field.major_values.len().saturating_sub(shown.len());
                    let _ = writeln!(
                        out,
                        "  {:<12} {:>5.1}% of users in {} of {} values: {}{}",
                        field.name,
                        percent(field.major_users, self.users),
                        field.major_values.len(),
                        field.distinct,
                        shown.join(", "),
                        if more > 0 { format!(", ... (+{more})") } else { String::new() }
                    );
                }
                let major = groups.major_count();
                let _ = writeln!(
                    out,
                    "{rule} major {} ({:.1}%), minor {} ({:.1}%) [major = at least {} fields in top sets]{}",
                    major,
                    percent(major, self.users),
                    self.users - major,
                    percent(self.users - major, self.users),
                    groups.min_fields,
                    if self.group_column { "" } else { used }
                );
            }
        }
        if self.group_column {
            let counts: Vec<String> = self
                .known_groups
                .iter()
                .map(|(group, count)| format!("{group} {count} ({:.1}%)", percent(*count, self.users)))
                .collect();
            let _ = writeln!(out, "groups from the dataset's group column: {}{used}", counts.join(", "));
        }
    }
}
