//! The report's Markdown (tables in the papers' shapes, reproduction record) and `metrics.csv`.

use core::fmt::Write as _;
use std::path::PathBuf;

use super::stats::{mean, paired_t_test, std_dev, student_t_test};
use super::{group_of, shell_quote, Collected, Protocol, ReportArgs, Row, RowKind};
use crate::data::Dataset;
use crate::eval::{self, UserPredictions};
use crate::method::Method;
use crate::split::State;

/// Everything the tables need besides the results.
#[derive(Debug)]
pub(super) struct Context<'a> {
    pub args: &'a ReportArgs,
    pub command_line: &'a [String],
    pub data: &'a Dataset,
    pub fingerprint: u32,
    pub device: String,
    pub set_titles: &'a [&'static str],
    pub primary: usize,
    pub groups: Option<[String; 2]>,
    pub seeds: Vec<u64>,
}

/// Query metrics of one row, seed and evaluation set.
#[derive(Debug, Clone, Copy)]
pub(super) struct SetMetrics {
    pub mse: f64,
    pub mae: f64,
    pub rmse: f64,
    pub ndcg3: f64,
    pub ndcg5: f64,
    pub ndcg10: f64,
    pub users: usize,
}

pub(super) fn set_metrics(users: &[UserPredictions]) -> SetMetrics {
    let m = eval::metrics(users);
    SetMetrics {
        mse: m.mse,
        mae: m.mae,
        rmse: m.mse.sqrt(),
        ndcg3: m.ndcg3,
        ndcg5: eval::mean_ndcg(users, 5),
        ndcg10: eval::mean_ndcg(users, 10),
        users: users.len(),
    }
}

/// Which way a column improves (for the bold best cell).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
    Neither,
}

/// A cell: its text and the number that ranks it.
#[derive(Debug, Clone)]
struct Cell {
    text: String,
    value: Option<f64>,
}

impl Cell {
    fn text(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), value: None }
    }
}

/// A Markdown table whose best cell per ranked column is bold.
#[derive(Debug)]
struct Table {
    columns: Vec<(String, Better)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn new(columns: &[(&str, Better)]) -> Table {
        Table { columns: columns.iter().map(|(c, b)| (c.to_string(), *b)).collect(), rows: Vec::new() }
    }

    fn render(&self) -> String {
        let mut rows: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(|c| c.text.clone()).collect()).collect();
        for (c, (_, better)) in self.columns.iter().enumerate() {
            let values = self.rows.iter().filter_map(|r| r.get(c).and_then(|cell| cell.value));
            let best = match better {
                Better::Lower => values.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v)))),
                Better::Higher => values.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v)))),
                Better::Neither => None,
            };
            let Some(best) = best else { continue };
            for (r, row) in self.rows.iter().enumerate() {
                if row.get(c).and_then(|cell| cell.value) == Some(best) {
                    rows[r][c] = format!("**{}**", rows[r][c]);
                }
            }
        }
        let mut out = String::new();
        let header: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let rule: Vec<&str> = (0..header.len()).map(|c| if c == 0 { "---" } else { "---:" }).collect();
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for row in rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// `mean ± std` over seeds (the mean alone for one seed); the mean ranks the cell.
fn mean_std(values: &[f64], digits: usize) -> Cell {
    if values.is_empty() {
        return Cell::text("—");
    }
    let m = mean(values);
    let text = if values.len() == 1 {
        format!("{m:.digits$}")
    } else {
        format!("{m:.digits$} ± {:.digits$}", std_dev(values))
    };
    Cell { text, value: Some(m) }
}

fn p_text(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

impl Row {
    /// The row's metric per seed on evaluation set `set`.
    fn per_seed(&self, set: usize, pick: impl Fn(&SetMetrics) -> f64) -> Vec<f64> {
        self.seeds.iter().map(|(_, sets)| pick(&set_metrics(&sets[set]))).collect()
    }

    /// Per-user MSEs on `set` pooled over seeds (optionally of one group).
    fn user_mses(&self, set: usize, keep: impl Fn(u32) -> bool) -> Vec<f64> {
        self.seeds.iter().flat_map(|(_, sets)| sets[set].iter().filter(|u| keep(u.user)).map(eval::user_mse)).collect()
    }

    fn seeds_note(&self, total: usize) -> String {
        if self.seeds.len() == total {
            String::new()
        } else {
            format!(" ({} of {total} seeds)", self.seeds.len())
        }
    }
}

/// The best trivial baseline on `set`: lowest mean MSE over seeds.
fn best_baseline(rows: &[Row], set: usize) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.kind == RowKind::Baseline)
        .min_by(|a, b| mean(&a.per_seed(set, |m| m.mse)).total_cmp(&mean(&b.per_seed(set, |m| m.mse))))
}

