"""Application benchmarks on a disk: the paper ran the Phoronix disk suite,
which Debian does not package. Ours, from Debian packages, run in the guest
on ext4 over qemu-blk and over vmsh-blk (the same guest, a fresh ext4 image
on the KVM host's tmpfs for each, qemu with cache=writeback, vmsh serving
its file): SQLite inserts (sqlite3, one transaction - one fsync - per
row), tar of a tree of small files from the tools image and its
extraction with sync (a kernel-source-like tree), dbench (4 clients), and
two fio file-I/O mixes through ext4 (a random 70/30 read/write mix with
fsync every 32 writes; a sequential 1 MiB write with fsync at the end).
Each workload's time is measured in the guest (/proc/uptime, 10 ms);
dbench and fio report throughput, given here as time per unit of work.
A compile: the tools image's generated C project (96 files, see
vmshtest/tools_image.py) copied onto the disk and built there with make -j4
and tcc (gcc would take minutes per build in a guest inside the emulated
host), the program run, then sync. Repetitions alternate the two disks."""
from bench.evaluation.stats import quartiles
from vmshtest import fsstress
from vmshtest import tools_image
from vmshtest.devices import Served
from bench.evaluation.markdown import doc_items

NAME = "apps"
TITLE = "Application benchmarks on vmsh-blk vs qemu-blk"
PAPER = {"average": 1.5, "worst": 3.7}  # vmsh-blk's time relative to qemu-blk, Phoronix disk suite

TIMED = 'read a _ < /proc/uptime; {cmd}; rc=$?; read b _ < /proc/uptime; echo "T $a $b $rc"'


def timed(guest, cmd, timeout):
    out = guest.console(TIMED.format(cmd=cmd), timeout)
    line = next(ln for ln in out.splitlines() if ln.startswith("T "))
    _, a, b, rc = line.split()
    assert rc == "0", f"{cmd}: exit {rc}\n{out[-2000:]}"
    return float(b) - float(a)


def workloads(quick):
    rows = 40 if quick else 400
    files = "usr/bin" if quick else "usr"
    secs = 3 if quick else 15
    mix_mb = 8 if quick else 48
    return [
        ("sqlite inserts", f"{rows} rows", "s",
         lambda g, c, d: timed(g, f"i=0; (echo 'create table t(k integer, v blob);'; while [ $i -lt {rows} ]; do "
                                  f"echo \"insert into t values($i, randomblob(200));\"; i=$((i+1)); done) | "
                                  f"{c} /usr/bin/sqlite3 {d}/bench.db >/dev/null && rm -f /mnt/tools{d}/bench.db",
                               600)),
        ("tar create", f"/{files} of the tools image", "s",
         lambda g, c, d: timed(g, f"tar -cf /mnt/tools{d}/tree.tar -C /mnt/tools {files} && sync", 900)),
        ("tar extract", "the same tree, then sync", "s",
         lambda g, c, d: timed(g, f"mkdir /mnt/tools{d}/x && tar -xf /mnt/tools{d}/tree.tar -C /mnt/tools{d}/x && "
                                  f"sync && rm -rf /mnt/tools{d}/x /mnt/tools{d}/tree.tar && sync", 900)),
        ("compile", f"make -j4, tcc, {tools_image.CCBENCH_MODULES} C files", "s",
         lambda g, c, d: timed(g, f"{c} /bin/sh -c 'cp -a {tools_image.CCBENCH} {d}/cc && "
                                  f"make -s -C {d}/cc -j4 >/dev/null && {d}/cc/proj' && sync && "
                                  f"rm -rf /mnt/tools{d}/cc && sync", 900)),
        ("dbench", f"4 clients, {secs} s", "s/GB",
         lambda g, c, d: 1000.0 / _dbench(g, c, d, secs)),
        ("fio randrw 70/30", f"4k, {mix_mb} MiB file, fsync every 32", "s",
         lambda g, c, d: timed(g, f"{c} /usr/bin/fio --name=mix --directory={d} --rw=randrw --rwmixread=70 "
                                  f"--bs=4k --size={mix_mb}M --fsync=32 --ioengine=psync >/dev/null && "
                                  f"rm -f /mnt/tools{d}/mix.*", 900)),
        ("fio seq write", f"1M, {mix_mb * 2} MiB, fsync at end", "s",
         lambda g, c, d: timed(g, f"{c} /usr/bin/fio --name=seq --directory={d} --rw=write --bs=1M "
                                  f"--size={mix_mb * 2}M --end_fsync=1 --ioengine=psync >/dev/null && "
                                  f"rm -f /mnt/tools{d}/seq.*", 900)),
    ]


