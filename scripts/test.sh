#!/usr/bin/env bash
# Every test: Rust unit and integration tests of all crates (the trainer/runtime parity test,
# the stale-header check, the C example and the C API suite under sanitizers among them),
# lints, the no_std build of the runtime for a Cortex-M4F, the runtime's tests on aarch64 under
# qemu, and a short run of every fuzz target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
# setup.sh installed every tool the tests use: a test that finds one missing fails, not skips.
export METAREC_REQUIRE_TOOLS=1

step() { printf '\n==> %s\n' "$*" >&2; }

# The builds below (debug, MPI, cross, fuzz) take about 4 GB; a full disk fails them half-way
# with "No space left on device", so say so first.
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt $((6 * 1024 * 1024)) ]; then
  printf 'warning: %s GB free on the disk of %s; the test builds need about 4 GB\n' \
    "$((free_kb / 1024 / 1024))" "$root" >&2
fi

step "formatting"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --quiet --workspace --all-targets -- -D warnings
# The std-free C library (scripts/package.sh --minimal) builds only with panic = "abort".
cargo clippy --quiet -p metarec-ffi --no-default-features --profile minsize --lib -- -D warnings
# The trainer's MPI code (the `mpi` feature, off by default).
cargo clippy --quiet -p metarec-trainer --features mpi --all-targets -- -D warnings

step "runtime builds without std for thumbv7em-none-eabihf"
cargo build --quiet -p metarec-runtime --no-default-features --target thumbv7em-none-eabihf

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
if [ -n "${METAREC_ML_LATEST_SMALL:-}" ]; then
  # Real data is not in the repository; with its directory named, its loader is checked too.
  cargo test -p metarec-trainer --test it -- --ignored ml_latest_small 2>&1 | tee -a "$log"
fi

step "data-parallel training: mpirun -np 2 against one process, a killed rank, --resume (trainer/tests/it/mpi.rs)"
# scripts/setup.sh installed Open MPI; the tests let mpirun run as root.
cargo test -p metarec-trainer --features mpi --test it mpi:: 2>&1 | tee -a "$log"
# The steps below run the default build of the trainer binary again.
cargo build --quiet -p metarec-trainer

step "privacy accountant against dp-accounting 0.6.0 (scripts/accountant_check.py)"
# `cargo test --workspace` built the trainer binary.
.deps/dp-accounting-venv/bin/python scripts/accountant_check.py "${CARGO_TARGET_DIR:-target}/debug/trainer"

step "runtime tests on aarch64 under qemu (its NEON kernels), and its lints for that target"
CARGO_TARGET_DIR=target/cross cargo clippy --quiet -p metarec-runtime --target aarch64-unknown-linux-gnu \
  --all-targets -- -D warnings
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" CARGO_TARGET_DIR=target/cross \
  cargo test -p metarec-runtime --target aarch64-unknown-linux-gnu 2>&1 | tee -a "$log"

step "the release x86-64 library on a CPU without AVX: the C example under qemu-x86_64 -cpu Nehalem and -cpu max"
cargo build --quiet --release -p metarec-ffi
METAREC_LIB_DIR="$root/target/release" cargo test -p metarec-tests --test it portable 2>&1 | tee -a "$log"

step "fuzz targets, ${METAREC_FUZZ_SECONDS:-20} s each (scripts/fuzz.sh)"
./scripts/fuzz.sh "${METAREC_FUZZ_SECONDS:-20}"

# One closing line over every test binary (cargo prints one "test result" per binary, the last
# of which is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
