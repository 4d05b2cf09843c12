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

    /// Element-wise sums of `values` over all ranks, in place.
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size > 1 {
            timed(|| imp::sum(values));
        }
    }

    /// Element-wise sums of `values` over all ranks, in place.
    pub fn sum_f32(&self, values: &mut [f32]) {
        if self.size > 1 {
            timed(|| imp::sum(values));
        }
    }

    /// Every rank's `values`, concatenated in rank order.
    pub fn gather_f32(&self, values: &[f32]) -> Vec<f32> {
        if self.size > 1 {
            timed(|| imp::gather(values))
        } else {
            values.to_vec()
        }
    }

    /// Every rank's `values`, concatenated in rank order.
    pub fn gather_u32(&self, values: &[u32]) -> Vec<u32> {
        if self.size > 1 {
            timed(|| imp::gather(values))
        } else {
            values.to_vec()
        }
    }

    /// Sums the gradients of `parameters` over all ranks (one all-reduce of one flat buffer),
    /// so every rank then holds the gradient of the whole batch. A parameter without a gradient
    /// on this rank (not reached by its shard, or an empty shard) counts as zero and gets one
    /// when another rank's shard reached it; one no rank reached keeps none, as with one
    /// process.
    pub fn sum_gradients(&self, parameters: &[Tensor]) {
        if self.size == 1 {
            return;
        }
        let sizes: Vec<usize> = parameters.iter().map(Tensor::numel).collect();
        let total: usize = sizes.iter().sum();
        // The flat gradients (zeros where none), then one "defined here" flag per parameter.
        let mut buffer = vec![0f32; total + parameters.len()];
        let flat: Vec<Tensor> = parameters
            .iter()
            .zip(&sizes)
            .map(|(p, &size)| {
                let grad = p.grad();
                if grad.defined() {
                    grad.detach().to_kind(Kind::Float).to(tch::Device::Cpu).reshape([-1])
                } else {
                    Tensor::zeros([size as i64], (Kind::Float, tch::Device::Cpu))
                }
            })
            .collect();
        if total > 0 {
            Tensor::cat(&flat, 0).copy_data(&mut buffer[..total], total);
        }
        for (flag, p) in buffer[total..].iter_mut().zip(parameters) {
            *flag = f32::from(u8::from(p.grad().defined()));
        }
        self.sum_f32(&mut buffer);
        for (p, &flag) in parameters.iter().zip(&buffer[total..]) {
            if flag > 0.0 && !p.grad().defined() {
                // Another rank's shard reached it, this one's did not: a zero gradient to add to.
                (p * 0.0).sum(Kind::Float).backward();
            }
        }
        let summed = Tensor::from_slice(&buffer[..total]);
        let _guard = tch::no_grad_guard();
        let mut offset = 0;
        for ((p, &size), &flag) in parameters.iter().zip(&sizes).zip(&buffer[total..]) {
            if flag > 0.0 {
                let mut grad = p.grad();
                let value = summed.narrow(0, offset as i64, size as i64).view(p.size().as_slice());
                grad.copy_(&value.to_kind(grad.kind()).to(grad.device()));
            }
            offset += size;
        }
    }
}

/// Seconds this process has spent in collectives so far.
pub fn communication_seconds() -> f64 {
    COMMUNICATION_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    COMMUNICATION_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
