"""vmsh inspect against testvmm, our tiny VMM on this machine's own /dev/kvm.

These tests need no real guest: they check what vmsh does to a hypervisor
process (syscall injection, slot-id probing, register reads, detach) and its
error handling. testvmm's guest runs in real mode, so there is no kernel to
find: inspect prints registers and slots and exits 7 (kernel not found).
"""
import json
import uuid
import os
import subprocess
import time

import pytest

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm

VMSH = os.environ.get("VMSH_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "vmsh"))
EXIT_NOPROC, EXIT_NOTKVM, EXIT_PERM, EXIT_AMBIGUOUS, EXIT_NOKERNEL = 3, 4, 5, 6, 7


def vmsh(*args, user=None, timeout=60):
    cmd = [VMSH, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def inspect_json(pid, *extra):
    r = vmsh("inspect", "--json", *extra, str(pid))
    assert r.returncode == EXIT_NOKERNEL, f"rc={r.returncode}\n{r.stderr}"
    j = json.loads(r.stdout)
    assert j["format"] == 1 and j["vmsh_version"].startswith("0."), j
    return j


def test_slot_ids_are_found_exactly(testvmm):
    vm = testvmm.truth["vms"][0]
    j = inspect_json(testvmm.pid)
    assert j["memslots"]["ids"] == sorted(s["id"] for s in vm["slots"])
    assert j["memslots"]["count"] == len(vm["slots"])


def test_vcpus_are_read_with_their_threads(testvmm):
    vm = testvmm.truth["vms"][0]
    j = inspect_json(testvmm.pid)
    assert [v["fd"] for v in j["vcpus"]] == vm["vcpu_fds"]
    for v in j["vcpus"]:
        assert "error" not in v, v
        assert v["paging"] == "none" and v["mode"] == "kernel"
        # the guest loops in a few instructions after its entry point
        assert 0 <= int(v["rip"], 16) - int(vm["entry_rip"], 16) < 0x100
    tids = {v["tid"] for v in j["vcpus"] if v["tid"]}
    assert tids <= set(vm["vcpu_tids"])
    assert j["timing"]["vcpus_stopped_us"] <= j["timing"]["total_us"]


def test_injection_thread_is_not_a_vcpu_thread(testvmm):
    vm = testvmm.truth["vms"][0]
    r = vmsh("-vv", "inspect", str(testvmm.pid))
    line = [l for l in r.stderr.splitlines() if "injecting in thread" in l]
    assert line, r.stderr
    tid = int(line[0].split("injecting in thread ")[1].split()[0])
    assert tid not in vm["vcpu_tids"]


def test_inspect_leaves_the_hypervisor_as_it_was(testvmm):
    fds, tasks = testvmm.fds(), testvmm.tasks()
    maps_before = open(f"/proc/{testvmm.pid}/maps").read()
    main_before = testvmm.wait_main_in_event_loop()
    assert main_before, "testvmm's main thread is not in its event loop"
    c0 = testvmm.counter()
    inspect_json(testvmm.pid)
    assert testvmm.alive()
    assert testvmm.fds() == fds
    assert testvmm.tasks() == tasks
    assert open(f"/proc/{testvmm.pid}/maps").read() == maps_before, "scratch mapping left behind"
    assert testvmm.proc_status()["TracerPid"] == "0"
    # the injection thread is back in the same syscall with the same
    # arguments, stack pointer and pc: its registers were restored
    main_after = testvmm.wait_main_in_event_loop()
    assert main_after == main_before, (main_before, main_after)
    time.sleep(0.2)
    assert testvmm.counter() > c0, "guest stopped running"


def test_fifty_inspects_in_a_row(testvmm):
    fds, tasks = testvmm.fds(), testvmm.tasks()
    ids = None
    for i in range(50):
        j = inspect_json(testvmm.pid)
        ids = ids or j["memslots"]["ids"]
        assert j["memslots"]["ids"] == ids, f"run {i}"
    assert testvmm.alive()
    assert testvmm.fds() == fds and testvmm.tasks() == tasks
    c0 = testvmm.counter()
    time.sleep(0.2)
    assert testvmm.counter() > c0


def test_several_vms_need_a_choice(testvmm_two_vms):
    r = vmsh("inspect", str(testvmm_two_vms.pid))
    assert r.returncode == EXIT_AMBIGUOUS
    assert "--vm-fd" in r.stderr
    for vm in testvmm_two_vms.truth["vms"]:
        j = inspect_json(testvmm_two_vms.pid, "--vm-fd", str(vm["vm_fd"]))
        assert j["vm_fd"] == vm["vm_fd"]
        assert j["memslots"]["ids"] == sorted(s["id"] for s in vm["slots"])
        assert [v["fd"] for v in j["vcpus"]] == vm["vcpu_fds"]
    assert testvmm_two_vms.alive()


def test_list_shows_the_vm(testvmm):
    r = vmsh("list", "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["format"] == 1 and j["vmsh_version"].startswith("0.")
    entry = [e for e in j["processes"] if e["pid"] == testvmm.pid]
    assert len(entry) == 1
    assert entry[0]["vcpus"] == len(testvmm.truth["vms"][0]["vcpu_fds"])
    assert entry[0]["exe"].endswith("testvmm")
    assert testvmm.proc_status()["TracerPid"] == "0"


def test_list_and_inspect_by_name(testvmm_named):
    name = testvmm_named.name
    r = vmsh("list")
    assert name in r.stdout
    j = json.loads(vmsh("inspect", "--json", name).stdout)
    assert j["pid"] == testvmm_named.pid


def test_list_escapes_control_characters_in_names(testvmm_factory):
    """Another user's VM name (its command line) reaches root's terminal:
    terminal escapes in it must arrive escaped, not interpreted."""
    tag = uuid.uuid4().hex[:8]
    evil = f"vmsh-evil-{tag}\x1b]0;owned\x07\x1b[2J\r"
    testvmm_factory(["--name", evil])
    r = vmsh("list")
    assert r.returncode == 0
    line = [l for l in r.stdout.splitlines() if tag in l]
    assert line, r.stdout
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in line[0]), repr(line[0])
    assert "\\x1b" in line[0], repr(line[0])
    # errors naming it do the same
    r = vmsh("inspect", evil + "x")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr, repr(r.stderr)


def test_unknown_pid_is_a_clear_error():
    r = vmsh("inspect", "999999999")
    assert r.returncode in (2, EXIT_NOPROC)
    r = vmsh("inspect", "4000000")
    assert r.returncode == EXIT_NOPROC and "no process" in r.stderr


def test_not_a_hypervisor_is_a_clear_error():
    p = subprocess.Popen(["sleep", "60"])
    try:
        r = vmsh("inspect", str(p.pid))
        assert r.returncode == EXIT_NOTKVM
        assert "no KVM VM" in r.stderr
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_unknown_name_is_a_clear_error():
    r = vmsh("inspect", "no-such-vm-name")
    assert r.returncode == EXIT_NOPROC and "no VM named" in r.stderr


def test_missing_privileges_are_a_clear_error(testvmm):
    r = vmsh("inspect", str(testvmm.pid), user=65534)
    assert r.returncode == EXIT_PERM, (r.returncode, r.stderr)
    assert "ermission" in r.stderr or "root" in r.stderr
    assert testvmm.alive()


def test_bad_usage():
    assert vmsh("inspect").returncode == 2
    assert vmsh("frobnicate").returncode == 2
    assert vmsh("inspect", "--help").returncode == 0


def test_confined_hypervisor_survives(testvmm_sandboxed):
    """testvmm --sandbox kills itself on any syscall outside a short list,
    as Firecracker does; vmsh must suspend the filter while it injects."""
    j = inspect_json(testvmm_sandboxed.pid)
    assert j["seccomp_suspended"] is True
    assert j["memslots"]["count"] == len(testvmm_sandboxed.truth["vms"][0]["slots"])
    time.sleep(0.2)
    assert testvmm_sandboxed.alive()


def test_memory_is_located_through_the_page_tables(testvmm_factory):
    """A long-mode guest with RAM at an identity offset (as qemu lays it out):
    the range holding gpa 0 is found at the right host address, verified by
    the guest's own page tables."""
    vmm = testvmm_factory(["--long-mode", "--layout", "identity"])
    slot = vmm.truth["vms"][0]["slots"][0]
    r = vmsh("inspect", "--json", str(vmm.pid))
    j = json.loads(r.stdout)
    assert all(v["paging"] == "4-level" for v in j["vcpus"])
    ranges = j["memory"]["ranges"]
    assert len(ranges) == 1 and ranges[0]["verified"]
    assert int(ranges[0]["hva"], 16) == int(slot["hva"], 16)
    assert int(ranges[0]["gpa"], 16) == int(slot["gpa"], 16) == 0
    assert int(ranges[0]["size"], 16) >= int(slot["size"], 16)
    assert j["kernel"]["found"] is False and "banner" in j["kernel"]["error"]


def test_unlocatable_memory_is_reported_not_guessed(testvmm_long):
    """Slots at non-identity host offsets cannot be located from the page
    tables alone (see memslots.c): say so, but still report slot ids."""
    j = json.loads(vmsh("inspect", "--json", str(testvmm_long.pid)).stdout)
    assert j["memory"]["ranges"] == []
    assert "no mapping" in j["memory"]["error"]
    assert j["memslots"]["ids"] == sorted(s["id"] for s in testvmm_long.truth["vms"][0]["slots"])
