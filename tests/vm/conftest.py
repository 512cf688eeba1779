"""pytest fixtures for vmsh's end-to-end tests (see README.md here).

  host           session: the KVM host (direct, or the emulated L1)
  guest_config   session, parametrized: (machine, kernel, flavour); pytest
                 groups tests by it, so each guest boots about once
  guest          the pooled guest for guest_config (rebooted if it died)
  guest_pool     session: GuestPool, for tests that want a specific guest
  any_guest      some running pooled guest, for tests that need just one
  guest_factory  function: start private guests, stopped after the test
  vmsh_bin       path of the vmsh binary (VMSH_BIN, default build/vmsh)
  vmsh           run vmsh on the host: vmsh("list") -> (rc, output)

Environment: VMSH_TEST_MACHINES (pc,q35,microvm), VMSH_TEST_KERNELS
(5.10,6.1,6.12), VMSH_TEST_FLAVOURS (amd64), VMSH_TEST_MAX_GUESTS (2),
VMSH_TEST_KEEP_LOGS (keep the log directory even when all passed), plus
those in harness.py.
"""

import os
import shlex

import pytest

from vmshtest import harness


def _env_list(name, default):
    return [x for x in os.environ.get(name, default).split(",") if x]


MACHINES = _env_list("VMSH_TEST_MACHINES", ",".join(harness.MACHINES))
KERNELS = _env_list("VMSH_TEST_KERNELS", ",".join(harness.KERNELS))
FLAVOURS = _env_list("VMSH_TEST_FLAVOURS", "amd64")
GUEST_CONFIGS = [(m, k, f) for k in KERNELS for f in FLAVOURS for m in MACHINES]


def _config_id(cfg):
    m, k, f = cfg
    return f"{m}-{k}" + ("" if f == "amd64" else f"-{f}")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "matrix: the full machine x kernel matrix beyond the representative slice "
                   "(make check runs -m 'not matrix'; make check-matrix runs them)")


def _report(config, line):
    """Print to the terminal now, past pytest's output capture."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capman is None:
        harness.log(line)
        return
    with capman.global_and_fixture_disabled():
        tr.ensure_newline()
        tr.write_line(line, bold=True)


@pytest.fixture(scope="session")
def host(request):
    config = request.config
    try:
        h = harness.make_host()
        error = None
    except harness.HarnessError as e:
        h, error = None, str(e)
    if error:
        pytest.fail(f"vmsh e2e: no KVM host to test on:\n{error}", pytrace=False)
    _report(config, f"vmsh e2e: {h.mode.upper()} mode ({h.mode_reason}): {h.describe()}")
    yield h
    h.close()
    failed = request.session.testsfailed
    keep = bool(failed or os.environ.get("VMSH_TEST_KEEP_LOGS"))
    if not keep:
        harness.remove_logs(h)
    summary = {"mode": h.mode, "reason": h.mode_reason, "timings": dict(h.timings),
               "logdir": h.logdir if keep else None}
    if hasattr(config, "workeroutput"):     # a pytest-xdist worker: to the controller
        config.workeroutput["vmsh"] = summary
    else:
        config._vmsh_summaries = [summary]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: a worker's host summary (its stderr is not shown)."""
    summary = getattr(node, "workeroutput", {}).get("vmsh")
    if summary:
        cfg = node.config
        cfg._vmsh_summaries = getattr(cfg, "_vmsh_summaries", []) + [summary]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for s in getattr(config, "_vmsh_summaries", []):
        terminalreporter.section("vmsh e2e timings")
        terminalreporter.write_line(f"mode: {s['mode']} ({s['reason']})", bold=True)
        for what, secs in s["timings"].items():
            terminalreporter.write_line(f"{what:45s} {secs:6.1f}s")
        if s["logdir"]:
            terminalreporter.write_line(f"logs (consoles, qemu output) kept in {s['logdir']}",
                                        bold=True)


@pytest.fixture(scope="session")
def guest_pool(host):
    pool = harness.GuestPool(host, int(os.environ.get("VMSH_TEST_MAX_GUESTS", "2")))
    yield pool
    pool.close()


# make check runs every per-config test on a diagonal of the matrix: pc with
# the 6.1 kernel, microvm with 6.12 and q35 with 5.10 (each machine's device
# paths, each kernel series); make check-matrix runs the other
# configurations, to keep make check within its time.
CHECK_SLICE = {("pc", "6.1"), ("microvm", "6.12"), ("q35", "5.10")}


def in_check(machine, kernel):
    return (machine, kernel) in CHECK_SLICE


def config_params(configs):
    """pytest params for (machine, kernel, flavour) configs, marked `matrix`
    outside make check's slice."""
    return [pytest.param(c, id=_config_id(c),
                         marks=() if in_check(c[0], c[1]) and c[2] == "amd64" else pytest.mark.matrix)
            for c in configs]


GUEST_CONFIG_PARAMS = config_params(GUEST_CONFIGS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (make check-vm runs two emulated hosts, one per
    worker): keep the tests that share a pooled or module-scoped guest on one
    worker, so that each guest boots once; the others are spread freely.
    tryfirst: xdist's worker turns the mark into the "@group" node-id suffix
    its loadgroup scheduler reads in its own hook of this name, so the mark
    must be there before that runs (without it every group was ignored and a
    pooled guest booted on both workers, up to 7 times per run)."""
    for item in items:
        group = _share_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def _share_group(item):
    cs = getattr(item, "callspec", None)
    for name in ("guest_config", "dev_config"):     # pooled guests, by configuration
        if cs is not None and name in cs.params:
            return "guest-" + _config_id(cs.params[name])
    for name, defs in item._fixtureinfo.name2fixturedefs.items():
        d = defs[-1]
        if d.scope == "module" and d.baseid and item.nodeid.startswith(d.baseid):
            param = cs.id if cs is not None else ""
            return f"{item.module.__name__}-{param}"
    return None


@pytest.fixture(scope="session", params=GUEST_CONFIG_PARAMS)
def guest_config(request):
    return request.param


@pytest.fixture
def guest(guest_pool, guest_config):
    machine, kernel, flavour = guest_config
    return guest_pool.get(machine, kernel, flavour)


@pytest.fixture
def any_guest(guest_pool):
    """Some running pooled guest (else the first configuration): for tests
    that need a guest but not a particular one."""
    for g in guest_pool.guests.values():
        if g.alive():
            return g
    return guest_pool.get(*GUEST_CONFIGS[0])


@pytest.fixture
def guest_factory(host):
    started = []

    def start(**kw):
        g = harness.Guest.start(host, **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


@pytest.fixture(scope="session")
def vmsh_bin():
    return os.environ.get("VMSH_BIN", str(harness.REPO / "build" / "vmsh"))


@pytest.fixture
def vmsh(host, vmsh_bin):
    """Run vmsh on the KVM host: vmsh("inspect", pid, timeout=60) -> (rc, output)."""
    if not os.access(vmsh_bin, os.X_OK):
        pytest.fail(f"vmsh binary {vmsh_bin} is missing: build it (make) or set VMSH_BIN",
                    pytrace=False)

    def run(*args, timeout=60, input=None):
        cmd = " ".join(shlex.quote(str(a)) for a in (vmsh_bin, *args))
        return host.run(cmd, timeout, input)

    return run
