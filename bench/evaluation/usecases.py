"""Use cases, each run and timed (wall time of the whole `vmsh attach` on
the KVM host, kernel cache off), the way an operator would:
  rescue         a guest that boots from its own disk like a normal VM and
                 whose root password nobody knows: the password is reset
                 through vmsh (mkpasswd and sed on the guest's /etc/shadow
                 at /var/lib/vmsh), then a login on its serial console with
                 the new password must succeed
  package scan   tools/pkgscan.sh (the toolbox's scanner) over the same
                 guest's dpkg database against an advisory list on the
                 host: every installed package must be listed, the listed
                 advisories flagged
  busy guest     a debug shell command on a guest whose every vCPU runs a
                 user-mode spinner (tools/guest/spinner.c): the command
                 must run and the spinners must go on undisturbed"""
import os
import re
import shlex
import time

from vmshtest import harness, rootdisk
from vmshtest.devices import scratch
from bench.evaluation.markdown import doc_items

NAME = "usecases"
TITLE = "Use cases: rescue, package scan, debug shell on a busy guest"
PAPER = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPIN = re.compile(r"SPINNER cpu=(\d+) mode=(\w+) policy=(\w+) rounds=(\d+) errors=(\d+) pid=(\d+)")


def attach(ctx, host, pid, script, name, input=None, opts=""):
    t = time.monotonic()
    r = host.exec(f"env VMSH_CACHE_DIR=off {shlex.quote(ctx.vmsh)} attach {opts} {pid} -- sh -c {shlex.quote(script)} "
                  f"{name}", 600, input=input)
    return r, round((time.monotonic() - t) * 1000)


def login(g, password):
    """Log in as root on the serial console; True if a shell answered."""
    call = g.host._call
    start = call("console_output", 30, path=g.sock)["end"]
    call("console_send", 30, path=g.sock, data="\n")
    m = call("console_wait", 70, path=g.sock, pattern=r"login: ", start=start, timeout=harness.scaled(60))
    call("console_send", 30, path=g.sock, data="root\n")
    m = call("console_wait", 70, path=g.sock, pattern=r"Password: ", start=m["end"], timeout=harness.scaled(60))
    time.sleep(0.5)
    call("console_send", 30, path=g.sock, data=password + "\n")
    m = call("console_wait", 100, path=g.sock, pattern=r"(rescued:\S*# |Login incorrect)", start=m["end"],
             timeout=harness.scaled(90))
    if "incorrect" in m["match"]:
        return False
    call("console_send", 30, path=g.sock, data="echo LOGGED-IN-$((6*7)); exit\n")
    call("console_wait", 70, path=g.sock, pattern=r"LOGGED-IN-42", start=m["end"], timeout=harness.scaled(60))
    return True


def rescue_and_scan(ctx, host):
    img = rootdisk.build()
    disk = f"{scratch(host)}/eval-rescue-root.img"
    host.check(f"cp {img} {disk}", 120)
    g = harness.Guest.start(host, "pc", "6.1", name="vmsh-eval-rescue", append=f"vmsh.root={rootdisk.SERIAL}",
                            prompt=r"login: ", extra_qemu_args=[
                                "-drive", f"id=root,file={disk},if=none,format=raw",
                                "-device", f"virtio-blk-pci,drive=root,serial={rootdisk.SERIAL}"])
    out = []
    try:
        new = "vmsh-rescued-eval"
        script = ('h=$(mkpasswd -m sha512 "$1") && sed -i "s|^root:[^:]*:|root:$h:|" /var/lib/vmsh/etc/shadow '
                  '&& sync && grep -c "^root:" /var/lib/vmsh/etc/shadow')
        r, ms = attach(ctx, host, g.pid, f"{script}", f"rescue {new}")
        ok = r.rc == 0 and r.stdout.strip() == "1" and login(g, new)
        out.append({"case": "rescue", "ok": ok, "attach_ms": ms, "detail": "password reset, then a login on the "
                    "serial console" + ("" if ok else f": rc {r.rc} {r.stderr.strip()[-300:]}")})
        vulns = "libc6 CVE-2099-0001 (advisory of the evaluation)\nbash\nno-such-package-xyz\n"
        scan = open(os.path.join(REPO, "tools", "pkgscan.sh")).read()
        r, ms = attach(ctx, host, g.pid, scan, "pkgscan", input=vulns)
        installed = sum(ln.startswith("installed ") for ln in r.stdout.splitlines())
        flagged = sorted(ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("VULNERABLE "))
        ok = r.rc == 3 and flagged == ["bash", "libc6"] and installed > 50
        out.append({"case": "package scan", "ok": ok, "attach_ms": ms,
                    "detail": f"{installed} installed packages read, flagged {', '.join(flagged) or 'none'}"
                              + ("" if ok else f": rc {r.rc} {r.stderr.strip()[-300:]}")})
    finally:
        g.stop()
        host.run(f"rm -f {disk}", 30)
    return out


