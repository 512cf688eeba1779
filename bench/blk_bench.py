#!/usr/bin/env python3
"""vmsh's block device next to the hypervisor's own virtio-blk, and the
guest's own disk with and without vmsh attached: fio in the guest, side by
side in one run, interleaved.

usage: python3 -m bench.blk_bench [--machine pc] [--kernel 6.1] [--runtime 5] [--size 256]
                                  [--rounds 5] [--memfd] [--json FILE] [--count-syscalls]
                                  [--compare OTHER_VMSH] [--b-serve-args ARGS]
                                  [--smp N] [--numjobs N]

--smp and --numjobs give the guest more vCPUs and fio that many jobs per
run (their results summed): multiqueue, where each guest CPU submits to a
queue of its own and vmsh serves each queue with a thread of its own
(qemu-blk has a queue per vCPU too). --b-serve-args measures vmsh-blk a
second way in the same rounds (the --compare build, or this one), e.g.
`--b-serve-args "--queues 1"`: one queue and one serving thread.

One guest (test harness; an emulated KVM host on machines without hardware
KVM - one vCPU by default: with two, a guest's qemu died mid-benchmark on
2026-12-04, as tests/vm/README.md reports of 2-vCPU emulated hosts; the
serving thread then shares the guest's CPU, --l1-smp 2 to try) gets two disks of its own hypervisor (qemu virtio-blk,
aio=threads): the fio tools image and a backing file on the KVM host's
tmpfs. Jobs (direct I/O, libaio): sequential 256k read and write, 4k random
read and write at iodepth 1 and 16.

Each round measures, in this order: the guest's own disk (qemu-blk, vmsh
not attached); `vmsh serve` of the SAME backing file with the jobs on
vmsh's disk (vmsh-blk) and on the guest's own disk while vmsh is attached
(serving, untraced); the guest's own disk once more with vmsh gone
(qemu-blk again). Rounds repeat that (A B A B ...). The table gives medians
with the interquartile range, and PAIRED ratios: each round's measurement
over the mean of the same round's qemu-blk and qemu-blk again (a slow
minute of the machine then hits both sides of a ratio), their median and
interquartile range over the rounds:
  vmsh-blk / qemu-blk          (issue 13: >= 1.0 with memfd RAM, >= 0.9 anonymous)
  own disk attached / not      (>= 0.98)
Self-check: qemu-blk and qemu-blk again are the same configuration; the
ratio formed the same way from the two must be within 5 % of 1, else the
machine was too noisy for that job to decide a few-percent question, and
the output says so and by how much. Not a pass/fail test.

--count-syscalls then measures, per guest request and in runs of their
own: host syscalls (strace -c -f) of vmsh's serving process and of the
guest's qemu; untraced, the guest's exits (KVM's counters), the host CPU
time of the hypervisor's vCPU threads, of its other threads and of vmsh,
and the bytes host syscalls copied per byte the disk served (vmsh counts
its process_vm_readv/writev; read/write syscalls from /proc/PID/io): what
a request costs whatever the machine's speed."""
import argparse
import json
import os
import platform
import re
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vmshtest import harness
from vmshtest import tools_image
from vmshtest.devices import Served, scratch
from bench.evaluation.stats import quartiles

JOBS = [
    ("seq-read-256k", "read", "256k", 4, "bw"),
    ("seq-write-256k", "write", "256k", 4, "bw"),
    ("rand-read-4k-qd1", "randread", "4k", 1, "iops"),
    ("rand-read-4k-qd16", "randread", "4k", 16, "iops"),
    ("rand-write-4k-qd1", "randwrite", "4k", 1, "iops"),
    ("rand-write-4k-qd16", "randwrite", "4k", 16, "iops"),
]


FIO_JOBS = 1  # fio jobs per run (--numjobs), their results reported together
STALLS = []   # runs repeated because the emulated host stalled


def wait_for_guest(guest, budget=600):
    """Until the guest's console answers again (after a stall of the host)."""
    end = time.monotonic() + budget
    while True:
        try:
            if guest.console("echo alive", 60).strip().endswith("alive"):
                return
        except harness.HarnessError:
            if time.monotonic() > end:
                raise
        time.sleep(5)


