//! The report's figures as PNG files (plotters, bitmap backend). Text is drawn with a TrueType
//! font registered at run time (plotters' `ab_glyph` feature): no system font library needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::stats::quantile_sorted;
use crate::run::EpochRecord;

/// Font files tried in order after `$METAREC_FONT` (Debian's fonts-dejavu-core first).
pub const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 700);
/// Major, minor (and a single group when there are no labels).
const COLOURS: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44)];

/// Registers the font once per process; the error names every place looked at.
pub fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        let mut tried: Vec<PathBuf> = Vec::new();
        let env = std::env::var_os("METAREC_FONT").map(PathBuf::from);
        for path in env.into_iter().chain(FONT_CANDIDATES.iter().map(PathBuf::from)) {
            let Ok(bytes) = std::fs::read(&path) else {
                tried.push(path);
                continue;
            };
            // plotters keeps a 'static reference to the font data: leaked once per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
                return Err(format!("{} is not a TrueType/OpenType font", path.display()));
            }
            return Ok(path);
        }
        let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        Err(format!(
            "no font for the figures (tried {}); install Debian's fonts-dejavu-core (scripts/setup.sh does), \
             set METAREC_FONT to a .ttf file, or pass --no-figures",
            tried.join(", ")
        ))
    });
    result.as_ref().map(|_| ()).map_err(|e| anyhow!("{e}"))
}

fn drawing<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e}", path.display())
}

