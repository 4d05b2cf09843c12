//! `Session::top_k`: the catalogue ranked by the scores `score_indices` gives, best first, ties to
//! the lower index, rated items left out on request, no allocation after the first call.

use metarec_runtime::format::ItemRecord;
use metarec_runtime::{Model, Ranked, Session};

use crate::fixture::{tiny_body, tiny_factor_body};

/// Every item's score, by `score_indices`.
fn scores(session: &mut Session<&Model>) -> Vec<f32> {
    let items: Vec<u32> = (0..session.model().item_count() as u32).collect();
    let mut out = vec![0.0; items.len()];
    session.score_indices(&items, &mut out).unwrap();
    out
}

/// The ranking by definition: a full sort of the candidates by score (descending), then index.
fn by_definition(scores: &[f32], leave_out: &[u32], k: usize) -> Vec<Ranked> {
    let mut all: Vec<Ranked> = (0..scores.len() as u32)
        .filter(|item| !leave_out.contains(item))
        .map(|item| Ranked { item, score: scores[item as usize] })
        .collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    all.truncate(k);
    all
}

fn assert_ranks_by_definition(session: &mut Session<&Model>) {
    let scores = scores(session);
    let rated: Vec<u32> = session.support().iter().map(|&(item, _)| item).collect();
    for k in 0..=scores.len() + 2 {
        for exclude_rated in [false, true] {
            let leave_out = if exclude_rated { &rated[..] } else { &[] };
            let top = session.top_k(k, exclude_rated).unwrap().to_vec();
            assert_eq!(top, by_definition(&scores, leave_out, k), "k {k}, exclude_rated {exclude_rated}");
        }
    }
    assert_eq!(session.top_k(usize::MAX, false).unwrap().len(), scores.len());
}

#[test]
fn top_k_ranks_the_scores_before_and_after_adaptation() {
    let model = Model::from_body(tiny_body()).unwrap();
    let mut session = Session::new(&model);
    session.set_profile("gender", "F").unwrap();
    assert_ranks_by_definition(&mut session);
    session.add_rating("m1", 5.0).unwrap();
    session.add_rating("m2", 1.0).unwrap();
    assert_ranks_by_definition(&mut session);
    session.adapt().unwrap();
    assert!(session.is_adapted());
    assert_ranks_by_definition(&mut session);
    // The rated items are the ones left out.
    let all = session.top_k(100, false).unwrap().len();
    let unrated: Vec<u32> = session.top_k(100, true).unwrap().iter().map(|r| r.item).collect();
    assert_eq!(unrated.len(), all - 2);
    assert!(!unrated.contains(&model.item_index("m1").unwrap()));
    assert!(!unrated.contains(&model.item_index("m2").unwrap()));
}

#[test]
fn top_k_ranks_a_factor_model_after_its_fold_in() {
    let model = Model::from_body(tiny_factor_body()).unwrap();
    let mut session = Session::new(&model);
    assert_ranks_by_definition(&mut session);
    session.add_rating_by_index(0, 4.5).unwrap();
    session.add_rating_by_index(3, 2.0).unwrap();
    session.adapt().unwrap();
    assert_ranks_by_definition(&mut session);
}

#[test]
fn equal_scores_rank_by_the_lower_index() {
    // Copies of one item score alike: they rank in index order, whatever k cuts.
    let mut body = tiny_body();
    let copy = body.items[1].rows.clone();
    for id in ["z1", "z2", "z3"] {
        body.items.push(ItemRecord { id: id.to_string(), rows: copy.clone() });
    }
    let model = Model::from_body(body).unwrap();
    let mut session = Session::new(&model);
    let scores = scores(&mut session);
    let copies = [1, 6, 7, 8];
    assert!(copies.iter().all(|&i| scores[i] == scores[1]), "{scores:?}");
    let top: Vec<u32> = session.top_k(scores.len(), false).unwrap().iter().map(|r| r.item).collect();
    let positions: Vec<usize> = copies.iter().map(|&c| top.iter().position(|&t| t == c as u32).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[1] == w[0] + 1), "copies together, in index order: {top:?}");
    // Cut in the middle of the tie: the lower indices stay.
    let cut = positions[0] + 2;
    let kept: Vec<u32> = session.top_k(cut, false).unwrap().iter().map(|r| r.item).collect();
    assert_eq!(kept[positions[0]..], [1, 6]);
}

