#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets: model_load, datasets, c_api) for SECONDS
# each (default 20), starting from the committed seed corpus fuzz/corpus/<target> (which holds
# every earlier finding, so each run replays them first). New inputs go to a scratch corpus,
# never into the repository; a crash stops the script with its reproducer in
# fuzz/artifacts/<target>/ and a non-zero status.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Without cargo-fuzz (scripts/setup.sh installs it) it prints a note and exits 0. cargo-fuzz
# needs nightly compiler flags (-Zsanitizer): on the stable toolchain RUSTC_BOOTSTRAP=1 allows
# them. The first build of fuzz/ (its own workspace and target directory, with AddressSanitizer)
# takes several minutes; later ones are incremental.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_load datasets c_api)

if ! cargo fuzz --version >/dev/null 2>&1; then
  # Under scripts/test.sh (after setup.sh) a missing fuzzer is a failure, not a skip.
  if [ "${METAREC_REQUIRE_TOOLS:-}" = 1 ]; then
    echo "error: cargo-fuzz is not installed (scripts/setup.sh installs it)" >&2
    exit 1
  fi
  echo "note: cargo-fuzz is not installed; skipping the fuzz run (scripts/setup.sh installs it)" >&2
  exit 0
fi
export RUSTC_BOOTSTRAP=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  printf '[fuzz] %s for %s s\n' "$target" "$seconds" >&2
  log="$scratch/$target.log"
  if ! cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "[fuzz] $target FAILED: reproducer in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  # libFuzzer's closing line: executions, coverage, corpus.
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed "s/^/[fuzz] $target: /" >&2
done