/// Draws into a temporary `.png` beside `path`, then renames it (a failed figure never leaves a
/// half-written file under the final name).
fn with_png(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    register_font()?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp.png", name.to_string_lossy()));
    let result = draw(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One box of a box plot.
#[derive(Debug, Clone, Copy)]
struct BoxStats {
    q1: f64,
    median: f64,
    q3: f64,
    /// Most extreme values within 1.5 IQR of the box.
    whisker_lo: f64,
    whisker_hi: f64,
}

fn box_stats(values: &[f64]) -> Option<BoxStats> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (q1, median, q3) =
        (quantile_sorted(&sorted, 0.25), quantile_sorted(&sorted, 0.5), quantile_sorted(&sorted, 0.75));
    let iqr = q3 - q1;
    let whisker_lo = sorted.iter().copied().find(|&v| v >= q1 - 1.5 * iqr).unwrap_or(q1);
    let whisker_hi = sorted.iter().rev().copied().find(|&v| v <= q3 + 1.5 * iqr).unwrap_or(q3);
    Some(BoxStats { q1, median, q3, whisker_lo, whisker_hi })
}

/// Horizontal box plots of per-user MSE: one row per method, one box per group.
/// `rows`: `(name, per group values)`, `groups`: the group names (same order).
pub fn box_plot(path: &Path, title: &str, groups: &[String], rows: &[(String, Vec<Vec<f64>>)]) -> Result<()> {
    if rows.is_empty() {
        bail!("box plot {}: no rows", path.display());
    }
    let height = (120 + rows.len() * 26 * groups.len().max(1)).max(400) as u32;
    with_png(path, |tmp| {
        let err = drawing(path);
        let root = BitMapBackend::new(tmp, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let stats: Vec<Vec<Option<BoxStats>>> =
            rows.iter().map(|(_, per_group)| per_group.iter().map(|v| box_stats(v)).collect()).collect();
        let x_max = stats.iter().flatten().flatten().map(|s| s.whisker_hi).fold(0.0f64, f64::max).max(1e-6) * 1.05;
        let n = rows.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(230)
            .build_cartesian_2d(0.0..x_max, -0.5..n - 0.5)
            .map_err(&err)?;
        let names: Vec<&str> = rows.iter().map(|(name, _)| name.as_str()).collect();
        let label = |y: &f64| -> String {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                // Row 0 at the top.
                names[names.len() - 1 - i as usize].to_string()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len() + 1)
            .y_label_formatter(&label)
            .x_desc("per-user query MSE (whiskers: 1.5 IQR; outliers not drawn)")
            .label_style((FONT, 14))
            .draw()
            .map_err(&err)?;
        let g = groups.len().max(1) as f64;
        let band = 0.8 / g;
        for (k, group) in groups.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let mut elements: Vec<PathElement<(f64, f64)>> = Vec::new();
            let mut rects = Vec::new();
            for (r, per_group) in stats.iter().enumerate() {
                let Some(Some(s)) = per_group.get(k) else { continue };
                let centre = (rows.len() - 1 - r) as f64 + 0.4 - band * (k as f64 + 0.5);
                let (lo, hi) = (centre - band * 0.4, centre + band * 0.4);
                rects.push(Rectangle::new([(s.q1, lo), (s.q3, hi)], colour.mix(0.35).filled()));
                rects.push(Rectangle::new([(s.q1, lo), (s.q3, hi)], colour.stroke_width(1)));
                let line = |points: Vec<(f64, f64)>| PathElement::new(points, colour.stroke_width(2));
                elements.push(line(vec![(s.median, lo), (s.median, hi)]));
                elements.push(line(vec![(s.whisker_lo, centre), (s.q1, centre)]));
                elements.push(line(vec![(s.q3, centre), (s.whisker_hi, centre)]));
                elements.push(line(vec![(s.whisker_lo, lo + band * 0.2), (s.whisker_lo, hi - band * 0.2)]));
                elements.push(line(vec![(s.whisker_hi, lo + band * 0.2), (s.whisker_hi, hi - band * 0.2)]));
            }
            chart
                .draw_series(rects)
                .map_err(&err)?
                .label(group.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.mix(0.5).filled()));
            chart.draw_series(elements).map_err(&err)?;
        }
        if groups.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// Training and validation MSE per epoch, one panel per method.
pub fn learning_curves(path: &Path, title: &str, runs: &[(String, Vec<EpochRecord>)]) -> Result<()> {
    if runs.is_empty() {
        bail!("learning curves {}: no runs", path.display());
    }
    let cols = runs.len().min(3);
    let panel_rows = runs.len().div_ceil(cols);
    let size = (SIZE.0, (60 + panel_rows * 260) as u32);
    with_png(path, |tmp| {
        let err = drawing(path);
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let root = root.titled(title, (FONT, 22)).map_err(&err)?;
        let panels = root.split_evenly((panel_rows, cols));
        for ((name, history), panel) in runs.iter().zip(&panels) {
            let values = history.iter().flat_map(|e| [e.train_loss, e.valid_loss]).filter(|v| v.is_finite());
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let epochs = history.len().max(2) as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(name, (FONT, 16))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(1.0..epochs, (lo - pad)..(hi + pad))
                .map_err(&err)?;
            chart
                .configure_mesh()
                .x_labels(history.len().clamp(2, 10))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_labels(5)
                .label_style((FONT, 12))
                .draw()
                .map_err(&err)?;
            for (k, (label, pick)) in [("train", 0usize), ("validation", 1)].into_iter().enumerate() {
                let colour = COLOURS[k];
                let points: Vec<(f64, f64)> = history
                    .iter()
                    .map(|e| (e.epoch as f64, if pick == 0 { e.train_loss } else { e.valid_loss }))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .map_err(&err)?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(&err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// A scatter plot of 2-D points coloured by group.
pub fn scatter(path: &Path, title: &str, axes: (&str, &str), groups: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    with_png(path, |tmp| {
        let err = drawing(path);
        let root = BitMapBackend::new(tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let all = groups.iter().flat_map(|(_, p)| p.iter().copied());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (x, y) in all {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (-1.0, 1.0, -1.0, 1.0);
        }
        let (px, py) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(1e-6));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(&err)?;
        chart.configure_mesh().x_desc(axes.0).y_desc(axes.1).label_style((FONT, 14)).draw().map_err(&err)?;
        for (k, (name, points)) in groups.iter().enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.mix(0.6).filled())))
                .map_err(&err)?
                .label(format!("{name} ({})", points.len()))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}

/// Overlaid histograms, each normalised to its group's size (share of the group per bin).
pub fn histogram(path: &Path, title: &str, x_desc: &str, groups: &[(String, Vec<f64>)], bins: usize) -> Result<()> {
    let bins = bins.max(1);
    let mut values: Vec<f64> = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        bail!("histogram {}: no finite values", path.display());
    }
    values.sort_by(f64::total_cmp);
    let (mut lo, mut hi) = (values[0], values[values.len() - 1]);
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5 * lo.abs().max(1e-6), hi + 0.5 * hi.abs().max(1e-6));
    }
    let width = (hi - lo) / bins as f64;
    let shares: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, v)| {
            let mut counts = vec![0f64; bins];
            for &x in v.iter().filter(|x| x.is_finite()) {
                counts[(((x - lo) / width) as usize).min(bins - 1)] += 1.0;
            }
            let n = v.len().max(1) as f64;
            counts.into_iter().map(|c| c / n).collect()
        })
        .collect();
    let top = shares.iter().flatten().copied().fold(0.0, f64::max).max(1e-6) * 1.1;
    with_png(path, |tmp| {
        let err = drawing(path);
        let root = BitMapBackend::new(tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("share of the group's users")
            .label_style((FONT, 14))
            .draw()
            .map_err(&err)?;
        for (k, ((name, v), share)) in groups.iter().zip(&shares).enumerate() {
            let colour = COLOURS[k % COLOURS.len()];
            let rects = share.iter().enumerate().map(|(b, &s)| {
                let x = lo + width * b as f64;
                Rectangle::new([(x, 0.0), (x + width, s)], colour.mix(0.45).filled())
            });
            chart
                .draw_series(rects)
                .map_err(&err)?
                .label(format!("{name} ({} users)", v.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.mix(0.6).filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
        Ok(())
    })
}
