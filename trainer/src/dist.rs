//! Data-parallel training over MPI ranks: which rank this process is, its shard of a batch, and
//! the collectives training needs (sums and gathers), behind one small [`Comm`] so the training
//! loop reads the same with one process or N.
//!
//! One process (no `mpirun`, or a build without the `mpi` feature) is rank 0 of 1 and every
//! collective is the identity. With the `mpi` feature and `mpirun -np N`, [`init`] starts MPI
//! and every [`Comm::world`] after it is that rank of N. rsmpi has no `MPI_IN_PLACE`: sums go
//! through a separate receive buffer.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Result;
use tch::{Kind, Tensor};

/// This process's place among the ranks of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    rank: usize,
    size: usize,
}

/// The world set by [`init`] (one process when it was never called or found no `mpirun`).
static WORLD: OnceLock<Comm> = OnceLock::new();

/// Nanoseconds this process spent inside collectives (waiting for slower ranks included).
static COMMUNICATION_NANOS: AtomicU64 = AtomicU64::new(0);

/// Bytes this process gave to collectives (its values of each sum and gather).
static COMMUNICATION_BYTES: AtomicU64 = AtomicU64::new(0);

/// The number of ranks `mpirun` (Open MPI, or a PMI launcher) gave this job, if any.
fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"].iter().find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// This process's rank among the ranks of its node (0 without a launcher): which GPU it takes.
pub fn local_rank() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or(0)
}

/// What keeps MPI running until the command ends (dropping it finalizes MPI).
pub struct Session {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("world", &Comm::world()).finish()
    }
}

impl Session {
    /// Ends the whole job after an error on this rank (`MPI_Abort`): the other ranks would wait
    /// in their next collective forever. With one process it returns and the caller exits.
    pub fn abort_job(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if self._universe.is_some() && Comm::world().size > 1 {
            use mpi::traits::Communicator as _;
            mpi::topology::SimpleCommunicator::world().abort(code);
        }
        let _ = code;
    }
}

/// Starts MPI when the process was launched by `mpirun` (and the trainer was built with the
/// `mpi` feature); otherwise the job is this one process. A build without the feature refuses
/// to run as one of several ranks: each would train alone and write the same files.
pub fn init() -> Result<Session> {
    #[cfg(feature = "mpi")]
    {
        let universe = if launched_ranks().is_some() {
            let universe = mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
            use mpi::traits::Communicator as _;
            let world = universe.world();
            let comm = Comm { rank: world.rank() as usize, size: world.size() as usize };
            let _ = WORLD.set(comm);
            Some(universe)
        } else {
            None
        };
        Ok(Session { _universe: universe })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if let Some(ranks) = launched_ranks().filter(|&n| n > 1) {
            anyhow::bail!(
                "launched as one of {ranks} MPI ranks, but this trainer was built without MPI; build it with \
                 `cargo build --release -p metarec-trainer --features mpi` (scripts/setup.sh installs Open MPI)"
            );
        }
        Ok(Session {})
    }
}

impl Comm {
    /// One process: rank 0 of 1.
    pub const SINGLE: Comm = Comm { rank: 0, size: 1 };

    /// This process in the job [`init`] found (rank 0 of 1 without MPI).
    pub fn world() -> Comm {
        WORLD.get().copied().unwrap_or(Comm::SINGLE)
    }

    /// This process's rank, 0..size.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that writes files and prints progress.
    pub fn is_lead(&self) -> bool {
        self.rank == 0
    }

    /// This rank's contiguous share of `len` items: the shards of ranks 0..size, in order, tile
    /// `0..len`, so gathering per-item results in rank order restores the items' order.
    pub fn shard(&self, len: usize) -> Range<usize> {
        (len * self.rank / self.size)..(len * (self.rank + 1) / self.size)
    }

