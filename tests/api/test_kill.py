"""vmsh killed half way (SIGKILL, which it cannot catch) never harms the
hypervisor: the thread it injects into runs every syscall from a stub that
returns to exactly where the thread was, and its registers are restored
after each syscall, so whatever instant vmsh dies at, the kernel's implicit
detach leaves a thread that carries on."""
import os
import random
import signal
import subprocess
import time

import pytest

from test_inspect_api import VMSH, inspect_json

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm


def kill_inspect_at(pid, delay):
    p = subprocess.Popen([VMSH, "inspect", "--json", str(pid)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()


def assert_healthy(vmm, what):
    assert vmm.alive(), f"hypervisor died ({what})"
    assert vmm.wait_untraced(), f"still traced 30 s later ({what})"
    assert vmm.wait_main_in_event_loop(), f"main thread not back in its event loop ({what})"
    c0 = vmm.counter()
    assert vmm.wait_progress(), f"guest stopped ({what})"
    assert vmm.counter() > c0


def test_sigkill_inside_every_injected_syscall(testvmm):
    """vmsh kills itself (VMSH_TEST_DIE_AT_SYSCALL=n) while its n-th injected
    syscall is under way, for every n an inspect uses: the worst instants."""
    n_total = inspect_json(testvmm.pid)["timing"]["injected_syscalls"]
    assert n_total > 10
    maps = open(f"/proc/{testvmm.pid}/maps").read()
    for n in range(1, n_total + 1):
        env = dict(os.environ, VMSH_TEST_DIE_AT_SYSCALL=str(n))
        r = subprocess.run([VMSH, "inspect", str(testvmm.pid)], env=env, capture_output=True)
        assert r.returncode == -signal.SIGKILL, f"n={n}: vmsh did not die ({r.returncode})"
        assert_healthy(testvmm, f"killed in injected syscall {n} of {n_total}")
    # the only trace: nothing mapped, nothing left in the address space list
    assert open(f"/proc/{testvmm.pid}/maps").read() == maps


def test_sigkill_at_random_points_never_harms_the_hypervisor(testvmm):
    rng = random.Random(1234)
    # how long one inspect takes here, to spread the kills over it
    t0 = time.monotonic()
    inspect_json(testvmm.pid)
    span = max(time.monotonic() - t0, 0.002)
    for i in range(40):
        delay = rng.uniform(0, span)
        kill_inspect_at(testvmm.pid, delay)
        assert_healthy(testvmm, f"kill {i} after {delay * 1000:.2f} ms")
    j = inspect_json(testvmm.pid)
    assert j["memslots"]["ids"] == sorted(s["id"] for s in testvmm.truth["vms"][0]["slots"])


def test_killing_vmsh_never_harms_a_confined_hypervisor(testvmm_sandboxed):
    """testvmm --sandbox kills itself on any syscall outside a short list
    (ioctl only for KVM_RUN), as Firecracker does. SIGKILL of the vmsh the
    user started, at random instants: its worker finishes and lets go, so
    the filter never judges a syscall vmsh injected."""
    vmm = testvmm_sandboxed
    rng = random.Random(99)
    for i in range(30):
        delay = rng.uniform(0, 0.02)
        kill_inspect_at(vmm.pid, delay)
        time.sleep(0.05)
        assert vmm.alive(), f"sandboxed hypervisor died (kill {i} after {delay * 1000:.2f} ms)"
    # the workers finished (they hold no tracer on the VMM any more)
    deadline = time.monotonic() + 10
    while vmm.proc_status()["TracerPid"] != "0" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_healthy(vmm, "after killing vmsh 30 times")
    inspect_json(vmm.pid)


def test_signals_to_the_hypervisor_while_inspected(testvmm):
    """Signals keep arriving at the hypervisor's threads while vmsh holds
    them (qemu kicks its vCPU threads with SIGUSR1): they are delivered or
    held and re-raised, never lost in a way that stops the VMM, and vmsh's
    results are unchanged."""
    import threading
    stop = threading.Event()
    sent = [0]

    def pelt():
        tids = testvmm.tasks()
        while not stop.is_set():
            for tid in tids:
                # thread-directed (tgkill), as qemu's vCPU kicks are
                if subprocess.run(["kill", "-USR1", str(tid)], capture_output=True).returncode == 0:
                    sent[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=pelt)
    t.start()
    try:
        ids = None
        for _ in range(20):
            j = inspect_json(testvmm.pid)
            ids = ids or j["memslots"]["ids"]
            assert j["memslots"]["ids"] == ids
    finally:
        stop.set()
        t.join()
    assert sent[0] > 20
    assert_healthy(testvmm, "after signals during inspect")