def _dbench(g, c, d, secs):
    return fsstress.dbench(g, c, d, secs)


def suite(ctx, g, chroot, dev, label, wl, res):
    inside = fsstress.mount_ext4(g, dev, f"apps-{label}")
    for name, _, _, fn in wl:
        res[label][name].append(fn(g, chroot, inside))
    fsstress.unmount(g, inside)


def run(ctx):
    reps = 1 if ctx.quick else 3
    wl = workloads(ctx.quick)
    host = ctx.host()
    g, chroot, ctl_dev, ours, ctl = fsstress.ext4_pair_guest(host, "eval-apps", 512)
    res = {k: {w[0]: [] for w in wl} for k in ("qemu-blk", "vmsh-blk")}
    try:
        for rep in range(reps):
            suite(ctx, g, chroot, ctl_dev, "qemu-blk", wl, res)
            with Served(host, ctx.vmsh, g, ours, ident=f"evalapps{rep}") as s:
                suite(ctx, g, chroot, s.dev, "vmsh-blk", wl, res)
            assert s.status == 0, s.text
            ctx.log(f"apps: repetition {rep + 1}/{reps} done")
    finally:
        g.stop()
        host.run(f"rm -f {ours} {ctl}", 30)
    return {"workloads": [[n, what, unit] for n, what, unit, _ in wl], "results": res, "repetitions": reps,
            "guest": "qemu pc, Linux 6.1, 512 MiB RAM, 1 vCPU; ext4 on 512 MiB images"}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = data["results"]
    lines = [f"### {TITLE}", "", *doc_items(__doc__),
             f"{data['guest']}; {data['repetitions']} repetitions; median [interquartile range]; lower is better.",
             "", "| workload | work | qemu-blk | vmsh-blk | vmsh-blk / qemu-blk |", "|---|---|---|---|---|"]
    ratios = []
    for name, what, unit in data["workloads"]:
        q = quartiles(res["qemu-blk"][name])
        v = quartiles(res["vmsh-blk"][name])
        ratios.append((name, v[0] / q[0]))
        lines.append(f"| {name} | {what} | {q[0]:.2f} [{q[1]:.2f}-{q[2]:.2f}] {unit} | "
                     f"{v[0]:.2f} [{v[1]:.2f}-{v[2]:.2f}] {unit} | {v[0] / q[0]:.2f} |")
    avg = sum(r for _, r in ratios) / len(ratios)
    worst = max(ratios, key=lambda r: r[1])
    lines += ["", f"**vmsh-blk's time relative to qemu-blk: average {avg:.2f}x, worst {worst[1]:.2f}x "
                  f"({worst[0]})**; the paper: average {PAPER['average']}x, worst {PAPER['worst']}x.", ""]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r[0] for r in ratios]
    ax.bar(names, [r[1] for r in ratios], color="tab:blue", label="vmsh-blk / qemu-blk (this run, median)")
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.axhline(PAPER["average"], color="tab:red", ls="--", lw=1, label=f"paper's average ({PAPER['average']}x)")
    ax.axhline(avg, color="tab:blue", ls=":", lw=1, label=f"our average ({avg:.2f}x)")
    ax.set_ylabel("relative time (vmsh-blk / qemu-blk)")
    ax.set_title(f"Application benchmarks, n={data['repetitions']} (lower is better)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.legend(fontsize=7)
    lines.append(f"![apps]({ctx.save_figure(fig, 'apps')})")
    return "\n".join(lines)
