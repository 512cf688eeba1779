"""Generality: one guest per cell of the matrix (hypervisor x machine x
kernel x firmware description x memory layout x vCPUs), booted for the
cell; `vmsh attach PID -- cat /proc/version` run against it, told nothing
about the guest. A cell passes when the command printed the guest's own
kernel version and vmsh exited 0; the time is vmsh's whole run (finding the
kernel, loading the library, devices added and removed, the command) with
the kernel cache off, measured on the KVM host. Every cell is run, none is
typed in."""
import json
import os
import shlex
import time

from vmshtest import harness
from vmshtest.layouts import SHM, dimm_online, hugepages, layout_args
from bench.evaluation.markdown import doc_items

NAME = "generality"
TITLE = "Generality: hypervisors x kernels x memory layouts"
PAPER = ("the paper: 4 hypervisors (QEMU, kvmtool, Firecracker, crosvm) and Linux 4.4-5.16 kernels "
         "(not all combinations)")


def cell(label, machine="pc", kernel="6.1", flavour="amd64", qemu=None, acpi=True, layout=None, smp=1,
         rootfs=None):
    return {"label": label, "machine": machine, "kernel": kernel, "flavour": flavour, "qemu": qemu or "7.2",
            "acpi": acpi, "layout": layout or "anonymous", "smp": smp, "rootfs": rootfs or "initramfs"}


def cells(quick):
    if quick:
        return [cell("pc 6.1"), cell("microvm 6.12 no ACPI", machine="microvm", kernel="6.12", acpi=False)]
    out = [cell(f"{m} {k}", machine=m, kernel=k) for m in ("pc", "q35", "microvm") for k in ("5.10", "6.1", "6.12")]
    out += [cell(f"pc 6.1 {f}", flavour=f) for f in ("cloud-amd64", "rt-amd64")]
    out += [cell("pc custom 6.1 built-in", kernel="custom-6.1", flavour="builtin"),
            cell("pc custom 6.1 no modules", kernel="custom-6.1", flavour="nomodules")]
    out += [cell("pc 6.1 no ACPI", acpi=False), cell("microvm 6.1 no ACPI", machine="microvm", acpi=False)]
    out += [cell(f"QEMU 10 {m} {k}", machine=m, kernel=k, qemu="10")
            for m, k in (("pc", "6.1"), ("q35", "6.12"), ("microvm", "5.10"))]
    out += [cell(f"pc 6.1 {lay}", layout=lay) for lay in
            ("above-4g", "big", "memfd", "file-shared", "file-private", "hugetlbfs", "prealloc", "sandbox", "dimm")]
    out += [cell("pc 6.1 8 vCPUs", smp=8), cell("pc 6.1 Debian root fs", rootfs="debian")]
    # the project's own small VMM (tests/fixtures/minivmm): the lightweight
    # family - no ACPI, two RAM slots (one at 4 GiB), its seccomp filter on
    out += [cell(f"minivmm {k}", machine="minivmm", kernel=k, flavour=f, qemu="-", acpi=False,
                 layout="2 slots, sandbox", smp=2)
            for k, f in (("6.1", "amd64"), ("6.12", "amd64"), ("custom-6.1", "builtin"))]
    return out


