#!/usr/bin/env python3
"""vmsh's block device next to the hypervisor's own virtio-blk, and the
guest's own disk with and without vmsh attached: fio in the guest, side by
side in one run.

usage: python3 -m bench.blk_bench [--machine pc] [--kernel 6.1] [--runtime 5] [--size 256]

One guest (test harness; an emulated KVM host on machines without hardware
KVM) gets two disks of its own hypervisor (qemu virtio-blk, aio=threads):
the fio tools image and a backing file on the KVM host's tmpfs. Jobs (direct
I/O, libaio): sequential 256k read and write, 4k random read and write at
iodepth 1 and 16. Order: the guest's own disk (vmsh not attached), then
`vmsh serve` of the SAME backing file: the jobs on vmsh's disk and on the
guest's own disk while vmsh is attached (serving, untraced). Prints MB/s or
IOPS per job and the ratios:
  vmsh-blk / qemu-blk          (target >= 0.9)
  own disk attached / not      (target >= 0.98)
Not a pass/fail test: the machine is noisy."""
import argparse
import json
import os
import platform
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vmshtest import harness
from vmshtest import tools_image
from vmshtest.devices import Served, scratch

JOBS = [
    ("seq-read-256k", "read", "256k", 4, "bw"),
    ("seq-write-256k", "write", "256k", 4, "bw"),
    ("rand-read-4k-qd1", "randread", "4k", 1, "iops"),
    ("rand-read-4k-qd16", "randread", "4k", 16, "iops"),
    ("rand-write-4k-qd1", "randwrite", "4k", 1, "iops"),
    ("rand-write-4k-qd16", "randwrite", "4k", 16, "iops"),
]


def run_job(guest, chroot, dev, job, runtime, size_mb):
    name, rw, bs, qd, metric = job
    out = guest.console(
        f"{chroot} /usr/bin/fio --name={name} --filename=/dev/{dev} --rw={rw} --bs={bs} --iodepth={qd} "
        f"--ioengine=libaio --direct=1 --size={size_mb}M --time_based --runtime={runtime} --ramp_time=1 "
        f"--output-format=json 2>/dev/null", runtime * 4 + 120)
    j = json.loads(out[out.index("{"):])
    side = j["jobs"][0]["read" if "read" in rw else "write"]
    return side["bw_bytes"] / 1e6 if metric == "bw" else side["iops"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--size", type=int, default=256, help="backing file MiB")
    ap.add_argument("--memfd", action="store_true",
                    help="guest RAM in a shared memfd (vmsh then does zero-copy I/O) instead of anonymous memory")
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    img = tools_image.build()
    host = harness.make_host()
    try:
        backing = f"{scratch(host)}/bench-backing.img"
        host.check(f"head -c {a.size}M /dev/urandom > {backing}", 300)
        mem = (["-object", "memory-backend-memfd,id=ram,size=512M,share=on", "-machine", "memory-backend=ram"]
               if a.memfd else [])
        extra = mem + tools_image.qemu_args(a.machine, img) + tools_image.qemu_args(
            a.machine, backing, ident="own", serial="owndisk", readonly=False, cache="writeback")
        g = harness.Guest.start(host, a.machine, a.kernel, name="vmsh-bench", extra_qemu_args=extra)
        chroot = tools_image.mount_in_guest(g)
        own = g.console("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = owndisk ] && echo ${d##*/}; done").strip()
        res = {"own": {}, "vmsh": {}, "own+vmsh": {}, "own-after": {}}
        for job in JOBS:
            res["own"][job[0]] = run_job(g, chroot, own, job, a.runtime, a.size)
        with Served(host, vmsh, g, backing, ident="bench") as s:
            for job in JOBS:
                res["vmsh"][job[0]] = run_job(g, chroot, s.dev, job, a.runtime, a.size)
                res["own+vmsh"][job[0]] = run_job(g, chroot, own, job, a.runtime, a.size)
        if s.status != 0:
            print("vmsh serve failed:\n" + s.text)
        # the guest's own disk once more, vmsh gone: the spread between this
        # and the first pass is the noise the attached ratio must be read against
        for job in JOBS:
            res["own-after"][job[0]] = run_job(g, chroot, own, job, a.runtime, a.size)
        print(f"\nblk_bench: {a.machine}, Linux {a.kernel} guest ({'memfd' if a.memfd else 'anonymous'} RAM), "
              f"{host.mode} KVM host, "
              f"{platform.node()} ({os.cpu_count()} CPUs); fio {a.runtime}s per job, backing file on tmpfs")
        print(f"{'job':22s} {'qemu-blk':>10s} {'vmsh-blk':>10s} {'ratio':>6s}   "
              f"{'own before':>10s} {'own+vmsh':>10s} {'own after':>10s} {'ratio':>6s} {'noise':>6s}")
        for name, _, _, _, metric in JOBS:
            unit = "MB/s" if metric == "bw" else "IOPS"
            q, v, o, q2 = res["own"][name], res["vmsh"][name], res["own+vmsh"][name], res["own-after"][name]
            base = (q + q2) / 2
            print(f"{name:22s} {q:8.1f}{unit[0]:>2s} {v:8.1f}{unit[0]:>2s} {v / q:6.2f}   "
                  f"{q:8.1f}{unit[0]:>2s} {o:8.1f}{unit[0]:>2s} {q2:8.1f}{unit[0]:>2s} {o / base:6.2f} "
                  f"{abs(q - q2) / base:6.2f}   ({unit})")
        print("ratio: own disk with vmsh attached / mean of before and after; noise: |before - after| / mean")
        print(f"\nvmsh serve: {s.text.strip().splitlines()[-1]}")
    finally:
        host.close()


if __name__ == "__main__":
    main()
