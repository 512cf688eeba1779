"""A session's teardown attaches to the hypervisor again after an untraced
phase that may last hours. If the VMM exited meanwhile and its PID was given
to another process, vmsh (root) must not seize and inject into that process:
it holds a pidfd of the hypervisor from the start and checks it."""
import os
import subprocess
import time

import pytest

from test_plumbing import PLUMBING

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm


def spawn_with_pid(pid, tries=200):
    """A `sleep` that gets exactly `pid` (ns_last_pid, as CRIU does); other
    processes of the machine may take it first: retry."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(["sleep", "60"])
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


def tracer_of(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return None


def test_reattach_refuses_a_reused_pid(testvmm):
    pid = testvmm.pid
    d = subprocess.Popen([PLUMBING, str(pid), "reuse"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert d.stdout.readline().strip() == "released", d.stderr.read()
    testvmm.stop()
    impostor = spawn_with_pid(pid)
    if impostor is None:
        d.kill()
        raise AssertionError(f"could not get PID {pid} again for the test")
    try:
        d.stdin.write("go\n")
        d.stdin.flush()
        out = d.stdout.readline().strip()
        traced_by = tracer_of(pid)
        d.wait(30)
        assert out.startswith("refused"), out
        assert traced_by == 0
        assert "exited" in out or "no longer" in out, out
    finally:
        impostor.kill()
        impostor.wait()
