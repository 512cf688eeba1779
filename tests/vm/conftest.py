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
(6.1,6.12), VMSH_TEST_FLAVOURS (amd64), VMSH_TEST_MAX_GUESTS (2),
VMSH_TEST_KEEP_LOGS (keep the log directory even when all passed), plus
those in harness.py.
"""

import os
import shlex

import pytest

import harness


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
    config._vmsh_host = h
    _report(config, f"vmsh e2e: {h.mode.upper()} mode ({h.mode_reason}): {h.describe()}")
    yield h
    h.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    h = getattr(config, "_vmsh_host", None)
    if h is None:
        return
    terminalreporter.section("vmsh e2e timings")
    terminalreporter.write_line(f"mode: {h.mode} ({h.mode_reason})")
    for what, secs in h.timings.items():
        terminalreporter.write_line(f"{what:45s} {secs:6.1f}s")
    # Runs after the session fixtures are torn down: the VMs are gone.
    if exitstatus == 0 and not os.environ.get("VMSH_TEST_KEEP_LOGS"):
        harness.remove_logs(h)
    else:
        terminalreporter.write_line(f"logs (consoles, qemu output) kept in {h.logdir}",
                                    bold=True)


@pytest.fixture(scope="session")
def guest_pool(host):
    pool = harness.GuestPool(host, int(os.environ.get("VMSH_TEST_MAX_GUESTS", "2")))
    yield pool
    pool.close()


# make check covers pc and microvm with both kernels on every per-config
# test; q35 (the same kernel paths as pc, another chipset) runs in
# make check-matrix, to keep make check's time in bounds.
CHECK_MACHINES = ("pc", "microvm")
GUEST_CONFIG_PARAMS = [pytest.param(c, id=_config_id(c),
                                    marks=() if c[0] in CHECK_MACHINES else pytest.mark.matrix)
                       for c in GUEST_CONFIGS]


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
