//! The K nearest stored keys of AT-PAML's neighbour table: a linear scan and a static kd-tree
//! that return exactly the same list.
//!
//! AT-PAML personalises a user's learning rate with the Gaussian-kernel-weighted rates of the K
//! stored users whose keys lie nearest to the user's own key. The table holds up to a few
//! thousand unit keys of width 16 and K is 4, so the search runs once per personalisation on a
//! phone or a microcontroller: it must need no std, never panic, and — because the trainer's and
//! the device's results are compared to 1e-4 and an explanation names the entries used — give
//! one deterministic answer that does not depend on how it was found.
//!
//! Two searches share one definition of "nearest":
//!
//! * the distance is the squared Euclidean distance computed in `f32` as the sum, in dimension
//!   order, of `(stored - query)²` ([`squared_distance`]);
//! * the result is sorted by distance ascending, and of two entries at the same distance the lower
//!   entry index comes first (and is the one kept when only one fits).
//!
//! [`nearest_scan`] visits every entry: O(entries · key_dim), no extra memory, the reference.
//! [`KdTree`] is built once over the same keys (by the device at load, or later by the trainer at
//! export) and prunes with exact, rounding-safe bounds, so [`KdTree::nearest`] returns the very
//! same list as the scan, bit for bit. Which is faster depends on the table size and on how
//! clustered the keys are (`trainer bench neighbours` measures both).

use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::format::MAX_NEIGHBOURS;

/// A search's result: `(entry index, squared distance)`, nearest first, at most
/// [`MAX_NEIGHBOURS`] (a fixed-capacity list, so searching never allocates for it).
pub type Nearest = heapless::Vec<(u32, f32), MAX_NEIGHBOURS>;

/// Entries per kd-tree leaf, at most. A leaf is scanned eight keys at a time, and in 16
/// dimensions a few more points per leaf cost less than the extra levels of bound checks that
/// smaller leaves need. `trainer bench neighbours` with 8, 16 and 32: 8 prunes clustered keys
/// best but loses most against the scan on uniform keys, 32 the reverse; 16 stays within about
/// 15% of the better of the two on tables up to 16384 entries.
pub const LEAF_SIZE: usize = 16;

/// Key widths up to this keep the search's per-dimension scratch on the stack.
const STACK_DIMS: usize = 64;

/// The squared Euclidean distance between a stored key and a query, as both searches (and the
/// session before them) compute it: `Σ (stored[i] - query[i])²` in `f32`, summed in dimension
/// order from zero. Pairs beyond the shorter slice are ignored.
#[inline]
pub fn squared_distance(stored: &[f32], query: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (a, b) in stored.iter().zip(query) {
        sum += (a - b) * (a - b);
    }
    sum
}

/// [`squared_distance`] of `N` stored keys at once. Each key keeps its own sum in dimension
/// order, so every result is bit for bit the single-key one; the independent sums only let the
/// processor overlap them (and put them side by side in vector lanes) instead of waiting on one
/// chain of dependent additions per key.
#[inline(always)]
fn squared_distances<const N: usize>(rows: [&[f32]; N], query: &[f32]) -> [f32; N] {
    let mut sums = [0.0f32; N];
    if rows.iter().any(|row| row.len() != query.len()) {
        for (sum, row) in sums.iter_mut().zip(rows) {
            *sum = squared_distance(row, query);
        }
        return sums;
    }
    for (i, q) in query.iter().enumerate() {
        for (sum, row) in sums.iter_mut().zip(rows) {
            if let Some(a) = row.get(i) {
                *sum += (a - q) * (a - q);
            }
        }
    }
    sums
}

/// Rows of `block`, `key_dim` wide, as an array (empty rows if it holds fewer than `N`).
#[inline(always)]
fn rows_of<const N: usize>(block: &[f32], key_dim: usize) -> [&[f32]; N] {
    let mut rows = block.chunks_exact(key_dim);
    core::array::from_fn(|_| rows.next().unwrap_or(&[]))
}

