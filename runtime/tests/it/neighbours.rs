//! The K nearest stored keys: `nearest_scan` and `KdTree::nearest` against kiddo's exact search,
//! against each other (bit for bit, ties included), and on degenerate inputs.

use kiddo::SquaredEuclidean;
use metarec_runtime::neighbours::{nearest_scan, squared_distance, KdTree, LEAF_SIZE};

type Found = heapless::Vec<(u32, f32), 16>;

/// xorshift64*: a seeded stream without the rand crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

fn scan(keys: &[f32], key_dim: usize, query: &[f32], k: usize) -> Found {
    let mut out = Found::new();
    nearest_scan(keys, key_dim, query, k, &mut out);
    out
}

fn tree_search(tree: &KdTree, keys: &[f32], query: &[f32], k: usize) -> Found {
    let mut out = Found::new();
    // A stale list must not leak into the answer.
    let _ = out.push((99, -1.0));
    tree.nearest(keys, query, k, &mut out);
    out
}

/// Same entries, same distances bit for bit (NaN included), same order.
fn assert_identical(a: &Found, b: &Found, what: &str) {
    let bits = |f: &Found| f.iter().map(|&(e, d)| (e, d.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b), "{what}");
}

/// The session's scan before this module existed, copied verbatim in spirit: the reference for
/// "today's semantics".
fn session_scan(keys: &[f32], key_dim: usize, query: &[f32], neighbours: usize) -> Found {
    let wanted = neighbours.min(16);
    let mut nearest = Found::new();
    for (entry, stored) in keys.chunks_exact(key_dim).enumerate() {
        let distance: f32 = stored.iter().zip(query.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
        let position = nearest.iter().position(|n| distance < n.1).unwrap_or(nearest.len());
        if position < wanted {
            if nearest.len() == wanted {
                nearest.pop();
            }
            let _ = nearest.insert(position, (entry as u32, distance));
        }
    }
    nearest
}

/// Every entry sorted by (distance, index), the first `k`: the definition both searches follow.
fn brute_force(keys: &[f32], key_dim: usize, query: &[f32], k: usize) -> Found {
    let mut all: Vec<(u32, f32)> =
        keys.chunks_exact(key_dim).enumerate().map(|(i, s)| (i as u32, squared_distance(s, query))).collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.into_iter().take(k.min(16)).collect()
}

fn kiddo_nearest<const D: usize>(keys: &[f32], query: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut tree: kiddo::KdTree<f32, D> = kiddo::KdTree::new();
    for (i, key) in keys.chunks_exact(D).enumerate() {
        tree.add(key.try_into().unwrap(), i as u64);
    }
    let query: &[f32; D] = query.try_into().unwrap();
    tree.nearest_n::<SquaredEuclidean>(query, n).into_iter().map(|n| (n.item as u32, n.distance)).collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-12
}

/// `found` (K entries) against kiddo's K + 1 nearest: distances within 1e-5 relative, and the
/// same entry wherever its distance is distinct from the neighbouring ranks' (kiddo sums in its
/// own order, so near-ties may swap).
fn assert_matches_kiddo(found: &Found, oracle: &[(u32, f32)], k: usize, what: &str) {
    assert_eq!(found.len(), oracle.len().min(k), "{what}: count");
    for (i, &(entry, distance)) in found.iter().enumerate() {
        let (o_entry, o_distance) = oracle[i];
        assert!(close(distance, o_distance), "{what}: rank {i}: {distance} vs kiddo {o_distance}");
        let tied_before = i > 0 && close(oracle[i - 1].1, o_distance);
        let tied_after = oracle.get(i + 1).is_some_and(|&(_, d)| close(d, o_distance));
        if !tied_before && !tied_after {
            assert_eq!(entry, o_entry, "{what}: rank {i} (distance {distance})");
        }
    }
}

fn unit_rows(values: &mut [f32], key_dim: usize) {
    for row in values.chunks_exact_mut(key_dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-8);
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

fn oracle_case<const D: usize>(entries: usize, rng: &mut Rng, unit: bool) {
    let mut keys = rng.values(entries * D);
    if unit {
        unit_rows(&mut keys, D);
    }
    let tree = KdTree::build(&keys, D);
    assert_eq!(tree.len(), entries);
    let queries = if entries >= 4096 { 12 } else { 40 };
    for q in 0..queries {
        let query: Vec<f32> = if q % 5 == 4 {
            // A stored key itself: distance zero at rank 0.
            let at = rng.below(entries) * D;
            keys[at..at + D].to_vec()
        } else {
            let mut query = rng.values(D);
            if unit {
                unit_rows(&mut query, D);
            }
            query
        };
        for k in [1, 4, 16] {
            let oracle = kiddo_nearest::<D>(&keys, &query, (k + 1).min(entries));
            let what = format!("{entries} entries, dim {D}, k {k}, query {q}");
            let scanned = scan(&keys, D, &query, k);
            assert_matches_kiddo(&scanned, &oracle, k, &format!("scan: {what}"));
            let found = tree_search(&tree, &keys, &query, k);
            assert_identical(&found, &scanned, &format!("tree vs scan: {what}"));
            assert_identical(&scanned, &session_scan(&keys, D, &query, k), &format!("session: {what}"));
        }
    }
}

#[test]
fn scan_and_tree_agree_with_kiddo() {
    let mut rng = Rng::new(7);
    for entries in [1, 5, 100, 4096] {
        for unit in [false, true] {
            oracle_case::<2>(entries, &mut rng, unit);
            oracle_case::<16>(entries, &mut rng, unit);
            oracle_case::<40>(entries, &mut rng, unit);
        }
    }
}

#[test]
fn clustered_unit_keys_agree_with_kiddo() {
    // Learned keys cluster: 4096 unit keys around 12 centres, queries near the same centres.
    const D: usize = 16;
    let mut rng = Rng::new(11);
    let mut centres = rng.values(12 * D);
    unit_rows(&mut centres, D);
    let around = |rng: &mut Rng, centres: &[f32]| {
        let c = rng.below(12) * D;
        let mut v: Vec<f32> = (0..D).map(|i| centres[c + i] + 0.05 * rng.uniform()).collect();
        unit_rows(&mut v, D);
        v
    };
    let keys: Vec<f32> = (0..4096).flat_map(|_| around(&mut rng, &centres)).collect();
    let tree = KdTree::build(&keys, D);
    for q in 0..30 {
        let query = around(&mut rng, &centres);
        for k in [1, 4, 16] {
            let oracle = kiddo_nearest::<D>(&keys, &query, k + 1);
            let scanned = scan(&keys, D, &query, k);
            assert_matches_kiddo(&scanned, &oracle, k, &format!("clustered query {q} k {k}"));
            assert_identical(&tree_search(&tree, &keys, &query, k), &scanned, &format!("clustered query {q} k {k}"));
        }
    }
}

#[test]
fn ties_break_by_lower_index_in_both_searches() {
    let mut rng = Rng::new(3);
    for (entries, key_dim, levels) in [(4096, 2, 3), (1000, 16, 2), (300, 4, 2), (64, 3, 1), (2000, 2, 1)] {
        // Coordinates from a few levels only, so many keys repeat and many distances tie exactly.
        let grid = |rng: &mut Rng| (rng.below(levels + 1) as f32) / levels.max(1) as f32;
        let keys: Vec<f32> = (0..entries * key_dim).map(|_| grid(&mut rng)).collect();
        let tree = KdTree::build(&keys, key_dim);
        for q in 0..60 {
            let query: Vec<f32> = (0..key_dim).map(|_| grid(&mut rng)).collect();
            for k in [1, 2, 4, 7, 16, 40] {
                let what = format!("{entries}×{key_dim}, levels {levels}, query {q}, k {k}");
                let scanned = scan(&keys, key_dim, &query, k);
                assert_identical(&scanned, &brute_force(&keys, key_dim, &query, k), &what);
                assert_identical(&scanned, &session_scan(&keys, key_dim, &query, k), &what);
                assert_identical(&tree_search(&tree, &keys, &query, k), &scanned, &what);
            }
        }
    }
    // Every key the same: the answer is entries 0..k at one distance.
    let keys = [0.25f32; 16 * 200];
    let tree = KdTree::build(&keys, 16);
    let found = tree_search(&tree, &keys, &[0.5; 16], 4);
    assert_eq!(found.iter().map(|n| n.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_identical(&found, &scan(&keys, 16, &[0.5; 16], 4), "all equal");
}

#[test]
fn overflowing_distances_tie_at_infinity_like_the_scan() {
    // Finite keys so large that (a - b)² overflows: many distances are +inf and tie.
    let mut rng = Rng::new(5);
    let keys: Vec<f32> = (0..500 * 4).map(|_| rng.uniform() * 3e38).collect();
    let tree = KdTree::build(&keys, 4);
    for q in 0..20 {
        let query: Vec<f32> = (0..4).map(|_| rng.uniform() * 3e38).collect();
        for k in [1, 4, 16] {
            let scanned = scan(&keys, 4, &query, k);
            assert_identical(&scanned, &brute_force(&keys, 4, &query, k), "overflow: brute force");
            assert_identical(&tree_search(&tree, &keys, &query, k), &scanned, &format!("overflow query {q}"));
        }
    }
}

#[test]
fn wide_keys_use_heap_scratch() {
    let mut rng = Rng::new(9);
    let key_dim = 100;
    let keys = rng.values(700 * key_dim);
    let tree = KdTree::build(&keys, key_dim);
    for _ in 0..10 {
        let query = rng.values(key_dim);
        assert_identical(&tree_search(&tree, &keys, &query, 4), &scan(&keys, key_dim, &query, 4), "dim 100");
    }
}

#[test]
fn degenerate_inputs_never_panic() {
    let mut rng = Rng::new(13);
    let keys = rng.values(50 * 16);
    let query = rng.values(16);
    let tree = KdTree::build(&keys, 16);

    // Empty table: nothing found; the tree over it is empty.
    let empty = KdTree::build(&[], 16);
    assert!(empty.is_empty());
    assert!(scan(&[], 16, &query, 4).is_empty());
    assert!(tree_search(&empty, &[], &query, 4).is_empty());

    // k = 0: nothing.
    assert!(scan(&keys, 16, &query, 0).is_empty());
    assert!(tree_search(&tree, &keys, &query, 0).is_empty());

    // k > 16: the 16 nearest; k > entries: every entry.
    let sixteen = scan(&keys, 16, &query, 16);
    assert_eq!(sixteen.len(), 16);
    assert_identical(&scan(&keys, 16, &query, 1000), &sixteen, "k > 16");
    assert_identical(&tree_search(&tree, &keys, &query, usize::MAX), &sixteen, "tree k > 16");
    assert_eq!(scan(&keys[..3 * 16], 16, &query, 10).len(), 3);
    let small = KdTree::build(&keys[..3 * 16], 16);
    assert_eq!(tree_search(&small, &keys[..3 * 16], &query, 10).len(), 3);

    // A query of the wrong length, key_dim 0, or keys that are not whole rows: nothing.
    assert!(scan(&keys, 16, &query[..15], 4).is_empty());
    assert!(tree_search(&tree, &keys, &query[..15], 4).is_empty());
    assert!(tree_search(&tree, &keys, &[], 4).is_empty());
    assert!(scan(&keys, 0, &[], 4).is_empty());
    let zero = KdTree::build(&keys, 0);
    assert!(zero.is_empty());
    assert!(tree_search(&zero, &keys, &[], 4).is_empty());
    assert!(scan(&keys[..17], 16, &query, 4).is_empty());
    let ragged = KdTree::build(&keys[..17], 16);
    assert!(tree_search(&ragged, &keys[..17], &query, 4).is_empty());

    // Keys other than the tree's (another length): answered by the scan.
    assert_identical(&tree_search(&tree, &keys[..20 * 16], &query, 4), &scan(&keys[..20 * 16], 16, &query, 4), "other");

    // NaN in the query: every distance is NaN, which compares neither way, so both give what the
    // session always gave: the first k entries in index order, at distance NaN.
    let mut nan_query = query.clone();
    nan_query[3] = f32::NAN;
    let nan = scan(&keys, 16, &nan_query, 4);
    assert_eq!(nan.iter().map(|n| n.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(nan.iter().all(|n| n.1.is_nan()));
    assert_identical(&nan, &session_scan(&keys, 16, &nan_query, 4), "NaN query vs session");
    assert_identical(&tree_search(&tree, &keys, &nan_query, 4), &nan, "NaN query");

    // An infinite query coordinate: every distance is +inf, ties by index.
    let mut inf_query = query.clone();
    inf_query[0] = f32::INFINITY;
    let inf = scan(&keys, 16, &inf_query, 4);
    assert_eq!(inf.iter().map(|n| (n.0, n.1)).collect::<Vec<_>>(), [0, 1, 2, 3].map(|e| (e, f32::INFINITY)));
    assert_identical(&tree_search(&tree, &keys, &inf_query, 4), &inf, "inf query");

    // NaN among the keys: the tree defers to the scan, which keeps the session's behaviour.
    let mut nan_keys = keys.clone();
    nan_keys[5 * 16 + 2] = f32::NAN;
    let nan_tree = KdTree::build(&nan_keys, 16);
    for k in [1, 4, 16] {
        let scanned = scan(&nan_keys, 16, &query, k);
        assert_identical(&scanned, &session_scan(&nan_keys, 16, &query, k), "NaN key vs session");
        assert_identical(&tree_search(&nan_tree, &nan_keys, &query, k), &scanned, "NaN key");
    }
}

#[test]
fn tree_memory_is_an_index_per_entry_plus_small_nodes() {
    let mut rng = Rng::new(17);
    let keys = rng.values(4096 * 16);
    let tree = KdTree::build(&keys, 16);
    let bytes = tree.memory_bytes();
    assert!(bytes >= 4096 * 4, "{bytes}");
    // At most one internal node (8 bytes) per 4 entries beyond the order.
    assert!(bytes <= 4096 * 4 + 4096 / 4 * 8 + 256, "{bytes}");
}

#[test]
fn keys_written_in_tree_order_rebuild_to_a_laid_out_tree() {
    let mut rng = Rng::new(19);
    for (entries, key_dim) in [(4096, 16), (1000, 16), (333, 2), (17, 40), (40, 3)] {
        let keys = rng.values(entries * key_dim);
        let tree = KdTree::build(&keys, key_dim);
        let order = tree.order().expect("random keys are not in tree order").to_vec();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..entries as u32).collect::<Vec<_>>(), "order is a permutation");
        let laid: Vec<f32> =
            order.iter().flat_map(|&e| &keys[e as usize * key_dim..(e as usize + 1) * key_dim]).copied().collect();
        let laid_tree = KdTree::build(&laid, key_dim);
        assert_eq!(laid_tree.order(), None, "{entries}×{key_dim}: the laid-out keys rebuild to the identity");
        assert!(laid_tree.memory_bytes() < tree.memory_bytes());
        for _ in 0..20 {
            let query = rng.values(key_dim);
            let found = tree_search(&laid_tree, &laid, &query, 4);
            assert_identical(&found, &scan(&laid, key_dim, &query, 4), "laid out vs scan");
            // The same stored users as over the original numbering (random keys: no exact ties).
            let original: Vec<(u32, u32)> = found.iter().map(|&(e, d)| (order[e as usize], d.to_bits())).collect();
            let direct: Vec<(u32, u32)> =
                tree_search(&tree, &keys, &query, 4).iter().map(|&(e, d)| (e, d.to_bits())).collect();
            assert_eq!(original, direct);
        }
    }
    // A table that fits one leaf is in tree order from the start.
    let small = rng.values(LEAF_SIZE * 16);
    assert_eq!(KdTree::build(&small, 16).order(), None);
    // Keys with many duplicates rebuild to the identity too (ties split by entry index).
    let keys: Vec<f32> = (0..2000 * 2).map(|_| rng.below(3) as f32).collect();
    let tree = KdTree::build(&keys, 2);
    let order = tree.order().unwrap().to_vec();
    let laid: Vec<f32> = order.iter().flat_map(|&e| &keys[e as usize * 2..(e as usize + 1) * 2]).copied().collect();
    assert_eq!(KdTree::build(&laid, 2).order(), None);
}
