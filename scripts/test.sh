#!/usr/bin/env bash
# Installs the dependencies, then builds and runs the whole test suite in
# every configuration the project keeps green:
#   release (gcc), ASan+UBSan (clang), TSan (clang), and a clang build with
#   -Wthread-safety.
#   scripts/test.sh [--quick]   --quick: release configuration only
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)
quick=0
[ "${1:-}" = "--quick" ] && quick=1

run_config() {
  local name=$1; shift
  echo "=== ${name}: configure and build"
  cmake -S . -B "build/${name}" "$@" >/dev/null
  cmake --build "build/${name}" -j"${jobs}" >/dev/null
  echo "=== ${name}: test"
  (cd "build/${name}" && ctest --output-on-failure -j1 --timeout 900)
}

run_config release -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${quick}" -eq 0 ]; then
  echo "=== thread-safety: clang -Wthread-safety"
  cmake -S . -B build/tsa -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DUVMRT_THREAD_SAFETY=ON >/dev/null
  cmake --build build/tsa -j"${jobs}" >/dev/null
  UVMRT_TEST_SCALE=small run_config asan -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DUVMRT_SANITIZE=address
  UVMRT_TEST_SCALE=small run_config tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DUVMRT_SANITIZE=thread
fi
echo "=== all tests passed"
