#!/usr/bin/env bash
# Installs the dependencies, builds uvmrt and runs the example: a region four
# times the budget, worked through and verified, with a swap file in $TMPDIR.
#   scripts/run-example.sh [uvmrt_demo options, e.g. --budget-mib 256 --swap /nvme]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DUVMRT_BUILD_TESTS=OFF >/dev/null
cmake --build build/release -j"$(nproc)" --target uvmrt_demo >/dev/null
exec build/release/examples/uvmrt_demo "$@"
