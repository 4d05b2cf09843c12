#!/usr/bin/env bash
# One-time set-up, idempotent: libtorch (CPU) into an ignored project folder, the thumbv7em
# target that proves the runtime builds without std, and the system tools the tests use.
# A second run only checks markers and returns in well under a second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

torch_version=2.13.0
venv=.deps/torch-venv
libtorch_link=.deps/libtorch   # stable path; .cargo/config.toml points LIBTORCH here

say() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -f "$libtorch_link/lib/libtorch_cpu.so" ]; then
  say "installing libtorch $torch_version (CPU, ~1.2 GB) into $venv"
  mkdir -p .deps
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # --no-deps: the CPU libraries only; libtorch_cpu links libcudart and libcupti, so take those two.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "torch==$torch_version" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  torch_dir=$(ls -d "$venv"/lib/python3*/site-packages/torch | head -n 1)
  ln -sfn "$root/$torch_dir" "$libtorch_link"
fi

if ! rustup target list --installed | grep -qx thumbv7em-none-eabihf; then
  say "adding rust target thumbv7em-none-eabihf"
  rustup target add thumbv7em-none-eabihf
fi

# Debian packages the tests need: valgrind for the C API checks.
need_pkgs=()
command -v valgrind >/dev/null || need_pkgs+=(valgrind)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
