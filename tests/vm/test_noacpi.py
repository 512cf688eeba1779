"""Guests without ACPI (issue 11): qemu `pc -no-acpi` and `microvm,acpi=off`,
whose interrupt routing the guest learns from the MP table only (microvm's
own virtio-mmio disk then comes from the kernel command line). vmsh's
library finds a line there without ACPI: the attach (pipe and pty), a served
disk read back by checksum, and nothing left behind in guest or hypervisor."""
import json
import re
import shlex

import pytest

import conftest
from vmshtest import harness
from vmshtest.devices import Served, make_disk
from test_attach import PTY_DRIVER, attach, guest_traces
from test_inspect import hypervisor_state
from test_library import assert_guest_clean, warnings

NO_ACPI = {"pc": ["-no-acpi"], "microvm": ["-machine", "acpi=off"]}
CONFIGS = [(m, k, "amd64") for (m, k, f) in conftest.GUEST_CONFIGS if m in NO_ACPI and f == "amd64"]


# pc-6.1 in make check (its 30 minutes), microvm and the rest in check-matrix
PARAMS = [pytest.param(c, id=f"{c[0]}-{c[1]}", marks=() if c[:2] == ("pc", "6.1") else pytest.mark.matrix)
          for c in CONFIGS]


@pytest.fixture(scope="module", params=PARAMS)
def noacpi_guest(request, host):
    machine, kernel, _ = request.param
    g = harness.Guest.start(host, machine=machine, kernel=kernel, extra_qemu_args=NO_ACPI[machine],
                            name=f"vmsh-noacpi-{machine}-{kernel}")
    yield g
    g.stop()


def vmsh_lines(guest):
    """The interrupt lines the library reported last, from the kernel log:
    [(gsi, irq) of the block device, (gsi, irq) of the console]."""
    lines = re.findall(r"vmsh: \d+ devices at \S+, interrupt line (\d+) \(irq (\d+)\), "
                       r"the second device's (\d+) \(irq (\d+)\)", guest.console("dmesg"))
    assert lines, guest.console("dmesg | tail -20")
    x = [int(v) for v in lines[-1]]
    return [(x[0], x[1]), (x[2], x[3])]


def exit_status_pty_and_disk(host, vmsh_bin, guest, image, own=None):
    """Pipes carry stdout, stderr and the exit status; the pty session gets
    a prompt, the guest's root and ps, and restores the terminal; a served
    disk reads back by checksum (its device not `own`). Returns nothing."""
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo out; echo err >&2; exit 42")
    assert r.rc == 42 and r.stdout == "out\n" and "err\n" in r.stderr, (r.stdout, r.stderr)

    host.check("cat > /run/attach_pty.py", input=open(PTY_DRIVER).read())
    res = json.loads(host.check(f"python3 /run/attach_pty.py {shlex.quote(vmsh_bin)} {guest.pid}",
                                600).strip().splitlines()[-1])
    assert res["prompt"] and res["guest_root"] and res["ps"], res
    assert res["disconnected"] and res["exit_status"] == 129 and res["stty_restored"], res

    # the device path: every byte of a served disk, through the interrupt line
    disk, digest = make_disk(host, image, 16)
    with Served(host, vmsh_bin, guest, disk) as s:
        assert s.dev and s.dev != own, guest.console("ls /sys/block")
        assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
    assert s.status == 0, s.text
    host.check(f"rm -f {disk}")


def test_attach_and_serve_without_acpi(noacpi_guest, host, vmsh_bin):
    guest = noacpi_guest
    # really no ACPI: the guest found its IOAPIC in the MP table
    boot = guest.console("dmesg | grep -E 'MPTABLE|IOAPIC\\[|ACPI: Interpreter disabled' || true")
    assert "MPTABLE" in boot and "ACPI: Interpreter disabled" in boot, boot
    assert guest.console("ls /sys/firmware/acpi/tables 2>/dev/null | wc -l").strip() == "0"
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
        # an ISA line of the MP table that no device of the guest held, on the IOAPIC
        assert gsi == irq and gsi < 16, (gsi, irq)
        assert not re.search(rf"^\s*{irq}:", held, re.M), held
        row = [l for l in r.stdout.splitlines() if re.match(rf"\s*{irq}:", l)]
        assert row and "IO-APIC" in row[0] and "virtio" in row[0], r.stdout
    exit_status_pty_and_disk(host, vmsh_bin, guest, "noacpi.img")

    assert guest_traces(guest) == traces
    assert hypervisor_state(host, guest.pid) == before
    assert_guest_clean(guest, base)
