"""vmsh's kernel library in real guests (issue 3): loaded into a new memory
slot, linked into the kernel's page tables, entered through an idle vCPU,
and removed without a trace; `vmsh library` runs that whole cycle."""
import json
import os
import re
import shlex

import pytest

from vmshtest import harness
from test_inspect import inspect_json, run_vmsh, hypervisor_state

LINE = re.compile(r"vmsh: library loaded at ([0-9a-f]+) in Linux (\S+)")


def library(host, vmsh_bin, pid, *args, env="", timeout=600):
    cmd = " ".join(shlex.quote(str(a)) for a in (vmsh_bin, "library", *args, pid))
    return host.exec(f"{env} {cmd}", timeout)


def kernel_log_lines(guest):
    # filtered in the guest: its serial console carries a few hundred bytes
    # a second inside the emulated host, the whole log would take a minute
    return LINE.findall(guest.console("dmesg | grep 'vmsh: library loaded' || true"))


def warnings(guest):
    """Kernel log lines that signal trouble (the nested test host makes the
    guest print a few at boot: only new ones count)."""
    out = guest.console("dmesg | grep -E 'WARNING|BUG|Oops|Call Trace|general protection|RIP:' || true")
    return set(out.strip().splitlines())


def assert_guest_clean(guest, baseline):
    new = warnings(guest) - baseline
    assert not new, "\n".join(sorted(new)) + "\n--- the guest's kernel log (tail)\n" + \
        guest.console("dmesg | tail -80")
    assert guest.console("echo alive").strip() == "alive"


def test_library_logs_version_and_address_then_leaves_no_trace(guest, host, vmsh_bin):
    release = guest.console("uname -r").strip()
    base = warnings(guest)
    before_state = hypervisor_state(host, guest.pid)
    before = inspect_json(host, vmsh_bin, guest.pid)
    before_slots = before["memslots"]["ids"]
    n_before = len(kernel_log_lines(guest))
    r = library(host, vmsh_bin, guest.pid)
    assert r.rc == 0, r.stderr + r.stdout
    lines = kernel_log_lines(guest)
    assert len(lines) == n_before + 1, lines
    addr, version = lines[-1]
    assert version == release
    assert re.search(rf"library at 0x{addr}\b", r.stdout), r.stdout
    assert int(addr, 16) >= 0xffffff8000000000  # the unused hole of the kernel map
    assert hypervisor_state(host, guest.pid) == before_state
    after = inspect_json(host, vmsh_bin, guest.pid)
    assert after["memslots"]["ids"] == before_slots
    # the guest's kernel page tables: the region the library used is free again
    assert after["kernel"]["free_region"] == before["kernel"]["free_region"] == "0x" + addr
    assert_guest_clean(guest, base)


@pytest.mark.soak
def test_load_unload_cycles(any_guest, host, vmsh_bin):
    """20 cycles in one vmsh run in make check, 100 in make soak."""
    g = any_guest
    n = harness.sized(20, 100)
    base = warnings(g)
    before_state = hypervisor_state(host, g.pid)
    n_before = len(kernel_log_lines(g))
    r = library(host, vmsh_bin, g.pid, "--cycles", str(n))
    assert r.rc == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert f"{n} cycles done" in r.stdout
    # the same region and slot every time: each cycle really gave them back
    addrs = set(re.findall(r"library at (0x[0-9a-f]+) \(gpa (0x[0-9a-f]+), slot (\d+)\)", r.stdout))
    assert len(addrs) == 1, addrs
    assert len(kernel_log_lines(g)) == n_before + n
    assert hypervisor_state(host, g.pid) == before_state
    assert_guest_clean(g, base)


@pytest.mark.matrix  # test_busy.py covers every vCPU in user code in make check
def test_library_enters_a_guest_whose_vcpus_spin_in_user_mode(guest_factory, host, vmsh_bin):
    """Every vCPU spinning in user mode (shell loops): no vCPU is idle, vmsh
    borrows one that runs user code (tests/vm/test_busy.py has the full set)."""
    g = guest_factory(machine="pc", kernel="6.1", smp=2)
    base = warnings(g)
    g.console("for i in 1 2; do (while :; do :; done) & echo $! >> /tmp/spinners; done; sleep 1")
    try:
        r = host.exec(f"{vmsh_bin} -v library --timeout 5000 {g.pid}", 300)
        assert r.rc == 0, r.stderr
        assert len(kernel_log_lines(g)) == 1
        assert re.search(r"entered through vCPU \d+ \((running user code|running kernel code)\)", r.stderr), r.stderr
        for pid in g.console("cat /tmp/spinners").split():
            assert g.console(f"cat /proc/{pid}/stat").split()[2] in "RS", pid
    finally:
        g.console("kill $(cat /tmp/spinners); rm /tmp/spinners")
    assert_guest_clean(g, base)


@pytest.mark.soak
def test_sigkill_during_the_library_flow(guest_factory, host, vmsh_bin):
    """vmsh dies (SIGKILL) inside its n-th injected syscall at points spread
    over the whole flow (every syscall of the library's own part in make
    soak, every fourth in make check): the guest and the hypervisor survive,
    and the next run works."""
    g = guest_factory(machine="pc", kernel="6.12")
    base = warnings(g)
    probe = library(host, vmsh_bin, g.pid)
    assert probe.rc == 0, probe.stderr
    total = int(re.search(r"(\d+) injected syscalls", probe.stdout).group(1))
    inspect_part = int(inspect_json(host, vmsh_bin, g.pid)["timing"]["injected_syscalls"])
    # kill points: attach, slot probing, and every syscall of the library's
    # own load/enter/unload, which come after what inspect does
    step = harness.sized(4, 1)
    points = ({1, 2, 5, inspect_part // 2, total} |
              set(range(inspect_part - 2, total + 1, step)))
    for n in sorted(points):
        r = library(host, vmsh_bin, g.pid, env=f"VMSH_TEST_DIE_AT_SYSCALL={n}")
        assert r.rc in (-9, 137), f"n={n}: vmsh was not killed (rc {r.rc}): {r.stderr[-500:]}"
        assert host.alive(g.pid), f"hypervisor died after a kill at injected syscall {n}"
        try:
            answer = g.console("echo alive", timeout=30).strip()
        except Exception as e:  # the console is the guest's liveness signal
            answer = f"no answer: {e}"
        assert answer == "alive", f"guest stuck after a kill at injected syscall {n} of {total}: {answer}"
    r = library(host, vmsh_bin, g.pid)
    assert r.rc == 0, r.stderr
    assert_guest_clean(g, base)
