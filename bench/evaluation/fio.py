"""fio on every disk a guest can have, side by side in one guest: the
paper's Figure 6 with our extra rows.

Rows (one guest, qemu pc, Linux 6.1, anonymous RAM):
  native     fio in the KVM host on the backing file itself (tmpfs there:
             buffered I/O - tmpfs has no O_DIRECT before Linux 6.6 - the
             upper bound, no virtualisation at all)
  qemu-blk   the guest's own virtio-blk disk of qemu (aio=threads,
             cache=writeback) on that backing file, vmsh not attached
  vmsh-blk   `vmsh serve` of the SAME backing file: fio on vmsh's disk
  own+vmsh   the guest's own disk while vmsh serves (what attaching costs
             the guest's other I/O)
  qemu-9p    qemu's virtio-9p (-virtfs, security_model=none, the guest
             mounts it cache=none) of the backing file's directory, fio on
             a file there - the paper's file-sharing baseline

Jobs (libaio; direct I/O on the disks): 256k sequential read and write
(bandwidth), 4k random read and write at iodepth 1 and 16 (IOPS). Rows are
interleaved job by job within each repetition; medians with the
interquartile range over the repetitions."""

from bench import blk_bench
from bench.evaluation.markdown import doc_items
from bench.evaluation.stats import quartiles
from vmshtest import harness, tools_image
from vmshtest.devices import Served, scratch

NAME = "fio"
TITLE = "Block I/O: fio (the paper's Figure 6)"
# the paper's vmsh-blk relative to qemu-blk, as issue 13 quotes it
PAPER = {"read bandwidth": 0.93, "write bandwidth": 0.06, "IOPS": 0.86}
ROWS = ("native", "qemu-blk", "vmsh-blk", "own+vmsh", "qemu-9p")
NINEP = "/tmp/evalfs"  # in the tools chroot (its /tmp is a tmpfs)


def native_job(host, path, job, runtime, size_mb):
    name, rw, bs, qd, _ = job
    out = host.check(f"fio --name={name} --filename={path} --rw={rw} --bs={bs} --iodepth={qd} "
                     f"--ioengine=libaio --direct=0 --size={size_mb}M --time_based --runtime={runtime} "
                     f"--ramp_time=1 --output-format=terse --terse-version=3", runtime * 4 + 120)
    return blk_bench.job_result(next(ln for ln in out.splitlines() if ln.startswith("3;")).split(";"), job)


def run(ctx):
    quick = ctx.quick
    reps, runtime, size = (1, 2, 64) if quick else (3, 5, 256)
    jobs = [j for j in blk_bench.JOBS if not quick or j[0] in ("seq-read-256k", "rand-write-4k-qd1")]
    host = ctx.host()
    img = tools_image.build()
    d = f"{scratch(host)}/evalfs"
    host.check(f"rm -rf {d} && mkdir -p {d}")
    backing = f"{d}/backing.img"
    host.check(f"head -c {size}M /dev/urandom > {backing}", 300)
    extra = (tools_image.qemu_args("pc", img)
             + tools_image.qemu_args("pc", backing, ident="own", serial="owndisk", readonly=False, cache="writeback")
             + ["-virtfs", f"local,path={d},mount_tag=evalfs,security_model=none,id=evalfs"])
    g = harness.Guest.start(host, "pc", "6.1", name="vmsh-eval-fio", extra_qemu_args=extra)
    try:
        chroot = tools_image.mount_in_guest(g)
        own = g.console("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = owndisk ] && echo ${d##*/}; done").strip()
        g.console(f"modprobe 9pnet_virtio; modprobe 9p; mkdir -p /mnt/tools{NINEP} && "
                  f"mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=524288 evalfs /mnt/tools{NINEP}", 60)
        res = {r: {j[0]: [] for j in jobs} for r in ROWS}
        for rep in range(reps):
            with Served(host, ctx.vmsh, g, backing, ident=f"evalfio{rep}") as s:
                for job in jobs:
                    n = job[0]
                    res["native"][n].append(native_job(host, backing, job, runtime, size))
                    res["vmsh-blk"][n].append(blk_bench.run_job(g, chroot, s.dev, job, runtime, size))
                    res["own+vmsh"][n].append(blk_bench.run_job(g, chroot, own, job, runtime, size))
                    res["qemu-9p"][n].append(blk_bench.run_job(g, chroot, f"{NINEP}/fio-9p.dat", job, runtime, size))
            assert s.status == 0, s.text
            for job in jobs:
                res["qemu-blk"][job[0]].append(blk_bench.run_job(g, chroot, own, job, runtime, size))
            ctx.log(f"fio: repetition {rep + 1}/{reps} done")
    finally:
        g.stop()
        host.check(f"rm -rf {d}")
    return {"rows": list(ROWS), "jobs": [list(j) for j in jobs], "results": res, "repetitions": reps,
            "runtime_s": runtime, "size_mib": size, "guest": "qemu pc, Linux 6.1, 512 MiB anonymous RAM, 1 vCPU"}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res, jobs = data["results"], data["jobs"]
    lines = [f"### {TITLE}", "", *doc_items(__doc__), "",
             f"{data['guest']}; fio {data['runtime_s']} s per job on {data['size_mib']} MiB, "
             f"{data['repetitions']} repetitions; median [interquartile range]; ratio: median / qemu-blk's median.", "",
             "| job | " + " | ".join(data["rows"]) + " | vmsh-blk / qemu-blk | own+vmsh / qemu-blk |",
             "|---|" + "---|" * (len(data["rows"]) + 2)]
    for name, _, _, _, metric in jobs:
        unit = "MB/s" if metric == "bw" else "IOPS"
        cells = []
        for r in data["rows"]:
            m, q1, q3 = quartiles(res[r][name])
            cells.append(f"{m:.1f} [{q1:.1f}-{q3:.1f}]")
        q = quartiles(res["qemu-blk"][name])[0]
        lines.append(f"| {name} ({unit}) | " + " | ".join(cells) +
                     f" | {quartiles(res['vmsh-blk'][name])[0] / q:.2f} | {quartiles(res['own+vmsh'][name])[0] / q:.2f} |")
    lines += ["", "The paper (bare-metal KVM, NVMe): vmsh-blk at " + ", ".join(f"{v:.2f}x qemu-blk's {k}"
                                                                              for k, v in PAPER.items()) + ".", ""]
    groups = [("bw", "bandwidth (MB/s)"), ("iops", "IOPS")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (metric, label) in zip(axes, groups):
        js = [j for j in jobs if j[4] == metric]
        width = 0.8 / len(data["rows"])
        for i, r in enumerate(data["rows"]):
            qs = [quartiles(res[r][j[0]]) for j in js]
            xs = [k + i * width for k in range(len(js))]
            ax.bar(xs, [q[0] for q in qs], width, label=r,
                   yerr=[[q[0] - q[1] for q in qs], [q[2] - q[0] for q in qs]], capsize=2)
        ax.set_xticks([k + width * (len(data["rows"]) - 1) / 2 for k in range(len(js))])
        ax.set_xticklabels([j[0] for j in js], fontsize=7, rotation=12)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.set_title(f"{label.split(' ')[0]}: median, IQR as error bar, n={data['repetitions']}", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle("fio in one guest: the hypervisor's disk, vmsh's disk, 9p, native (log scale)")
    lines.append(f"![fio]({ctx.save_figure(fig, 'fio')})")
    return "\n".join(lines)
