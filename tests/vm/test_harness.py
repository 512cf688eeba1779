"""Tests of the end-to-end harness itself: what later vmsh tests rely on."""

import os
import re
import time

import pytest

from vmshtest import harness

MiB = 1 << 20


# -- every guest configuration ---------------------------------------------------

def test_guest_runs_the_packaged_kernel(guest):
    assert guest.console("uname -r").strip() == guest.kernel.release


def test_guest_kernel_is_randomized_and_has_kallsyms(guest):
    """KASLR stays on, and /proc/kallsyms agrees with the package's System.map
    up to one 2 MiB-aligned offset."""
    cmdline = guest.console("cat /proc/cmdline")
    assert "nokaslr" not in cmdline
    guest.console("echo 0 >/proc/sys/kernel/kptr_restrict")
    out = guest.console(r"grep -E ' (_text|start_kernel)$' /proc/kallsyms")
    live = {line.split()[2]: int(line.split()[0], 16) for line in out.splitlines()}
    assert live.get("_text"), f"/proc/kallsyms hides addresses:\n{out}"
    linked = {name: guest.kernel.symbol(name) for name in ("_text", "start_kernel")}
    offset = live["_text"] - linked["_text"]
    assert offset % (2 * MiB) == 0
    assert live["start_kernel"] - linked["start_kernel"] == offset
    print(f"{guest.name}: KASLR offset {offset:#x}")


def test_physmarker_reports_a_guest_physical_address(guest):
    out = guest.console("physmarker")
    m = re.search(r"PHYSMARKER gpa=0x([0-9a-f]+) value=([0-9a-f]{32}) pid=(\d+)", out)
    assert m, out
    gpa, pid = int(m.group(1), 16), int(m.group(3))
    assert gpa % 4096 == 0 and 0 < gpa < 4 << 30
    # The page's owner keeps running in the background.
    assert guest.console(f"cat /proc/{pid}/comm").strip() == "physmarker"


def test_hypervisor_process_has_kvm_fds(guest, host):
    """Seen from where vmsh runs: the qemu PID is alive, holds a KVM VM fd
    and a vCPU fd, and carries the guest's name."""
    assert guest.alive()
    out = host.check(f"ls -l /proc/{guest.pid}/fd")
    assert "anon_inode:kvm-vm" in out
    assert "anon_inode:kvm-vcpu:0" in out
    cmdline = host.read_file(f"/proc/{guest.pid}/cmdline").split(b"\0")
    assert cmdline[cmdline.index(b"-name") + 1].decode() == guest.name


# -- once -------------------------------------------------------------------------

def test_stopped_guest_leaves_no_process(host, guest_factory):
    g = guest_factory(machine="pc", kernel="6.1", mem="256M")
    pid = g.pid
    assert host.run(f"test -d /proc/{pid}")[0] == 0
    g.stop()
    assert not g.alive()
    assert host.run(f"test -d /proc/{pid}")[0] != 0


def test_console_carries_any_command(any_guest):
    g = any_guest
    assert g.console_status("echo out; echo err >&2; exit 7") == (7, "out\nerr\n")
    assert g.console("printf '%s|' \"a b\" 'c\"d' '$HOME'") == "a b|c\"d|$HOME|"
    assert g.console("for i in 1 2 3; do\n  echo line$i\ndone") == "line1\nline2\nline3\n"
    long = "x" * 5000
    assert g.console(f"echo {long} | wc -c").strip() == "5001"
    assert g.console("printf no-newline") == "no-newline"
    with pytest.raises(AssertionError):
        g.console("false")


def test_console_timeout_interrupts_the_command(any_guest):
    g = any_guest
    t0 = time.monotonic()
    with pytest.raises(harness.ConsoleError):
        g.console_status("sleep 600", timeout=3)
    assert time.monotonic() - t0 < 60
    assert g.console("echo still-here", timeout=30) == "still-here\n"


def test_host_run_reports_status_output_and_timeouts(host):
    assert host.run("echo out; echo err >&2; exit 3") == (3, "out\nerr\n")
    r = host.exec("echo out; echo err >&2")
    assert (r.rc, r.stdout, r.stderr) == (0, "out\n", "err\n")
    assert host.run("cat", input="fed\n") == (0, "fed\n")
    with pytest.raises(harness.CommandTimeout):
        host.run("sleep 600", timeout=2)


def test_host_run_kills_what_the_command_left_behind(host):
    rc, out = host.run("sleep 600 >/dev/null 2>&1 & echo $!")
    pid = int(out)
    for _ in range(50):
        state = host.run(f"cat /proc/{pid}/stat 2>/dev/null | cut -d' ' -f3")[1].strip()
        if state in ("", "Z"):
            break
        time.sleep(0.1)
    assert state in ("", "Z")


def test_host_sees_this_machines_files(host):
    """The repo and the log directory are at the same paths on the host."""
    here = os.path.abspath(harness.__file__)
    first_line = open(here).readline()
    assert host.check(f"head -n 1 {here}") == first_line
    host.check(f"echo from-host >{host.logdir}/probe")
    with open(os.path.join(host.logdir, "probe")) as f:
        assert f.read() == "from-host\n"


def test_host_has_hardware_style_kvm(host):
    out = host.check("ls -l /dev/kvm; cat /proc/modules 2>/dev/null; true")
    assert "kvm_pvm" not in out
    if host.mode == "emulated":
        assert re.search(r"^kvm_amd ", out, re.M)