def spinners(g):
    return {int(c): (int(r), int(e), int(pid)) for c, _, _, r, e, pid in SPIN.findall(g.console("spinner status"))}


def busy_once(ctx, host, g, label, opts=""):
    assert "SPINNER started 2" in g.console("spinner start")
    time.sleep(harness.scaled(2))
    before = spinners(g)
    r, ms = attach(ctx, host, g.pid, "echo out; cat /proc/loadavg", "busy", opts=opts)
    time.sleep(harness.scaled(1))
    after = spinners(g)
    g.console("kill -9 " + " ".join(str(s[2]) for s in before.values()) + " 2>/dev/null; true")
    undisturbed = len(after) == 2 and all(
        after[c][1] == 0 and after[c][2] == before[c][2] and after[c][0] > before[c][0] for c in before)
    ok = r.rc == 0 and r.stdout.startswith("out\n") and undisturbed
    return {"case": label, "ok": ok, "attach_ms": ms,
            "detail": f"2 vCPUs spinning in user mode; load {r.stdout.split(chr(10))[1:2]}; spinners "
                      f"{'undisturbed' if undisturbed else 'DISTURBED'}"
                      + ("" if r.rc == 0 else f": rc {r.rc} {r.stderr.strip()[-300:]}")}


def busy(ctx, host):
    """With vmsh's default budget per step; where that runs out (the guest's
    modprobe shares two busy vCPUs, every instruction emulated), again with
    the budget the busy-guest tests give (--timeout, 60 s scaled)."""
    g = harness.Guest.start(host, "pc", "6.1", smp=2, append="pti=on", name="vmsh-eval-busy")
    try:
        out = [busy_once(ctx, host, g, "busy guest")]
        if not out[0]["ok"] and "made no progress" in out[0]["detail"]:
            ms = int(harness.scaled(60) * 1000)
            out.append(busy_once(ctx, host, g, f"busy guest, --timeout {ms}", opts=f"--timeout {ms}"))
        return out
    finally:
        g.stop()


def run(ctx):
    host = ctx.host()
    return {"cases": rescue_and_scan(ctx, host) + busy(ctx, host), "kvm_host": host.mode}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cs = data["cases"]
    lines = [f"### {TITLE}", "", *doc_items(__doc__), "",
             "| use case | result | vmsh attach (ms) | what happened |", "|---|---|---|---|"]
    for c in cs:
        lines.append(f"| {c['case']} | {'pass' if c['ok'] else 'FAIL'} | {c['attach_ms']} | "
                     f"{c['detail'].replace('|', '/')} |")
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.barh([c["case"] for c in cs], [c["attach_ms"] for c in cs],
            color=["tab:green" if c["ok"] else "tab:red" for c in cs])
    ax.invert_yaxis()
    ax.set_xlabel("vmsh attach, whole run (ms; kernel cache off)")
    ax.set_title(f"Use cases ({data['kvm_host']} KVM host): green passed", fontsize=10)
    lines += ["", f"![use cases]({ctx.save_figure(fig, 'usecases')})"]
    return "\n".join(lines)
