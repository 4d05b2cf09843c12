#!/usr/bin/env bash
# Builds libmetarec (release) and installs it with its header and a pkg-config file:
#
#   PREFIX/lib/libmetarec.so
#   PREFIX/lib/libmetarec.a
#   PREFIX/lib/pkgconfig/metarec.pc
#   PREFIX/include/metarec.h
#
# usage: scripts/package.sh [--minimal] [--target TRIPLE] [--prefix DIR] [--lib-dir DIR]
#   --minimal        the std-free library (cargo profile minsize, no default features): about
#                    260 KB stripped instead of 560 KB (x86-64); a panic aborts instead of
#                    returning METAREC_ERR_PANIC (see ffi/src/bare.rs); same header and API
#   --target TRIPLE  cross-compile, e.g. aarch64-unknown-linux-gnu (linker and 16 KB page
#                    alignment come from .cargo/config.toml); cross builds use the target
#                    directory target/cross unless CARGO_TARGET_DIR is set
#   --prefix DIR     install prefix (default target/package/TRIPLE)
#   --lib-dir DIR    package an already built libmetarec.so/.a from DIR instead of building
#
# Then: PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs metarec)
# Prints the prefix on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

target=""
prefix=""
lib_dir=""
minimal=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minimal) minimal=1; shift ;;
    --target) target=${2:?--target needs a value}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
    --lib-dir) lib_dir=${2:?--lib-dir needs a value}; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

host=$(rustc -vV | sed -n 's/^host: //p')
triple=${target:-$host}
prefix=${prefix:-target/package/$triple}

if [ -n "$minimal" ]; then
  profile=minsize
  build=(--profile minsize --no-default-features)
  # What the std-free library needs besides itself (ffi/build.rs).
  libs_private="-lgcc_s -lc"
else
  profile=release
  build=(--release)
  # What the Rust standard library inside libmetarec.a needs on glibc targets
  # (`rustc --print native-static-libs`).
  libs_private="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
fi

if [ -z "$lib_dir" ]; then
  if [ -n "$target" ] && [ "$target" != "$host" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cross}
    cargo build --quiet "${build[@]}" -p metarec-ffi --target "$target" >&2
    lib_dir=$CARGO_TARGET_DIR/$target/$profile
  else
    cargo build --quiet "${build[@]}" -p metarec-ffi >&2
    lib_dir=${CARGO_TARGET_DIR:-$root/target}/$profile
  fi
fi
[ -f "$lib_dir/libmetarec.so" ] || { echo "package.sh: no libmetarec.so in $lib_dir" >&2; exit 1; }

version=$(sed -n 's/^#define METAREC_VERSION_STRING "\(.*\)"$/\1/p' include/metarec.h)
[ -n "$version" ] || { echo "package.sh: no METAREC_VERSION_STRING in include/metarec.h" >&2; exit 1; }

mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
prefix=$(cd "$prefix" && pwd)
install -m 0755 "$lib_dir/libmetarec.so" "$prefix/lib/libmetarec.so"
if [ -f "$lib_dir/libmetarec.a" ]; then
  install -m 0644 "$lib_dir/libmetarec.a" "$prefix/lib/libmetarec.a"
fi
install -m 0644 include/metarec.h "$prefix/include/metarec.h"

# Libs.private: for `pkg-config --static`.
cat > "$prefix/lib/pkgconfig/metarec.pc.tmp" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: metarec
Description: On-device cold-start personalization by meta-learning (C API, $triple)
Version: $version
Libs: -L\${libdir} -lmetarec
Libs.private: $libs_private
Cflags: -I\${includedir}
PC
mv "$prefix/lib/pkgconfig/metarec.pc.tmp" "$prefix/lib/pkgconfig/metarec.pc"
echo "$prefix"