def fio_terse(guest, chroot, dev, job, runtime, size_mb, direct=True):
    """One fio job on /dev/DEV (or on the file DEV names when it starts with
    a /); its result as fio's terse line (version 3), split: a few hundred
    bytes over the serial console instead of fio's JSON."""
    name, rw, bs, qd, metric = job
    target = dev if dev.startswith("/") else f"/dev/{dev}"
    many = (f"--numjobs={FIO_JOBS} --group_reporting --offset_increment={size_mb // FIO_JOBS}M "
            if FIO_JOBS > 1 else "")
    cmd = (f"{chroot} /usr/bin/fio --name={name} --filename={target} --rw={rw} --bs={bs} --iodepth={qd} "
           f"--ioengine=libaio --direct={int(direct)} --size={size_mb // FIO_JOBS}M --time_based --runtime={runtime} "
           f"--ramp_time=1 {many}--output-format=terse --terse-version=3 2>&1")
    try:
        out = guest.console(cmd, runtime * 4 + 120)
    except harness.HarnessError as e:
        # The emulated KVM host itself stopped (twice on 2026-12-05: its
        # own soft-lockup report from its idle loop, 150-160 s without a
        # timer interrupt, with the guest idle in it), so the run measures
        # nothing: said, and repeated once the host answers again.
        if "did not answer" not in str(e):
            raise
        STALLS.append(f"{name} on {target}")
        print(f"blk_bench: the emulated host stalled during {name} on {target} ({e}); "
              "the run is repeated once it answers again", file=sys.stderr, flush=True)
        wait_for_guest(guest)
        out = guest.console(cmd, runtime * 4 + 120)
    try:
        return next(ln for ln in out.splitlines() if ln.startswith("3;")).split(";")
    except StopIteration:
        raise RuntimeError(f"fio {name} on {target}: no result:\n{out[-2000:]}") from None


def job_result(f, job):
    """MB/s or IOPS of one fio job from its terse v3 fields (read KiB/s and
    IOPS in fields 6 and 7, write in 47 and 48)."""
    bw_kib, iops = (f[6], f[7]) if "read" in job[1] else (f[47], f[48])
    return float(bw_kib) * 1024 / 1e6 if job[4] == "bw" else float(iops)


def run_job(guest, chroot, dev, job, runtime, size_mb, direct=True):
    """MB/s or IOPS of one fio job."""
    return job_result(fio_terse(guest, chroot, dev, job, runtime, size_mb, direct), job)


def count_syscalls(host, guest, chroot, dev, pid, job, runtime, size_mb):
    """Host syscalls of process `pid` (every thread, strace -c -f) per guest
    I/O request of one fio job, in a run of its own (strace slows
    everything; the count per request is what it gives). Returns
    (per request, per request without ioctl, the five most frequent)."""
    out = f"{scratch(host)}/strace-{pid}-{job[0]}.txt"
    log = os.path.join(host.logdir, f"strace-{pid}-{job[0]}.log")
    st = host.spawn(["strace", "-c", "-f", "-p", str(pid), "-o", out], log)
    time.sleep(2)  # attached to every thread
    f = fio_terse(guest, chroot, dev, job, runtime, size_mb)
    host.kill(st, signal.SIGINT, 30)
    kib = float(f[5]) + float(f[46])  # read and written, KiB (after the ramp)
    ios = kib / (int(job[2].rstrip("k")))
    calls, by_name = 0, {}
    for line in host.read_file(out).decode().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            n = int(parts[3])
            by_name[parts[-1]] = n
            calls += n
    # the ramp second's requests are in strace's count but not fio's: a
    # slight overestimate, the same for both sides
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:5]
    no_ioctl = calls - by_name.get("ioctl", 0)
    return calls / max(ios, 1), no_ioctl / max(ios, 1), top


EXIT_STATS = ("exits", "pf_taken", "io_exits", "irq_injections")


def kvm_stats(host):
    """KVM's counters over every VM of the KVM host (debugfs; the guest is
    the only VM there): guest exits and interrupts so far."""
    out = host.check("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; "
                     "cd /sys/kernel/debug/kvm && grep -H . " + " ".join(EXIT_STATS))
    return {k: int(v) for k, v in (ln.split(":", 1) for ln in out.split())}


