#!/usr/bin/env bash
# Installs uvmrt's build and test dependencies from Debian 12 packages.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it uses apt-get)" >&2
  exit 1
fi
pkgs=(build-essential cmake pkg-config liburing-dev libabsl-dev libgtest-dev libgmock-dev
      libspdlog-dev libmimalloc-dev clang libclang-rt-14-dev fio gnuplot-nox python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
