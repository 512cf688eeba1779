"""A second VMM family (issue 11): the project's own small VMM,
tests/fixtures/minivmm, with the traits of the lightweight Rust VMMs that
cannot be installed here - the bzImage booted directly, no ACPI (MP table
and e820 only), an 8250 console, a virtio-mmio disk of its own announced on
the kernel command line, anonymous private RAM in two slots with a gap (the
second at 4 GiB), named vCPU threads, an in-kernel irqchip and PIT, irqfds,
and a seccomp allow-list (ioctl only KVM_RUN) on every thread before the
guest runs.

On it, with its sandbox on: inspect finds both RAM slots; attach runs a
command (pipe and pty, exit status, the guest's root at /var/lib/vmsh, ps)
on an ISA line the MP table routed and no device holds; a served disk reads
back by checksum; the VMM's own disk keeps working next to vmsh's (kernels
with virtio-mmio command-line devices: Debian's have none, so the disk is
only visible to the custom kernel); and afterwards the VMM runs with the
same filter, threads and fds, the guest with nothing of vmsh left."""
import json
import re

import pytest

from vmshtest import harness
from vmshtest.devices import Served, make_disk
from test_attach import attach, guest_traces
from test_inspect import hypervisor_state, inspect_json
from test_library import warnings
from test_noacpi import exit_status_pty_and_disk, vmsh_lines

# (kernel, flavour): Debian's generic 6.1 in make check (its 30 minutes),
# the rest in check-matrix; the custom kernel has virtio-mmio command-line
# devices built in, so only there the guest sees the VMM's own disk.
# Last: both slots in one mapping (--merged-slots: nothing between them,
# the second right below the first, so the kernel merges them into one VMA).
CONFIGS = [("6.1", "amd64", ()), ("6.12", "amd64", ()), ("5.10", "amd64", ()), ("custom-6.1", "builtin", ()),
           ("6.1", "amd64", ("--merged-slots",))]
PARAMS = [pytest.param(c, id=f"{c[0]}-{c[1]}" + ("-merged" if c[2] else ""),
                       marks=() if c == ("6.1", "amd64", ()) else pytest.mark.matrix)
          for c in CONFIGS]


def ground_truth(host, guest):
    """The VMM's own account of itself: the JSON line in its log."""
    for line in host.read_file(guest.qemu_log).decode(errors="replace").splitlines():
        if line.startswith("{\"pid\""):
            return json.loads(line)
    raise AssertionError(f"no ground-truth line in {guest.qemu_log}")


def vmm_state(host, pid):
    """What vmsh must leave as it was: fds, threads and their names, tracer,
    the seccomp filter."""
    return host.check(f"ls -l /proc/{pid}/fd | awk 'NR>1 {{print $9, $11}}'; echo ---; "
                      f"for t in /proc/{pid}/task/*; do echo $(basename $t) $(cat $t/comm); done; echo ---; "
                      f"grep -E 'TracerPid|Seccomp' /proc/{pid}/status")


@pytest.fixture(scope="module", params=PARAMS)
def mini(request, host):
    kernel, flavour, extra = request.param
    disk, digest = make_disk(host, f"minivmm-own-{kernel}.img", 8)
    g = harness.Guest.start(host, machine="minivmm", kernel=kernel, flavour=flavour, mem="768M", smp=2,
                            extra_qemu_args=["--sandbox", "--disk", disk, *extra], name=f"vmsh-minivmm-{kernel}")
    yield g, disk, digest, kernel.startswith("custom")
    g.stop()
    host.check(f"rm -f {disk}")


