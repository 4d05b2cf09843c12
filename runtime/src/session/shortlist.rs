//! Top-k over a large catalogue in two stages. Scoring one item through the network costs
//! `support × (item_width + hidden0)` multiply-adds for layer 0's low-rank item part plus the
//! upper layers (about 8,000 for the MovieLens-shaped bench model), so the whole catalogue costs
//! that many times its size. The first stage ranks every item with an additive surrogate of this
//! user's adapted network instead: an item's input is one vector per item field (the mean of its
//! embedding rows), so the surrogate is a sum of one value per field and row, `φ_f(row)`, looked
//! up per item (a handful of additions). `φ_f(row)` is the network's output at a reference item
//! with field `f` replaced by that row, less the output at the reference (the first-order term of
//! the network around it); the reference is the mean input of the best items of a sample scored
//! exactly, so the surrogate is most faithful where the top k lies. Computing the look-ups costs
//! one network evaluation per embedding row of the item fields (1,600 for the bench model), once
//! per call. The network then scores the surrogate's best `candidates` items exactly, and the top
//! k is theirs. Nothing grows with the catalogue: the scratch holds the sample, the candidates
//! and one look-up per item-field embedding row. A catalogue with not four times as many items
//! as item-field rows (an item-id field) is ranked exhaustively.
//!
//! The surrogate can misorder items, so the result is the exact top k only when every true top-k
//! item is among the candidates: the tests and `trainer bench device` measure the recall@k
//! against exhaustive scoring. Exhaustive scoring stays the default below [`SHORTLIST_FROM`]
//! items and is always available ([`Ranking::Exhaustive`]).

use alloc::vec::Vec;
use core::borrow::Borrow;

use super::rank::{self, Ranked};
use super::score::SCORE_BLOCK;
use super::Session;
use crate::error::{Invariant, Result};
use crate::gemm::{gemm, View};
use crate::mlp::{self, Keep, Weights};
use crate::model::Model;

/// How [`Session::top_k`] ranks the catalogue ([`Session::set_ranking`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ranking {
    /// Exhaustive below [`SHORTLIST_FROM`] items, a shortlist of [`default_candidates`] above.
    #[default]
    Auto,
    /// Every item scored by the network.
    Exhaustive,
    /// The surrogate's best `candidates` items (at least `k` plus the support size) re-scored
    /// by the network; exhaustive when that is the whole catalogue.
    Shortlist {
        /// Items the network re-scores.
        candidates: usize,
    },
}

/// Catalogue size from which [`Ranking::Auto`] ranks through a shortlist.
pub const SHORTLIST_FROM: usize = 20_000;

/// Items scored exactly to choose the reference.
const SAMPLE: usize = 512;

/// The best sample items whose mean input is the reference.
const REFERENCE: usize = 16;

/// Item fields the shortlist handles (every model's, in practice; more rank exhaustively).
const MAX_FIELDS: usize = 64;

/// The candidates [`Ranking::Auto`] re-scores for a catalogue of `items`: 1 in 50, at least
/// 1,024 (2,000 of 100,000 items; 20,000 of 1,000,000).
pub fn default_candidates(items: usize) -> usize {
    (items / 50).max(1024)
}

/// The shortlist's scratch, sized by the first call and reused.
#[derive(Debug, Clone, Default)]
pub(super) struct Scratch {
    /// Layer 0's item weights with the adaptation's change, `hidden0 × item_width`.
    weights: Vec<f32>,
    /// One block's item inputs (or row differences), `SCORE_BLOCK × item_width`.
    x: Vec<f32>,
    /// One block's activations, `SCORE_BLOCK × act_width`.
    acts: Vec<f32>,
    /// The sample's raw outputs, by sample position.
    y: Vec<(f32, u32)>,
    /// The reference's item input (`item_width`) and layer-0 pre-activations (`hidden0`).
    reference: Vec<f32>,
    z_reference: Vec<f32>,
    /// `φ_f(row)` for every row of every item field, then one for no row, field after field.
    lookup: Vec<f32>,
    /// The surrogate's best items (a bounded heap), then their indices ascending.
    candidates: Vec<Ranked>,
    order: Vec<u32>,
}