def run_cell(ctx, host, c):
    extra, mem, backing = ([], "512M", None)
    if c["machine"] == "minivmm":
        extra = ["--sandbox"]
    elif c["layout"] != "anonymous":
        extra, mem, backing = layout_args(host, c["layout"], f"eval-{c['layout']}")
    if not c["acpi"] and c["machine"] != "minivmm":
        extra = extra + (["-no-acpi"] if c["machine"] == "pc" else ["-machine", "acpi=off"])
    if c["rootfs"] == "debian":
        mem = "1536M"  # systemd and udev (tests/vm/test_debian.py)
    restore = []
    if c["layout"] == "hugetlbfs":
        n = hugepages(host, 384 // 2)
        restore.append(f"echo {n} > /proc/sys/vm/nr_hugepages")
    if c["layout"] == "big" and host.mode == "emulated":
        restore.append(f"echo {host.check('cat /proc/sys/vm/overcommit_memory').strip()} > "
                       f"/proc/sys/vm/overcommit_memory")
        host.check("echo 1 > /proc/sys/vm/overcommit_memory")
    g = None
    res = dict(c)
    try:
        g = harness.Guest.start(host, c["machine"], c["kernel"], flavour=c["flavour"], mem=mem, smp=c["smp"],
                                extra_qemu_args=extra, qemu=None if c["qemu"] in ("7.2", "-") else c["qemu"],
                                rootfs=None if c["rootfs"] == "initramfs" else c["rootfs"],
                                name="vmsh-eval-gen", timeout=900 if c["rootfs"] == "debian" else 180)
        res["boot_s"] = round(g.boot_secs, 1)
        if c["layout"] == "dimm":
            dimm_online(g)  # movable: the guest's user memory and page cache go there first
        release = g.kernel.release
        t = time.monotonic()
        r = host.exec(f"env VMSH_CACHE_DIR=off {shlex.quote(ctx.vmsh)} attach {g.pid} -- cat /proc/version", 300)
        res["attach_ms"] = round((time.monotonic() - t) * 1000)
        res["ok"] = r.rc == 0 and release in r.stdout
        if not res["ok"]:
            res["error"] = f"rc {r.rc}: {(r.stderr or r.stdout).strip()[-400:]}"
        res["release"] = release
    except Exception as e:
        res["ok"] = False
        res["error"] = str(e).strip().splitlines()[0][:400] if str(e).strip() else repr(e)
    finally:
        if g:
            g.stop()
        for cmd in restore:
            host.run(cmd, 30)
        if backing and backing.startswith(SHM):
            host.run(f"rm -f {shlex.quote(backing)}", 30)
    ctx.log(f"generality: {c['label']}: {'pass' if res['ok'] else 'FAIL ' + res.get('error', '')}"
            + (f", attach {res['attach_ms']} ms" if "attach_ms" in res else ""))
    return res


def run(ctx):
    """Every cell; with VMSH_EVAL_CELLS=TEXT only the cells whose label holds
    TEXT, the others as the last run in the same output directory left them
    (each cell keeps the date it was run)."""
    only = os.environ.get("VMSH_EVAL_CELLS")
    prev = {}
    if only:
        try:
            with open(os.path.join(ctx.outdir, f"{NAME}.json")) as f:
                prev = {c["label"]: c for c in json.load(f)["data"]["cells"]}
        except (OSError, ValueError, KeyError):
            prev = {}
    host = ctx.host()
    out = []
    for c in cells(ctx.quick):
        if only and only not in c["label"] and c["label"] in prev:
            out.append(prev[c["label"]])
            continue
        res = run_cell(ctx, host, c)
        res["run_on"] = time.strftime("%Y-%m-%d")
        out.append(res)
    return {"cells": out, "kvm_host": host.mode}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cs = data["cells"]
    ok = sum(c["ok"] for c in cs)
    lines = [f"### {TITLE}", "", *doc_items(__doc__),
             f"**{ok} of {len(cs)} cells pass** ({data['kvm_host']} KVM host). Reference: {PAPER}.", "",
             "| cell | QEMU | machine | kernel | ACPI | RAM | vCPUs | root | result | guest boot | vmsh attach |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cs:
        k = c["kernel"] + ("" if c["flavour"] == "amd64" else f" {c['flavour']}")
        result = "pass" if c["ok"] else "FAIL: " + c.get("error", "?").replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {c['label']} | {c['qemu']} | {c['machine']} | {c.get('release', k)} | "
                     f"{'yes' if c['acpi'] else 'no'} | {c['layout']} | {c['smp']} | {c['rootfs']} | {result} | "
                     f"{c.get('boot_s', '-')} s | {c.get('attach_ms', '-')} ms |")
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(cs) + 1.2))
    ys = range(len(cs))
    ax.barh(ys, [c.get("attach_ms", 0) for c in cs], color=["tab:green" if c["ok"] else "tab:red" for c in cs])
    ax.set_yticks(list(ys))
    ax.set_yticklabels([c["label"] + ("" if c["ok"] else " (FAIL)") for c in cs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("vmsh attach -- cat /proc/version, whole run (ms; kernel cache off)")
    ax.set_title(f"Generality: {ok}/{len(cs)} cells pass (green), one run each", fontsize=10)
    lines += ["", f"![generality]({ctx.save_figure(fig, 'generality')})"]
    return "\n".join(lines)
