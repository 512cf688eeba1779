"""The device plumbing `vmsh attach` builds on, in a live VMM (testvmm on this
machine's /dev/kvm): a read-only memory slot of vmsh's memory, and an
ioeventfd that catches the guest's writes there inside the kernel, while
the hypervisor runs completely untraced. testvmm's guest writes one byte to
an unbacked address every 256 loop iterations, next to a port write: each
write the ioeventfd catches is an exit the hypervisor no longer sees."""
import fcntl
import os
import subprocess

import pytest

from test_inspect_api import inspect_json

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLUMBING = os.environ.get("VMSH_KVM_PLUMBING", os.path.join(ROOT, "build", "kvm_plumbing"))


def kvm_nr_memslots():
    """KVM_CHECK_EXTENSION(KVM_CAP_NR_MEMSLOTS) on /dev/kvm: ids are below it."""
    fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(fd, 0xAE03, 10)
    finally:
        os.close(fd)


def test_vmsh_slot_takes_the_highest_id(testvmm):
    """Hypervisors hand out their lowest free slot id (qemu's kvm_get_free_slot);
    qemu abort()s when the id it picks for a new slot is taken. vmsh's slot
    must therefore use the highest id KVM allows, far from theirs."""
    vm = testvmm.truth["vms"][0]
    ids = inspect_json(testvmm.pid)["memslots"]["ids"]
    p = subprocess.Popen([PLUMBING, str(testvmm.pid), vm["mmio_gpa"], "50"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, errs = p.communicate(timeout=60)
    assert p.returncode == 0, errs
    slot = int([l for l in out.splitlines() if l.startswith("slot ")][0].split()[1])
    top = kvm_nr_memslots() - 1
    assert slot not in ids
    assert slot == top, (slot, top, ids)
    assert inspect_json(testvmm.pid)["memslots"]["ids"] == ids


def test_guest_writes_reach_the_ioeventfd_with_no_exit_while_untraced(testvmm):
    vm = testvmm.truth["vms"][0]
    fds, tasks = testvmm.fds(), testvmm.tasks()
    maps = open(f"/proc/{testvmm.pid}/maps").read()
    ids = inspect_json(testvmm.pid)["memslots"]["ids"]
    p = subprocess.Popen([PLUMBING, str(testvmm.pid), vm["mmio_gpa"], "500"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line.strip())
        if line.startswith("detached"):
            # while vmsh's slot and ioeventfd serve the guest, nobody traces the VMM
            assert testvmm.proc_status()["TracerPid"] == "0"
    assert p.wait(60) == 0, p.stderr.read()
    count = int([l for l in lines if l.startswith("count ")][0].split()[1])
    total = int([l for l in lines if l.startswith("total ")][0].split()[1])
    assert count > 50, lines
    assert lines[-1] == "removed"
    # everything is back
    assert testvmm.fds() == fds and testvmm.tasks() == tasks
    assert open(f"/proc/{testvmm.pid}/maps").read() == maps
    assert inspect_json(testvmm.pid)["memslots"]["ids"] == ids
    assert testvmm.wait_progress()
    # and the writes we caught are exactly the MMIO exits the VMM did not see
    assert testvmm.stop() == 0
    io = sum(v["exits"].get("2", 0) for v in testvmm.exit_stats)
    mmio = sum(v["exits"].get("6", 0) for v in testvmm.exit_stats)
    assert abs((io - mmio) - total) <= 4, (io, mmio, total)


def test_setup_writes_are_trapped_from_kvm_run_and_hidden_from_the_vmm(testvmm):
    """While a driver sets a device up, vmsh follows the VMM's syscalls: each
    KVM_RUN that returns with an MMIO write into vmsh's slot is handled by
    vmsh and turned into an interrupted KVM_RUN, which the VMM re-enters;
    nothing else of the VMM changes, and afterwards nothing is traced."""
    vm = testvmm.truth["vms"][0]
    fds, tasks = testvmm.fds(), testvmm.tasks()
    ids = inspect_json(testvmm.pid)["memslots"]["ids"]
    p = subprocess.Popen([PLUMBING, str(testvmm.pid), vm["mmio_gpa"], "500", "trap"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line.strip())
        if line.startswith("untraced"):
            assert testvmm.proc_status()["TracerPid"] == "0"
    assert p.wait(60) == 0, p.stderr.read()
    writes, handled = map(int, [l for l in lines if l.startswith("trapped ")][0].split()[1:])
    assert writes > 20 and writes == handled, lines
    assert lines[-1] == "removed"
    assert testvmm.fds() == fds and testvmm.tasks() == tasks
    assert inspect_json(testvmm.pid)["memslots"]["ids"] == ids
    assert testvmm.wait_progress()
    assert testvmm.stop() == 0
    io = sum(v["exits"].get("2", 0) for v in testvmm.exit_stats)
    mmio = sum(v["exits"].get("6", 0) for v in testvmm.exit_stats)
    eintr = sum(v["eintr"] for v in testvmm.exit_stats)
    # the VMM saw none of the trapped writes as MMIO exits, but as EINTRs
    assert abs((io - mmio) - writes) <= 4, (io, mmio, writes)
    assert eintr >= writes, (eintr, writes)