def proc_costs(host, pid):
    """CPU time (clock ticks) of process `pid` so far: in all (its threads
    that ended included) and of its vCPU threads (those with guest time);
    and the bytes its read/write syscalls moved (/proc/PID/io rchar +
    wchar)."""
    # /proc/PID/stat after the command's name: utime, stime at 12 and 13,
    # guest_time at 41
    out = host.check(f"sed 's/.*) //' /proc/{pid}/stat | cut -d' ' -f12,13; "
                     f"for t in /proc/{pid}/task/*; do sed 's/.*) //' $t/stat 2>/dev/null | cut -d' ' -f12,13,41; "
                     f"done; "
                     f"grep -E '^(rchar|wchar)' /proc/{pid}/io | cut -d' ' -f2")
    # a thread that ended meanwhile (qemu's I/O workers come and go) has no
    # stat file any more: its time is in the process's own line
    rows = [list(map(int, ln.split())) for ln in out.split("\n") if ln.strip() and ln.replace(" ", "").isdigit()]
    return {"cpu": sum(rows[0]), "vcpu": sum(r[0] + r[1] for r in rows[1:] if len(r) == 3 and r[2] > 0),
            "io": sum(r[0] for r in rows if len(r) == 1)}


def disk_requests(guest, dev):
    """Requests the guest's disk `dev` completed so far, and the bytes they
    moved (/sys/block/DEV/stat: reads, sectors read, writes, sectors
    written)."""
    f = guest.console(f"cat /sys/block/{dev}/stat").split()
    return int(f[0]) + int(f[4]), (int(f[2]) + int(f[6])) * 512


def count_costs(host, guest, chroot, dev, job, runtime, size_mb, vmsh_pid=None):
    """Per request of the guest's disk during one fio job, in a run of its
    own (untraced): the guest's exits (and of them the nested page faults,
    the MMIO writes such as a queue notification or an interrupt
    acknowledgement) from KVM's counters; host CPU time (microseconds) of
    the hypervisor's vCPU threads (the guest's own run time and its exits'
    handling), of its other threads (qemu-blk's I/O) and of vmsh's serving
    process; and the bytes the hypervisor's and vmsh's read/write syscalls
    moved per byte the disk served (vmsh's process_vm_readv/writev are
    counted by vmsh serve itself). Host-independent: what each request
    costs, whatever the machine's speed. The guest's timer and console
    during the run are counted too (the same for both sides)."""
    tck = int(host.check("getconf CLK_TCK"))
    r0 = disk_requests(guest, dev)
    before = kvm_stats(host), proc_costs(host, guest.pid), vmsh_pid and proc_costs(host, vmsh_pid)
    fio_terse(guest, chroot, dev, job, runtime, size_mb)
    after = kvm_stats(host), proc_costs(host, guest.pid), vmsh_pid and proc_costs(host, vmsh_pid)
    r1 = disk_requests(guest, dev)
    ios, data = max(r1[0] - r0[0], 1), max(r1[1] - r0[1], 1)
    per = {k: (after[0][k] - before[0][k]) / ios for k in EXIT_STATS}
    us = 1e6 / tck / ios
    q0, q1 = before[1], after[1]
    per["vcpu_us"] = (q1["vcpu"] - q0["vcpu"]) * us
    per["hv_io_us"] = ((q1["cpu"] - q1["vcpu"]) - (q0["cpu"] - q0["vcpu"])) * us
    per["vmsh_us"] = (after[2]["cpu"] - before[2]["cpu"]) * us if vmsh_pid else 0.0
    per["hv_bytes"] = (q1["io"] - q0["io"]) / data
    per["vmsh_bytes"] = (after[2]["io"] - before[2]["io"]) / data if vmsh_pid else 0.0
    per["data"], per["requests"] = data, ios
    return per


def vmsh_costs(host, vmsh, guest, chroot, backing, job, a, ident):
    """count_costs of one job on vmsh's disk, vmsh serve attached for that
    job alone: its own count of the bytes process_vm_readv/writev moved
    (guest memory that is the hypervisor's anonymous memory) joins the
    bytes copied."""
    with Served(host, vmsh, guest, backing, ident=ident) as s:
        worker = host.check(f"pgrep -P {s.pid}").split()[0]
        c = count_costs(host, guest, chroot, s.dev, job, a.runtime, a.size, vmsh_pid=worker)
        # and the guest's own disk while vmsh is attached: what vmsh adds to
        # its requests (nothing moves through vmsh there)
        own = count_costs(host, guest, chroot, a.own_dev, job, a.runtime, a.size, vmsh_pid=worker)
    m = re.search(r"guest-memory syscalls moving (\d+) bytes", s.text)
    c["vmsh_bytes"] += int(m[1]) / max(c["data"], 1) if m else float("nan")
    return c, own


