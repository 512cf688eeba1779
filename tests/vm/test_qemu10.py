"""A second QEMU generation (issue 11): QEMU 10 from bookworm-backports,
unpacked next to the host's QEMU 7.2 (tools/guest/fetch-qemu.sh), on its pc,
q35 and microvm machines. The same vmsh, with nothing told about the version:
the guest kernel and every RAM range found (a value the guest planted is
read back through vmsh's map), a command through attach, a served disk read
byte for byte, a copy-on-write coredump holding the planted value, and the
hypervisor as it was."""
import os
import re
import shlex

import pytest

from vmshtest.devices import Served, make_disk
from test_attach import attach
from test_coredump import core_bytes, dump_state
from test_inspect import guest_ram, host_read, inspect_json

SLICE = {("pc", "6.1")}  # make check; the others in check-matrix
CONFIGS = [pytest.param(m, k, marks=() if (m, k) in SLICE else pytest.mark.matrix, id=f"{m}-{k}")
           for k in ("6.1", "6.12", "5.10") for m in ("pc", "q35", "microvm")]


@pytest.mark.parametrize("machine,kernel", CONFIGS)
def test_vmsh_on_qemu_10(guest_factory, host, vmsh_bin, machine, kernel):
    guest = guest_factory(machine=machine, kernel=kernel, qemu="10", name=f"vmsh-qemu10-{machine}-{kernel}")
    exe = host.check(f"readlink /proc/{guest.pid}/exe").strip()
    assert "/qemu/10." in exe, exe
    before = dump_state(host, guest.pid)
    release = guest.console("uname -r").strip()

    marker = guest.console("physmarker")
    m = re.search(r"PHYSMARKER gpa=(0x[0-9a-f]+) value=([0-9a-f]{32})", marker)
    assert m, marker
    gpa, value = int(m.group(1), 16), m.group(2)
    j = inspect_json(host, vmsh_bin, guest.pid)
    assert j["kernel"]["found"] and j["kernel"]["version"] == release, j["kernel"]
    assert j["memory"]["error"] is None, j["memory"]
    ranges = [(int(r["gpa"], 16), int(r["size"], 16), r) for r in j["memory"]["ranges"]]
    for start, end in guest_ram(guest):
        assert any(g <= start and end <= g + s and r["hva"] and r["verified"] for g, s, r in ranges), \
            f"guest RAM {start:#x}-{end:#x} not covered (verified) by {j['memory']['ranges']}"
    (g, r), = [(g, r) for g, s, r in ranges if g <= gpa < g + s]
    assert host_read(host, guest.pid, int(r["hva"], 16) + gpa - g, 16) == value

    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo from-$(uname -r); ls /var/lib/vmsh")
    assert r.rc == 0 and f"from-{release}" in r.stdout and "init" in r.stdout.split(), (r.stdout, r.stderr)

    disk, digest = make_disk(host, f"qemu10-{machine}-{kernel}.img", 8)
    with Served(host, vmsh_bin, guest, disk) as s:
        assert s.dev, guest.console("ls /sys/block")
        assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
    assert s.status == 0, s.text
    host.check(f"rm -f {disk}")

    core = os.path.join(host.logdir, f"qemu10-{machine}-{kernel}.core")
    r = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {shlex.quote(core)}", 900)
    assert r.rc == 0 and "(copy-on-write snapshot)" in r.stderr, r.stderr
    assert core_bytes(core, gpa, 16).hex() == value
    os.unlink(core)

    assert dump_state(host, guest.pid) == before
    assert guest.console("echo alive").strip() == "alive"