    /// This rank's share of a batch whose items cost `costs` (a task's padded length), as
    /// positions into the batch, ascending: the shards of ranks 0..size tile the batch, each
    /// rank the same answer. A rank's padded tensors cost about its item count × its largest
    /// item's cost, so the items are ordered by cost (largest first, ties by position) and cut
    /// into consecutive runs, one a rank, that make the largest of those products smallest:
    /// the rank with the longest tasks takes fewer of them, where equal counts would leave the
    /// other ranks waiting for it. With one rank, every position.
    pub fn balanced_shard(&self, costs: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..costs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
        let sorted: Vec<usize> = order.iter().map(|&i| costs[i].max(1)).collect();
        let runs = balanced_runs(&sorted, self.size);
        let mut mine = order[runs[self.rank].clone()].to_vec();
        mine.sort_unstable();
        mine
    }

    /// Element-wise sums of `values` over all ranks, in place.
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size > 1 {
            timed(std::mem::size_of_val(values), || imp::sum(values));
        }
    }

    /// Element-wise sums of `values` over all ranks, in place.
    pub fn sum_f32(&self, values: &mut [f32]) {
        if self.size > 1 {
            timed(std::mem::size_of_val(values), || imp::sum(values));
        }
    }

    /// Every rank's `values`, concatenated in rank order.
    pub fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        if self.size > 1 {
            timed(std::mem::size_of_val(values), || imp::gather(values))
        } else {
            values.to_vec()
        }
    }

    /// Every rank's `values`, concatenated in rank order.
    pub fn gather_u32(&self, values: &[u32]) -> Vec<u32> {
        if self.size > 1 {
            timed(std::mem::size_of_val(values), || imp::gather(values))
        } else {
            values.to_vec()
        }
    }

    /// Sums the gradients of `parameters` over all ranks, so every rank then holds the
    /// gradient of the whole batch: one all-reduce of one flat buffer, holding all of each
    /// [`Layout::Dense`] gradient and, of each [`Layout::Rows`] one, the union of the rows the
    /// ranks reached (found by one gather of their row ids first). A parameter without a
    /// gradient on this rank (not reached by its shard, or an empty shard) counts as zero and
    /// gets one when another rank's shard reached it; one no rank reached keeps none, as with
    /// one process.
    ///
    /// Returns, per parameter, the rows that travelled when only some did (ascending, unique:
    /// every row where the summed gradient may be non-zero), which a lazy optimizer step can
    /// take instead of scanning the gradient for them again ([`crate::optim::Adam::step_rows`]);
    /// None where the parameter travelled whole, and for every parameter in one process.
    pub fn sum_gradients(&self, parameters: &[(Tensor, Layout)]) -> Vec<Option<Tensor>> {
        if self.size == 1 {
            return parameters.iter().map(|_| None).collect();
        }
        let plan = match RowNumbers::of(parameters) {
            Some(numbers) => Plan::new(parameters, &numbers, self.gather_u32(&numbers.local_rows(parameters))),
            None => Plan::dense(parameters),
        };
        let mut buffer = plan.pack(parameters);
        self.sum_f32(&mut buffer);
        plan.unpack(parameters, &buffer);
        plan.rows
    }
}

/// `ranks` consecutive runs tiling `sorted` (costs, largest first) whose largest `run length
/// × first cost` is the smallest such bound: the least bound under which taking, run by run, as
/// many items as fit leaves none over (binary search; the bound `len × sorted[0]` always fits).
fn balanced_runs(sorted: &[usize], ranks: usize) -> Vec<Range<usize>> {
    let ranks = ranks.max(1);
    let runs_under = |bound: usize| -> Vec<Range<usize>> {
        let mut runs = Vec::with_capacity(ranks);
        let mut at = 0;
        for _ in 0..ranks {
            let take = match sorted.get(at) {
                Some(&first) => (bound / first).max(1).min(sorted.len() - at),
                None => 0,
            };
            runs.push(at..at + take);
            at += take;
        }
        if at < sorted.len() {
            runs.clear();
        }
        runs
    };
    let largest = sorted.first().copied().unwrap_or(0);
    let (mut lo, mut hi) = (largest, sorted.len() * largest);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if runs_under(mid).is_empty() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // `hi` fits: it started at a bound that does and only ever moved to one.
    runs_under(hi)
}

