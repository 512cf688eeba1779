"""Filesystem stress on vmsh's block device (issue 9): ext4 on a disk that
`vmsh serve` gives the guest, under dbench and `fio --verify` with several
jobs, then `e2fsck -fn` of the image on the host must be clean. The same run
on a disk of the guest's own qemu (virtio-blk) is the control, in the same
guest, one after the other; both throughputs are printed side by side (a
figure, not a timed assertion: these machines are noisy).

A stress test: every machine x kernel runs in make check-matrix (dbench for
20 s, fio over 4 x 6 MiB; ~4 min each inside the emulated host, too long
for make check's 30 minutes); make soak runs dbench for 2 minutes and fio
over 4 x 32 MiB."""
import re

import pytest

from vmshtest import harness, tools_image
from vmshtest.devices import Served, make_disk, tracer_pid
from vmshtest.fsstress import CLIENTS, fsck, stress

import conftest

CONFIGS = [(m, k, f) for (m, k, f) in conftest.GUEST_CONFIGS if f == "amd64"]
CHECK = set()  # see above: check-matrix and soak
# one request queue everywhere; multiqueue (a 2-vCPU guest, a queue and a
# serving thread per vCPU, its jobs on both) on pc-6.1 as well
PARAMS = [pytest.param(m, k, 1, id=f"{m}-{k}", marks=() if (m, k) in CHECK else pytest.mark.matrix)
          for (m, k, f) in CONFIGS] + [pytest.param("pc", "6.1", 2, id="pc-6.1-2queues", marks=pytest.mark.matrix)]
DISK_MB = 256
CTL_SERIAL = "vmshctl"


@pytest.mark.soak
@pytest.mark.parametrize("machine,kernel,queues", PARAMS)
def test_ext4_under_dbench_and_fio_is_clean_on_vmsh_and_qemu_disks(guest_factory, host, vmsh_bin, machine,
                                                                      kernel, queues):
    secs = harness.sized(20, 120)
    job_mb = harness.sized(6, 32)  # per fio job: ~1.3 MB/s in the emulated host
    img = tools_image.build()
    ours, _ = make_disk(host, f"stress-vmsh-{machine}-{kernel}.img", DISK_MB, random=False)
    ctl, _ = make_disk(host, f"stress-qemu-{machine}-{kernel}.img", DISK_MB, random=False)
    try:
        run_stress(guest_factory, host, vmsh_bin, machine, kernel, secs, job_mb, img, ours, ctl, queues)
    finally:
        # the emulated host's /run is a tmpfs in its RAM: nine configurations'
        # disks left there filled it (ENOSPC from the fourth on); the space
        # comes back once the guest holding the control disk is stopped
        host.run(f"rm -f {ours} {ctl}")


def run_stress(guest_factory, host, vmsh_bin, machine, kernel, secs, job_mb, img, ours, ctl, queues):
    for d in (ours, ctl):
        host.check(f"mke2fs -q -F -t ext4 {d}", 120)
    # the control disk in the page cache like vmsh's file (tmpfs has no O_DIRECT)
    ctl_args = tools_image.qemu_args(machine, ctl, ident="ctl", serial=CTL_SERIAL, readonly=False,
                                     cache="writeback")
    guest = guest_factory(machine=machine, kernel=kernel, mem="512M", smp=queues,
                          extra_qemu_args=tools_image.qemu_args(machine, img) + ctl_args)
    chroot = tools_image.mount_in_guest(guest)
    ctl_dev = guest.console(
        f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {CTL_SERIAL} ] && echo ${{d##*/}}; done").strip()
    assert ctl_dev.startswith("vd"), ctl_dev
    q_dbench, q_fio = stress(guest, chroot, ctl_dev, "qemu", secs, job_mb)
    with Served(host, vmsh_bin, guest, ours, "--queues", str(queues)) as s:
        assert guest.console(f"ls /sys/block/{s.dev}/mq | wc -l").strip() == str(queues)
        v_dbench, v_fio = stress(guest, chroot, s.dev, "vmsh", secs, job_mb)
        assert tracer_pid(host, guest.pid) == 0
    assert s.status == 0, s.text
    if queues > 1:  # each queue's serving thread served requests
        m = re.search(rf"wake-ups of the {queues} serving threads \(([\d +]+)\),", s.text)
        assert m and min(int(n) for n in m[1].split(" + ")) > 0, s.text
    fsck(host, ours)
    fsck(host, ctl)
    assert guest.console("echo alive").strip() == "alive"
    harness.log(f"fs stress {machine}-{kernel}, {queues} queue(s), {secs} s per tool, {CLIENTS} clients/jobs: "
                f"dbench vmsh {v_dbench:.2f} MB/s vs qemu {q_dbench:.2f} MB/s (x{v_dbench / q_dbench:.2f}); "
                f"fio verify write vmsh {v_fio:.0f} KiB/s vs qemu {q_fio:.0f} KiB/s"
                + (f" (x{v_fio / q_fio:.2f})" if q_fio else ""))
