//! `trainer report`: statistics against hand-computed values, PCA on a constructed case, and
//! small real reports (tables' shapes, split hashes, figures that decode, failed runs).

use std::path::Path;

use clap::Parser;
use metarec_trainer::data::mlgen::{write_ml1m, Ml1mSize};
use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::Dataset;
use metarec_trainer::eval::{self, Baselines};
use metarec_trainer::method::Method;
use metarec_trainer::report::pca::pca_2d;
use metarec_trainer::report::stats::{paired_t_test, quartiles, std_dev, student_t_test};
use metarec_trainer::report::{self, sha256_file, Protocol, ReportArgs};
use metarec_trainer::split::Split;
use ndarray::Array2;

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn student_t_test_matches_hand_computed_values() {
    // a = [1, 3], b = [4, 8]: means 2 and 6, pooled variance (2 + 8) / 2 = 5, se = sqrt(5 (1/2 + 1/2)),
    // t = -4 / sqrt(5) = -1.78885, df = 2. Student's t with 2 df has F(t) = 1/2 + t / (2 sqrt(2 + t²)),
    // so p = 1 - |t| / sqrt(2 + t²) = 1 - sqrt(3.2 / 5.2) = 0.2155354.
    let t = student_t_test(&[1.0, 3.0], &[4.0, 8.0]).unwrap();
    assert!(close(t.t, -4.0 / 5f64.sqrt(), 1e-12), "{t:?}");
    assert_eq!(t.df, 2.0);
    assert!(close(t.p, 1.0 - (3.2f64 / 5.2).sqrt(), 1e-9), "{t:?}");
    assert!(close(t.p, 0.2155354, 1e-6));

    // a = [1, 2, 3], b = [4, 5, 6]: t = -3 / sqrt(2/3) = -3.674235, df = 4. With 4 df,
    // F(x) = 1/2 + 3/8 · x / sqrt(1 + x²/4) · (1 − x² / (12 (1 + x²/4))): p = 0.0213116.
    let t = student_t_test(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
    let x = 3.0 / (2.0f64 / 3.0).sqrt();
    let s = 1.0 + x * x / 4.0;
    let cdf = 0.5 + 0.375 * x / s.sqrt() * (1.0 - x * x / (12.0 * s));
    assert!(close(t.t, -x, 1e-12));
    assert!(close(t.p, 2.0 * (1.0 - cdf), 1e-9), "{t:?}");
    assert!(close(t.p, 0.0213116, 1e-6), "{t:?}");
    // The order of the samples flips the sign only.
    let flipped = student_t_test(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
    assert!(close(flipped.t, x, 1e-12) && close(flipped.p, t.p, 1e-15));

    // Degenerate samples: identical → p = 1; no spread but different means → p = 0; too small → None.
    assert_eq!(student_t_test(&[2.0, 2.0], &[2.0, 2.0]).unwrap().p, 1.0);
    assert_eq!(student_t_test(&[1.0, 1.0], &[2.0, 2.0]).unwrap().p, 0.0);
    assert!(student_t_test(&[1.0], &[2.0]).is_none());
    assert!(student_t_test(&[], &[1.0, 2.0, 3.0]).is_none());
}

#[test]
fn paired_t_test_matches_hand_computed_value() {
    // Differences [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = 3.872983, df = 3.
    // With 3 df, F(t) = 1/2 + (u / (1 + u²) + atan(u)) / π with u = t / sqrt(3): p = 0.0304663.
    let t = paired_t_test(&[2.0, 4.0, 6.0, 8.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let u = t.t / 3f64.sqrt();
    let cdf = 0.5 + (u / (1.0 + u * u) + u.atan()) / std::f64::consts::PI;
    assert!(close(t.t, 2.5 / ((5.0f64 / 3.0).sqrt() / 2.0), 1e-12), "{t:?}");
    assert_eq!(t.df, 3.0);
    assert!(close(t.p, 2.0 * (1.0 - cdf), 1e-9) && close(t.p, 0.0304663, 1e-6), "{t:?}");
    assert!(paired_t_test(&[1.0, 2.0], &[1.0]).is_none());
    assert!(close(std_dev(&[1.0, 2.0, 3.0, 4.0]), (5.0f64 / 3.0).sqrt(), 1e-12));
    assert_eq!(quartiles(&[4.0, 1.0, 3.0, 2.0, 5.0]), (2.0, 3.0, 4.0));
}

#[test]
fn pca_recovers_constructed_axes() {
    // Points a·u1 + b·u2 + offset in 3-D, with var(a) >> var(b) and nothing along u3.
    let s = std::f64::consts::FRAC_1_SQRT_2;
    let (u1, u2) = ([s, s, 0.0], [0.0, 0.0, 1.0]);
    let mut values = Vec::new();
    let mut a_values = Vec::new();
    // Every a comes with b = +1 and b = -1, so a and b are uncorrelated: u1 and u2 are exactly
    // the principal axes.
    for i in 0..60 {
        let a = ((i / 2) as f64 - 14.5) * 0.5;
        let b = if i % 2 == 0 { 1.0 } else { -1.0 };
        a_values.push(a);
        for k in 0..3 {
            values.push(a * u1[k] + b * u2[k] + [3.0, -2.0, 7.0][k]);
        }
    }
    let pca = pca_2d(&Array2::from_shape_vec((60, 3), values).unwrap());
    let dot = |c: usize, u: [f64; 3]| (0..3).map(|k| pca.components[[c, k]] * u[k]).sum::<f64>();
    assert!(close(dot(0, u1).abs(), 1.0, 1e-9), "{:?}", pca.components);
    assert!(close(dot(1, u2).abs(), 1.0, 1e-9), "{:?}", pca.components);
    // All the variance lies in the plane of u1 and u2: var(a) ≈ 19 against var(b) ≈ 1.
    assert!(close(pca.explained[0] + pca.explained[1], 1.0, 1e-9), "{:?}", pca.explained);
    let (var_a, var_b) = (std_dev(&a_values).powi(2), 60.0 / 59.0);
    assert!(close(pca.explained[0], var_a / (var_a + var_b), 1e-9), "{:?}", pca.explained);
    // The first coordinate is the centred a (up to the sign of the component).
    let sign = dot(0, u1).signum();
    for (i, a) in a_values.iter().enumerate() {
        assert!(close(pca.projected[[i, 0]], sign * a, 1e-9));
    }
}

#[test]
fn report_flags_default_to_the_report_budget() {
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        report: ReportArgs,
    }
    let cli = Cli::try_parse_from(["trainer", "--data", "d", "--out", "o"]).unwrap();
    assert_eq!(cli.report.train.epochs.to_string(), report::DEFAULT_EPOCHS);
    assert_eq!(cli.report.train.patience.to_string(), report::DEFAULT_PATIENCE);
    assert_eq!((cli.report.seeds, cli.report.protocol), (3, Protocol::Paml));
    let cli =
        Cli::try_parse_from(["trainer", "--data", "d", "--out", "o", "--methods", "melu,at-paml", "--epochs", "4"])
            .unwrap();
    assert_eq!(cli.report.methods, [Method::Melu, Method::AtPaml]);
    assert_eq!(cli.report.train.epochs, 4);
}

/// Tiny, fast training settings.
fn small(args: &mut ReportArgs) {
    let t = &mut args.train;
    t.embedding_dim = 4;
    t.hidden = vec![8];
    t.inner_steps = 1;
    t.batch_users = 32;
    t.epochs = 1;
    t.patience = 1;
    t.device = "cpu".into();
    t.method_config.warmup = 8;
    t.method_config.memory_size = 64;
}

/// The Markdown table that follows `heading`: its rows (header and rule excluded), split in cells.
fn table_after(markdown: &str, heading: &str) -> Vec<Vec<String>> {
    let start = markdown.find(heading).unwrap_or_else(|| panic!("no '{heading}' in the report"));
    let lines: Vec<&str> = markdown[start..].lines().skip_while(|l| !l.starts_with('|')).collect();
    lines
        .iter()
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect()
}

const BASELINES: [&str; 5] =
    ["global mean", "item mean", "user support mean", "global + item + user bias", "MF fold-in"];

#[test]
fn paml_report_on_synthetic_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let cfg = SynthConfig { minor_share: 0.25, ..crate::common::population(3, 160, 40, 5..=16) };
    synth::generate(&cfg, &data_dir).unwrap();
    let out = dir.path().join("report");
    let mut args = ReportArgs::new(&data_dir, &out);
    small(&mut args);
    args.seeds = 2;
    args.methods = vec![Method::Melu, Method::RegPaml, Method::AtPaml, Method::WideDeep];
    args.gammas = vec![1e-3, 1e-2];
    let command: Vec<String> = ["trainer", "report", "--seeds", "2"].iter().map(|s| s.to_string()).collect();
    let written = report::run(&args, &command).unwrap();
    let md = std::fs::read_to_string(&written.markdown_path).unwrap();
    assert_eq!(md, written.markdown);

    // Table 2: every method, then the five baselines (matrix factorisation with fold-in among
    // them); mean ± std over 2 seeds; a column of paired t-tests against MF fold-in unless it is
    // the best baseline (whose column that is then).
    let table2 = table_after(&md, "## Table 2");
    let names: Vec<&str> = table2.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        ["MeLU", "REG-PAML", "AT-PAML", "Wide&Deep"].iter().chain(&BASELINES).copied().collect::<Vec<_>>()
    );
    let columns = if md.contains("best trivial baseline's (MF fold-in)") { 6 } else { 7 };
    for row in &table2 {
        assert_eq!(row.len(), columns, "{row:?}");
        assert!(row[1].contains(" ± "), "{row:?}");
    }
    assert_eq!(table2[8][columns - 1], "—", "MF fold-in is not tested against itself");
    // Best MSE in bold, exactly once (no ties on these data); Wide&Deep has no adaptation column.
    assert_eq!(table2.iter().filter(|r| r[1].starts_with("**")).count(), 1);
    assert_eq!(table2[3][4], "—");
    assert!(table2[0][4].contains(" ± "));

    // Table 3: major/minor MSE, p-value, users; check one p-value against a recomputation from
    // the split files, the baseline and the labels.
    let table3 = table_after(&md, "## Table 3");
    assert_eq!(table3.len(), 9);
    assert!(table3.iter().all(|r| r.len() == 5));
    let data = Dataset::load(&data_dir).unwrap();
    let (mut major, mut minor) = (Vec::new(), Vec::new());
    for seed in [1, 2] {
        let split = Split::read(&data, &out.join(format!("splits/paml-seed-{seed}.csv"))).unwrap();
        let fitted = Baselines::fit(data.items.len(), &split.train, &split.valid);
        for u in &fitted.predict_all(&split.test)[0].1 {
            let target =
                if data.users[u.user as usize].group.as_deref() == Some("major") { &mut major } else { &mut minor };
            target.push(eval::user_mse(u));
        }
    }
    let p = student_t_test(&major, &minor).unwrap().p;
    let global = table3.iter().find(|r| r[0] == "global mean").unwrap();
    let shown: f64 = global[3].trim_matches('*').parse().unwrap();
    assert!(close(shown, p, 0.0005 + p * 0.05), "report {shown} vs recomputed {p}");
    assert_eq!(global[4], format!("{:.0} / {:.0}", major.len() as f64 / 2.0, minor.len() as f64 / 2.0));

    // Table 4: the gamma ablation (1e-3 reuses the REG-PAML runs) and the PAML family, baselines included.
    let gammas = table_after(&md, "### REG-PAML's regularizer weight gamma");
    let names: Vec<&str> = gammas.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names[..2], ["REG-PAML, gamma = 1e-3", "REG-PAML, gamma = 1e-2"]);
    assert_eq!(names[2..], BASELINES);
    assert_eq!(gammas[0][1].trim_matches('*'), table2[1][1].replace(" †", "").trim_matches('*'));
    let family = table_after(&md, "### PAML vs AT-PAML vs REG-PAML");
    assert_eq!(family.iter().map(|r| r[0].as_str()).collect::<Vec<_>>()[..2], ["AT-PAML", "REG-PAML"]);
    assert!(family.iter().all(|r| r.len() == 8));

    // metrics.csv: (4 methods + 3 without adaptation + 5 baselines + 2 gammas) × 2 seeds.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 14 * 2);

    // Reproduction record: command, split hashes, seeds, device.
    assert!(md.contains("trainer report --seeds 2"));
    for seed in [1, 2] {
        let file = format!("splits/paml-seed-{seed}.csv");
        assert!(md.contains(&format!("`{file}`: `{}`", sha256_file(&out.join(&file)).unwrap())), "{file}");
    }
    assert!(md.contains("Device: Cpu"));
    assert!(md.contains("| REG-PAML (gamma 1e-2) | 2 / 2 |"), "runs table");

    // Figures: four PNGs that decode, each referenced by the report.
    assert_eq!(written.figures.len(), 4);
    for path in &written.figures {
        let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(image.width() >= 400 && image.height() >= 300, "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(md.contains(&format!("(figures/{name})")), "{name}");
    }
    let no_tmp = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'));
    assert!(no_tmp, "temporary figure files left behind");
}

#[test]
fn melu_report_has_every_state() {
    let dir = tempfile::tempdir().unwrap();
    write_ml1m(dir.path(), &Ml1mSize { users: 300, items: 200, ratings: 20_000, seed: 5 }).unwrap();
    let out = dir.path().join("report");
    let mut args = ReportArgs::new(dir.path(), &out);
    small(&mut args);
    args.protocol = Protocol::Melu;
    args.seeds = 1;
    args.methods = vec![Method::Melu, Method::Transfer];
    args.no_figures = true;
    let written = report::run(&args, &["trainer".to_string()]).unwrap();
    let md = written.markdown;
    let table = table_after(&md, "## Table 2 of the HML paper");
    assert_eq!(table.len(), 2 + BASELINES.len());
    assert!(table.iter().all(|r| r.len() == 1 + 4 * 3), "{table:?}");
    let header = md[md.find("## Table 2 of the HML paper").unwrap()..].lines().find(|l| l.starts_with('|')).unwrap();
    for state in ["existing users, existing items", "new users", "new items", "new users, new items"] {
        assert!(header.contains(&format!("nDCG@10 ({state})")), "{header}");
    }
    // Tables 2–4 use the user-cold state; one split file per state, hashed.
    assert!(md.contains("## Table 2: methods and trivial baselines (new users)"));
    for state in ["warm", "user_cold", "item_cold", "user_item_cold"] {
        let file = format!("splits/melu-seed-1/{state}.csv");
        assert!(md.contains(&format!("`{file}`: `{}`", sha256_file(&out.join(&file)).unwrap())), "{file}");
    }
    assert!(written.figures.is_empty() && md.contains("Not drawn (--no-figures)"));
}

#[test]
fn a_failed_method_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let cfg = crate::common::population(4, 80, 30, 4..=12);
    synth::generate(&cfg, &data_dir).unwrap();
    let out = dir.path().join("report");
    let mut args = ReportArgs::new(&data_dir, &out);
    small(&mut args);
    args.seeds = 1;
    args.methods = vec![Method::Melu];
    args.train.adapt = metarec_runtime::format::Adapt::All; // gradient steps, so that
    args.train.inner_lr = 1e30; // diverges at once
    args.no_figures = true;
    let md = report::run(&args, &[]).unwrap().markdown;
    assert!(md.contains("Failed runs"), "{md}");
    assert!(md.contains("- MeLU, seed 1: training produced no finite validation MSE"), "{md}");
    let names: Vec<String> = table_after(&md, "## Table 2").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(names, BASELINES);
    assert!(Path::new(&out.join("report.md")).exists());
}

#[test]
fn a_click_report_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let mut args = ReportArgs::new(dir.path().join("data"), &out);
    args.train.task = metarec_trainer::objective::TaskKind::Click;
    let error = report::run(&args, &[]).unwrap_err().to_string();
    assert!(error.contains("--task click") && error.contains("trainer compare"), "{error}");
    assert!(!out.exists(), "the refused report created {}", out.display());
}
