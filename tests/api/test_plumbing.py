"""The device plumbing `vmsh attach` builds on, in a live VMM (testvmm on this
machine's /dev/kvm): a read-only memory slot of vmsh's memory, and an
ioeventfd that catches the guest's writes there inside the kernel, while
the hypervisor runs completely untraced. testvmm's guest writes one byte to
an unbacked address every 256 loop iterations, next to a port write: each
write the ioeventfd catches is an exit the hypervisor no longer sees."""
import os
import subprocess

from test_inspect_api import inspect_json

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLUMBING = os.environ.get("VMSH_KVM_PLUMBING", os.path.join(ROOT, "build", "kvm_plumbing"))


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
