#!/usr/bin/env bash
# Benchmarks (figures, not pass/fail): the on-device runtime against libtorch on one core,
# loading a MovieLens-1M-sized input, and the sizes that matter on a device.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
# llvm-size and rust-lld measure the embedded build.
rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
mkdir -p out/bench
step() { printf '\n==> %s\n' "$*" >&2; }

step "building release binaries"
cargo build --quiet --release -p metarec-trainer -p metarec-ffi

step "device: personalize (5 steps on 20 ratings) + score 1,000 items, one core"
taskset -c 0 target/release/trainer bench device

step "neighbour search (AT-PAML table): scan vs static kd-tree, one core"
taskset -c 0 target/release/trainer bench neighbours

step "datasets: load + PAML split of a MovieLens-1M-sized input, one core"
taskset -c 0 target/release/trainer data bench-load --dir out/bench/ml-1m --repeat 3

step "sizes"
strip -o out/bench/libmetarec.stripped.so target/release/libmetarec.so
printf 'libmetarec.so (x86_64, release, stripped): %s bytes\n' "$(stat -c %s out/bench/libmetarec.stripped.so)"
cargo build --quiet --profile minsize --no-default-features -p metarec-ffi
strip -o out/bench/libmetarec.minimal.stripped.so target/minsize/libmetarec.so
printf 'libmetarec.so (x86_64, std-free build, package.sh --minimal, stripped): %s bytes\n' \
  "$(stat -c %s out/bench/libmetarec.minimal.stripped.so)"
cargo build --quiet --profile embedded -p metarec-runtime --no-default-features \
  --target thumbv7em-none-eabihf --example size_probe
tools=$(dirname "$(ls ~/.rustup/toolchains/*/lib/rustlib/*/bin/rust-lld | head -n 1)")
"$tools/rust-lld" -flavor gnu --gc-sections --entry metarec_probe -o out/bench/size_probe.elf \
  target/thumbv7em-none-eabihf/embedded/examples/libsize_probe.a
printf 'runtime on thumbv7em-none-eabihf (load + adapt + score, opt-level s, linked with --gc-sections):\n'
"$tools/llvm-size" -A out/bench/size_probe.elf | grep -E '^\.(text|rodata)'
