//! A static kd-tree over AT-PAML's neighbour table: the K nearest stored keys, exactly the list
//! the runtime's scan ([`nearest_scan`]) returns, found while visiting only the leaves whose cell
//! can still hold one of them. `trainer bench neighbours` measures it against the scan; the device
//! runs the scan (on trained tables the tree saves too little to ship: see the bench).
//!
//! Both searches share one definition of "nearest" (`metarec_runtime::neighbours`): the squared
//! Euclidean distance summed in `f32` in dimension order ([`squared_distance`]), ascending, ties
//! to the lower entry index. The tree computes every distance with the runtime's kernels, so its
//! results are the scan's bit for bit.

use metarec_runtime::neighbours::{
    each_distance, nearest_scan, result_len, squared_distance, squared_distances, Nearest,
};

/// Entries per kd-tree leaf, at most. A leaf is scanned eight keys at a time, and in 16
/// dimensions a few more points per leaf cost less than the extra levels of bound checks that
/// smaller leaves need. `trainer bench neighbours` with 8, 16 and 32: 8 prunes clustered keys
/// best but loses most against the scan on uniform keys, 32 the reverse; 16 stays within about
/// 15% of the better of the two on tables up to 16384 entries.
pub const LEAF_SIZE: usize = 16;

/// Key widths up to this keep the search's per-dimension scratch on the stack.
const STACK_DIMS: usize = 64;

/// A static kd-tree over a neighbour table's keys: finds the same K nearest entries as
/// [`nearest_scan`] while visiting only the leaves whose cell can still hold one of them.
///
/// Layout (an implicit balanced tree, so that it is a few flat arrays that could be serialised
/// and shipped in a model file): the entries are arranged in *tree order*, the root covering
/// positions `0..n`; every internal node splits its range in halves at `mid = lo + (hi - lo) / 2`
/// after a median selection on the dimension of largest spread, so the left half holds the
/// smaller coordinates (`≤ split value`) and the right half the larger (`≥ split value`); within
/// a leaf entries ascend. Internal nodes are numbered in heap order (children of `i` are `2i + 1`
/// and `2i + 2`) and store their split dimension and value; all leaves sit at one depth, the
/// smallest at which a leaf holds at most [`LEAF_SIZE`] entries. Building costs
/// O(n log n · key_dim) time. The tree does not copy the keys — every query takes the keys it was
/// built over — and holds 8 bytes per internal node (one per 8 to 16 entries) plus, unless the
/// keys are already in tree order, the order itself (4 bytes per entry).
///
/// Keys in tree order ([`KdTree::order`] is `None`) are what "laid out by the trainer at export"
/// means: an exporter that writes the stored keys and rates in [`KdTree::order`] gives the device a
/// table whose tree needs no order array, reads every leaf as one contiguous run of keys, and is
/// rebuilt identically from those keys (the same split values, no permutation).
///
/// Exactness: distances are computed by [`squared_distance`], exactly as the scan does, and a
/// subtree is skipped only when a lower bound of every distance in it is *strictly* greater than
/// the K-th best distance found so far. The bound is the sum, in dimension order, of the squared
/// per-dimension offsets from the query to the subtree's cell; because `f32` subtraction,
/// multiplication and addition are monotone under round-to-nearest, that rounded sum can never
/// exceed the rounded distance of a point inside the cell, so no rounding can prune a true
/// neighbour. Ties are broken by entry index as in the scan, so the result is identical, order
/// included. Keys or queries that are not finite (where distances may be NaN and "nearest" is
/// only defined by the scan's visiting order) are answered by [`nearest_scan`] itself.
///
/// Whether the tree beats the scan depends on the keys: in 16 dimensions keys spread uniformly
/// over the sphere leave almost nothing to prune (the tree visits nearly every leaf and loses to
/// the scan by its bookkeeping), tightly clustered keys leave most of the table unvisited, and the
/// learned keys of a trained AT-PAML run lie in between (for K = 4 the tree still reads about 60%
/// of them). `trainer bench neighbours` measures both, on a run's own keys with `--run`.
#[derive(Debug, Clone, PartialEq)]
pub struct KdTree {
    /// Key width the tree was built for.
    key_dim: usize,
    /// Entries the tree was built over.
    entries: usize,
    /// Levels of internal nodes (0: the root is a leaf).
    depth: u32,
    /// Entry indices in tree order; empty when that is the identity (keys laid out in it).
    order: Vec<u32>,
    /// Split dimension of each internal node, heap order.
    split_dim: Vec<u32>,
    /// Split value of each internal node, heap order.
    split_value: Vec<f32>,
    /// Queries are answered by [`nearest_scan`]: the keys were not all finite, or did not form
    /// whole keys of `key_dim`, or there were more entries than `u32` indexes.
    scan_only: bool,
}

