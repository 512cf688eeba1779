#!/usr/bin/env python3
"""`vmsh attach` next to ssh into the same guest: time from starting the
command to the first prompt, keystroke echo latency, and vmsh's own memory,
side by side in one run.

usage: python3 -m bench.attach_bench [--machine pc] [--kernel 6.1] [--runs 5] [--samples 30]
                                    [--compare OLD_VMSH]

vmsh is measured cold (no kernel cache: the whole kernel image searched) and
warm (the kernel cache of an earlier run used); the VM's stop time comes from
`vmsh -v attach`.

One guest (test harness; an emulated KVM host on machines without hardware
KVM) with qemu user networking (loopback port forward only) runs dropbear
(Debian's dropbear-bin, from the tools image) on its own network. Each run
measures an ssh session (public-key login as root, a shell) and a `vmsh
attach` session (the guest's devices are added and removed each time),
alternating, and keystroke echo on the guest's second serial port (a shell
there, qemu's chardev socket; no start-to-prompt: the shell is already
running). With --compare, another vmsh build (e.g. the last release) is
measured warm in the same runs, right after the new one, with its own stop
time: the machine's noise hits both alike. Prints medians. Not a pass/fail
test."""
import argparse
import json
import os
import platform
import re
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vmshtest import harness
from vmshtest import tools_image

PORT = 10022


