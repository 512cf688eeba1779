#!/usr/bin/env bash
# test.sh - install what vmsh needs, build it, run every test and the
# evaluation's smoke run (what CI runs).
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
check=$((t2 - t1))
# the paper's evaluation as a smoke run: every experiment must produce its
# data and its figure (the numbers are not asserted; make eval is the real run)
make eval-quick EVAL_ARGS="--out build/eval-quick"
t3=$(date +%s)
extra=" + eval-quick $((t3 - t2)) s"
t2=$t3
if [ -z "${VMSH_API_MODE:-}" ] && /usr/bin/python3 -m vmshtest.kvm_tier --host-usable; then
	echo "== test.sh: the KVM API tier again, inside the emulated KVM host (VMSH_API_MODE=emulated)"
	VMSH_API_MODE=emulated make check-api-kvm
	extra="$extra + emulated API tier $(($(date +%s) - t2)) s"
fi
echo "== test.sh: all passed: setup+build $((t1 - t0)) s, make check ${check} s${extra}; total $(($(date +%s) - t0)) s"