/// How a variable's gradient travels in [`Comm::sum_gradients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// All of it.
    Dense,
    /// The rows (along the first dimension) that some rank's gradient reached, the union of the
    /// ranks' rows with a non-zero gradient: a lookup table stepped lazily, whose batch reaches
    /// few of its rows. The sum is the dense one, as the other rows are zero on every rank.
    Rows,
}

/// A table's union of rows travels while it holds at most this share of the table's rows, and
/// the whole table above it. A row of the union costs what a row of the dense transfer costs
/// (its share of the all-reduce) plus an indexed gather and scatter instead of contiguous
/// copies, by our estimate (not a measurement) about twice as much, so the rows pay while they
/// are under about half the table. Either way the sum is the same, and the ids have travelled
/// already, so the choice only moves time.
const ROWS_AT_MOST: f64 = 0.5;

/// One numbering of the rows of every [`Layout::Rows`] variable, the first's rows first, so
/// that one gather of `u32` ids carries every table's rows.
struct RowNumbers {
    /// Per variable: the number of its first row (None: it travels whole).
    first: Vec<Option<u32>>,
}

impl RowNumbers {
    /// The numbering, or None when no variable travels by rows (or their rows are too many for
    /// `u32` ids, a table beyond any memory; they then travel whole).
    fn of(parameters: &[(Tensor, Layout)]) -> Option<RowNumbers> {
        let mut next = 0u64;
        let mut first = Vec::with_capacity(parameters.len());
        for (p, layout) in parameters {
            let by_rows = *layout == Layout::Rows && p.dim() > 0;
            first.push(by_rows.then_some(next));
            next += if by_rows { p.size()[0] as u64 } else { 0 };
        }
        let fits = next <= u64::from(u32::MAX);
        let first = first.into_iter().map(|f| f.map(|f| f as u32)).collect::<Vec<_>>();
        (fits && first.iter().any(Option::is_some)).then_some(RowNumbers { first })
    }

    /// This rank's rows with a non-zero gradient, numbered.
    fn local_rows(&self, parameters: &[(Tensor, Layout)]) -> Vec<u32> {
        let mut out = Vec::new();
        for ((p, _), first) in parameters.iter().zip(&self.first) {
            let (Some(first), grad) = (first, p.grad()) else { continue };
            if grad.defined() {
                let rows = Vec::<i64>::try_from(crate::optim::nonzero_rows(&grad).to(tch::Device::Cpu))
                    .expect("row indices are i64");
                out.extend(rows.into_iter().map(|r| first + r as u32));
            }
        }
        out
    }
}

/// Which values of each variable's gradient travel, in variable order, in the buffer of a
/// gradient sum (followed by one "has a gradient here" flag per variable).
struct Plan {
    /// Per variable: the rows that travel, on the variable's device (None: all of it).
    rows: Vec<Option<Tensor>>,
    /// Per variable: its number of values in the buffer.
    sizes: Vec<usize>,
}

impl Plan {
    /// Every variable whole.
    fn dense(parameters: &[(Tensor, Layout)]) -> Plan {
        let rows = parameters.iter().map(|_| None).collect();
        Plan { rows, sizes: parameters.iter().map(|(p, _)| p.numel()).collect() }
    }

    /// The union of the rows in `gathered` (every rank's [`RowNumbers::local_rows`]), by
    /// variable; a table whose union is over [`ROWS_AT_MOST`] of it travels whole.
    fn new(parameters: &[(Tensor, Layout)], numbers: &RowNumbers, mut gathered: Vec<u32>) -> Plan {
        gathered.sort_unstable();
        gathered.dedup();
        let mut plan = Plan::dense(parameters);
        for (k, ((p, _), first)) in parameters.iter().zip(&numbers.first).enumerate() {
            let Some(first) = *first else { continue };
            let table_rows = p.size()[0] as usize;
            let start = gathered.partition_point(|&id| id < first);
            let end = gathered.partition_point(|&id| u64::from(id) < u64::from(first) + table_rows as u64);
            if (end - start) as f64 > ROWS_AT_MOST * table_rows as f64 {
                continue;
            }
            let ids: Vec<i64> = gathered[start..end].iter().map(|&id| i64::from(id - first)).collect();
            plan.rows[k] = Some(Tensor::from_slice(&ids).to(p.device()));
            plan.sizes[k] = (end - start) * (p.numel() / table_rows.max(1));
        }
        plan
    }

