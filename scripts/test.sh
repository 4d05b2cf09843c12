#!/usr/bin/env bash
# Every test: Rust unit and integration tests of all crates (the trainer/runtime parity test,
# the stale-header check, the C example and the C API suite under sanitizers among them),
# lints, and the no_std build of the runtime for a Cortex-M4F.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh

step() { printf '\n==> %s\n' "$*" >&2; }

step "formatting"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

step "runtime builds without std for thumbv7em-none-eabihf"
cargo build --quiet -p metarec-runtime --no-default-features --target thumbv7em-none-eabihf

step "tests"
cargo test --workspace