def test_attach_and_serve_on_minivmm(mini, host, vmsh_bin):
    guest, own_disk, own_digest, cmdline_devices = mini
    truth = ground_truth(host, guest)
    assert truth["sandbox"] and truth["vcpus"] == 2 and len(truth["slots"]) == 2, truth
    state = vmm_state(host, guest.pid)
    assert "Seccomp:\t2" in state and "mv_vcpu 0" in state and "mv_vcpu 1" in state, state
    # the guest has no ACPI: its interrupt routing came from minivmm's MP table
    boot = guest.console("dmesg | grep -E 'MPTABLE|ACPI' || true")
    assert "MPTABLE: Product ID: MINIVMM" in boot, boot
    assert guest.console("ls /sys/firmware/acpi/tables 2>/dev/null | wc -l").strip() == "0"
    own = None
    if cmdline_devices:
        own = guest.console("grep -l minivmm-disk /sys/block/vd*/serial 2>/dev/null | cut -d/ -f4").strip()
        assert own, guest.console("ls /sys/block; dmesg | grep -i virtio")
        assert guest.console(f"sha256sum /dev/{own}").split()[0] == own_digest

    # inspect: RAM in both slots, the one at 4 GiB too, each range at the
    # host address the VMM has it at (two mappings: one per slot)
    j = inspect_json(host, vmsh_bin, guest.pid)
    assert j["kernel"]["error"] is None and j["memory"]["error"] is None, (j["kernel"], j["memory"])
    slots = [tuple(int(s[k], 16) for k in ("gpa", "size", "hva")) for s in truth["slots"]]
    covered = set()
    for r in j["memory"]["ranges"]:
        gpa, size, hva = int(r["gpa"], 16), int(r["size"], 16), int(r["hva"] or "0", 16)
        home = [i for i, (sg, ss, _) in enumerate(slots) if sg <= gpa and gpa + size <= sg + ss]
        assert len(home) == 1 and r["verified"], (r, slots)
        assert hva == slots[home[0]][2] + gpa - slots[home[0]][0], (r, slots)
        covered.add(home[0])
    assert covered == {0, 1}, (j["memory"]["ranges"], slots)

    base = warnings(guest)
    before = hypervisor_state(host, guest.pid)
    traces = guest_traces(guest)
    held = guest.console("cat /proc/interrupts")

    marker = guest.console("echo vmsh-$$-$RANDOM > /tmp/marker; cat /tmp/marker").strip()
    r = attach(host, vmsh_bin, guest, "sh", "-c", "cat /var/lib/vmsh/tmp/marker; ls /var/lib/vmsh; ps; "
               "cat /proc/interrupts")
    assert r.rc == 0, r.stderr
    assert marker in r.stdout and "init" in r.stdout.split(), r.stdout
    lines = vmsh_lines(guest)
    assert lines[0] != lines[1], lines  # a line per device: free ones are there
    for gsi, irq in lines:
        # an ISA line of the MP table that no device of the guest held
        assert gsi == irq and gsi < 16 and gsi not in (4, 5), (gsi, irq)
        assert not re.search(rf"^\s*{irq}:", held, re.M), held
    exit_status_pty_and_disk(host, vmsh_bin, guest, "minivmm-served.img", own)
    if own:  # both disks at once: vmsh's (served again) and the VMM's
        disk, digest = make_disk(host, "minivmm-both.img", 16)
        with Served(host, vmsh_bin, guest, disk) as s:
            out = guest.console(f"sha256sum /dev/{own} & sha256sum /dev/{s.dev}; wait", 300)
            assert own_digest in out and digest in out, out
        assert s.status == 0, s.text
        host.check(f"rm -f {disk}")

    if own:  # the VMM's disk after vmsh: written through, and read back on the host
        guest.console(f"echo minivmm-after-vmsh | dd of=/dev/{own} bs=512 seek=100 conv=fsync 2>/dev/null")
        assert host.check(f"dd if={own_disk} bs=512 skip=100 count=1 2>/dev/null | head -c 18") \
            == "minivmm-after-vmsh"
    assert guest_traces(guest) == traces
    assert hypervisor_state(host, guest.pid) == before
    assert vmm_state(host, guest.pid) == state
    # as in test_faults and test_busy: with two vCPUs on the one-CPU emulated
    # host a watchdog now and then reports a stall of seconds that no vmsh
    # code is in (seen once here: both vCPUs in the serial console's output);
    # a lockup in vmsh's code would name it, anything else fails
    log = guest.console("dmesg")
    assert not [l for l in log.splitlines() if ("soft lockup" in l or "stall" in l) and "vmsh" in l], log
    new = warnings(guest) - base
    assert not [l for l in new if re.search(r"Oops|general protection|WARNING|BUG", l) and "soft lockup" not in l], log
    assert guest.console("echo alive").strip() == "alive"
