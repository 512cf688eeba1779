"""The report of `make eval` (bench/eval.py) from measurements of the shape
each experiment's run() returns: every section has its table and embeds a
figure that exists as PNG and SVG, failures are shown as failures, and the
statistics are right. The experiments themselves run in `make eval-quick`
(real guests)."""
import json
import os
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from bench import eval as evaluation  # noqa: E402
from bench.evaluation import experiments  # noqa: E402
from bench.evaluation.context import Context  # noqa: E402
from bench.evaluation.markdown import doc_items  # noqa: E402
from bench.evaluation.stats import quartiles  # noqa: E402

JOBS = [["seq-read-256k", "read", "256k", 4, "bw"], ["rand-write-4k-qd1", "randwrite", "4k", 1, "iops"]]


def echo(ms):
    return {"to_prompt_ms": ms * 100, "echo_ms": {"median": ms, "p90": ms, "min": ms, "n": 3,
                                                   "samples": [ms, ms * 1.1, ms * 0.9]},
            "peak_rss_kib": {"vmsh": 3000}}


SAMPLE = {
    "robustness": {"disks": {"qemu-blk": [{"test": "dbench", "result": "pass", "value": 1.0},
                                          {"test": "stress-ng hdd", "result": "not run", "rc": 4, "output": "x"},
                                          {"test": "e2fsck -fn", "result": "pass", "rc": 0}],
                             "vmsh-blk": [{"test": "dbench", "result": "pass", "value": 1.0},
                                          {"test": "stress-ng hdd", "result": "fail", "rc": 2, "output": "boom"},
                                          {"test": "e2fsck -fn", "result": "pass", "rc": 0}],
                             "vmsh serve exit": 0},
                   "secs": 3, "job_mb": 2, "clients": 4, "guest": "g"},
    "generality": {"cells": [{"label": "pc 6.1", "machine": "pc", "kernel": "6.1", "flavour": "amd64",
                              "qemu": "7.2", "acpi": True, "layout": "anonymous", "smp": 1, "rootfs": "initramfs",
                              "ok": True, "boot_s": 9.0, "attach_ms": 2100, "release": "6.1.0-57-amd64"},
                             {"label": "microvm 6.12 no ACPI", "machine": "microvm", "kernel": "6.12",
                              "flavour": "amd64", "qemu": "7.2", "acpi": False, "layout": "anonymous", "smp": 1,
                              "rootfs": "initramfs", "ok": False, "error": "rc 1: vmsh: no | line"}],
                   "kvm_host": "emulated"},
    "apps": {"workloads": [["sqlite inserts", "40 rows", "s"], ["dbench", "4 clients", "s/GB"]],
             "results": {"qemu-blk": {"sqlite inserts": [2.0], "dbench": [10.0]},
                         "vmsh-blk": {"sqlite inserts": [3.0], "dbench": [10.0]}},
             "repetitions": 1, "guest": "g"},
    "fio": {"rows": ["native", "qemu-blk", "vmsh-blk", "own+vmsh", "qemu-9p"], "jobs": JOBS,
            "results": {r: {"seq-read-256k": [100.0, 120.0], "rand-write-4k-qd1": [500.0, 400.0]}
                        for r in ["native", "qemu-blk", "vmsh-blk", "own+vmsh", "qemu-9p"]},
            "repetitions": 2, "runtime_s": 2, "size_mib": 64, "guest": "g"},
    "console": {"runs": {"ssh": [echo(2.0)], "vmsh": [echo(1.0)], "vmsh_warm": [echo(1.0)],
                         "serial": [echo(0.5)]},
                "stops": [[75.0, 8]], "machine": "pc", "kernel": "6.1", "samples": 3, "kvm_host": "emulated"},
    "debloat": {"images": [{"app": "redis", "packages": ["redis-server"],
                            "with_tools": {"bytes": 100 << 20, "packages": 120},
                            "minimal": {"bytes": 30 << 20, "packages": 40}, "saving": 0.7},
                           {"app": "broken", "packages": ["nope"], "error": "E: Unable to locate package nope"}],
                "tools": ["procps"], "suite": "bookworm", "mirror": "deb.debian.org", "method": "m"},
    "usecases": {"cases": [{"case": "rescue", "ok": True, "attach_ms": 3000, "detail": "d"},
                           {"case": "busy guest", "ok": False, "attach_ms": 9000, "detail": "e"}],
                 "kvm_host": "emulated"},
}


@pytest.fixture
def ctx(tmp_path):
    c = Context(str(tmp_path / "out"), True, "/bin/true", str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.mark.parametrize("mod", experiments(), ids=lambda m: m.NAME)
def test_each_section_has_a_table_and_its_figure(mod, ctx):
    md = mod.render(SAMPLE[mod.NAME], ctx)
    assert md.startswith(f"### {mod.TITLE}")
    assert "|---|" in md
    figs = [ln.split("](", 1)[1].rstrip(")") for ln in md.splitlines() if ln.startswith("![")]
    assert figs, md
    for f in figs:
        for ext in ("png", "svg"):
            p = os.path.join(ctx.outdir, f[:-3] + ext)
            assert os.path.getsize(p) > 1000, p


def test_failures_are_shown_as_failures(ctx):
    mods = {m.NAME: m for m in experiments()}
    assert "FAIL: rc 1: vmsh: no \\| line" in mods["generality"].render(SAMPLE["generality"], ctx)
    assert "1 of 2 cells pass" in mods["generality"].render(SAMPLE["generality"], ctx)
    rob = mods["robustness"].render(SAMPLE["robustness"], ctx)
    assert "| vmsh-blk | 3 | 2 | 1 | 0 |" in rob and "| qemu-blk | 2 | 2 | 0 | 1 |" in rob and "boom" in rob
    assert "| busy guest | FAIL |" in mods["usecases"].render(SAMPLE["usecases"], ctx)
    apps = mods["apps"].render(SAMPLE["apps"], ctx)
    assert "average 1.25x, worst 1.50x (sqlite inserts)" in apps


def test_report_lists_a_failed_experiment_with_its_error(ctx):
    mods = experiments()
    done = [(mods[0], {"ok": False, "error": "Traceback ...\nRuntimeError: guest did not boot", "secs": 3.0}),
            (mods[3], {"ok": True, "data": SAMPLE["fio"], "secs": 5.0})]
    ctx.info["total_s"] = 8
    report = evaluation.render_report(ctx, done)
    assert "FAILED: RuntimeError: guest did not boot" in report
    assert "### " + mods[3].TITLE in report and "guest did not boot" in report.split("### " + mods[0].TITLE)[1]
    json.dumps(ctx.info)


def test_statistics_and_text():
    assert quartiles([1, 2, 3, 4, 5]) == (3, 2, 4)
    assert quartiles([10]) == (10, 10, 10)
    assert quartiles([1, 2]) == (1.5, 1.25, 1.75)
    md = doc_items("Head line\ngoes on.\n  a   first item\n      more\n  b   second\n\nTail.\n")
    assert md == ["Head line goes on.", "", "- **a**: first item more", "- **b**: second", "", "Tail.", ""]


def test_unknown_experiment_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eval", "--only", "nope"])
    with pytest.raises(SystemExit) as e:
        evaluation.main()
    assert e.value.code == 2 and "unknown experiment" in capsys.readouterr().err