def paired(num, den1, den2):
    """Per-round ratios num[r] / mean(den1[r], den2[r]): each round's
    measurement against the same round's reference, so that a slow minute
    of the machine hits both; their median and interquartile range."""
    return quartiles([n / ((d1 + d2) / 2) for n, d1, d2 in zip(num, den1, den2)])


def fmt(xs, unit):
    m, q1, q3 = quartiles(xs)
    return f"{m:8.1f}{unit[0]} [{q1:.0f}-{q3:.0f}]"


def served_b(host, vmsh_b, g, chroot, backing, jobs, a, r, res):
    """The --compare build's vmsh-blk (or the --b-serve-args one), for one round."""
    with Served(host, vmsh_b, g, backing, *a.b_serve_args.split(), ident=f"benchb{r}") as s:
        for job in jobs:
            res["vmsh-blk B"][job[0]].append(run_job(g, chroot, s.dev, job, a.runtime, a.size))
    if s.status != 0:
        print("vmsh serve (B) failed:\n" + s.text)


def print_costs(counts, side):
    """The per-request costs of `side` ("vmsh costs": vmsh-blk, or
    "own+vmsh costs": the own disk with vmsh attached) | qemu-blk's, a row
    per job counted."""
    print(f"{'job':20s} {'exits':>13s} {'page faults':>13s} {'vCPU us':>15s} {'hv I/O us':>13s}"
          f" {'vmsh us':>8s} {'CPU us in all':>15s} {'bytes copied':>13s}")
    for name, c in counts.items():
        if side not in c:
            continue
        v, q = c[side], c["qemu costs"]
        tv = v["vcpu_us"] + v["hv_io_us"] + v["vmsh_us"]
        tq = q["vcpu_us"] + q["hv_io_us"]
        print(f"{name:20s} {v['exits']:5.2f} | {q['exits']:5.2f} {v['pf_taken']:5.2f} | {q['pf_taken']:5.2f}"
              f" {v['vcpu_us']:6.0f} | {q['vcpu_us']:6.0f} {v['hv_io_us']:4.0f} | {q['hv_io_us']:4.0f}"
              f" {v['vmsh_us']:8.0f} {tv:6.0f} | {tq:6.0f}"
              f" {v['hv_bytes'] + v['vmsh_bytes']:5.2f} | {q['hv_bytes']:5.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--runtime", type=int, default=5, help="seconds per fio job")
    ap.add_argument("--size", type=int, default=256, help="backing file MiB")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    ap.add_argument("--jobs", default=",".join(j[0] for j in JOBS), help="comma-separated subset of the jobs")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--l1-smp", type=int, default=1, help="vCPUs of the emulated KVM host")
    ap.add_argument("--count-syscalls", action="store_true",
                    help="afterwards, host syscalls, guest exits, host CPU time and bytes copied per request, vmsh and qemu")
    ap.add_argument("--memfd", action="store_true",
                    help="guest RAM in a shared memfd (vmsh then does zero-copy I/O) instead of anonymous memory")
    ap.add_argument("--compare", metavar="VMSH",
                    help="another vmsh binary (an earlier build, say): its vmsh-blk measured in the same rounds, "
                         "the two builds' order alternating round by round")
    ap.add_argument("--b-serve-args", default="",
                    help="vmsh serve's arguments for the B measurement (the --compare build, else this one)")
    ap.add_argument("--smp", type=int, default=1, help="guest vCPUs")
    ap.add_argument("--numjobs", type=int, default=1, help="fio jobs per run (multiqueue: one per guest vCPU)")
    a = ap.parse_args()
    global FIO_JOBS
    FIO_JOBS = a.numjobs
    if a.b_serve_args and not a.compare:
        a.compare = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    jobs = [j for j in JOBS if j[0] in a.jobs.split(",")]
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    os.environ["VMSH_L1_SMP"] = str(a.l1_smp)
    img = tools_image.build()
    host = harness.make_host()
    try:
        backing = f"{scratch(host)}/bench-backing.img"
        host.check(f"head -c {a.size}M /dev/urandom > {backing}", 300)
        mem = (["-object", "memory-backend-memfd,id=ram,size=512M,share=on", "-machine", "memory-backend=ram"]
               if a.memfd else [])
        extra = mem + tools_image.qemu_args(a.machine, img) + tools_image.qemu_args(
            a.machine, backing, ident="own", serial="owndisk", readonly=False, cache="writeback")
        g = harness.Guest.start(host, a.machine, a.kernel, name="vmsh-bench", smp=a.smp, extra_qemu_args=extra)
        chroot = tools_image.mount_in_guest(g)
        own = g.console("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = owndisk ] && echo ${d##*/}; done").strip()
        a.own_dev = own
        cfgs = ("qemu-blk", "vmsh-blk", "own+vmsh", "qemu-blk-again") + (("vmsh-blk B",) if a.compare else ())
        res = {c: {j[0]: [] for j in jobs} for c in cfgs}
        serve_lines = []
        for r in range(a.rounds):
            for job in jobs:
                res["qemu-blk"][job[0]].append(run_job(g, chroot, own, job, a.runtime, a.size))
            if a.compare and r % 2 == 1:
                served_b(host, a.compare, g, chroot, backing, jobs, a, r, res)
            with Served(host, vmsh, g, backing, ident=f"bench{r}") as s:
                for job in jobs:
                    res["vmsh-blk"][job[0]].append(run_job(g, chroot, s.dev, job, a.runtime, a.size))
                    res["own+vmsh"][job[0]].append(run_job(g, chroot, own, job, a.runtime, a.size))
            if s.status != 0:
                print("vmsh serve failed:\n" + s.text)
            serve_lines.append(s.text.strip().splitlines()[-1])
            if a.compare and r % 2 == 0:
                served_b(host, a.compare, g, chroot, backing, jobs, a, r, res)
            for job in jobs:
                res["qemu-blk-again"][job[0]].append(run_job(g, chroot, own, job, a.runtime, a.size))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        head = (f"blk_bench: {a.machine}, Linux {a.kernel} guest ({'memfd' if a.memfd else 'anonymous'} RAM), "
                f"{host.mode} KVM host ({os.environ['VMSH_L1_SMP']} vCPUs), {platform.node()} "
                f"({os.cpu_count()} CPUs); guest {a.smp} vCPUs, {a.numjobs} fio job(s) per run; "
                f"fio {a.runtime}s per job, {a.rounds} interleaved rounds, "
                f"backing file on tmpfs; median [interquartile range]")
        noisy = []
        if a.rounds:
            print("\n" + head)
            print(f"{'job':20s} {'qemu-blk':>20s} {'vmsh-blk':>20s} {'vmsh/qemu [IQR]':>18s} {'own+vmsh':>20s}"
                  f" {'own+vmsh/qemu':>18s} {'self-check [IQR]':>20s}")
            for name, _, _, _, metric in jobs:
                unit = "MB/s" if metric == "bw" else "IOPS"
                q1, q2 = res["qemu-blk"][name], res["qemu-blk-again"][name]
                v, o = res["vmsh-blk"][name], res["own+vmsh"][name]
                rv, ro = paired(v, q1, q2), paired(o, q1, q2)
                # the same configuration twice: qemu-blk against qemu-blk again,
                # round by round, as the ratios above are formed
                sc = quartiles([x / ((x + y) / 2) for x, y in zip(q1, q2)])
                drift = abs(sc[0] - 1) * 2  # |a - b| / mean of the round's pair
                if drift > 0.05:
                    noisy.append((name, drift))
                print(f"{name:20s} {fmt(q1 + q2, unit):>20s} {fmt(v, unit):>20s}"
                      f" {rv[0]:6.2f} [{rv[1]:.2f}-{rv[2]:.2f}] {fmt(o, unit):>20s}"
                      f" {ro[0]:6.2f} [{ro[1]:.2f}-{ro[2]:.2f}]"
                      f" {drift:6.1%}{'!' if drift > 0.05 else ' '} [{abs(sc[1] - sc[2]) * 2:.0%}]  ({unit})")
            if a.compare:
                print(f"\nvmsh-blk of {vmsh} (A) against {a.compare} {a.b_serve_args} (B), the same rounds:")
                for name, _, _, _, metric in jobs:
                    unit = "MB/s" if metric == "bw" else "IOPS"
                    va, vb = res["vmsh-blk"][name], res["vmsh-blk B"][name]
                    ab = paired(va, vb, vb)
                    print(f"{name:20s} A {fmt(va, unit):>20s}  B {fmt(vb, unit):>20s}  A/B "
                          f"{ab[0]:5.2f} [{ab[1]:.2f}-{ab[2]:.2f}]  ({unit})")
            print("qemu-blk: both of its passes pooled. Ratios are paired: each round's vmsh-blk (own+vmsh) over the"
                  " mean of the same round's qemu-blk and qemu-blk again, median [interquartile range] over the"
                  " rounds. Self-check: qemu-blk against qemu-blk again formed the same way, |a - b| / mean of"
                  " the median round, [the spread of that over the rounds]")
            if noisy:
                print("TOO NOISY TO DECIDE a few-percent question for: " +
                      ", ".join(f"{n} (the same configuration differed by {d:.1%})" for n, d in noisy))
            else:
                print("self-check passed: the same configuration agreed within 5 % on every job")
        if STALLS:
            print(f"\nthe emulated KVM host stalled {len(STALLS)} time(s), those runs were repeated: "
                  + ", ".join(STALLS))
        if serve_lines:
            print(f"\nvmsh serve (last round): {serve_lines[-1]}")
        counts = {}
        if a.count_syscalls:
            cjobs = [j for j in JOBS if j[0] in ("rand-read-4k-qd1", "rand-write-4k-qd1", "rand-read-4k-qd16")]
            with Served(host, vmsh, g, backing, ident="benchcount") as s:
                worker = host.check(f"pgrep -P {s.pid}").split()[0]
                for job in cjobs:
                    counts[job[0]] = {"vmsh": count_syscalls(host, g, chroot, s.dev, worker, job, a.runtime, a.size)}
            for job in cjobs:
                counts[job[0]]["qemu"] = count_syscalls(host, g, chroot, own, g.pid, job, a.runtime, a.size)
            for job in jobs:
                c = counts.setdefault(job[0], {})
                c["vmsh costs"], c["own+vmsh costs"] = vmsh_costs(host, vmsh, g, chroot, backing, job, a,
                                                                   f"benchcost{job[0][:8]}")
                c["qemu costs"] = count_costs(host, g, chroot, own, job, a.runtime, a.size)
            print("\nhost syscalls per guest request (strace -c -f, a run of its own; qemu: the guest's whole"
                  " qemu process, 'w/o ioctl' leaves out its vCPUs' KVM_RUN)")
            print(f"{'job':20s} {'vmsh':>8s} {'qemu':>8s} {'qemu w/o ioctl':>15s}   vmsh's most frequent")
            for name, c in counts.items():
                if "vmsh" not in c:
                    continue
                v, q = c["vmsh"], c["qemu"]
                print(f"{name:20s} {v[0]:8.1f} {q[0]:8.1f} {q[1]:15.1f}   "
                      + ", ".join(f"{k} {n}" for k, n in v[2]))
            print("\nper guest request, vmsh-blk | qemu-blk (runs of their own, untraced): guest exits and of them"
                  " nested page faults (MMIO writes: queue notifications, vmsh's interrupt acknowledgements);"
                  " host CPU time in microseconds of the hypervisor's vCPU threads (the guest running and its"
                  " exits handled), of its other threads (qemu-blk's I/O) and of vmsh; bytes copied by host"
                  " syscalls per byte the guest read or wrote")
            print_costs(counts, "vmsh costs")
            print("\nthe guest's own disk (qemu-blk) per request, vmsh attached | not (the same runs' figures)")
            print_costs(counts, "own+vmsh costs")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"head": head, "results": res, "rounds": a.rounds, "runtime": a.runtime, "stalls": STALLS,
                           "noisy": noisy, "syscalls": counts}, f, indent=1)
    finally:
        host.close()


if __name__ == "__main__":
    main()