impl KdTree {
    /// Builds the tree over `keys` (`entries × key_dim`, row-major).
    ///
    /// Never panics. Inputs the tree cannot serve exactly (`key_dim == 0`, a length that is not a
    /// multiple of `key_dim`, non-finite keys, more than `u32::MAX` entries) give a tree without
    /// nodes whose queries run [`nearest_scan`], so results stay the scan's in every case.
    pub fn build(keys: &[f32], key_dim: usize) -> KdTree {
        let mut tree = KdTree {
            key_dim,
            entries: 0,
            depth: 0,
            order: Vec::new(),
            split_dim: Vec::new(),
            split_value: Vec::new(),
            scan_only: true,
        };
        if key_dim == 0 || keys.len() % key_dim != 0 || !keys.iter().all(|v| v.is_finite()) {
            return tree;
        }
        let entries = keys.len() / key_dim;
        if u32::try_from(entries).is_err() {
            return tree;
        }
        tree.entries = entries;
        tree.scan_only = false;
        let mut depth = 0u32;
        while entries.div_ceil(1usize << depth) > LEAF_SIZE {
            depth += 1;
        }
        tree.depth = depth;
        let internal = (1usize << depth) - 1;
        tree.order = (0..entries as u32).collect();
        tree.split_dim = vec![0; internal];
        tree.split_value = vec![0.0; internal];
        let mut builder = Builder {
            keys,
            key_dim,
            order: &mut tree.order,
            split_dim: &mut tree.split_dim,
            split_value: &mut tree.split_value,
            depth,
        };
        builder.split(0, 0, entries, 0);
        if tree.order.iter().enumerate().all(|(position, &entry)| position == entry as usize) {
            tree.order = Vec::new();
        }
        tree
    }

    /// Key width the tree was built for.
    pub fn key_dim(&self) -> usize {
        self.key_dim
    }

    /// Number of entries the tree was built over (0 when it only scans).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the tree holds no entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entry indices in tree order, or `None` when that is the identity: the keys are laid
    /// out in tree order already (or the tree only scans). Writing the keys and their rates in
    /// this order gives a table whose tree is laid out.
    pub fn order(&self) -> Option<&[u32]> {
        if self.order.is_empty() {
            None
        } else {
            Some(&self.order)
        }
    }

    /// Bytes the tree occupies: the struct and its arrays (capacity), not the keys it indexes.
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<KdTree>()
            + self.order.capacity() * core::mem::size_of::<u32>()
            + self.split_dim.capacity() * core::mem::size_of::<u32>()
            + self.split_value.capacity() * core::mem::size_of::<f32>()
    }

    /// The K entries of `keys` nearest to `query`: exactly [`nearest_scan`]'s result (same pairs,
    /// same distances, same order), found with branch-and-bound pruning.
    ///
    /// `keys` must be the keys the tree was built over. Keys of another length, a non-finite
    /// query, or a tree that only scans are answered by [`nearest_scan`]; keys of the same length
    /// but other values give some K entries (never a panic), not necessarily the nearest.
    pub fn nearest(&self, keys: &[f32], query: &[f32], k: usize, out: &mut Nearest) {
        let key_dim = self.key_dim;
        if self.scan_only
            || Some(keys.len()) != self.entries.checked_mul(key_dim)
            || query.len() != key_dim
            || !query.iter().all(|v| v.is_finite())
        {
            nearest_scan(keys, key_dim, query, k, out);
            return;
        }
        out.clear();
        let wanted = result_len(k, self.entries);
        if wanted == 0 {
            return;
        }
        let mut stack_offsets = [0.0f32; STACK_DIMS];
        let mut heap_offsets: Vec<f32> = Vec::new();
        let offsets: &mut [f32] = match stack_offsets.get_mut(..key_dim) {
            Some(offsets) => offsets,
            None => {
                heap_offsets.resize(key_dim, 0.0);
                &mut heap_offsets
            }
        };
        let mut search = Search { tree: self, keys, query, wanted, offsets, out };
        search.visit(0, 0, self.entries, 0);
    }
}

