#!/usr/bin/env bash
# The main job end to end on the embedded default (the synthetic cold-start dataset):
# generate data → meta-train MeLU → evaluate beside baselines → export the model file →
# personalize a held-out user on the "device" through libmetarec.so from C.
# Set-up (libtorch only: the tests' tools belong to the test command) happens on the first run and
# is skipped afterwards. Every run starts over in $METAREC_DEMO_DIR (out/demo): the commands pass
# --force to replace the previous run's files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh demo

out=${METAREC_DEMO_DIR:-out/demo}
step() { printf '\n==> %s\n' "$*" >&2; }

step "building trainer and libmetarec"
cargo build --quiet -p metarec-trainer -p metarec-ffi
trainer=target/debug/trainer

step "generating the synthetic dataset (major and minor users) into $out/data"
"$trainer" data synth --out "$out/data" --seed 7 --force

step "meta-training MeLU"
"$trainer" train --data "$out/data" --out "$out/run" --seed 1 --force ${METAREC_TRAIN_ARGS:-}

step "evaluating on held-out test users"
"$trainer" eval --run "$out/run" --device cpu

step "exporting the model file"
"$trainer" export --run "$out/run" --out "$out/model.mrec" --example-user "$out/user.tsv" --force

step "building and running the C example against libmetarec.so"
gcc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/personalize.c \
  -Ltarget/debug -lmetarec -lm -Wl,-rpath,"$root/target/debug" -o "$out/personalize"
"$out/personalize" "$out/model.mrec" "$out/user.tsv"