#[test]
fn top_k_allocates_only_for_a_larger_k() {
    let model = Model::from_body(tiny_body()).unwrap();
    let mut session = Session::new(&model);
    session.add_rating("m3", 4.0).unwrap();
    session.adapt().unwrap();
    session.top_k(100, true).unwrap();
    let bytes = session.memory_bytes();
    for (k, exclude_rated) in [(0, false), (6, false), (2, true), (100, true), (3, false)] {
        session.top_k(k, exclude_rated).unwrap();
        assert_eq!(session.memory_bytes(), bytes, "k {k}");
    }
}

/// [`tiny_body`] with `count` items: every combination of rating and genres, repeated (so many
/// scores tie, across blocks of the scoring too).
fn catalogue_body(count: usize) -> metarec_runtime::ModelBody {
    let mut body = tiny_body();
    body.items = (0..count)
        .map(|i| {
            let genres: Vec<u32> = (0..4).filter(|g| (i / 5) >> g & 1 == 1).collect();
            ItemRecord { id: format!("c{i}"), rows: vec![vec![(i % 5) as u32], genres] }
        })
        .collect();
    body
}

/// Issue 16: top-k streams the catalogue through a bounded heap. Over several scoring blocks,
/// with many ties, it gives exactly the full sort's ranking, for every k around the block edges,
/// rated items left out or not, before and after adaptation.
#[test]
fn top_k_over_many_blocks_is_the_full_sort() {
    let model = Model::from_body(catalogue_body(300)).unwrap();
    let mut session = Session::new(&model);
    session.set_profile("gender", "M").unwrap();
    for (item, rating) in [(299, 4.0), (0, 1.0), (128, 5.0), (127, 2.0), (17, 3.0), (17, 4.0)] {
        session.add_rating_by_index(item, rating).unwrap();
    }
    for adapted in [false, true] {
        if adapted {
            session.adapt().unwrap();
        }
        let scores = scores(&mut session);
        // `score_all` streams the same blocks: the same scores, bit for bit.
        let mut all = vec![f32::NAN; scores.len()];
        session.score_all(&mut all).unwrap();
        assert_eq!(
            all.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
            scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(session.score_all(&mut all[1..]), Err(metarec_runtime::Error::LengthMismatch));
        let rated: Vec<u32> = session.support().iter().map(|&(item, _)| item).collect();
        for k in [1, 2, 10, 79, 80, 81, 127, 128, 129, 255, 256, 294, 295, 299, 300, 301, 1000] {
            for exclude_rated in [false, true] {
                let leave_out = if exclude_rated { &rated[..] } else { &[] };
                let top = session.top_k(k, exclude_rated).unwrap().to_vec();
                assert_eq!(top, by_definition(&scores, leave_out, k), "k {k}, exclude {exclude_rated}, {adapted}");
            }
        }
    }
}

/// Issue 16: top-k keeps `k` results, never a score per item: its memory does not grow with the
/// catalogue.
#[test]
fn top_k_memory_does_not_grow_with_the_catalogue() {
    let grown = |count: usize| {
        let model = Model::from_body(catalogue_body(count)).unwrap();
        let mut session = Session::new(&model);
        session.add_rating_by_index(3, 4.0).unwrap();
        session.adapt().unwrap();
        let before = session.memory_bytes();
        assert_eq!(session.top_k(10, true).unwrap().len(), 10);
        session.memory_bytes() - before
    };
    let small = grown(20);
    assert_eq!(grown(5_000), small);
    assert!(small <= 10 * 8 + 64, "{small} bytes for a top 10");
}