/// Paired t-test of per-user MSEs between `row` and `reference` over the seeds both have.
fn paired_vs(row: &Row, reference: &Row, set: usize) -> Option<super::stats::TTest> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (seed, sets) in &row.seeds {
        let Some((_, other)) = reference.seeds.iter().find(|(s, _)| s == seed) else { continue };
        for (x, y) in sets[set].iter().zip(&other[set]) {
            debug_assert_eq!(x.user, y.user);
            a.push(eval::user_mse(x));
            b.push(eval::user_mse(y));
        }
    }
    paired_t_test(&a, &b)
}

fn ordered(rows: &[Row], kinds: impl Fn(&RowKind) -> bool) -> Vec<&Row> {
    rows.iter().filter(|r| kinds(&r.kind)).collect()
}

/// Table 2 of the PAML paper on the primary set.
fn table2(context: &Context<'_>, rows: &[Row]) -> String {
    let set = context.primary;
    let total = context.seeds.len();
    let best = best_baseline(rows, set);
    let p_title = match best {
        Some(b) => format!("p vs {}", b.name),
        None => "p vs best baseline".into(),
    };
    // The test against matrix factorisation gets its own column unless it is the best baseline.
    let factors = rows
        .iter()
        .find(|r| r.kind == RowKind::Baseline && r.name == Method::Mf.title())
        .filter(|f| best.is_none_or(|b| b.name != f.name));
    let p_factors_title = format!("p vs {}", Method::Mf.title());
    let mut columns = vec![
        ("method", Better::Neither),
        ("MSE", Better::Lower),
        ("nDCG@3", Better::Higher),
        ("nDCG@5", Better::Higher),
        ("MSE without adaptation", Better::Neither),
        (p_title.as_str(), Better::Neither),
    ];
    if factors.is_some() {
        columns.push((p_factors_title.as_str(), Better::Neither));
    }
    let mut table = Table::new(&columns);
    let listed = ordered(rows, |k| matches!(k, RowKind::Method(_) | RowKind::Baseline));
    for row in listed {
        let mse_values = row.per_seed(set, |m| m.mse);
        let mut mse = mean_std(&mse_values, 4);
        let test = best.filter(|b| b.name != row.name).and_then(|b| paired_vs(row, b, set));
        let versus_factors = factors.filter(|f| f.name != row.name).and_then(|f| paired_vs(row, f, set));
        if let (Some(t), Some(b)) = (test, best) {
            if t.p < 0.05 && mean(&mse_values) < mean(&b.per_seed(set, |m| m.mse)) {
                mse.text += " †";
            }
        }
        let no_adaptation = match row.kind {
            RowKind::Method(m) => rows
                .iter()
                .find(|r| r.kind == RowKind::NoAdaptation(m))
                .map_or_else(|| Cell::text("—"), |r| mean_std(&r.per_seed(set, |m| m.mse), 4)),
            _ => Cell::text("—"),
        };
        let mut cells = vec![
            Cell::text(format!("{}{}", row.name, row.seeds_note(total))),
            mse,
            mean_std(&row.per_seed(set, |m| m.ndcg3), 4),
            mean_std(&row.per_seed(set, |m| m.ndcg5), 4),
            no_adaptation,
            Cell::text(test.map_or_else(|| "—".into(), |t| p_text(t.p))),
        ];
        if factors.is_some() {
            cells.push(Cell::text(versus_factors.map_or_else(|| "—".into(), |t| p_text(t.p))));
        }
        table.rows.push(cells);
    }
    table.render()
}