impl Scratch {
    /// Bytes on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        let floats = self.weights.capacity()
            + self.x.capacity()
            + self.acts.capacity()
            + self.reference.capacity()
            + self.z_reference.capacity()
            + self.lookup.capacity()
            + self.order.capacity();
        floats * 4
            + self.y.capacity() * core::mem::size_of::<(f32, u32)>()
            + self.candidates.capacity() * core::mem::size_of::<Ranked>()
    }
}

impl<M: Borrow<Model>> Session<M> {
    /// How many candidates the shortlist re-scores for a top `k` under `ranking`, or None to
    /// rank exhaustively (a factor model or a fold-in head, whose scores the surrogate does not
    /// describe; item fields with more rows than a quarter of the catalogue; a shortlist as
    /// large as the catalogue).
    pub(super) fn shortlist_size(&self, ranking: Ranking, k: usize) -> Option<usize> {
        let model = self.model();
        let items = model.item_count();
        let fields = &model.body().item_fields;
        let rows: usize = fields.iter().map(|field| field.rows() + 1).sum();
        let unsupported = model.factors().is_some() || model.fold_in_head().is_some();
        if unsupported || model.layout().layers.len() < 2 || fields.len() > MAX_FIELDS || rows > items / 4 {
            return None;
        }
        let candidates = match ranking {
            Ranking::Exhaustive => return None,
            Ranking::Auto if items < SHORTLIST_FROM => return None,
            Ranking::Auto => default_candidates(items),
            Ranking::Shortlist { candidates } => candidates,
        };
        let candidates = candidates.max(k.saturating_add(self.support.len()));
        (candidates < items).then_some(candidates)
    }

    /// Offers the network's scores of the surrogate's best `candidates` items to `ranking`.
    pub(super) fn rank_shortlist(&mut self, ranking: &mut rank::Scratch, k: usize, candidates: usize) -> Result<()> {
        self.prepare_scoring()?;
        let mut scratch = core::mem::take(&mut ranking.shortlist);
        let offered = self.fit_surrogate(&mut scratch).and_then(|base| {
            self.shortlist(&mut scratch, base, candidates)?;
            let mut scores = [0f32; SCORE_BLOCK];
            for block in scratch.order.chunks(SCORE_BLOCK) {
                let out = scores.get_mut(..block.len()).invariant("shortlist: a block past its scores")?;
                self.score_prepared(block, out)?;
                ranking.offer(block, out, k);
            }
            Ok(())
        });
        ranking.shortlist = scratch;
        offered
    }

    /// Layer 0's effective item weights into `scratch.weights`, the reference from the sample,
    /// then the look-ups; returns the network's output at the reference.
    fn fit_surrogate(&self, scratch: &mut Scratch) -> Result<f32> {
        let model: &Model = self.model.borrow();
        let layout = model.layout();
        let shape = layout.layers.first().invariant("shortlist: an MLP without layers")?;
        let (hidden, user_width) = (shape.outputs, model.user_width());
        let item_width = shape.inputs - user_width;
        scratch.weights.clear();
        for row in 0..hidden {
            let at = shape.weight_at + row * shape.inputs + user_width;
            let weights = self.params.get(at..at + item_width).invariant("shortlist: layer 0 past the parameters")?;
            scratch.weights.extend_from_slice(weights);
        }
        if self.low_rank.valid {
            self.low_rank.add_change(&mut scratch.weights, item_width)?;
        }
        scratch.x.resize(SCORE_BLOCK * item_width, 0.0);
        scratch.acts.resize(SCORE_BLOCK * layout.act_width(), 0.0);
        self.sample_outputs(scratch, hidden, item_width)?;
        self.write_reference(scratch, item_width)?;
        let base = *self.forward(scratch, hidden, 0..item_width, 1, 0.0)?.first().invariant("shortlist: no output")?;
        self.write_lookups(scratch, hidden, base)?;
        Ok(base)
    }

