#!/usr/bin/env bash
# demo.sh - install what vmsh needs, build it, boot a demo VM (inside an
# emulated KVM host when this machine has no usable hardware KVM) and run
# `vmsh list`, `vmsh inspect`, `vmsh library` and `vmsh attach` on it. Everything it starts is
# stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
make -j"$(nproc)" all
exec /usr/bin/python3 -m tools.demo "$@"
