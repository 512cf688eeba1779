#!/usr/bin/env python3
"""The paper's evaluation (EuroSys'22, "VMSH: Hypervisor-agnostic Guest
Overlays for VMs", Section 6) reproduced by one command, with our own rows
next to its published numbers.

usage: python3 -m bench.eval [--quick] [--only a,b] [--out DIR]
       make eval / make eval-quick

Runs each experiment of bench/evaluation/ (robustness, generality,
application benchmarks, fio, console latency, image de-bloating, use cases)
on this machine - guests run in an emulated KVM host where there is no
hardware KVM - and writes eval/results/<date>-<host>[-quick]/: one JSON file
per experiment (every measurement), machine.json, report.md (Markdown
tables, the paper's value as a reference row where it published one) and
plots/ (PNG and SVG); experiments an earlier run left in the same
directory stay in the report. --quick: every experiment, few repetitions and short
runs (a smoke run of a few minutes; its numbers are not results).

An experiment that fails is reported as failed in the report (with its
error) and the others still run; the exit status is 1 then, 0 when every
experiment produced its data and its figure."""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bench.evaluation import ORDER, experiments
from bench.evaluation.context import Context


def summary(res):
    """One line of a failed experiment's error."""
    if res.get("summary"):
        return res["summary"]
    lines = [ln for ln in res.get("error", "").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "?"


def provenance(res, out, name):
    """Which vmsh, machine kernel and date an experiment's data came from: a
    report can be made experiment by experiment, so the header's run need
    not be every experiment's. Data from before runs were stamped: the
    commit that brought its JSON in."""
    run = res.get("run")
    if run:
        return (f"vmsh {run['vmsh']}, {run['date']}, Linux {run['kernel']}"
                + (f" ({run['partial']})" if run.get("partial") else ""))
    r = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M",
                        "--", os.path.join(out, f"{name}.json")], stdout=subprocess.PIPE, text=True)
    return f"an earlier run (not stamped; its data committed in {r.stdout.strip()})" if r.stdout.strip() \
        else "an earlier run (not stamped)"


def render_report(ctx, done):
    info = ctx.info
    lines = [f"# vmsh evaluation{' (quick smoke run: not results)' if ctx.quick else ''}", "",
             f"Machine: {info['host']}, {info['cpu']}, {info['cpus']} CPUs, {info['mem_gib']} GiB, Linux "
             f"{info['kernel']}, {info.get('kvm_host', 'no')} KVM host (`/dev/kvm` "
             f"{'present' if info['dev_kvm'] else 'absent'}); the last run: vmsh {info['vmsh']}, {info['date']}, "
             f"`python3 -m bench.eval{' --quick' if ctx.quick else ''}` took {info.get('total_s', 0) / 60:.1f} min "
             f"(which run each experiment's data is from: the table).",
             "", "The paper's numbers were measured on bare-metal KVM with an NVMe disk; ours inside an emulated "
             "KVM host where there is no hardware KVM (every guest instruction emulated), so absolute numbers "
             "differ by orders of magnitude and only ratios measured side by side in one run compare.", ""]
    lines += ["| experiment | status | time | run |", "|---|---|---|---|"]
    for mod, res in done:
        lines.append(f"| {mod.TITLE} | {'ok' if res['ok'] else 'FAILED: ' + summary(res).replace('|', '/')} "
                     f"| {res['secs']:.0f} s | {provenance(res, ctx.outdir, mod.NAME)} |")
    lines.append("")
    for mod, res in done:
        if res["ok"]:
            try:
                lines += [mod.render(res["data"], ctx), ""]
                continue
            except Exception:
                res["ok"], res["error"] = False, "rendering: " + traceback.format_exc()
        lines += [f"### {mod.TITLE}", "", "Failed:", "", "```", res["error"].rstrip(), "```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    ap.add_argument("--only", help="comma-separated experiments of: " + ",".join(ORDER))
    ap.add_argument("--out", help="output directory (default eval/results/<date>-<host>[-quick])")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: the report again from the experiments' data in --out")
    a = ap.parse_args()
    want = [] if a.report_only else a.only.split(",") if a.only else list(ORDER)
    if a.report_only and not a.out:
        ap.error("--report-only needs --out")
    unknown = set(want) - set(ORDER)
    if unknown:
        ap.error(f"unknown experiment(s): {', '.join(sorted(unknown))}")
    mods = experiments(want)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = a.out or os.path.join(REPO, "eval", "results", f"{stamp}-{platform.node()}{'-quick' if a.quick else ''}")
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    if not os.access(vmsh, os.X_OK):
        sys.exit(f"eval: {vmsh} is not there: build it first (make all)")
    ctx = Context(out, a.quick, vmsh, os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test"))
    t0 = time.monotonic()
    results = {}

    def run_one(mod):
        ctx.log(f"== {mod.NAME}: {mod.TITLE}")
        t = time.monotonic()
        try:
            res = {"ok": True, "data": mod.run(ctx)}
        except Exception as e:
            res = {"ok": False, "error": traceback.format_exc(),
                   "summary": f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:160]}
            ctx.log(f"{mod.NAME} FAILED:\n{res['error']}")
        res["secs"] = time.monotonic() - t
        res["run"] = {k: ctx.info[k] for k in ("vmsh", "date", "kernel")}
        if os.environ.get("VMSH_EVAL_CELLS") and mod.NAME == "generality":
            res["run"]["partial"] = (f"only the cells matching '{os.environ['VMSH_EVAL_CELLS']}'; the others "
                                     f"from earlier runs, each with its date")
        with open(os.path.join(out, f"{mod.NAME}.json"), "w") as f:
            json.dump(res, f, indent=1)
        results[mod.NAME] = res
    # --quick: what needs no guest (image builds on this host) runs beside
    # the guests, on the other core; a full run keeps them apart, so that
    # nothing competes with the guests' measurements
    beside = [m for m in mods if a.quick and not getattr(m, "NEEDS_VM", True)]
    thread = threading.Thread(target=lambda: [run_one(m) for m in beside])
    thread.start()
    try:
        for mod in mods:
            if mod not in beside:
                run_one(mod)
        thread.join()
    finally:
        thread.join()
        ctx.close()
    # experiments of an earlier run into the same directory stay in its
    # report (a full report can be made experiment by experiment)
    for m in experiments([n for n in ORDER if n not in results]):
        try:
            with open(os.path.join(out, f"{m.NAME}.json")) as f:
                results[m.NAME] = json.load(f)
            mods.append(m)
        except (OSError, ValueError):
            pass
    mods.sort(key=lambda m: ORDER.index(m.NAME))
    done = [(m, results[m.NAME]) for m in mods]
    if a.report_only:
        with open(os.path.join(out, "machine.json")) as f:
            ctx.info = json.load(f)  # the header stays the last run's
    else:
        ctx.info["total_s"] = time.monotonic() - t0
        with open(os.path.join(out, "machine.json"), "w") as f:
            json.dump(ctx.info, f, indent=1)
    report = render_report(ctx, done)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report)
    failed = [m.NAME for m, r in done if not r["ok"]]
    missing = [m.NAME for m, r in done if r["ok"] and not any(
        p.startswith(m.NAME) for p in os.listdir(os.path.join(out, "plots")))]
    ctx.log(f"report: {os.path.join(out, 'report.md')}")
    if failed or missing:
        print(f"eval: failed: {', '.join(failed) or '-'}; without a figure: {', '.join(missing) or '-'}",
              file=sys.stderr)
        sys.exit(1)
    print(f"eval: all {len(done)} experiments produced their data and figures ({ctx.info['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
