#!/usr/bin/env bash
# test.sh - install what vmsh needs, build it, run every test (what CI runs).
#
# make check runs the KVM API tier on this machine's /dev/kvm when it has a
# usable one, else inside the emulated KVM host.  On a machine with /dev/kvm
# the API tier then runs once more inside the emulated host, so that both
# paths stay green whichever machine CI lands on.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
tools/install-deps.sh
make -j"$(nproc)" all san
t1=$(date +%s)
make check
t2=$(date +%s)
extra=""
if [ -z "${VMSH_API_MODE:-}" ] && /usr/bin/python3 -m vmshtest.kvm_tier --host-usable; then
	echo "== test.sh: the KVM API tier again, inside the emulated KVM host (VMSH_API_MODE=emulated)"
	VMSH_API_MODE=emulated make check-api-kvm
	extra=" + emulated API tier $(($(date +%s) - t2)) s"
fi
echo "== test.sh: all passed: setup+build $((t1 - t0)) s, make check $((t2 - t1)) s${extra}; total $(($(date +%s) - t0)) s"