    /// The network's raw outputs (without item biases) of `rows` rows whose layer-0 item parts
    /// are `z_reference + scale · W0_item[:, cols] · scratch.x` (`scratch.x`: `rows ×
    /// cols.len()`, the rows' values in the item input's columns `cols`, zero elsewhere). The
    /// upper layers run on the transposed copy [`Session::prepare_scoring`] made.
    fn forward<'s>(
        &self,
        scratch: &'s mut Scratch,
        hidden: usize,
        cols: core::ops::Range<usize>,
        rows: usize,
        scale: f32,
    ) -> Result<&'s [f32]> {
        let layout = self.model().layout();
        let item_width = scratch.weights.len() / hidden.max(1);
        let z0 = scratch.acts.get_mut(..rows * hidden).invariant("shortlist: activations shorter than a block")?;
        for row in z0.chunks_exact_mut(hidden) {
            row.copy_from_slice(&scratch.z_reference);
        }
        if scale != 0.0 {
            let width = cols.len();
            let x = scratch.x.get(..rows * width).invariant("shortlist: inputs shorter than a block")?;
            let data = scratch.weights.get(cols.start..).invariant("shortlist: columns past the weights")?;
            let weights = View { data, rows: hidden, cols: width, row_stride: item_width, col_stride: 1 }.t();
            gemm(scale, View::rows(x, rows, width), weights, 1.0, z0, hidden)?;
        }
        let params = Weights { params: &self.params, upper_t: &self.scoring.upper_t };
        mlp::forward_upper(layout, params, rows, &mut scratch.acts, Keep::Scores)?;
        mlp::scores(layout, &scratch.acts, rows)
    }

    /// The raw outputs of [`SAMPLE`] items spread over the catalogue into `scratch.y`, with
    /// their catalogue indices.
    fn sample_outputs(&self, scratch: &mut Scratch, hidden: usize, item_width: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        let items = model.item_count();
        let count = items.min(SAMPLE);
        scratch.y.clear();
        scratch.z_reference.clear();
        scratch.z_reference.extend_from_slice(&self.hidden0);
        let mut first = 0;
        while first < count {
            let rows = (count - first).min(SCORE_BLOCK);
            for (j, x) in (first..first + rows).zip(scratch.x.chunks_exact_mut(item_width.max(1))) {
                // Spread evenly; below `u32::MAX` as the catalogue is.
                model.write_item_input((j * items / count) as u32, x)?;
            }
            let outputs = self.forward(scratch, hidden, 0..item_width, rows, 1.0)?;
            let indexed: Vec<(f32, u32)> =
                outputs.iter().zip(first..).map(|(&y, j)| (y, (j * items / count) as u32)).collect();
            scratch.y.extend_from_slice(&indexed);
            first += rows;
        }
        Ok(())
    }

    /// The mean input of the [`REFERENCE`] best sample items into `scratch.reference`, and its
    /// layer-0 pre-activations into `scratch.z_reference`.
    fn write_reference(&self, scratch: &mut Scratch, item_width: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        // Highest first, NaN last.
        scratch.y.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(core::cmp::Ordering::Equal));
        let best = scratch.y.len().min(REFERENCE);
        scratch.reference.clear();
        scratch.reference.resize(item_width, 0.0);
        let input = scratch.x.get_mut(..item_width).invariant("shortlist: no input scratch")?;
        for &(_, item) in scratch.y.iter().take(best) {
            model.write_item_input(item, input)?;
            mlp::add_scaled(&mut scratch.reference, 1.0 / best.max(1) as f32, input);
        }
        // z_reference is hidden0 here.
        let weights = View::rows(&scratch.weights, scratch.z_reference.len(), item_width).t();
        let hidden = scratch.z_reference.len();
        gemm(1.0, View::rows(&scratch.reference, 1, item_width), weights, 1.0, &mut scratch.z_reference, hidden)
    }

    /// `φ_f(row)` of every row of every item field (and of no row), field after field, into
    /// `scratch.lookup`: the output with field `f`'s part of the reference replaced, less `base`.
    fn write_lookups(&self, scratch: &mut Scratch, hidden: usize, base: f32) -> Result<()> {
        let model: &Model = self.model.borrow();
        let dim = model.embedding_dim();
        scratch.lookup.clear();
        for (f, field) in model.body().item_fields.iter().enumerate() {
            let part = f * dim..(f + 1) * dim;
            let reference = scratch.reference.get(part.clone()).invariant("shortlist: a field past the reference")?;
            let reference: Vec<f32> = reference.to_vec();
            let rows = field.rows() + 1;
            let mut first = 0;
            while first < rows {
                let count = (rows - first).min(SCORE_BLOCK);
                // Row differences from the reference in field f's columns (zero elsewhere: only
                // these columns go through layer 0).
                let x = scratch.x.get_mut(..count * dim).invariant("shortlist: a block past its inputs")?;
                for (row, x) in (first..first + count).zip(x.chunks_exact_mut(dim.max(1))) {
                    // The last entry is the field without rows: a zero vector.
                    let values = field.embedding.get(row * dim..(row + 1) * dim).unwrap_or(&[]);
                    for ((x, r), v) in x.iter_mut().zip(&reference).zip(values.iter().chain(core::iter::repeat(&0.0))) {
                        *x = v - r;
                    }
                }
                let outputs = self.forward(scratch, hidden, part.clone(), count, 1.0)?;
                let values: Vec<f32> = outputs.iter().map(|y| y - base).collect();
                scratch.lookup.extend_from_slice(&values);
                first += count;
            }
        }
        Ok(())
    }

    /// The surrogate's best `candidates` items, ascending, into `scratch.order`.
    fn shortlist(&self, scratch: &mut Scratch, base: f32, candidates: usize) -> Result<()> {
        let model: &Model = self.model.borrow();
        let fields = model.body().item_fields.len().min(MAX_FIELDS);
        let biases = model.item_biases();
        scratch.candidates.clear();
        scratch.candidates.reserve(candidates);
        // Where each field's look-ups start, and its entry for no rows.
        let mut starts = [(0usize, 0usize); MAX_FIELDS];
        let mut at = 0;
        for (start, field) in starts.iter_mut().zip(&model.body().item_fields) {
            *start = (at, at + field.rows());
            at += field.rows() + 1;
        }
        let count = u32::try_from(model.item_count()).ok().invariant("shortlist: a catalogue past u32 indices")?;
        for item in 0..count {
            let mut score = base + biases.get(item as usize).copied().unwrap_or(0.0);
            for (f, &(start, none)) in starts.iter().enumerate().take(fields) {
                let rows = model.item_field_rows(item, f).invariant("shortlist: an item past its rows")?;
                score += mean_lookup(&scratch.lookup, start, none, rows);
            }
            rank::push_bounded(&mut scratch.candidates, Ranked { item, score }, candidates);
        }
        scratch.order.clear();
        scratch.order.extend(scratch.candidates.iter().map(|c| c.item));
        scratch.order.sort_unstable();
        Ok(())
    }
}