/// The group columns of a row: MSE of each group (mean ± std over seeds), the p-value between
/// the groups' per-user MSEs, users per seed.
fn group_cells(context: &Context<'_>, row: &Row, set: usize) -> Vec<Cell> {
    if context.groups.is_none() {
        return Vec::new();
    }
    let data = context.data;
    let in_group = |g: usize| move |user: u32| group_of(data, &context.groups, user) == Some(g);
    let mut cells = Vec::new();
    for g in 0..2 {
        let per_seed: Vec<f64> = row
            .seeds
            .iter()
            .map(|(_, sets)| {
                let members: Vec<UserPredictions> = sets[set].iter().filter(|u| in_group(g)(u.user)).cloned().collect();
                eval::metrics(&members).mse
            })
            .filter(|v| v.is_finite())
            .collect();
        cells.push(mean_std(&per_seed, 4));
    }
    let (major, minor) = (row.user_mses(set, in_group(0)), row.user_mses(set, in_group(1)));
    let p = student_t_test(&major, &minor);
    cells.push(Cell::text(p.map_or_else(|| "—".into(), |t| p_text(t.p))));
    let per_seed = row.seeds.len().max(1) as f64;
    cells.push(Cell::text(format!("{:.0} / {:.0}", major.len() as f64 / per_seed, minor.len() as f64 / per_seed)));
    cells
}

fn group_columns(context: &Context<'_>) -> Vec<(String, Better)> {
    match &context.groups {
        Some([a, b]) => vec![
            (format!("MSE {a}"), Better::Lower),
            (format!("MSE {b}"), Better::Lower),
            (format!("p ({a} vs {b})"), Better::Neither),
            (format!("users {a} / {b} per seed"), Better::Neither),
        ],
        None => Vec::new(),
    }
}

/// Table 3 of the PAML paper on the primary set.
fn table3(context: &Context<'_>, rows: &[Row]) -> String {
    let set = context.primary;
    let mut columns = vec![("method".to_string(), Better::Neither)];
    columns.extend(group_columns(context));
    let mut table = Table { columns, rows: Vec::new() };
    for row in ordered(rows, |k| matches!(k, RowKind::Method(_) | RowKind::Baseline)) {
        let mut cells = vec![Cell::text(format!("{}{}", row.name, row.seeds_note(context.seeds.len())))];
        cells.extend(group_cells(context, row, set));
        table.rows.push(cells);
    }
    table.render()
}

/// A Table 4 part: MSE, nDCG@3, nDCG@5 and the group columns for the given rows.
fn table4(context: &Context<'_>, rows: &[&Row], first: &str) -> String {
    let set = context.primary;
    let mut columns = vec![
        (first.to_string(), Better::Neither),
        ("MSE".into(), Better::Lower),
        ("nDCG@3".into(), Better::Higher),
        ("nDCG@5".into(), Better::Higher),
    ];
    columns.extend(group_columns(context));
    let mut table = Table { columns, rows: Vec::new() };
    for row in rows {
        let mut cells = vec![
            Cell::text(format!("{}{}", row.name, row.seeds_note(context.seeds.len()))),
            mean_std(&row.per_seed(set, |m| m.mse), 4),
            mean_std(&row.per_seed(set, |m| m.ndcg3), 4),
            mean_std(&row.per_seed(set, |m| m.ndcg5), 4),
        ];
        cells.extend(group_cells(context, row, set));
        table.rows.push(cells);
    }
    table.render()
}

/// Table 2 of the HML paper: MAE, RMSE, nDCG@10 per MeLU state.
fn melu_table(context: &Context<'_>, rows: &[Row]) -> String {
    let mut columns = vec![("method".to_string(), Better::Neither)];
    for title in context.set_titles {
        columns.push((format!("MAE ({title})"), Better::Lower));
        columns.push((format!("RMSE ({title})"), Better::Lower));
        columns.push((format!("nDCG@10 ({title})"), Better::Higher));
    }
    let mut table = Table { columns, rows: Vec::new() };
    for row in ordered(rows, |k| matches!(k, RowKind::Method(_) | RowKind::Baseline)) {
        let mut cells = vec![Cell::text(format!("{}{}", row.name, row.seeds_note(context.seeds.len())))];
        for set in 0..context.set_titles.len() {
            cells.push(mean_std(&row.per_seed(set, |m| m.mae), 4));
            cells.push(mean_std(&row.per_seed(set, |m| m.rmse), 4));
            cells.push(mean_std(&row.per_seed(set, |m| m.ndcg10), 4));
        }
        table.rows.push(cells);
    }
    table.render()
}

