//! Issue 16, the device at catalogue scale: for one exported model (the aligned layout of format
//! 2.4, as `trainer export` writes it), at each precision of its embedding tables (f32, f16,
//! int8), the file size, the load time from a buffer (copying the catalogue out of it, and in
//! place: [`Model::from_bytes_borrowed`]), the heap the model loaded in place and a session hold
//! (counted by the binary's global allocator, [`super::heap`], not computed), and the time of personalize + top-10 over the whole catalogue on the calling
//! thread, ranked the default way ([`Ranking::Auto`]: a shortlist from
//! [`metarec_runtime::SHORTLIST_FROM`] items) and exhaustively, with the default ranking's
//! recall@10 against the exhaustive one over several users.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use metarec_runtime::format::{encode_aligned, EmbeddingPrecision, ModelBody};
use metarec_runtime::{Model, Ranking, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::heap::live_bytes;
use super::BenchUser;
use crate::data::Rating;

/// Users the recall is averaged over (the bench user and random ones).
const RECALL_USERS: usize = 8;

/// One precision's figures.
struct Figures {
    file_bytes: usize,
    load_ms: f64,
    in_place_ms: f64,
    model_heap: Option<usize>,
    /// What the model reports of it: its catalogue and its precompute of layer 0's item part
    /// (per row, or per item for a small catalogue).
    catalogue_bytes: (usize, usize),
    session_heap: Option<usize>,
    auto_ms: f64,
    exhaustive_ms: f64,
    recall: f64,
    /// Each user's exhaustive top 10, and how many of f32's it holds on average.
    tops: Vec<Vec<u32>>,
    agreement: f64,
}

/// Personalizes `session` for `user` and returns the items of the catalogue's top 10 (rated
/// items left out) under `ranking`.
fn personalize_top10(session: &mut Session<&Model>, user: &BenchUser, ranking: Ranking) -> Result<Vec<u32>> {
    let fail = |e: metarec_runtime::Error| anyhow::anyhow!("{e}");
    session.clear_ratings();
    for (field, value) in &user.profile {
        session.set_profile(field, value).map_err(fail)?;
    }
    for r in &user.support {
        session.add_rating_by_index(r.item, r.value).map_err(fail)?;
    }
    session.adapt().map_err(fail)?;
    session.set_ranking(ranking);
    let want = 10.min(session.model().item_count() - session.support_len().min(session.model().item_count()));
    let top = session.top_k(10, true).map_err(fail)?;
    anyhow::ensure!(top.len() >= want, "top-10 returned {} items", top.len());
    Ok(top.iter().map(|r| r.item).collect())
}

/// The median time (ms) of `repeat` personalize + top-10 runs under `ranking`.
fn time_top10(session: &mut Session<&Model>, user: &BenchUser, ranking: Ranking, repeat: usize) -> Result<f64> {
    personalize_top10(session, user, ranking)?;
    let mut samples: Vec<f64> = (0..repeat)
        .map(|_| {
            let start = Instant::now();
            personalize_top10(session, user, ranking).map(|_| start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// The bench user and `RECALL_USERS - 1` random ones: profile values and 20 support ratings.
fn recall_users(body: &ModelBody, user: &BenchUser) -> Vec<BenchUser> {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let items = body.items.len();
    let mut users =
        vec![BenchUser { support: user.support.clone(), candidates: Vec::new(), profile: user.profile.clone() }];
    for _ in 1..RECALL_USERS {
        let profile = body
            .user_fields
            .iter()
            .filter(|f| !f.vocabulary.is_empty())
            .map(|f| (f.name.clone(), f.vocabulary[rng.gen_range(0..f.vocabulary.len())].clone()))
            .collect();
        let support = (0..user.support.len())
            .map(|_| Rating { user: 0, item: rng.gen_range(0..items) as u32, value: rng.gen_range(1..=5) as f32 })
            .collect();
        users.push(BenchUser { support, candidates: Vec::new(), profile });
    }
    users
}

/// The default ranking's recall@10 against the exhaustive one, averaged over `users`, and
/// every user's exhaustive top 10.
fn recall_at_10(session: &mut Session<&Model>, users: &[BenchUser]) -> Result<(f64, Vec<Vec<u32>>)> {
    let mut found = 0usize;
    let mut total = 0usize;
    let mut tops = Vec::new();
    for user in users {
        let exact = personalize_top10(session, user, Ranking::Exhaustive)?;
        let auto = personalize_top10(session, user, Ranking::Auto)?;
        found += auto.iter().filter(|item| exact.contains(item)).count();
        total += exact.len();
        tops.push(exact);
    }
    Ok((found as f64 / total.max(1) as f64, tops))
}

/// Items of `reference`'s lists that `tops` holds too, per list on average.
fn agreement(tops: &[Vec<u32>], reference: &[Vec<u32>]) -> f64 {
    let shared: usize = tops.iter().zip(reference).map(|(a, b)| a.iter().filter(|i| b.contains(i)).count()).sum();
    shared as f64 / reference.len().max(1) as f64
}

/// The figures of `body` stored at `precision`.
fn measure(
    body: &ModelBody,
    precision: EmbeddingPrecision,
    users: &[BenchUser],
    repeat: usize,
    f32_tops: Option<&[Vec<u32>]>,
) -> Result<Figures> {
    let bytes = encode_aligned(body, precision).map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = Instant::now();
    drop(Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?);
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let before = live_bytes();
    let start = Instant::now();
    // SAFETY: `bytes` is neither dropped nor changed before the model and its session, declared
    // after it, are dropped at the end of this function.
    let model = unsafe { Model::from_bytes_borrowed(&bytes) }.map_err(|e| anyhow::anyhow!("{e}"))?;
    let in_place_ms = start.elapsed().as_secs_f64() * 1e3;
    let loaded = live_bytes();
    let mut session = Session::new(&model);
    personalize_top10(&mut session, &users[0], Ranking::Auto)?;
    let with_session = live_bytes();
    let auto_ms = time_top10(&mut session, &users[0], Ranking::Auto, repeat)?;
    let exhaustive_ms = time_top10(&mut session, &users[0], Ranking::Exhaustive, repeat)?;
    let (recall, tops) = recall_at_10(&mut session, users)?;
    let agreement = agreement(&tops, f32_tops.unwrap_or(&tops));
    Ok(Figures {
        file_bytes: bytes.len(),
        load_ms,
        in_place_ms,
        model_heap: before.zip(loaded).map(|(b, a)| a.saturating_sub(b)),
        catalogue_bytes: model.catalogue_bytes(),
        session_heap: loaded.zip(with_session).map(|(b, a)| a.saturating_sub(b)),
        auto_ms,
        exhaustive_ms,
        recall,
        tops,
        agreement,
    })
}

/// The catalogue lines of the device report: `body` (the bench model, exported) at each
/// precision, personalize + top-10 timed `repeat` times (at least 3, fewer for big catalogues).
pub(super) fn write_lines(out: &mut String, body: &ModelBody, user: &BenchUser, repeat: usize) -> Result<()> {
    let items = body.items.len();
    let repeat = repeat.min((20_000_000 / items.max(1)).max(3));
    let users = recall_users(body, user);
    let ranking = if items >= metarec_runtime::SHORTLIST_FROM {
        format!("shortlist of {} re-scored", metarec_runtime::default_candidates(items))
    } else {
        "exhaustive".to_owned()
    };
    writeln!(out, "catalogue: {items} items, personalize + top-10 of the whole catalogue (rated left out), 1 thread")?;
    writeln!(out, "  default ranking: {ranking}; recall@10 of the default against exhaustive, and the exhaustive")?;
    writeln!(
        out,
        "  top 10's items shared with f32's (of 10), over {RECALL_USERS} users; heap counted by the allocator;"
    )?;
    writeln!(
        out,
        "  load: copying the catalogue (from_bytes), and in place (from_bytes_borrowed, whose heap is shown)"
    )?;
    writeln!(
        out,
        "  {:<5} {:>11} {:>8} {:>8} {:>11} {:>11} {:>14} {:>15} {:>9} {:>7}",
        "table",
        "file bytes",
        "load ms",
        "in place",
        "model heap",
        "session heap",
        "top10 default",
        "top10 exhaust.",
        "recall@10",
        "vs f32"
    )?;
    let mb = |b: Option<usize>| b.map_or("n/a".to_owned(), |b| format!("{:.2} MB", b as f64 / 1e6));
    let mut f32_tops: Option<Vec<Vec<u32>>> = None;
    for precision in EmbeddingPrecision::ALL {
        let f = measure(body, precision, &users, repeat, f32_tops.as_deref())?;
        writeln!(
            out,
            "  {:<5} {:>11} {:>8.2} {:>8.2} {:>11} {:>11} {:>11.3} ms {:>12.3} ms {:>9.3} {:>7.2}  (medians of {repeat}; \
             model: catalogue {}, precompute {})",
            precision.name(),
            f.file_bytes,
            f.load_ms,
            f.in_place_ms,
            mb(f.model_heap),
            mb(f.session_heap),
            f.auto_ms,
            f.exhaustive_ms,
            f.recall,
            f.agreement,
            mb(Some(f.catalogue_bytes.0)),
            mb(Some(f.catalogue_bytes.1)),
        )?;
        f32_tops.get_or_insert(f.tops);
    }
    Ok(())
}