/// Recursive median splits during [`KdTree::build`].
struct Builder<'a> {
    keys: &'a [f32],
    key_dim: usize,
    order: &'a mut [u32],
    split_dim: &'a mut [u32],
    split_value: &'a mut [f32],
    depth: u32,
}

impl Builder<'_> {
    /// Splits `order[lo..hi]` at node `node` on level `level`, then its halves; sorts leaves.
    fn split(&mut self, node: usize, lo: usize, hi: usize, level: u32) {
        let (keys, key_dim) = (self.keys, self.key_dim);
        let coordinate = |entry: u32, dim: usize| -> f32 {
            let at = (entry as usize).saturating_mul(key_dim).saturating_add(dim);
            keys.get(at).copied().unwrap_or(0.0)
        };
        let Some(range) = self.order.get_mut(lo..hi) else { return };
        if level >= self.depth || range.len() < 2 {
            // A leaf: entries ascending, so keys laid out in tree order rebuild to the identity.
            range.sort_unstable();
            return;
        }
        // The dimension of largest spread (the first of equals).
        let mut best_dim = 0usize;
        let mut best_spread = f32::NEG_INFINITY;
        for dim in 0..key_dim {
            let mut min = f32::INFINITY;
            let mut max = f32::NEG_INFINITY;
            for &entry in range.iter() {
                let v = coordinate(entry, dim);
                min = min.min(v);
                max = max.max(v);
            }
            if max - min > best_spread {
                best_spread = max - min;
                best_dim = dim;
            }
        }
        let mid = lo + (hi - lo) / 2;
        // Median selection, O(hi - lo). The entry index breaks ties, so the split is one set
        // whatever the order the range arrived in (keys laid out in tree order rebuild alike).
        range.select_nth_unstable_by(mid - lo, |&a, &b| {
            coordinate(a, best_dim).total_cmp(&coordinate(b, best_dim)).then(a.cmp(&b))
        });
        let value = range.get(mid - lo).map_or(0.0, |&entry| coordinate(entry, best_dim));
        if let (Some(d), Some(v)) = (self.split_dim.get_mut(node), self.split_value.get_mut(node)) {
            *d = best_dim as u32;
            *v = value;
        }
        self.split(2 * node + 1, lo, mid, level + 1);
        self.split(2 * node + 2, mid, hi, level + 1);
    }
}

/// One query's branch-and-bound descent.
struct Search<'a, 'o> {
    tree: &'a KdTree,
    keys: &'a [f32],
    query: &'a [f32],
    wanted: usize,
    /// Per dimension, the offset from the query to the current cell (0 inside its extent).
    offsets: &'a mut [f32],
    out: &'o mut Nearest,
}

impl Search<'_, '_> {
    /// The distance an entry must not exceed to enter the list (infinite until it is full).
    fn worst(&self) -> f32 {
        if self.out.len() < self.wanted {
            f32::INFINITY
        } else {
            self.out.last().map_or(f32::INFINITY, |&(_, d)| d)
        }
    }