    /// This rank's values of the plan: the flat gradients (zeros where none), then the flags.
    fn pack(&self, parameters: &[(Tensor, Layout)]) -> Vec<f32> {
        let total: usize = self.sizes.iter().sum();
        let mut buffer = vec![0f32; total + parameters.len()];
        let flat: Vec<Tensor> = parameters
            .iter()
            .zip(&self.rows)
            .zip(&self.sizes)
            .map(|(((p, _), rows), &size)| {
                let grad = p.grad();
                match (grad.defined(), rows) {
                    (false, _) => Tensor::zeros([size as i64], (Kind::Float, tch::Device::Cpu)),
                    (true, None) => grad.detach().to_kind(Kind::Float).to(tch::Device::Cpu).reshape([-1]),
                    (true, Some(rows)) => {
                        grad.detach().index_select(0, rows).to_kind(Kind::Float).to(tch::Device::Cpu).reshape([-1])
                    }
                }
            })
            .collect();
        if total > 0 {
            Tensor::cat(&flat, 0).copy_data(&mut buffer[..total], total);
        }
        for (flag, (p, _)) in buffer[total..].iter_mut().zip(parameters) {
            *flag = f32::from(u8::from(p.grad().defined()));
        }
        buffer
    }

    /// Writes the summed values of [`Plan::pack`]'s layout back into the gradients.
    fn unpack(&self, parameters: &[(Tensor, Layout)], buffer: &[f32]) {
        let total: usize = self.sizes.iter().sum();
        for ((p, _), &flag) in parameters.iter().zip(&buffer[total..]) {
            if flag > 0.0 && !p.grad().defined() {
                // Another rank's shard reached it, this one's did not: a zero gradient to add to.
                (p * 0.0).sum(Kind::Float).backward();
            }
        }
        let summed = Tensor::from_slice(&buffer[..total]);
        let _guard = tch::no_grad_guard();
        let mut offset = 0;
        for (k, (p, _)) in parameters.iter().enumerate() {
            let size = self.sizes[k];
            if buffer[total + k] > 0.0 && size > 0 {
                let mut grad = p.grad();
                let value = summed.narrow(0, offset as i64, size as i64);
                let mut shape = p.size();
                if let Some(rows) = &self.rows[k] {
                    shape[0] = rows.size()[0];
                    let value = value.view(shape.as_slice()).to_kind(grad.kind()).to(grad.device());
                    let _ = grad.index_copy_(0, rows, &value);
                } else {
                    grad.copy_(&value.view(shape.as_slice()).to_kind(grad.kind()).to(grad.device()));
                }
            }
            offset += size;
        }
    }
}

/// Seconds this process has spent in collectives so far.
pub fn communication_seconds() -> f64 {
    COMMUNICATION_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Bytes this process has given to collectives so far (its values of each sum and gather).
pub fn communication_bytes() -> u64 {
    COMMUNICATION_BYTES.load(Ordering::Relaxed)
}

/// Runs collective `f`, which gives `bytes` of this process's values, counting its time.
fn timed<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    COMMUNICATION_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    COMMUNICATION_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    out
}

#[cfg(feature = "mpi")]
mod imp {
    use mpi::collective::SystemOperation;
    use mpi::datatype::{Equivalence, PartitionMut};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::{Communicator as _, CommunicatorCollectives as _};

