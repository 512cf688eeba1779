"""Robustness: the filesystem stress of the hostile-guest issue as a test
suite, run on vmsh-blk and on qemu-blk in the same guest. xfstests (the
paper's suite) is not packaged for Debian; what is: dbench (CLIENTS
clients), fio with --verify (random 4k writes by several jobs, every block
read back and checked) and stress-ng's filesystem and I/O stressors (each
with --verify where it has one). Each is one test; e2fsck -fn of each
image on the KVM host afterwards is one more. A test fails on a non-zero
exit, a verify error, or a fsck finding; stressors that cannot run in the
guest (stress-ng exit 3/4: resources, not implemented) are counted as not
run, for both disks alike."""
from vmshtest import fsstress
from vmshtest.devices import Served
from bench.evaluation.markdown import doc_items

NAME = "robustness"
TITLE = "Robustness: a filesystem test suite on vmsh-blk and qemu-blk"
PAPER = "xfstests: vmsh-blk passed the same tests as qemu-blk (the paper's Section 6)"
STRESSORS = ["hdd", "iomix", "dir", "dirdeep", "dentry", "link", "symlink", "rename", "fallocate", "fpunch",
             "copy-file", "filename", "fiemap", "sync-file", "readahead", "seek", "revio", "aio", "utime",
             "xattr", "chmod", "getdent", "flock", "lockf"]
QUICK = ["hdd", "dir", "rename", "fallocate"]


def suite(ctx, guest, chroot, dev, label, secs, job_mb, stressors):
    results = []

    def test(name, fn):
        try:
            out = fn()
            results.append({"test": name, "result": "pass", "value": out})
        except Exception as e:
            results.append({"test": name, "result": "fail", "error": str(e)[-1500:]})
    inside = fsstress.mount_ext4(guest, dev, label)
    test("dbench", lambda: fsstress.dbench(guest, chroot, inside, secs))
    test("fio verify", lambda: fsstress.fio_verify(guest, chroot, inside, job_mb, secs))
    for s in stressors:
        rc, out = fsstress.stress_ng(guest, chroot, inside, s, secs)
        res = "pass" if rc == 0 else "not run" if rc in (3, 4) else "fail"
        results.append({"test": f"stress-ng {s}", "result": res, "rc": rc, **({"output": out[-1500:]}
                                                                              if res != "pass" else {})})
    fsstress.unmount(guest, inside)
    other = ", ".join(f"{r['test']} {r['result']}" for r in results if r["result"] != "pass")
    ctx.log(f"robustness: {label}: {other or 'all passed'}")
    return results


def run(ctx):
    secs, job_mb, stressors = (3, 2, QUICK) if ctx.quick else (20, 16, STRESSORS)
    host = ctx.host()
    g, chroot, ctl_dev, ours, ctl = fsstress.ext4_pair_guest(host, "eval-robust", 256)
    try:
        out = {"qemu-blk": suite(ctx, g, chroot, ctl_dev, "qemu", secs, job_mb, stressors)}
        with Served(host, ctx.vmsh, g, ours, ident="evalrobust") as s:
            out["vmsh-blk"] = suite(ctx, g, chroot, s.dev, "vmsh", secs, job_mb, stressors)
        out["vmsh serve exit"] = s.status
    finally:
        g.stop()
    for label, img_ in (("qemu-blk", ctl), ("vmsh-blk", ours)):
        r = host.exec(f"e2fsck -fn {img_}", 300)
        out[label].append({"test": "e2fsck -fn", "result": "pass" if r.rc == 0 else "fail", "rc": r.rc,
                           **({"output": (r.stdout + r.stderr)[-1500:]} if r.rc else {})})
    host.run(f"rm -f {ours} {ctl}", 30)
    return {"disks": out, "secs": secs, "job_mb": job_mb, "clients": fsstress.CLIENTS,
            "guest": "qemu pc, Linux 6.1, ext4 on a 256 MiB image on the KVM host's tmpfs"}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    disks = {k: v for k, v in data["disks"].items() if isinstance(v, list)}
    lines = [f"### {TITLE}", "", *doc_items(__doc__),
             f"{data['guest']}; {data['secs']} s per tool, fio {data['clients']} x {data['job_mb']} MiB. "
             f"`vmsh serve` exited {data['disks'].get('vmsh serve exit')}.", "",
             "| disk | tests run | passed | failed | not run |", "|---|---|---|---|---|"]
    counts = {}
    for disk, rs in disks.items():
        c = {k: sum(r["result"] == k for r in rs) for k in ("pass", "fail", "not run")}
        counts[disk] = c
        lines.append(f"| {disk} | {c['pass'] + c['fail']} | {c['pass']} | {c['fail']} | {c['not run']} |")
    lines += ["", f"The paper: {PAPER}.", ""]
    tests = [r["test"] for r in next(iter(disks.values()))]
    lines += ["| test | " + " | ".join(disks) + " |", "|---|" + "---|" * len(disks)]
    for i, t in enumerate(tests):
        lines.append(f"| {t} | " + " | ".join(disks[d][i]["result"] if i < len(disks[d]) else "-" for d in disks)
                     + " |")
    fails = [(d, r) for d, rs in disks.items() for r in rs if r["result"] == "fail"]
    for d, r in fails:
        lines += ["", f"{d}, {r['test']} failed:", "", "```", (r.get("error") or r.get("output", "")).strip(), "```"]
    fig, ax = plt.subplots(figsize=(6, 2.5))
    names = list(counts)
    left = [0] * len(names)
    for k, color in (("pass", "tab:green"), ("fail", "tab:red"), ("not run", "0.7")):
        vals = [counts[n][k] for n in names]
        ax.barh(names, vals, left=left, color=color, label=k)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("tests (dbench, fio verify, stress-ng stressors, e2fsck)")
    ax.set_title("Filesystem test suite: results per disk", fontsize=10)
    ax.legend(fontsize=8)
    lines += ["", f"![robustness]({ctx.save_figure(fig, 'robustness')})"]
    return "\n".join(lines)