fn set_slugs(protocol: Protocol) -> Vec<&'static str> {
    match protocol {
        Protocol::Paml => vec!["test"],
        Protocol::Melu => State::ALL.iter().map(|s| s.name()).collect(),
    }
}

/// `metrics.csv`: one line per row × seed × evaluation set.
pub(super) fn metrics_csv(context: &Context<'_>, rows: &[Row]) -> String {
    let slugs = set_slugs(context.args.protocol);
    let mut out = String::from("row,kind,seed,set,users,mse,mae,rmse,ndcg3,ndcg5,ndcg10\n");
    for row in rows {
        let kind = match row.kind {
            RowKind::Method(_) => "method",
            RowKind::NoAdaptation(_) => "without-adaptation",
            RowKind::Baseline => "baseline",
            RowKind::Gamma(_) => "ablation",
        };
        for (seed, sets) in &row.seeds {
            for (s, users) in sets.iter().enumerate() {
                let m = set_metrics(users);
                let _ = writeln!(
                    out,
                    "\"{}\",{kind},{seed},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
                    row.name.replace('"', "\"\""),
                    slugs[s],
                    m.users,
                    m.mse,
                    m.mae,
                    m.rmse,
                    m.ndcg3,
                    m.ndcg5,
                    m.ndcg10
                );
            }
        }
    }
    out
}

/// The whole `report.md`.
pub(super) fn markdown(
    context: &Context<'_>,
    collected: &Collected,
    seconds_per_method: &[(String, f64)],
    figures: &[PathBuf],
    figure_notes: &[String],
    seconds: f64,
) -> String {
    let args = context.args;
    let rows = &collected.rows;
    let set_title = context.set_titles[context.primary];
    let mut out = String::new();
    write_intro(&mut out, context);
    write_table2_section(&mut out, context, rows);
    write_table3_section(&mut out, context, rows);
    write_table4_section(&mut out, context, rows);

    if args.protocol == Protocol::Melu {
        let _ = writeln!(out, "## Table 2 of the HML paper: MeLU protocol, every state\n");
        out += &melu_table(context, rows);
        let _ = writeln!(
            out,
            "\nStates: existing users, existing items (warm; the training users' own warm tasks, as MeLU reports \
             it); new users (user-cold); new items (item-cold: training users' ratings of items released 1998 on); \
             new users, new items.\n"
        );
    }

    if !collected.at_paml_rates.is_empty() {
        let _ = writeln!(out, "## AT-PAML personalized learning rates (seed {}, {set_title})\n", context.seeds[0]);
        out += &rates_table(context, &collected.at_paml_rates);
        out.push('\n');
    }

    write_figures_section(&mut out, context, figures, figure_notes);
    out += &runs_section(collected, seconds_per_method);
    out += &reproduce_section(context, collected, seconds);
    out
}

/// The report's title and the paragraph on protocol, seeds and evaluation set.
fn write_intro(out: &mut String, context: &Context<'_>) {
    let args = context.args;
    let set_title = context.set_titles[context.primary];
    let seeds: Vec<String> = context.seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(out, "# metarec report: {}\n", args.train.data.display());
    let protocol = match args.protocol {
        Protocol::Paml => "PAML (its paper's protocol)",
        Protocol::Melu => "MeLU (as the HML paper follows it)",
    };
    let _ = writeln!(
        out,
        "Protocol {protocol}; seeds {}; evaluation on the {set_title}{}. Values are mean ± standard deviation \
         over the seeds; MSE is pooled over the query ratings, nDCG@k averaged over users; per-user values \
         for the t-tests are pooled over the seeds. Best value per column in bold.\n",
        seeds.join(", "),
        if args.protocol == Protocol::Melu { " (user-cold state) unless a table says otherwise" } else { "" }
    );
}

