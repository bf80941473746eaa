#!/usr/bin/env bash
# malloc_pkgconfig_test: installs the uvmrt-malloc component of a build tree
# into a scratch prefix, builds programs with
# `pkg-config --cflags --libs uvmrt-malloc` against it, and runs them: an
# ordinary C program with no uvmrt source in it, and (quickly) the C and C++
# malloc tests.
#   malloc_pkgconfig_test.sh BUILD_DIR PROGRAM.c MALLOC_C_TEST.c MALLOC_CXX_TEST.cc
set -euo pipefail
build=$1
src=$2
ctest_src=$3
cxxtest_src=$4
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" --component malloc >/dev/null
pc=$(find "$prefix" -name uvmrt-malloc.pc)
[ -n "$pc" ] || { echo "uvmrt-malloc.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs uvmrt-malloc)
echo "pkg-config --cflags --libs uvmrt-malloc: $flags"
cc -std=c11 -O1 -o "$prefix/prog" "$src" $flags
cc -std=c11 -O1 -fno-builtin -o "$prefix/c_test" "$ctest_src" $flags
c++ -std=c++20 -O1 -fno-builtin -o "$prefix/cxx_test" "$cxxtest_src" $flags
libdir=$(pkg-config --variable=libdir uvmrt-malloc)
export LD_LIBRARY_PATH=$libdir
"$prefix/prog"
"$prefix/c_test" --quick
"$prefix/cxx_test" --quick