    fn visit(&mut self, node: usize, lo: usize, hi: usize, level: u32) {
        if level >= self.tree.depth {
            self.leaf(lo, hi);
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let (Some(&dim), Some(&split)) = (self.tree.split_dim.get(node), self.tree.split_value.get(node)) else {
            return;
        };
        let dim = dim as usize;
        let q = self.query.get(dim).copied().unwrap_or(0.0);
        let left = (2 * node + 1, lo, mid);
        let right = (2 * node + 2, mid, hi);
        let (near, far) = if q < split { (left, right) } else { (right, left) };
        self.visit(near.0, near.1, near.2, level + 1);
        // The far cell lies beyond the split plane along `dim`: every point in it is at least
        // |split - q| away along `dim`, and at least the other offsets along the other dimensions.
        let offset = split - q;
        let worst = self.worst();
        if offset * offset > worst {
            return;
        }
        let Some(slot) = self.offsets.get_mut(dim) else { return };
        let previous = core::mem::replace(slot, offset);
        if self.bound() <= worst {
            self.visit(far.0, far.1, far.2, level + 1);
        }
        if let Some(slot) = self.offsets.get_mut(dim) {
            *slot = previous;
        }
    }

    /// Σ offset², in dimension order from zero, like the distance itself: a lower bound of the
    /// rounded distance of every point in the current cell, rounding included.
    fn bound(&self) -> f32 {
        let mut sum = 0.0f32;
        for o in self.offsets.iter() {
            sum += o * o;
        }
        sum
    }

    fn leaf(&mut self, lo: usize, hi: usize) {
        let (key_dim, wanted, query) = (self.tree.key_dim, self.wanted, self.query);
        let out = &mut *self.out;
        let insert = |entry: usize, distance: f32| tree_insert(out, wanted, entry, distance);
        if self.tree.order.is_empty() {
            // Laid out: the leaf is one contiguous run of keys.
            let run = self.keys.get(lo.saturating_mul(key_dim)..hi.saturating_mul(key_dim)).unwrap_or(&[]);
            each_distance(run, key_dim, lo, query, insert);
        } else {
            let order = self.tree.order.get(lo..hi).unwrap_or(&[]);
            let keys = self.keys;
            let row = |entry: u32| {
                let start = (entry as usize).saturating_mul(key_dim);
                keys.get(start..start.saturating_add(key_dim)).unwrap_or(&[])
            };
            let mut insert = insert;
            let mut octets = order.chunks_exact(8);
            for octet in octets.by_ref() {
                let rows: [&[f32]; 8] = core::array::from_fn(|j| octet.get(j).map_or(&[][..], |&e| row(e)));
                for (&entry, distance) in octet.iter().zip(squared_distances(rows, query)) {
                    insert(entry as usize, distance);
                }
            }
            let mut quads = octets.remainder().chunks_exact(4);
            for quad in quads.by_ref() {
                let rows: [&[f32]; 4] = core::array::from_fn(|j| quad.get(j).map_or(&[][..], |&e| row(e)));
                for (&entry, distance) in quad.iter().zip(squared_distances(rows, query)) {
                    insert(entry as usize, distance);
                }
            }
            for &entry in quads.remainder() {
                insert(entry as usize, squared_distance(row(entry), query));
            }
        }
    }
}

/// The tree's insertion: the list ordered by (distance, entry index), whatever the order entries
/// are visited in, which is the order the scan's rule produces; nothing beyond `wanted`.
#[inline(always)]
fn tree_insert(out: &mut Nearest, wanted: usize, entry: usize, distance: f32) {
    if out.len() == wanted && out.last().is_some_and(|&(_, last)| distance > last) {
        return;
    }
    let entry = entry as u32;
    let position = out.iter().position(|&(e, d)| distance < d || (distance == d && entry < e)).unwrap_or(out.len());
    if position < wanted {
        if out.len() == wanted {
            out.pop();
        }
        // Cannot fail: the list holds fewer than `wanted` <= 16 entries here.
        let _ = out.insert(position, (entry, distance));
    }
}

// kiddo, the exact oracle, is a dependency of the `torch` feature (the trainer's default).
#[cfg(all(test, feature = "torch"))]
mod tests {
    //! The tree against the runtime's scan (bit for bit, ties included) and kiddo's exact
    //! search, on degenerate inputs, and laid out in tree order.

    use kiddo::SquaredEuclidean;

    use super::*;

    /// xorshift64*: a seeded stream.
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

    fn scan(keys: &[f32], key_dim: usize, query: &[f32], k: usize) -> Nearest {
        let mut out = Nearest::new();
        nearest_scan(keys, key_dim, query, k, &mut out);
        out
    }

    fn tree_search(tree: &KdTree, keys: &[f32], query: &[f32], k: usize) -> Nearest {
        let mut out = Nearest::new();
        // A stale list must not leak into the answer.
        let _ = out.push((99, -1.0));
        tree.nearest(keys, query, k, &mut out);
        out
    }