    pub(super) fn sum<T: Equivalence + Copy>(values: &mut [T]) {
        let send = values.to_vec();
        SimpleCommunicator::world().all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    pub(super) fn gather<T: Equivalence + Copy + Default>(values: &[T]) -> Vec<T> {
        let world = SimpleCommunicator::world();
        let mut counts = vec![0i32; world.size() as usize];
        world.all_gather_into(&(values.len() as i32), &mut counts[..]);
        let displs: Vec<i32> = counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
        let mut out = vec![T::default(); counts.iter().sum::<i32>() as usize];
        let mut partition = PartitionMut::new(&mut out[..], counts, displs);
        world.all_gather_varcount_into(values, &mut partition);
        out
    }
}

#[cfg(not(feature = "mpi"))]
mod imp {
    // Without MPI a world has one rank: a sum over it is the values themselves.
    pub(super) fn sum<T>(_values: &mut [T]) {}

    pub(super) fn gather<T: Copy>(values: &[T]) -> Vec<T> {
        values.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The balanced shards tile the batch, every rank computing the same cut, and their largest
    /// `count × largest cost` is never above equal counts' (and here below it).
    #[test]
    fn balanced_shards_tile_the_batch_and_wait_less_than_equal_counts() {
        let costs = [30, 164, 40, 35, 90, 20, 33, 41, 38, 150, 36, 22, 45, 31, 29, 60];
        let cost = |positions: &[usize]| positions.len() * positions.iter().map(|&i| costs[i]).max().unwrap_or(0);
        for size in 1..=4 {
            let shards: Vec<Vec<usize>> = (0..size).map(|rank| Comm { rank, size }.balanced_shard(&costs)).collect();
            let mut all: Vec<usize> = shards.concat();
            all.sort_unstable();
            assert_eq!(all, (0..costs.len()).collect::<Vec<_>>(), "{size} ranks");
            assert!(shards.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])), "ascending positions");
            let balanced = shards.iter().map(|s| cost(s)).max().unwrap();
            let equal =
                (0..size).map(|rank| cost(&Comm { rank, size }.shard(costs.len()).collect::<Vec<_>>())).max().unwrap();
            assert!(balanced <= equal, "{size} ranks: {balanced} vs {equal}");
            if size == 2 {
                assert!(balanced < equal, "{balanced} vs {equal}");
                // The two longest tasks share a rank, which takes fewer tasks.
                assert!(shards[0].contains(&1) && shards[0].contains(&9) && shards[0].len() < 8, "{shards:?}");
            }
        }
        assert_eq!(Comm { rank: 1, size: 3 }.balanced_shard(&[]), Vec::<usize>::new());
        assert_eq!(Comm { rank: 2, size: 3 }.balanced_shard(&[5, 5]), Vec::<usize>::new(), "more ranks than tasks");
    }

    /// One rank's variables, each with the gradient of a loss on `rows` of its tables: a table
    /// [40, 3] and a vector [40] by rows, a table [4, 2] by rows (reached almost whole), a dense
    /// vector [5], a table [10, 2] by rows that only a rank with `late` reaches, and a table no
    /// rank reaches.
    fn rank(rows: &[i64], late: bool, seed: f64) -> Vec<(Tensor, Layout)> {
        let var = |shape: &[i64], layout| {
            (Tensor::ones(shape, (Kind::Float, tch::Device::Cpu)).set_requires_grad(true), layout)
        };
        let vars = vec![
            var(&[40, 3], Layout::Rows),
            var(&[40], Layout::Rows),
            var(&[4, 2], Layout::Rows),
            var(&[5], Layout::Dense),
            var(&[10, 2], Layout::Rows),
            var(&[6], Layout::Rows),
        ];
        let index = Tensor::from_slice(rows);
        let small = Tensor::from_slice(&[0i64, 1, 3]);
        let weight = |t: &Tensor| {
            (t * (Tensor::arange(t.size()[0], (Kind::Float, tch::Device::Cpu)) + seed)).sin().sum(Kind::Float)
        };
        let mut loss = weight(&vars[0].0.index_select(0, &index).sum_dim_intlist(1, false, Kind::Float))
            + weight(&vars[1].0.index_select(0, &index))
            + weight(&vars[2].0.index_select(0, &small).sum_dim_intlist(1, false, Kind::Float))
            + weight(&vars[3].0);
        if late {
            loss += weight(&vars[4].0.index_select(0, &index.remainder(10)).sum_dim_intlist(1, false, Kind::Float));
        }
        loss.backward();
        vars
    }

    fn gradients(parameters: &[(Tensor, Layout)]) -> Vec<Option<Vec<f32>>> {
        parameters.iter().map(|(p, _)| p.grad().defined().then(|| crate::model::tensor_values(&p.grad()))).collect()
    }

    /// Sums two simulated ranks' gradients by `plan_of` (the gather and the all-reduce done by
    /// hand); returns each rank's summed gradients and the values each sent to the all-reduce.
    fn sum_two(plan_of: impl Fn(&[(Tensor, Layout)], Vec<u32>) -> Plan) -> ([Vec<Option<Vec<f32>>>; 2], usize) {
        let ranks = [rank(&[3, 17, 17, 30], false, 0.5), rank(&[17, 5, 39], true, 1.5)];
        let numbers = RowNumbers::of(&ranks[0]).expect("tables by rows");
        let gathered: Vec<u32> = ranks.iter().flat_map(|r| numbers.local_rows(r)).collect();
        let plans = [plan_of(&ranks[0], gathered.clone()), plan_of(&ranks[1], gathered)];
        let buffers = [plans[0].pack(&ranks[0]), plans[1].pack(&ranks[1])];
        assert_eq!(buffers[0].len(), buffers[1].len());
        let summed: Vec<f32> = buffers[0].iter().zip(&buffers[1]).map(|(a, b)| a + b).collect();
        plans[0].unpack(&ranks[0], &summed);
        plans[1].unpack(&ranks[1], &summed);
        ([gradients(&ranks[0]), gradients(&ranks[1])], summed.len())
    }

    #[test]
    fn the_sum_of_the_union_of_rows_is_the_dense_sum() {
        let (dense, dense_sent) = sum_two(|parameters, _| Plan::dense(parameters));
        let numbers = |parameters: &[(Tensor, Layout)]| RowNumbers::of(parameters).unwrap();
        let (rows, rows_sent) = sum_two(|parameters, gathered| Plan::new(parameters, &numbers(parameters), gathered));
        assert_eq!(dense[0], dense[1], "the ranks hold the same sum");
        assert_eq!(rows[0], rows[1], "the ranks hold the same sum");
        assert_eq!(rows[0], dense[0], "the rows' sum is the dense sum");
        // Reached: rows 3, 5, 17, 30, 39 of the first two tables (3 + 1 values each), the small
        // table whole (3 of 4 rows is over half), the dense vector, the late table's rows
        // 5, 7, 9 (2 values each); a flag per variable.
        assert_eq!(rows_sent, 5 * 4 + 8 + 5 + 3 * 2 + 6);
        assert_eq!(dense_sent, 120 + 40 + 8 + 5 + 20 + 6 + 6);
        let summed = &dense[0];
        assert!(summed[4].is_some() && summed[5].is_none(), "a gradient where some rank had one, none elsewhere");
        let table = summed[0].as_ref().unwrap();
        let nonzero_rows: Vec<usize> = (0..40).filter(|r| table[3 * r..3 * r + 3].iter().any(|&v| v != 0.0)).collect();
        assert_eq!(nonzero_rows, [3, 5, 17, 30, 39]);
    }

    #[test]
    fn rows_are_numbered_across_the_tables_by_rows_only() {
        let parameters = rank(&[1], false, 1.0);
        let numbers = RowNumbers::of(&parameters).unwrap();
        assert_eq!(numbers.first, [Some(0), Some(40), Some(80), None, Some(84), Some(94)]);
        assert_eq!(numbers.local_rows(&parameters), [1, 41, 80, 81, 83]);
        let dense: Vec<(Tensor, Layout)> = parameters.iter().map(|(p, _)| (p.shallow_clone(), Layout::Dense)).collect();
        assert!(RowNumbers::of(&dense).is_none(), "no gather without tables by rows");
    }
}
