"""Filesystem stress on a guest's disk: ext4 under dbench, `fio --verify`
with several jobs and stress-ng's filesystem stressors
(tests/vm/test_fsstress.py, the robustness experiment of bench/eval.py),
and e2fsck of the image on the KVM host."""
import re
import shlex

from . import harness, tools_image
from .devices import make_disk

CLIENTS = 4


def mounted(guest, path):
    return guest.console(f"grep -c ' {path} ' /proc/mounts || true").strip() != "0"


def mount_ext4(guest, dev, name):
    """Mount ext4 on /dev/DEV at /tmp/NAME of the tools chroot; returns that
    path as the chroot sees it."""
    inside = f"/tmp/{name}"
    outside = f"/mnt/tools{inside}"
    guest.console(f"mkdir -p {outside} && mount -t ext4 /dev/{dev} {outside} && echo mounted", 120)
    assert mounted(guest, outside), f"{dev} not mounted"
    return inside


def unmount(guest, inside):
    outside = f"/mnt/tools{inside}"
    guest.console(f"rm -rf {outside}/clients {outside}/verify.* {outside}/stress-ng*; sync; umount {outside} && "
                  f"echo unmounted", 300)
    assert not mounted(guest, outside), f"{outside} still mounted"


def dbench(guest, chroot, inside, secs):
    """dbench with CLIENTS clients in INSIDE for SECS seconds; MB/s."""
    out = guest.console(f"{chroot} /usr/bin/dbench -D {inside} -t {secs} {CLIENTS} 2>&1 | tail -n 25",
                        secs * 6 + 600)
    m = re.search(r"Throughput ([0-9.]+) MB/sec\s+(\d+) clients", out)
    assert m and int(m.group(2)) == CLIENTS, f"dbench in {inside}:\n{out}"
    assert not re.search(r"(?i)\berror\b|failed|No space", out), f"dbench in {inside}:\n{out}"
    return float(m.group(1))


def fio_verify(guest, chroot, inside, job_mb, secs):
    """fio random writes, CLIENTS jobs of JOB_MB each, every block read back
    and checked (crc32c); KiB/s written."""
    out = guest.console(
        f"{chroot} /usr/bin/fio --name=verify --directory={inside} --numjobs={CLIENTS} --size={job_mb}M "
        f"--rw=randwrite --bs=4k --ioengine=libaio --iodepth=8 --direct=1 "
        f"--verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting 2>&1", secs * 6 + 900)
    assert "err= 0" in out and "verify failed" not in out and "bad magic" not in out, f"fio in {inside}:\n{out}"
    w = re.search(r"WRITE: bw=[^(]*\(([0-9.]+)([kMG])B/s\)", out)
    return float(w.group(1)) * {"k": 1, "M": 1000, "G": 1e6}[w.group(2)] if w else 0.0


def stress_ng(guest, chroot, inside, stressor, secs):
    """One stress-ng stressor (2 instances, --verify) in INSIDE; (exit
    status, the last lines of its output). 0 passed; 2 a stressor failed;
    3 and 4 mean it could not run here (resources, not implemented)."""
    rc, out = guest.console_status(
        f"{chroot} /usr/bin/stress-ng --{stressor} 2 --timeout {secs}s "
        f"--temp-path {inside} --verify --metrics-brief >/tmp/stress-ng.log 2>&1; rc=$?; "
        f"tail -n 12 /tmp/stress-ng.log; exit $rc",
        secs * 10 + 300)
    return rc, out


def stress(guest, chroot, dev, name, secs, job_mb):
    """Mount ext4 on /dev/DEV inside the tools chroot, run dbench and fio
    --verify on it, unmount. Returns (dbench MB/s, fio KiB/s written)."""
    inside = mount_ext4(guest, dev, name)
    d = dbench(guest, chroot, inside, secs)
    f = fio_verify(guest, chroot, inside, job_mb, secs)
    unmount(guest, inside)
    return d, f


def fsck(host, image):
    r = host.exec(f"e2fsck -fn {shlex.quote(image)}", 300)
    assert r.rc == 0, f"e2fsck -fn {image}: rc {r.rc}\n{r.stdout}{r.stderr}"


def ext4_pair_guest(host, name, size_mb):
    """A qemu pc 6.1 guest with the tools disk mounted and a fresh ext4
    image on a virtio-blk disk of its own qemu (the control, cache=writeback
    like vmsh's file), plus a second fresh ext4 image for `vmsh serve`.
    Returns (guest, chroot prefix, the control's device, vmsh's image, the
    control's image); the caller stops the guest."""
    img = tools_image.build()
    ours, _ = make_disk(host, f"{name}-vmsh.img", size_mb, random=False)
    ctl, _ = make_disk(host, f"{name}-qemu.img", size_mb, random=False)
    for d in (ours, ctl):
        host.check(f"mke2fs -q -F -t ext4 {d}", 120)
    extra = tools_image.qemu_args("pc", img) + tools_image.qemu_args(
        "pc", ctl, ident="ctl", serial="vmshctl", readonly=False, cache="writeback")
    g = harness.Guest.start(host, "pc", "6.1", name=f"vmsh-{name}", extra_qemu_args=extra)
    try:
        chroot = tools_image.mount_in_guest(g)
        ctl_dev = g.console("for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = vmshctl ] && echo ${d##*/}; done"
                            ).strip()
    except BaseException:
        g.stop()
        raise
    return g, chroot, ctl_dev, ours, ctl
