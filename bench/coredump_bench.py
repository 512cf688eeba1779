#!/usr/bin/env python3
"""How long a memory dump stops the VM: vmsh coredump (copy-on-write
snapshot, the default; --stop; --live) next to QEMU's own dump-guest-memory
(QMP), on the same guest in the same run, for each guest size.

usage: python3 -m bench.coredump_bench [--mem 512M,2G] [--fill 25] [--runs 1]

Boots one guest per size with the test harness (emulated KVM host on machines
without hardware KVM), fills --fill percent of its RAM with random data in a
tmpfs (so that the dump is not all zero pages), keeps a writer dirtying 64 MiB
in a loop while the dumps run (copy-on-write has work to do), and prints per
method: the VM stop time (vmsh's own report; QEMU pauses the VM for its whole
dump, so there it is the dump's duration), the whole run, and the file's
logical and allocated size. Not a pass/fail test: the machine is noisy."""
import argparse
import os
import platform
import re
import shlex
import statistics
import sys
import time

from vmshtest import harness
from vmshtest.qmp import qmp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sizes(host, path):
    st = host.check(f"stat -c '%s %b %B' {shlex.quote(path)}").split()
    return int(st[0]), int(st[1]) * int(st[2])


def vmsh_dump(host, vmsh, pid, path, opts):
    r = host.exec(f"{vmsh} coredump {opts} --force {pid} {shlex.quote(path)}", 3600)
    if r.rc != 0:
        raise RuntimeError(f"vmsh coredump {opts}: {r.stderr[-2000:]}")
    m = re.search(r"VM stopped ([0-9.]+) ms \(([^)]*)\), ([0-9.]+) s in all", r.stderr)
    if not m:
        raise RuntimeError(f"no summary in: {r.stderr[-2000:]}")
    return float(m.group(1)), float(m.group(3)) * 1000, m.group(2)


def qemu_dump(host, sock, path):
    t0 = time.monotonic()
    qmp(host, sock, {"execute": "dump-guest-memory", "arguments": {"paging": False, "protocol": f"file:{path}"}},
        timeout=3600)
    ms = (time.monotonic() - t0) * 1000
    return ms, ms, "paused for the whole dump"


def one_size(host, vmsh, mem, fill, runs):
    sock = f"{host.sockdir}/qmp-bench-{os.getpid()}.sock"
    g = harness.Guest.start(host, "pc", "6.1", mem=mem, smp=2, name=f"vmsh-bench-dump-{mem}",
                            extra_qemu_args=["-qmp", f"unix:{sock},server=on,wait=off"], timeout=600)
    try:
        total_mb = int(g.console("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo"))
        fill_mb = total_mb * fill // 100
        g.console(f"mkdir -p /mnt/fill && mount -t tmpfs -o size=90% tmpfs /mnt/fill && "
                  f"dd if=/dev/urandom of=/mnt/fill/data bs=1M count={fill_mb} 2>/dev/null; echo ok", 1800)
        g.console("(while :; do dd if=/dev/urandom of=/mnt/fill/dirty bs=1M count=64 conv=notrunc 2>/dev/null; "
                  "done) >/dev/null 2>&1 & echo $! > /tmp/writer")
        path = f"{host.logdir}/bench-{mem}.core"
        methods = [("vmsh (snapshot)", lambda: vmsh_dump(host, vmsh, g.pid, path, "--snapshot")),
                   ("vmsh --stop", lambda: vmsh_dump(host, vmsh, g.pid, path, "--stop")),
                   ("vmsh --live", lambda: vmsh_dump(host, vmsh, g.pid, path, "--live")),
                   ("QEMU dump-guest-memory", lambda: qemu_dump(host, sock, path))]
        rows = []
        for name, fn in methods:
            stops, totals, size = [], [], (0, 0)
            for _ in range(runs):
                host.run(f"rm -f {shlex.quote(path)}")
                stop, total, _ = fn()
                stops.append(stop)
                totals.append(total)
                size = sizes(host, path)
            rows.append((name, statistics.median(stops), statistics.median(totals), size))
        host.run(f"rm -f {shlex.quote(path)}")
        alive = g.console("kill $(cat /tmp/writer); echo yes").strip()
        return total_mb, fill_mb, rows, alive
    finally:
        g.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", default="512M,2G")
    ap.add_argument("--fill", type=int, default=25)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    host = harness.make_host()
    try:
        print(f"KVM host: {host.mode} ({host.mode_reason}); machine: {platform.node()}, {os.cpu_count()} CPUs; "
              f"median of {a.runs} run(s) per method")
        for mem in a.mem.split(","):
            total_mb, fill_mb, rows, alive = one_size(host, vmsh, mem, a.fill, a.runs)
            snap = rows[0][1]
            print(f"\nguest pc, Linux 6.1, {mem} ({total_mb} MiB usable, {fill_mb} MiB random data, "
                  f"64 MiB rewritten in a loop during the dumps)")
            print(f"{'method':24s} {'VM stopped ms':>14s} {'whole s':>9s} {'file MiB':>9s} {'on disk MiB':>12s} "
                  f"{'stop / snapshot':>16s}")
            for name, stop, total, (logical, alloc) in rows:
                print(f"{name:24s} {stop:14.1f} {total / 1000:9.1f} {logical >> 20:9d} {alloc >> 20:12d} "
                      f"{stop / snap:15.1f}x")
            print(f"guest still answers: {alive}")
        return 0
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main())
