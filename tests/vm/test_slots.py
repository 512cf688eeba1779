"""The hypervisor keeps adding memory slots while vmsh holds some (issue 9,
item 2): qemu hands out its lowest free slot id for every slot it creates
(memory hotplug, a BAR mapped again); if vmsh held that id, KVM refuses
qemu's slot and qemu abort()s.  vmsh takes its ids from the top of the
range, so the guest gets its new memory and vmsh keeps serving."""
import os

from vmshtest.devices import Served, make_disk
from vmshtest.qmp import qmp
from test_inspect import inspect_json
from test_library import assert_guest_clean, warnings

def memory_blocks(guest):
    return int(guest.console("ls -d /sys/devices/system/memory/memory* | wc -l"))


def test_memory_hotplug_and_bar_remap_while_vmsh_serves(guest_factory, host, vmsh_bin):
    qmp_sock = f"{host.sockdir}/qmp-slots-{os.getpid()}.sock"
    guest = guest_factory(machine="pc", kernel="6.1", mem="512M,slots=2,maxmem=2G",
                          extra_qemu_args=["-qmp", f"unix:{qmp_sock},server=on,wait=off",
                                           "-device", "VGA,id=vga"],
                          name="vmsh-slots")
    base = warnings(guest)
    blocks0 = memory_blocks(guest)
    slots0 = inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"]
    # the VGA framebuffer BAR: a RAM slot of qemu's that comes and goes with
    # the memory-decode bit of the device's PCI command register
    vga = guest.console("for d in /sys/bus/pci/devices/*; do "
                        "[ $(cat $d/class) = 0x030000 ] && echo $d; done").strip()
    assert vga, guest.console("ls /sys/bus/pci/devices")
    disk, digest = make_disk(host, "slots.img", 16)
    with Served(host, vmsh_bin, guest, disk) as s:
        during = inspect_json(host, vmsh_bin, guest.pid)["memslots"]
        held = set(during["ids"]) - set(slots0)
        assert held, "vmsh serves but holds no memory slot of its own?"
        # vmsh's ids are the highest free ones, far above the hypervisor's
        assert min(held) > max(slots0) + 16 and max(held) < during["limit"], (sorted(held), slots0)
        # 1. a DIMM plugged in through QMP: qemu creates a new slot
        qmp(host, qmp_sock,
            '{"execute":"object-add","arguments":{"qom-type":"memory-backend-ram","id":"m1",'
            '"size":268435456}}',
            '{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"d1","memdev":"m1"}}')
        assert guest.alive(), "qemu died on the hotplugged DIMM's slot"
        for _ in range(50):
            if memory_blocks(guest) > blocks0:
                break
            guest.console("sleep 0.2")
        assert memory_blocks(guest) > blocks0, guest.console("dmesg | tail -20")
        # 2. the VGA BAR switched off and on again: qemu deletes and re-creates its slot
        cmd = int(guest.console(f"od -An -tu2 -j4 -N2 {vga}/config").strip())
        off = cmd & ~0x2
        guest.console(f"printf '\\{off & 0xff:03o}\\{off >> 8:03o}' | "
                      f"dd of={vga}/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null")
        guest.console(f"printf '\\{cmd & 0xff:03o}\\{cmd >> 8:03o}' | "
                      f"dd of={vga}/config bs=1 seek=4 count=2 conv=notrunc 2>/dev/null")
        assert guest.alive(), "qemu died when the VGA BAR was mapped again"
        assert int(guest.console(f"od -An -tu2 -j4 -N2 {vga}/config").strip()) == cmd
        # vmsh kept serving through both
        assert guest.console(f"sha256sum /dev/{s.dev}", 120).split()[0] == digest
        after = set(inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"])
        assert held <= after, (held, after)
        assert len(after - held - set(slots0)) >= 1, "qemu's new slot is missing"
    assert s.status == 0, s.text
    assert guest.alive()
    # qemu's slots that came during the session stay; vmsh's are gone
    final = set(inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"])
    assert not (final & held), (final, held)
    assert_guest_clean(guest, base)