/// Table 2 (methods and trivial baselines) with its notes.
fn write_table2_section(out: &mut String, context: &Context<'_>, rows: &[Row]) {
    let set = context.primary;
    let set_title = context.set_titles[set];
    let _ = writeln!(out, "## Table 2: methods and trivial baselines ({set_title})\n");
    *out += &table2(context, rows);
    let best = best_baseline(rows, set).map_or("—".to_string(), |b| b.name.clone());
    let _ = writeln!(
        out,
        "\n† the per-user MSE is lower than the best trivial baseline's ({best}) with p < 0.05. p: paired \
         two-tailed t-test between a row's per-user MSEs and the best baseline's (same test users), in either \
         direction; p vs {mf} (when it is not the best baseline): the same test against matrix factorisation with \
         fold-in. \"Without adaptation\": \
         the meta-learned initialisation with the inner loop switched off; the difference to MSE is the adaptation \
         gain.\n",
        mf = Method::Mf.title()
    );
}

/// Table 3 (major and minor users), or why it is not available.
fn write_table3_section(out: &mut String, context: &Context<'_>, rows: &[Row]) {
    let set_title = context.set_titles[context.primary];
    let _ = writeln!(out, "## Table 3: major and minor users ({set_title})\n");
    match &context.groups {
        Some([a, b]) => {
            *out += &table3(context, rows);
            let _ = writeln!(
                out,
                "\nMSE per group is pooled over the group's query ratings. p: two-tailed Student t-test (pooled \
                 variance) between the per-user MSEs of {a} and {b} users; a method that serves both groups has a \
                 high p-value.\n"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Not available: the dataset's users carry no two groups (major/minor labels need user fields, \
                 and this dataset has {}).\n",
                if context.data.user_fields.is_empty() {
                    "none".to_string()
                } else {
                    format!("{} but no two distinct labels", context.data.user_fields.len())
                }
            );
        }
    }
}

/// Table 4: REG-PAML's gamma ablation and the PAML family, each beside the baselines.
fn write_table4_section(out: &mut String, context: &Context<'_>, rows: &[Row]) {
    let set_title = context.set_titles[context.primary];
    let _ = writeln!(out, "## Table 4: ablations ({set_title})\n");
    let mut gammas: Vec<&Row> = rows.iter().filter(|r| matches!(r.kind, RowKind::Gamma(_))).collect();
    gammas.sort_by(|a, b| gamma_of(a).total_cmp(&gamma_of(b)));
    let baselines = ordered(rows, |k| *k == RowKind::Baseline);
    if gammas.is_empty() {
        let _ = writeln!(out, "REG-PAML's gamma: not run (REG-PAML not among the methods, or --no-ablation).\n");
    } else {
        let _ = writeln!(out, "### REG-PAML's regularizer weight gamma\n");
        let listed: Vec<&Row> = gammas.iter().copied().chain(baselines.iter().copied()).collect();
        *out += &table4(context, &listed, "REG-PAML gamma");
        out.push('\n');
    }
    let family: Vec<&Row> = [Method::Paml, Method::AtPaml, Method::RegPaml]
        .iter()
        .filter_map(|m| rows.iter().find(|r| r.kind == RowKind::Method(*m)))
        .collect();
    if family.is_empty() {
        let _ = writeln!(out, "PAML vs AT-PAML vs REG-PAML: none of them was trained.\n");
    } else {
        let _ = writeln!(out, "### PAML vs AT-PAML vs REG-PAML\n");
        let listed: Vec<&Row> = family.iter().copied().chain(baselines.iter().copied()).collect();
        *out += &table4(context, &listed, "method");
        out.push('\n');
    }
}

/// The figures drawn, as images relative to the report, and the ones not drawn.
fn write_figures_section(out: &mut String, context: &Context<'_>, figures: &[PathBuf], figure_notes: &[String]) {
    let _ = writeln!(out, "## Figures\n");
    for path in figures {
        let rel = path.strip_prefix(&context.args.train.out).unwrap_or(path).display().to_string();
        let _ = writeln!(out, "![{rel}]({rel})\n");
    }
    for note in figure_notes {
        let _ = writeln!(out, "- not drawn: {note}");
    }
    if figures.is_empty() && figure_notes.is_empty() {
        let _ = writeln!(out, "Not drawn (--no-figures).");
    }
    out.push('\n');
}

