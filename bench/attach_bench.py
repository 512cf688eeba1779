#!/usr/bin/env python3
"""`vmsh attach` next to ssh into the same guest: time from starting the
command to the first prompt, keystroke echo latency, and vmsh's own memory,
side by side in one run.

usage: python3 -m bench.attach_bench [--machine pc] [--kernel 6.1] [--runs 5] [--samples 30]

vmsh is measured cold (no kernel cache: the whole kernel image searched) and
warm (the kernel cache of an earlier run used); the VM's stop time comes from
`vmsh -v attach`.

One guest (test harness; an emulated KVM host on machines without hardware
KVM) with qemu user networking (loopback port forward only) runs dropbear
(Debian's dropbear-bin, from the tools image) on its own network. Each run
measures an ssh session (public-key login as root, a shell) and a `vmsh
attach` session (the guest's devices are added and removed each time),
alternating. Prints medians. Not a pass/fail test."""
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--samples", type=int, default=30)
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    img = tools_image.build()
    host = harness.make_host()
    try:
        net = ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{PORT}-:22",
               "-device", ("virtio-net-device" if a.machine == "microvm" else "virtio-net-pci") + ",netdev=n0"]
        g = harness.Guest.start(host, a.machine, a.kernel, name="vmsh-bench-attach",
                                extra_qemu_args=tools_image.qemu_args(a.machine, img) + net)
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
        host.check(f"cat > /run/attach_latency.py", input=open(os.path.join(REPO, "bench", "attach_latency.py")).read())
        ssh = (f"ssh -i /run/bench-key -p {PORT} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               f"-o LogLevel=ERROR -tt root@127.0.0.1")
        # vmsh cold: no kernel cache (VMSH_CACHE_DIR=off), the whole image is
        # searched; warm: the cache an earlier run filled (core/kcache.h)
        cache = "/run/vmsh-bench-cache"
        host.check(f"rm -rf {cache} && VMSH_CACHE_DIR={cache} {vmsh} inspect {g.pid} >/dev/null")
        kinds = (("ssh", ssh), ("vmsh", f"env VMSH_CACHE_DIR=off {vmsh} attach {g.pid}"),
                 ("vmsh_warm", f"env VMSH_CACHE_DIR={cache} {vmsh} attach {g.pid}"))
        res = {k: [] for k, _ in kinds}
        stops = []
        for _ in range(a.runs):
            for name, cmd in kinds:
                out = host.check(f"python3 /run/attach_latency.py {a.samples} {cmd}", 600)
                res[name].append(json.loads(out.strip().splitlines()[-1]))
            r = host.exec(f"VMSH_CACHE_DIR={cache} {vmsh} -v attach {g.pid} -- true", 300)
            m = re.search(r"vCPUs stopped ([\d.]+) ms in (\d+) windows", r.stderr)
            if m:
                stops.append((float(m.group(1)), int(m.group(2))))
        print(f"\nattach_bench: {a.machine}, Linux {a.kernel} guest, {host.mode} KVM host, {platform.node()} "
              f"({os.cpu_count()} CPUs); {a.runs} sessions each, {a.samples} keystrokes per session")
        print(f"{'':28s} {'ssh (dropbear)':>16s} {'vmsh, cold':>11s} {'vmsh, warm':>11s} {'cold/ssh':>9s} "
              f"{'warm/ssh':>9s}")
        for key, label in (("to_prompt_ms", "start to prompt (ms)"),):
            s_, v_, w_ = (statistics.median(r[key] for r in res[n]) for n in ("ssh", "vmsh", "vmsh_warm"))
            print(f"{label:28s} {s_:16.1f} {v_:11.1f} {w_:11.1f} {v_ / s_:9.2f} {w_ / s_:9.2f}")
        if stops:
            print(f"VM stop time per attach (all vCPUs held, median of {len(stops)}): "
                  f"{statistics.median(x[0] for x in stops):.1f} ms in {statistics.median(x[1] for x in stops):.0f} "
                  f"windows")
        s_, v_ = (statistics.median(r["echo_ms"]["median"] for r in res[n]) for n in ("ssh", "vmsh"))
        print(f"{'echo latency, median (ms)':28s} {s_:16.2f} {v_:14.2f} {v_ / s_:11.2f}")
        s_, v_ = (statistics.median(r["echo_ms"]["p90"] for r in res[n]) for n in ("ssh", "vmsh"))
        print(f"{'echo latency, p90 (ms)':28s} {s_:16.2f} {v_:14.2f} {v_ / s_:11.2f}")
        for n, label in (("vmsh", "cold"), ("vmsh_warm", "warm")):
            rss = [r["peak_rss_kib"] for r in res[n]]
            print(f"\nvmsh ({label}) peak RSS while attached (KiB, per process, median): "
                  + ", ".join(f"{k} {statistics.median(x.get(k, 0) for x in rss):.0f}" for k in rss[0]), end="")
        print()
        rss = [r["peak_rss_kib"] for r in res["ssh"]]
        print(f"ssh client peak RSS (KiB, median): "
              + ", ".join(f"{k} {statistics.median(x.get(k, 0) for x in rss):.0f}" for k in rss[0]))
    finally:
        host.close()


if __name__ == "__main__":
    main()
