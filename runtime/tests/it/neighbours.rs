//! The K nearest stored keys: `nearest_scan` against kiddo's exact search, against the
//! definition (bit for bit, ties included), and on degenerate inputs; the distance kernels it
//! shares with the trainer's kd-tree (whose tests against the scan live in
//! `trainer/src/kdtree.rs`).

use kiddo::SquaredEuclidean;
use metarec_runtime::neighbours::{each_distance, nearest_scan, result_len, squared_distance, squared_distances};

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
            assert_identical(&scanned, &session_scan(&keys, D, &query, k), &format!("session: {what}"));
        }
    }
}

#[test]
fn scan_agrees_with_kiddo() {
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
    for q in 0..30 {
        let query = around(&mut rng, &centres);
        for k in [1, 4, 16] {
            let oracle = kiddo_nearest::<D>(&keys, &query, k + 1);
            let scanned = scan(&keys, D, &query, k);
            assert_matches_kiddo(&scanned, &oracle, k, &format!("clustered query {q} k {k}"));
        }
    }
}

#[test]
fn ties_break_by_lower_index() {
    let mut rng = Rng::new(3);
    for (entries, key_dim, levels) in [(4096, 2, 3), (1000, 16, 2), (300, 4, 2), (64, 3, 1), (2000, 2, 1)] {
        // Coordinates from a few levels only, so many keys repeat and many distances tie exactly.
        let grid = |rng: &mut Rng| (rng.below(levels + 1) as f32) / levels.max(1) as f32;
        let keys: Vec<f32> = (0..entries * key_dim).map(|_| grid(&mut rng)).collect();
        for q in 0..60 {
            let query: Vec<f32> = (0..key_dim).map(|_| grid(&mut rng)).collect();
            for k in [1, 2, 4, 7, 16, 40] {
                let what = format!("{entries}×{key_dim}, levels {levels}, query {q}, k {k}");
                let scanned = scan(&keys, key_dim, &query, k);
                assert_identical(&scanned, &brute_force(&keys, key_dim, &query, k), &what);
                assert_identical(&scanned, &session_scan(&keys, key_dim, &query, k), &what);
            }
        }
    }
    // Every key the same: the answer is entries 0..k at one distance.
    let keys = [0.25f32; 16 * 200];
    let found = scan(&keys, 16, &[0.5; 16], 4);
    assert_eq!(found.iter().map(|n| n.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[test]
fn overflowing_distances_tie_at_infinity_like_the_scan() {
    // Finite keys so large that (a - b)² overflows: many distances are +inf and tie.
    let mut rng = Rng::new(5);
    let keys: Vec<f32> = (0..500 * 4).map(|_| rng.uniform() * 3e38).collect();
    for q in 0..20 {
        let query: Vec<f32> = (0..4).map(|_| rng.uniform() * 3e38).collect();
        for k in [1, 4, 16] {
            let scanned = scan(&keys, 4, &query, k);
            assert_identical(&scanned, &brute_force(&keys, 4, &query, k), &format!("overflow query {q}"));
        }
    }
}

#[test]
fn degenerate_inputs_never_panic() {
    let mut rng = Rng::new(13);
    let keys = rng.values(50 * 16);
    let query = rng.values(16);

    // Empty table, k = 0: nothing found.
    assert!(scan(&[], 16, &query, 4).is_empty());
    assert!(scan(&keys, 16, &query, 0).is_empty());

    // k > 16: the 16 nearest; k > entries: every entry.
    let sixteen = scan(&keys, 16, &query, 16);
    assert_eq!(sixteen.len(), 16);
    assert_identical(&scan(&keys, 16, &query, 1000), &sixteen, "k > 16");
    assert_identical(&scan(&keys, 16, &query, usize::MAX), &sixteen, "k = usize::MAX");
    assert_eq!(scan(&keys[..3 * 16], 16, &query, 10).len(), 3);

    // A query of the wrong length, key_dim 0, or keys that are not whole rows: nothing.
    assert!(scan(&keys, 16, &query[..15], 4).is_empty());
    assert!(scan(&keys, 16, &[], 4).is_empty());
    assert!(scan(&keys, 0, &[], 4).is_empty());
    assert!(scan(&keys[..17], 16, &query, 4).is_empty());

    // NaN in the query: every distance is NaN, which compares neither way, so the scan gives
    // what the session always gave: the first k entries in index order, at distance NaN.
    let mut nan_query = query.clone();
    nan_query[3] = f32::NAN;
    let nan = scan(&keys, 16, &nan_query, 4);
    assert_eq!(nan.iter().map(|n| n.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(nan.iter().all(|n| n.1.is_nan()));
    assert_identical(&nan, &session_scan(&keys, 16, &nan_query, 4), "NaN query vs session");

    // An infinite query coordinate: every distance is +inf, ties by index.
    let mut inf_query = query.clone();
    inf_query[0] = f32::INFINITY;
    let inf = scan(&keys, 16, &inf_query, 4);
    assert_eq!(inf.iter().map(|n| (n.0, n.1)).collect::<Vec<_>>(), [0, 1, 2, 3].map(|e| (e, f32::INFINITY)));

    // NaN among the keys: the session's behaviour.
    let mut nan_keys = keys.clone();
    nan_keys[5 * 16 + 2] = f32::NAN;
    for k in [1, 4, 16] {
        assert_identical(&scan(&nan_keys, 16, &query, k), &session_scan(&nan_keys, 16, &query, k), "NaN key");
    }
}

/// The kernels a search shares with the scan: every distance bit for bit `squared_distance`'s,
/// in entry order, eight or four keys at a time or one by one.
#[test]
fn shared_distance_kernels_match_the_definition() {
    let mut rng = Rng::new(23);
    for (entries, key_dim) in [(0, 16), (1, 16), (7, 3), (8, 16), (13, 2), (29, 40)] {
        let keys = rng.values(entries * key_dim);
        let query = rng.values(key_dim);
        let mut visited = Vec::new();
        each_distance(&keys, key_dim, 100, &query, |entry, distance| visited.push((entry, distance.to_bits())));
        let expected: Vec<(usize, u32)> = keys
            .chunks_exact(key_dim)
            .enumerate()
            .map(|(i, row)| (100 + i, squared_distance(row, &query).to_bits()))
            .collect();
        assert_eq!(visited, expected, "{entries}×{key_dim}");
        if entries >= 4 {
            let rows: [&[f32]; 4] = core::array::from_fn(|i| &keys[i * key_dim..(i + 1) * key_dim]);
            let four = squared_distances(rows, &query).map(f32::to_bits);
            assert_eq!(four.to_vec(), expected[..4].iter().map(|e| e.1).collect::<Vec<_>>());
        }
    }
    // A trailing partial row and key_dim 0 are not visited.
    let mut count = 0;
    each_distance(&[1.0; 17], 16, 0, &[0.0; 16], |_, _| count += 1);
    each_distance(&[1.0; 17], 0, 0, &[], |_, _| count += 1);
    assert_eq!(count, 1);
    assert_eq!((result_len(4, 100), result_len(40, 100), result_len(4, 3), result_len(0, 3)), (4, 16, 3, 0));
}