/// Calls `visit(entry, distance)` for the consecutive rows of `keys` (row `i` is entry
/// `first + i`), in order, eight rows at a time.
#[inline(always)]
fn each_distance(keys: &[f32], key_dim: usize, first: usize, query: &[f32], mut visit: impl FnMut(usize, f32)) {
    let mut entry = first;
    let mut blocks = keys.chunks_exact(8 * key_dim);
    for block in blocks.by_ref() {
        for (j, distance) in squared_distances(rows_of::<8>(block, key_dim), query).into_iter().enumerate() {
            visit(entry + j, distance);
        }
        entry += 8;
    }
    let mut rest = blocks.remainder().chunks_exact(4 * key_dim);
    for block in rest.by_ref() {
        for (j, distance) in squared_distances(rows_of::<4>(block, key_dim), query).into_iter().enumerate() {
            visit(entry + j, distance);
        }
        entry += 4;
    }
    for (j, row) in rest.remainder().chunks_exact(key_dim).enumerate() {
        visit(entry + j, squared_distance(row, query));
    }
}

/// The number of entries a search returns: `k` clamped to [`MAX_NEIGHBOURS`] and to `entries`.
fn wanted(k: usize, entries: usize) -> usize {
    k.min(MAX_NEIGHBOURS).min(entries)
}

/// The session's insertion rule: before the first listed entry that is strictly farther, so on
/// equal distances the earlier visited (lower) entry stays ahead; nothing beyond `wanted`.
#[inline(always)]
fn scan_insert(out: &mut Nearest, wanted: usize, entry: usize, distance: f32) {
    if out.len() == wanted {
        // Fast rejection, exact: the non-NaN distances in the list are ascending (each is
        // inserted before the first strictly greater one), so when the last is not NaN nothing
        // listed is greater than a distance that is not less than it.
        if let Some(&(_, last)) = out.last() {
            if !last.is_nan() && distance.partial_cmp(&last) != Some(Ordering::Less) {
                return;
            }
        }
    }
    let position = out.iter().position(|&(_, d)| distance < d).unwrap_or(out.len());
    if position < wanted {
        if out.len() == wanted {
            out.pop();
        }
        // Cannot fail: the list holds fewer than `wanted` <= 16 entries here.
        let _ = out.insert(position, (entry as u32, distance));
    }
}

/// The K entries of `keys` (`entries × key_dim`, row-major) nearest to `query`, by a linear scan.
///
/// `out` is cleared, then receives `(entry index, squared distance)` sorted by distance
/// ascending; on equal distances the lower entry index comes first. At most
/// `min(k, 16, entries)` pairs are returned. This is the search the session has always run
/// (distances by [`squared_distance`], entries visited in index order), with the distances of
/// eight entries computed side by side, each in its own dimension-order sum.
///
/// Degenerate inputs never panic; they give:
/// * `key_dim == 0`, `query.len() != key_dim`, or `keys.len()` not a multiple of `key_dim`: an
///   empty result (the table and the query do not describe keys of one width);
/// * an empty table or `k == 0`: an empty result;
/// * `k > 16`: the 16 nearest;
/// * a NaN in the query or the keys: entries whose distance is NaN compare neither less nor
///   greater than anything, so the result is what the session's scan has always given — with a
///   NaN query every distance is NaN and the result is the first `k` entries in index order, each
///   at distance NaN.
pub fn nearest_scan(keys: &[f32], key_dim: usize, query: &[f32], k: usize, out: &mut Nearest) {
    out.clear();
    if key_dim == 0 || query.len() != key_dim || keys.len() % key_dim != 0 {
        return;
    }
    let wanted = wanted(k, keys.len() / key_dim);
    if wanted == 0 {
        return;
    }
    each_distance(keys, key_dim, 0, query, |entry, distance| scan_insert(out, wanted, entry, distance));
}

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
        tree.split_dim = alloc::vec![0; internal];
        tree.split_value = alloc::vec![0.0; internal];
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
        let wanted = wanted(k, self.entries);
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