fn gamma_of(row: &Row) -> f64 {
    match row.kind {
        RowKind::Gamma(g) => g,
        _ => f64::NAN,
    }
}

fn rates_table(context: &Context<'_>, rates: &[(u32, f64)]) -> String {
    let names = super::group_names(&context.groups);
    let mut per_group: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for &(user, rate) in rates {
        if let Some(g) = group_of(context.data, &context.groups, user) {
            per_group[g].push(rate);
        }
    }
    let mut table = Table::new(&[
        ("group", Better::Neither),
        ("users", Better::Neither),
        ("mean lr", Better::Neither),
        ("median lr", Better::Neither),
        ("std", Better::Neither),
    ]);
    for (name, values) in names.iter().zip(&per_group) {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.is_empty() { f64::NAN } else { super::stats::quantile_sorted(&sorted, 0.5) };
        table.rows.push(vec![
            Cell::text(name.clone()),
            Cell::text(values.len().to_string()),
            Cell::text(format!("{:.5}", mean(values))),
            Cell::text(format!("{median:.5}")),
            Cell::text(format!("{:.5}", std_dev(values))),
        ]);
    }
    let mut out = table.render();
    if per_group.len() == 2 {
        if let Some(t) = student_t_test(&per_group[0], &per_group[1]) {
            let _ =
                writeln!(out, "\nTwo-tailed Student t-test between the groups' learning rates: p = {}.", p_text(t.p));
        }
    }
    out
}

fn runs_section(collected: &Collected, seconds_per_method: &[(String, f64)]) -> String {
    let mut out = String::from("## Runs and wall time\n\n");
    let mut table = Table::new(&[
        ("run", Better::Neither),
        ("seeds ok", Better::Neither),
        ("epochs run", Better::Neither),
        ("kept epoch", Better::Neither),
        ("validation MSE", Better::Neither),
        ("train s / seed", Better::Neither),
        ("eval s / seed", Better::Neither),
        ("wall s, all seeds", Better::Neither),
    ]);
    let mut failures = Vec::new();
    for (label, wall) in seconds_per_method {
        let runs: Vec<_> = collected.runs.iter().filter(|r| &r.label == label).collect();
        let ok: Vec<_> = runs.iter().filter_map(|r| r.outcome.as_ref().ok().map(|i| (r, i))).collect();
        for r in &runs {
            if let Err(e) = &r.outcome {
                failures.push(format!("{label}, seed {}: {e}", r.seed));
            }
        }
        let list = |f: &dyn Fn(&crate::run::RunInfo) -> String| -> String {
            if ok.is_empty() {
                "—".into()
            } else {
                ok.iter().map(|(_, i)| f(i)).collect::<Vec<_>>().join(", ")
            }
        };
        let train: Vec<f64> = ok.iter().map(|(_, i)| i.train_seconds).collect();
        let eval: Vec<f64> = ok.iter().map(|(r, _)| r.eval_seconds).collect();
        table.rows.push(vec![
            Cell::text(label.clone()),
            Cell::text(format!("{} / {}", ok.len(), runs.len())),
            Cell::text(list(&|i| i.history.len().to_string())),
            Cell::text(list(&|i| i.best_epoch.to_string())),
            Cell::text(list(&|i| format!("{:.4}", i.best_valid_loss))),
            Cell::text(if train.is_empty() { "—".into() } else { format!("{:.1}", mean(&train)) }),
            Cell::text(if eval.is_empty() { "—".into() } else { format!("{:.1}", mean(&eval)) }),
            Cell::text(format!("{wall:.1}")),
        ]);
    }
    out += &table.render();
    let _ = writeln!(
        out,
        "\nTrain seconds include loading the dataset; wall seconds cover training, reloading and evaluation. Run \
         directories: `runs/seed-N/<method>/` (usable with `trainer eval --run` and `trainer export --run`).\n"
    );
    if !failures.is_empty() {
        let _ = writeln!(out, "Failed runs (left out of the tables for that seed):\n");
        for f in failures {
            let _ = writeln!(out, "- {f}");
        }
        out.push('\n');
    }
    out
}