def measure(host, vmsh, machine="pc", kernel="6.1", runs=5, samples=30, log=print, old=None):
    """Every measurement: {"runs": {kind: [attach_latency result, ...]},
    "stops": [(ms, windows), ...]} for kinds ssh, vmsh (cold), vmsh_warm
    and serial."""
    img = tools_image.build()
    sersock = f"/run/vmsh-bench-serial-{os.getpid()}.sock"
    net = ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{PORT}-:22",
           "-device", ("virtio-net-device" if machine == "microvm" else "virtio-net-pci") + ",netdev=n0",
           "-chardev", f"socket,id=ser1,path={sersock},server=on,wait=off", "-serial", "chardev:ser1"]
    g = harness.Guest.start(host, machine, kernel, name="vmsh-bench-attach",
                            extra_qemu_args=tools_image.qemu_args(machine, img) + net)
    try:
        chroot = tools_image.mount_in_guest(g)
        g.console("modprobe virtio_net; ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && "
                  "ip route add default via 10.0.2.2", 60)
        host.check("ip link set lo up")  # the emulated KVM host's loopback (qemu's port forward listens there)
        host.check("rm -f /run/bench-key /run/bench-key.pub && ssh-keygen -q -t ed25519 -N '' -f /run/bench-key")
        pub = host.check("cat /run/bench-key.pub").strip()
        g.console(f"chmod 700 /mnt/tools/root && mkdir -p /mnt/tools/root/.ssh && echo '{pub}' > /mnt/tools/root/.ssh/authorized_keys && "
                  f"chmod 700 /mnt/tools/root/.ssh && {chroot} /usr/bin/dropbearkey -t ed25519 "
                  f"-f /etc/dropbear/dropbear_ed25519_host_key >/dev/null && "
                  f"{chroot} /usr/sbin/dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -E 2>/dev/null", 60)
        # a shell on the second serial port, again whenever one ends
        g.console("(while :; do setsid sh -i </dev/ttyS1 >/dev/ttyS1 2>&1; done) >/dev/null 2>&1 &")
        for f in ("attach_latency.py", "serial_relay.py"):
            host.check(f"cat > /run/{f}", input=open(os.path.join(REPO, "bench", f)).read())
        ssh = (f"ssh -i /run/bench-key -p {PORT} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               f"-o LogLevel=ERROR -tt root@127.0.0.1")
        # vmsh cold: no kernel cache (VMSH_CACHE_DIR=off), the whole image is
        # searched; warm: the cache an earlier run filled (core/kcache.h)
        cache = "/run/vmsh-bench-cache"
        host.check(f"rm -rf {cache} && VMSH_CACHE_DIR={cache} {vmsh} inspect {g.pid} >/dev/null")
        kinds = (("ssh", ssh), ("vmsh", f"env VMSH_CACHE_DIR=off {vmsh} attach {g.pid}"),
                 ("vmsh_warm", f"env VMSH_CACHE_DIR={cache} {vmsh} attach {g.pid}"),
                 ("serial", f"python3 /run/serial_relay.py {sersock}"))
        if old:
            kinds += (("old_warm", f"env VMSH_CACHE_DIR={cache} {old} attach {g.pid}"),)
        res = {k: [] for k, _ in kinds}
        stops, old_stops = [], []
        for i in range(runs):
            for name, cmd in kinds:
                keep = "--keep " if name == "serial" else ""  # its shell outlives the session
                out = host.check(f"python3 /run/attach_latency.py {keep}{samples} {cmd}", 600)
                res[name].append(json.loads(out.strip().splitlines()[-1]))
            for binary, into in ((vmsh, stops), (old, old_stops)):
                if not binary:
                    continue
                r = host.exec(f"VMSH_CACHE_DIR={cache} {binary} -v attach {g.pid} -- true", 300)
                m = re.search(r"vCPUs stopped ([\d.]+) ms in (\d+) windows", r.stderr)
                if m:
                    into.append((float(m.group(1)), int(m.group(2))))
            log(f"attach_bench: run {i + 1}/{runs} done")
        return {"runs": res, "stops": stops, "old_stops": old_stops, "machine": machine, "kernel": kernel, "samples": samples,
                "kvm_host": host.mode}
    finally:
        g.stop()
        host.run(f"rm -f {sersock}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--compare", metavar="OLD_VMSH", help="another vmsh build, measured warm in the same runs")
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    host = harness.make_host()
    try:
        d = measure(host, vmsh, a.machine, a.kernel, a.runs, a.samples,
                    log=lambda m: print(m, file=sys.stderr, flush=True), old=a.compare)
    finally:
        host.close()
    res, stops = d["runs"], d["stops"]
    print(f"\nattach_bench: {a.machine}, Linux {a.kernel} guest, {d['kvm_host']} KVM host, {platform.node()} "
          f"({os.cpu_count()} CPUs); {a.runs} sessions each, {a.samples} keystrokes per session")
    print(f"{'':28s} {'ssh (dropbear)':>16s} {'vmsh, cold':>11s} {'vmsh, warm':>11s} {'cold/ssh':>9s} "
          f"{'warm/ssh':>9s}")
    s_, v_, w_ = (statistics.median(r["to_prompt_ms"] for r in res[n]) for n in ("ssh", "vmsh", "vmsh_warm"))
    print(f"{'start to prompt (ms)':28s} {s_:16.1f} {v_:11.1f} {w_:11.1f} {v_ / s_:9.2f} {w_ / s_:9.2f}")
    if a.compare:
        o_ = statistics.median(r["to_prompt_ms"] for r in res["old_warm"])
        print(f"{'start to prompt, warm (ms)':28s} this vmsh {w_:.1f}, {a.compare} {o_:.1f}: "
              f"{w_ / o_:.2f}x; {a.compare} / ssh {o_ / s_:.2f}")
    for label, st in (("", stops), (f" ({a.compare})", d["old_stops"])):
        if st:
            print(f"VM stop time per attach{label} (all vCPUs held, median of {len(st)}): "
                  f"{statistics.median(x[0] for x in st):.1f} ms in {statistics.median(x[1] for x in st):.0f} "
                  f"windows")
    print(f"{'':28s} {'ssh (dropbear)':>16s} {'vmsh':>14s} {'vmsh/ssh':>11s} {'serial':>10s}")
    for key, label in (("median", "echo latency, median (ms)"), ("p90", "echo latency, p90 (ms)")):
        s_, v_, c_ = (statistics.median(r["echo_ms"][key] for r in res[n]) for n in ("ssh", "vmsh", "serial"))
        print(f"{label:28s} {s_:16.2f} {v_:14.2f} {v_ / s_:11.2f} {c_:10.2f}")
    for n, label in (("vmsh", "cold"), ("vmsh_warm", "warm")):
        rss = [r["peak_rss_kib"] for r in res[n]]
        print(f"\nvmsh ({label}) peak RSS while attached (KiB, per process, median): "
              + ", ".join(f"{k} {statistics.median(x.get(k, 0) for x in rss):.0f}" for k in rss[0]), end="")
    print()
    rss = [r["peak_rss_kib"] for r in res["ssh"]]
    print(f"ssh client peak RSS (KiB, median): "
          + ", ".join(f"{k} {statistics.median(x.get(k, 0) for x in rss):.0f}" for k in rss[0]))


if __name__ == "__main__":
    main()
