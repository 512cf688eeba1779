#!/usr/bin/env python3
"""How long `vmsh inspect` stops the VM, next to how long it runs.

usage: python3 -m bench.inspect_bench [--runs N] [--machine pc] [--kernel 6.1] [--smp 2]

Boots one guest with the test harness (emulated KVM host on machines without
hardware KVM), runs `vmsh inspect --json` N times on it, and prints for each
measure the median and the 90th percentile, measured side by side in the same
runs: the time the vCPU threads were stopped (only while their registers are
read), the time the hypervisor's injection thread was held (slot probing; the
guest keeps running), and the whole run (including reading and searching the
guest kernel from outside). Not a pass/fail test: the machine is noisy."""
import argparse
import json
import os
import platform
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vmshtest import harness


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--smp", type=int, default=2)
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    host = harness.make_host()
    try:
        g = harness.Guest.start(host, a.machine, a.kernel, smp=a.smp, name="vmsh-bench")
        script = (f"for i in $(seq {a.runs}); do {vmsh} inspect --json {g.pid} || exit 1; "
                  f"echo '@@@'; done")
        r = host.exec(script, 60 * a.runs)
        if r.rc != 0:
            print(r.stdout[-2000:], r.stderr[-2000:])
            return 1
        runs = [json.loads(chunk) for chunk in r.stdout.split("@@@") if chunk.strip()]
        t = {k: [x["timing"][k] / 1000 for x in runs] for k in ("vcpus_stopped_us", "hypervisor_held_us", "total_us")}
        ratio = [x["timing"]["vcpus_stopped_us"] / x["timing"]["total_us"] for x in runs]
        print(f"\nvmsh inspect, {len(runs)} runs on one {a.machine} guest, Linux {runs[0]['kernel']['version']}, "
              f"{a.smp} vCPUs; KVM host: {host.mode} ({host.mode_reason}); machine: {platform.node()}, "
              f"{os.cpu_count()} CPUs")
        print(f"{'':28s} {'median':>10s} {'p90':>10s}")
        for name, key in (("vCPUs stopped (ms)", "vcpus_stopped_us"),
                          ("hypervisor thread held (ms)", "hypervisor_held_us"),
                          ("whole inspect (ms)", "total_us")):
            print(f"{name:28s} {statistics.median(t[key]):10.2f} {pct(t[key], 90):10.2f}")
        print(f"{'stopped / whole':28s} {statistics.median(ratio) * 100:9.2f}% {pct(ratio, 90) * 100:9.2f}%")
        print(f"guest still answers: {g.console('echo yes').strip()}")
        return 0
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main())