fn reproduce_section(context: &Context<'_>, collected: &Collected, seconds: f64) -> String {
    let t = &context.args.train;
    let data = context.data;
    let mut out = String::from("## Reproduce\n\n");
    let command: Vec<String> = context.command_line.iter().map(|a| shell_quote(a)).collect();
    let _ = writeln!(out, "Command line:\n\n```sh\n{}\n```\n", command.join(" "));
    let _ = writeln!(out, "Settings:\n");
    for (key, value) in reproduce_settings(context, collected) {
        let _ = writeln!(out, "- {key}: {value}");
    }
    let groups = match &context.groups {
        Some([a, b]) => {
            let count = |g: &str| data.users.iter().filter(|u| u.group.as_deref() == Some(g)).count();
            format!("{} {a}, {} {b}", count(a), count(b))
        }
        None => "none".into(),
    };
    let format = data.info.format.map_or("?", |f| f.name());
    let _ = writeln!(
        out,
        "\nDataset: `{}` (format {format}), {} users, {} items, {} ratings, fingerprint {:08x}; groups: {groups}.\n",
        t.data.display(),
        data.users.len(),
        data.items.len(),
        data.ratings.len(),
        context.fingerprint
    );
    let _ = writeln!(out, "Protocol per seed:\n");
    for note in &collected.split_notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(out, "\nSplit files (SHA-256):\n");
    for (file, hash) in &collected.split_hashes {
        let _ = writeln!(out, "- `{file}`: `{hash}`");
    }
    write_versions(&mut out, context, seconds);
    out
}

/// The reproduce section's settings list: protocol, seeds, methods, ablation and training settings.
fn reproduce_settings(context: &Context<'_>, collected: &Collected) -> [(&'static str, String); 13] {
    let args = context.args;
    let t = &args.train;
    let m = &t.method_config;
    let methods: Vec<&str> = collected
        .rows
        .iter()
        .filter_map(|r| match r.kind {
            RowKind::Method(m) => Some(m.title()),
            _ => None,
        })
        .collect();
    let seeds: Vec<String> = context.seeds.iter().map(u64::to_string).collect();
    let protocol = match args.protocol {
        Protocol::Paml => format!("paml ({:?})", crate::split::PamlConfig::default()),
        Protocol::Melu => format!("melu ({:?})", crate::split::MeluConfig::default()),
    };
    let gammas: Vec<String> = args.gammas.iter().map(|g| format!("{g:e}")).collect();
    [
        ("protocol", protocol),
        ("seeds", seeds.join(", ")),
        ("methods with results", methods.join(", ")),
        ("ablation gammas", if args.no_ablation { "off".into() } else { gammas.join(", ") }),
        ("embedding dim", t.embedding_dim.to_string()),
        ("hidden", format!("{:?}", t.hidden)),
        ("inner lr / steps", format!("{} / {}", t.inner_lr, t.inner_steps)),
        ("first order", t.first_order.to_string()),
        ("outer lr", t.outer_lr.to_string()),
        ("users per batch", t.batch_users.to_string()),
        ("epochs / patience", format!("{} / {}", t.epochs, t.patience)),
        ("item-id embedding", t.item_id.to_string()),
        (
            "method settings",
            format!(
                "gamma {:e}, lr_hidden {}, memory_size {}, neighbours {}, delta {}, warmup {}, inits {}, \
                 shared_layers {}",
                m.gamma, m.lr_hidden, m.memory_size, m.neighbours, m.delta, m.warmup, m.inits, m.shared_layers
            ),
        ),
    ]
}

/// The versions, device and wall time that close the reproduce section.
fn write_versions(out: &mut String, context: &Context<'_>, seconds: f64) {
    let _ = writeln!(
        out,
        "\nVersions: metarec-trainer {}, libtorch {}, {} {}.\n\nDevice: {} ({} CPU threads for libtorch, CUDA {}).\n\n\
         Wall time of the whole report: {seconds:.1} s ({:.1} min).",
        env!("CARGO_PKG_VERSION"),
        super::libtorch_version().unwrap_or_else(|| "unknown".into()),
        std::env::consts::OS,
        std::env::consts::ARCH,
        context.device,
        tch::get_num_threads(),
        if tch::Cuda::is_available() { "available" } else { "not available" },
        seconds / 60.0
    );
}