/// The mean of `lookup[start + row]` over `rows`; `lookup[none]` without rows. Rows were
/// validated against the field's table, whose look-ups start at `start`.
#[inline]
fn mean_lookup(lookup: &[f32], start: usize, none: usize, rows: &[u32]) -> f32 {
    let value = |at: usize| lookup.get(at).copied().unwrap_or(0.0);
    match rows {
        [row] => value(start + *row as usize),
        [] => value(none),
        _ => rows.iter().map(|&row| value(start + row as usize)).sum::<f32>() / rows.len() as f32,
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::{Ranking, Session};
    use crate::format::{
        Adaptation, DenseLayer, FieldKind, FieldSpec, ItemRecord, LearningRate, Method, ModelBody, RatingScale, Task,
    };
    use crate::model::Model;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn stream(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed;
        move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// A MovieLens-shaped model (one user field, three categorical item fields and a
    /// multi-categorical one, layers 24-16-1 over embeddings of 4) over `items` items.
    fn body(items: usize) -> ModelBody {
        let mut next = stream(7);
        let mut field = |name: &str, kind, values: usize| {
            let mut spec = FieldSpec {
                name: name.to_string(),
                kind,
                vocabulary: (0..values).map(|v| format!("{name}{v:04}")).collect(),
                embedding: Vec::new(),
            };
            spec.embedding = (0..spec.rows() * 4).map(|_| next()).collect();
            spec
        };
        let user_fields = vec![field("u", FieldKind::Categorical, 5)];
        let item_fields = vec![
            field("a", FieldKind::Categorical, 20),
            field("b", FieldKind::Categorical, 60),
            field("c", FieldKind::Categorical, 200),
            field("m", FieldKind::MultiCategorical { separator: '|' }, 10),
        ];
        let mut pick = stream(11);
        let mut row = |n: usize| ((pick() + 1.0) * 0.5 * n as f32) as u32 % n as u32 + 1;
        let records = (0..items)
            .map(|i| ItemRecord {
                id: format!("i{i:06}"),
                rows: vec![vec![row(20)], vec![row(60)], vec![row(200)], (0..i % 3).map(|_| row(10)).collect()],
            })
            .collect();
        let mut weights = stream(13);
        let mut layer = |inputs: u32, outputs: u32| DenseLayer {
            inputs,
            outputs,
            weight: (0..inputs * outputs).map(|_| weights() * 0.6).collect(),
            bias: (0..outputs).map(|_| weights() * 0.1).collect(),
        };
        let layers = vec![layer(20, 24), layer(24, 16), layer(16, 1)];
        ModelBody {
            method: Method::Melu,
            task: Task::Rating,
            embedding_dim: 4,
            user_fields,
            item_fields,
            items: records,
            layers,
            adaptation: Adaptation { inner_lr: 0.05, inner_steps: 3 },
            extra_inits: Vec::new(),
            learning_rate: LearningRate::Fixed,
            neighbours: None,
            rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.0 },
            factors: None,
            product: Default::default(),
        }
    }

    /// A session adapted to ten ratings.
    fn adapted(model: &Model) -> Session<&Model> {
        let mut session = Session::new(model);
        session.set_profile("u", "u0002").unwrap();
        for j in 0..10u32 {
            session.add_rating_by_index(j * 97 % model.item_count() as u32, 1.0 + (j % 5) as f32).unwrap();
        }
        session.adapt().unwrap();
        session
    }

    fn top(session: &mut Session<&Model>, ranking: Ranking, k: usize) -> Vec<(u32, f32)> {
        session.set_ranking(ranking);
        session.top_k(k, true).unwrap().iter().map(|r| (r.item, r.score)).collect()
    }

    /// The shortlist of a tenth of the catalogue finds the exhaustive top 10 (recall@10 at
    /// least 0.8 for each of four users, 0.9 over them: this small random network is harder for
    /// the additive surrogate than the bench's, where `trainer bench device` prints the recall),
    /// and every score it returns is the network's.
    #[test]
    fn the_shortlist_recalls_the_exhaustive_top_10() {
        let model = Model::from_body(body(4000)).unwrap();
        let mut found = 0;
        for profile in ["u0000", "u0001", "u0003", "u0004"] {
            let mut session = adapted(&model);
            session.set_profile("u", profile).unwrap();
            session.adapt().unwrap();
            let exact = top(&mut session, Ranking::Exhaustive, 10);
            let short = top(&mut session, Ranking::Shortlist { candidates: 400 }, 10);
            let hits = short.iter().filter(|s| exact.iter().any(|e| e.0 == s.0)).count();
            assert!(hits >= 8, "{profile}: recall@10 {hits}/10");
            found += hits;
            for &(item, score) in &short {
                assert_eq!(session.predict(item).unwrap().to_bits(), score.to_bits(), "{profile}: item {item}");
            }
        }
        assert!(found >= 36, "recall@10 {found}/40 over four users");
    }

    /// With as many candidates as items, or below the automatic threshold, the ranking is the
    /// exhaustive one to the bit; rated items stay out of the shortlist's result.
    #[test]
    fn a_whole_catalogue_shortlist_is_exhaustive() {
        let model = Model::from_body(body(600)).unwrap();
        let mut session = adapted(&model);
        let exact = top(&mut session, Ranking::Exhaustive, 20);
        assert_eq!(top(&mut session, Ranking::Shortlist { candidates: 600 }, 20), exact);
        assert_eq!(top(&mut session, Ranking::Auto, 20), exact);
        let short = top(&mut session, Ranking::Shortlist { candidates: 50 }, 20);
        assert_eq!(short.len(), 20);
        let rated: Vec<u32> = (0..10u32).map(|j| j * 97 % 600).collect();
        assert!(short.iter().all(|(item, _)| !rated.contains(item)));
    }
}