    /// Same entries, same distances bit for bit (NaN included), same order.
    fn assert_identical(a: &Nearest, b: &Nearest, what: &str) {
        let bits = |f: &Nearest| f.iter().map(|&(e, d)| (e, d.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{what}");
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
    /// same entry wherever its distance is distinct from the neighbouring ranks' (kiddo sums in
    /// its own order, so near-ties may swap).
    fn assert_matches_kiddo(found: &Nearest, oracle: &[(u32, f32)], k: usize, what: &str) {
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
                let what = format!("{entries} entries, dim {D}, k {k}, query {q}");
                let found = tree_search(&tree, &keys, &query, k);
                assert_matches_kiddo(&found, &kiddo_nearest::<D>(&keys, &query, (k + 1).min(entries)), k, &what);
                assert_identical(&found, &scan(&keys, D, &query, k), &format!("tree vs scan: {what}"));
            }
        }
    }

    #[test]
    fn tree_agrees_with_the_scan_and_kiddo() {
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
    fn clustered_unit_keys_agree_with_the_scan_and_kiddo() {
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
                let what = format!("clustered query {q} k {k}");
                let found = tree_search(&tree, &keys, &query, k);
                assert_matches_kiddo(&found, &kiddo_nearest::<D>(&keys, &query, k + 1), k, &what);
                assert_identical(&found, &scan(&keys, D, &query, k), &what);
            }
        }
    }

    #[test]
    fn ties_break_by_lower_index_as_in_the_scan() {
        let mut rng = Rng::new(3);
        for (entries, key_dim, levels) in [(4096, 2, 3), (1000, 16, 2), (300, 4, 2), (64, 3, 1), (2000, 2, 1)] {
            // Coordinates from a few levels only, so many keys repeat and many distances tie.
            let grid = |rng: &mut Rng| (rng.below(levels + 1) as f32) / levels.max(1) as f32;
            let keys: Vec<f32> = (0..entries * key_dim).map(|_| grid(&mut rng)).collect();
            let tree = KdTree::build(&keys, key_dim);
            for q in 0..60 {
                let query: Vec<f32> = (0..key_dim).map(|_| grid(&mut rng)).collect();
                for k in [1, 2, 4, 7, 16, 40] {
                    let what = format!("{entries}×{key_dim}, levels {levels}, query {q}, k {k}");
                    assert_identical(&tree_search(&tree, &keys, &query, k), &scan(&keys, key_dim, &query, k), &what);
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
                let what = format!("overflow query {q}");
                assert_identical(&tree_search(&tree, &keys, &query, k), &scan(&keys, 4, &query, k), &what);
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
        assert!(tree_search(&empty, &[], &query, 4).is_empty());

        // k = 0: nothing; k > 16: the 16 nearest; k > entries: every entry.
        assert!(tree_search(&tree, &keys, &query, 0).is_empty());
        assert_identical(&tree_search(&tree, &keys, &query, usize::MAX), &scan(&keys, 16, &query, 16), "k > 16");
        let small = KdTree::build(&keys[..3 * 16], 16);
        assert_eq!(tree_search(&small, &keys[..3 * 16], &query, 10).len(), 3);

        // A query of the wrong length, key_dim 0, or keys that are not whole rows: nothing.
        assert!(tree_search(&tree, &keys, &query[..15], 4).is_empty());
        assert!(tree_search(&tree, &keys, &[], 4).is_empty());
        let zero = KdTree::build(&keys, 0);
        assert!(zero.is_empty());
        assert!(tree_search(&zero, &keys, &[], 4).is_empty());
        let ragged = KdTree::build(&keys[..17], 16);
        assert!(tree_search(&ragged, &keys[..17], &query, 4).is_empty());

        // Keys other than the tree's (another length): answered by the scan.
        let other = &keys[..20 * 16];
        assert_identical(&tree_search(&tree, other, &query, 4), &scan(other, 16, &query, 4), "other keys");

        // NaN or infinity in the query, NaN among the keys: the scan's answer.
        let mut nan_query = query.clone();
        nan_query[3] = f32::NAN;
        assert_identical(&tree_search(&tree, &keys, &nan_query, 4), &scan(&keys, 16, &nan_query, 4), "NaN query");
        let mut inf_query = query.clone();
        inf_query[0] = f32::INFINITY;
        assert_identical(&tree_search(&tree, &keys, &inf_query, 4), &scan(&keys, 16, &inf_query, 4), "inf query");
        let mut nan_keys = keys.clone();
        nan_keys[5 * 16 + 2] = f32::NAN;
        let nan_tree = KdTree::build(&nan_keys, 16);
        for k in [1, 4, 16] {
            assert_identical(&tree_search(&nan_tree, &nan_keys, &query, k), &scan(&nan_keys, 16, &query, k), "NaN key");
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
}
