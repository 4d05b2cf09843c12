//! Issue 16, the device at catalogue scale: for one exported model, at each precision of its
//! embedding tables (f32, f16, int8), the file size, the load time from a buffer, the resident
//! memory the loaded model and a session add (measured from `/proc/self/statm`, not computed)
//! and the time of personalize + top-10 over the whole catalogue, on the calling thread.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use metarec_runtime::format::{encode_with, EmbeddingPrecision, ModelBody};
use metarec_runtime::{Model, Session};

use super::BenchUser;

/// One precision's figures.
struct Figures {
    name: &'static str,
    file_bytes: usize,
    load_ms: f64,
    resident_bytes: Option<i64>,
    session_bytes: usize,
    top10_ms: f64,
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`); None where
/// there is no procfs.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Personalizes `session` for `user` and ranks the catalogue's top 10 (rated items left out).
fn personalize_top10(session: &mut Session<&Model>, user: &BenchUser) -> Result<()> {
    let fail = |e: metarec_runtime::Error| anyhow::anyhow!("{e}");
    session.clear_ratings();
    for (field, value) in &user.profile {
        session.set_profile(field, value).map_err(fail)?;
    }
    for r in &user.support {
        session.add_rating_by_index(r.item, r.value).map_err(fail)?;
    }
    session.adapt().map_err(fail)?;
    let want = 10.min(session.model().item_count() - session.support_len().min(session.model().item_count()));
    let top = session.top_k(10, true).map_err(fail)?;
    anyhow::ensure!(top.len() >= want, "top-10 returned {} items", top.len());
    Ok(())
}

/// The figures of `body` stored at `precision`.
fn measure(body: &ModelBody, precision: EmbeddingPrecision, user: &BenchUser, repeat: usize) -> Result<Figures> {
    let name = match precision {
        EmbeddingPrecision::F32 => "f32",
        EmbeddingPrecision::F16 => "f16",
        EmbeddingPrecision::Int8 => "int8",
    };
    let bytes = encode_with(body, precision).map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = resident_bytes();
    let start = Instant::now();
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut session = Session::new(&model);
    personalize_top10(&mut session, user)?;
    let resident = before.zip(resident_bytes()).map(|(before, after)| after - before);
    let mut samples: Vec<f64> = (0..repeat)
        .map(|_| {
            let start = Instant::now();
            personalize_top10(&mut session, user).map(|()| start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    samples.sort_by(f64::total_cmp);
    let top10_ms = samples[samples.len() / 2];
    Ok(Figures {
        name,
        file_bytes: bytes.len(),
        load_ms,
        resident_bytes: resident,
        session_bytes: session.memory_bytes(),
        top10_ms,
    })
}

/// The catalogue lines of the device report: `body` (the bench model, exported) at each
/// precision, personalize + top-10 timed `repeat` times (at least 3, fewer for big catalogues).
pub(super) fn write_lines(out: &mut String, body: &ModelBody, user: &BenchUser, repeat: usize) -> Result<()> {
    let items = body.items.len();
    let repeat = repeat.min((20_000_000 / items.max(1)).max(3));
    writeln!(out, "catalogue: {items} items, personalize + top-10 of the whole catalogue (rated left out), 1 thread")?;
    writeln!(
        out,
        "  {:<5} {:>12} {:>9} {:>22} {:>14} {:>16}",
        "table", "file bytes", "load ms", "resident (model+sess.)", "session bytes", "personalize+top10"
    )?;
    for precision in [EmbeddingPrecision::F32, EmbeddingPrecision::F16, EmbeddingPrecision::Int8] {
        let f = measure(body, precision, user, repeat)?;
        let resident = f.resident_bytes.map_or("n/a".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
        writeln!(
            out,
            "  {:<5} {:>12} {:>9.2} {:>22} {:>14} {:>13.3} ms (median of {repeat})",
            f.name, f.file_bytes, f.load_ms, resident, f.session_bytes, f.top10_ms
        )?;
    }
    Ok(())
}
