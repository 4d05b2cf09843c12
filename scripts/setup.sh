#!/usr/bin/env bash
# One-time set-up, idempotent: libtorch (CPU) into an ignored project folder, the thumbv7em
# target that proves the runtime builds without std, the aarch64 Linux target of the arm64
# library build, and the system tools the tests use.
# A second run only checks markers and returns in well under a second.
# `scripts/setup.sh` installs what the tests need (all of it); `scripts/setup.sh demo` only what
# the main job needs: libtorch (the demo compiles its C example with the system's gcc).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scope=${1:-all}
case "$scope" in
  all | demo) ;;
  *) echo "usage: scripts/setup.sh [demo]" >&2; exit 2 ;;
esac

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

if [ "$scope" = demo ]; then
  exit 0
fi

installed_targets=$(rustup target list --installed)
for target in thumbv7em-none-eabihf aarch64-unknown-linux-gnu; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    say "adding rust target $target"
    rustup target add "$target"
  fi
done

# Google's dp-accounting, the oracle the privacy accountant is checked against
# (scripts/accountant_check.py, a step of scripts/test.sh). Pinned, in its own venv.
dp_accounting_version=0.6.0
dp_venv=.deps/dp-accounting-venv
if ! "$dp_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('dp-accounting') != '$dp_accounting_version')" 2>/dev/null; then
  say "installing dp-accounting $dp_accounting_version into $dp_venv"
  mkdir -p .deps
  [ -x "$dp_venv/bin/python" ] || python3 -m venv "$dp_venv"
  "$dp_venv/bin/pip" install --quiet --disable-pip-version-check "dp-accounting==$dp_accounting_version"
fi

# cargo-fuzz runs the fuzz targets (scripts/fuzz.sh, a short run in scripts/test.sh); building
# it takes ~2-4 min on 2 cores, once. Pinned, so every machine fuzzes with the same driver.
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  say "installing cargo-fuzz $cargo_fuzz_version"
  cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

# Debian packages the tests need: valgrind (C API checks, helgrind), pkg-config (the install
# layout), kotlin (Kotlin/JNI example; Java 17 is already there), the aarch64 cross gcc and
# libc, qemu-user (the arm64 build run under emulation) and binutils (readelf).
need_pkgs=()
command -v valgrind >/dev/null || need_pkgs+=(valgrind)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
command -v kotlinc >/dev/null || need_pkgs+=(kotlin)
command -v aarch64-linux-gnu-gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/include/stdio.h ] || need_pkgs+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need_pkgs+=(qemu-user)
command -v readelf >/dev/null || need_pkgs+=(binutils)
# The font `trainer report` draws its figures' text with (registered at run time, no font library).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
# apt waits up to 10 minutes for a lock another apt holds (an unattended upgrade, a second
# setup) instead of failing at once.
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Open MPI for the data-parallel training test (`cargo test -p metarec-trainer --features mpi`):
# its runtime and mpirun, its headers and libclang (the `mpi` crate generates its bindings at
# build time). The demo and the default build need none of it.
mpi_pkgs=()
for pkg in openmpi-bin libopenmpi-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || mpi_pkgs+=("$pkg")
done
if [ ${#mpi_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages for MPI: ${mpi_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${mpi_pkgs[@]}" >/dev/null
fi
