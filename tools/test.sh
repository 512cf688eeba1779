#!/usr/bin/env bash
# test.sh - install what vmsh needs, build it, run every test (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
make -j"$(nproc)" all san
make check
