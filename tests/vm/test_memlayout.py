"""Every memory layout a hypervisor gives its guest (issue 11): RAM split
around the 4 GiB hole (most of it above 4 GiB), RAM from a shared file, a
private file mapping, hugetlbfs, preallocated RAM, a memfd, and a hypervisor
confined by its own seccomp sandbox, a DIMM present from boot (its own
mapping and memory slot, onlined as movable memory). For each: vmsh's memory map covers the
guest's RAM at the right host addresses (a value the guest planted is read
back through it), `vmsh attach` runs a command, and a served disk carries
data both ways byte for byte (the guest's page cache, and so vmsh's DMA, lives
mostly in the layout under test: above 4 GiB there), with the hypervisor's
fds and threads as before."""
import json
import os
import re
import shlex

import pytest

from vmshtest import harness
from vmshtest.devices import Served, make_disk, served_disk_round_trip
from vmshtest.layouts import HUGEPAGES_DIR, SHM, dimm_online, hugepages, layout_args  # noqa: F401
from test_attach import attach
from test_coredump import core_bytes
from test_inspect import guest_ram, host_read, hypervisor_state, inspect_json, kallsyms
from test_library import assert_guest_clean, warnings

def kernel_root_finds_the_split(host, vmsh_bin, guest, ram):
    """The same map when vmsh looks through the kernel's own page-table root
    (an idle vCPU holds it after a process's exit): with the kernel below the
    split several layouts pass that root, and the first one that did was
    taken (the above-4g CI failure: 44 MiB below 4 GiB, the iomem tree at the
    top of RAM unreadable, `vmsh serve` refused)."""
    syms = kallsyms(guest, ["_text", "init_top_pgt"])
    code = re.search(r"^\s*([0-9a-f]+)-[0-9a-f]+ : Kernel code$", guest.console("cat /proc/iomem"), re.M)
    assert code, "no 'Kernel code' in the guest's /proc/iomem"
    root = int(code.group(1), 16) + syms["init_top_pgt"] - syms["_text"]
    r = host.exec(f"VMSH_TEST_BOOT_ROOT={root:#x} {shlex.quote(vmsh_bin)} inspect --json {guest.pid}", 300)
    assert r.rc == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["memory"]["error"] is None, j["memory"]
    ranges = [(int(x["gpa"], 16), int(x["size"], 16), x) for x in j["memory"]["ranges"]]
    for start, end in ram:
        assert any(g <= start and end <= g + sz and x["hva"] and x["verified"] for g, sz, x in ranges), \
            f"through the kernel's root {root:#x}: RAM {start:#x}-{end:#x} not covered by {j['memory']['ranges']}"


def dma_lands_in_the_dimm(host, vmsh_bin, guest):
    """O_DIRECT reads and writes of a served disk: the data goes between
    vmsh and dd's own buffer - user memory, which the guest takes from the
    DIMM's Movable zone first (the physmarker page lies there, checked
    before) - through the host address the slot probe found."""
    disk, digest = make_disk(host, "mem-dimm-dma.img", 16)
    with Served(host, vmsh_bin, guest, disk) as s:
        got = guest.console(f"dd if=/dev/{s.dev} iflag=direct bs=1M 2>/dev/null | sha256sum", 300)
        assert got.split()[0] == digest, got
        wrote = guest.console(f"dd if=/dev/urandom of=/tmp/w bs=1M count=4 2>/dev/null && dd if=/tmp/w "
                              f"of=/dev/{s.dev} bs=1M seek=4 oflag=direct 2>/dev/null; sha256sum /tmp/w; rm /tmp/w",
                              300).split()[0]
    assert s.status == 0, s.text
    assert host.check(f"dd if={disk} bs=1M skip=4 count=4 2>/dev/null | sha256sum").split()[0] == wrote
    host.check(f"rm -f {disk}")


CHECK = {"above-4g", "sandbox"}  # the rest in check-matrix (make check's 30 minutes)
SHARED_RAM = {"file-shared", "hugetlbfs", "memfd"}
LAYOUTS = ["above-4g", "big", "file-shared", "file-private", "hugetlbfs", "prealloc", "memfd", "sandbox", "dimm"]


@pytest.mark.parametrize("layout", [pytest.param(n, marks=() if n in CHECK else pytest.mark.matrix)
                                    for n in LAYOUTS])
def test_attach_and_serve_on_every_memory_layout(guest_factory, host, vmsh_bin, layout):
    ident = f"{layout}-{os.getpid()}"
    args, mem, backing = layout_args(host, layout, ident)
    reserved = hugepages(host, 384 // 2) if layout == "hugetlbfs" else None
    overcommit = None
    if layout == "big" and host.mode == "emulated":
        # the emulated host has 3 GiB: the guest touches little of its 4.5,
        # but the kernel's heuristic refuses the hypervisor's one mapping
        overcommit = host.check("cat /proc/sys/vm/overcommit_memory").strip()
        host.check("echo 1 > /proc/sys/vm/overcommit_memory")
    guest = None
    try:
        # above-4g: the kernel at its fixed place below the split (nokaslr),
        # so that its own page-table root lies below it every time (below)
        guest = guest_factory(machine="pc", kernel="6.1", mem=mem, extra_qemu_args=args,
                              name=f"vmsh-mem-{layout}", append="nokaslr" if layout == "above-4g" else "")
        if layout == "dimm":
            # 2 memory blocks of 128 MiB, onlined movable: the page cache -
            # and so the served disk's DMA below - lands there first
            assert dimm_online(guest) == 2, guest.console("ls /sys/devices/system/memory; dmesg | tail")
        ram = guest_ram(guest)
        if layout in ("above-4g", "big"):
            high = sum(e - s for s, e in ram if s >= 1 << 32)
            want = 500 << 20 if layout == "above-4g" else 1400 << 20
            assert high >= want, f"guest RAM above 4 GiB: {high >> 20} MiB ({ram})"
        maps = host.check(f"cat /proc/{guest.pid}/maps")
        if backing:
            assert backing in maps, f"no mapping of {backing} in the hypervisor:\n{maps}"
        base = warnings(guest)
        before = hypervisor_state(host, guest.pid)

        # the memory map: every RAM range, each with a host address; a value
        # the guest planted is found at the host address vmsh gives
        marker = guest.console("physmarker")
        m = re.search(r"PHYSMARKER gpa=(0x[0-9a-f]+) value=([0-9a-f]{32})", marker)
        assert m, marker
        gpa, value = int(m.group(1), 16), m.group(2)
        j = inspect_json(host, vmsh_bin, guest.pid)
        assert j["memory"]["error"] is None, j["memory"]
        ranges = [(int(r["gpa"], 16), int(r["size"], 16), r) for r in j["memory"]["ranges"]]
        for start, end in ram:
            assert any(g <= start and end <= g + s and r["hva"] and r["verified"] for g, s, r in ranges), \
                f"guest RAM {start:#x}-{end:#x} not covered (verified) by {j['memory']['ranges']}"
        hit = [(g, r) for g, s, r in ranges if g <= gpa < g + s]
        assert len(hit) == 1, f"marker gpa {gpa:#x} in {len(hit)} ranges"
        g, r = hit[0]
        assert host_read(host, guest.pid, int(r["hva"], 16) + gpa - g, 16) == value
        if layout == "dimm":
            dimm = [r for g, s, r in ranges if g >= 1 << 32]
            assert len(dimm) == 1 and dimm[0]["by_slot"] and int(dimm[0]["size"], 16) == 256 << 20, ranges
            assert "1 range(s) placed by memory slot" in j["memory"]["slot_placing"], j["memory"]
            assert gpa >= 1 << 32, f"the physmarker page (user memory) at {gpa:#x}, not in the DIMM"
        if layout == "above-4g":
            harness.log(f"above-4g: physmarker page at gpa {gpa:#x}")
            kernel_root_finds_the_split(host, vmsh_bin, guest, ram)

        # a dump: a copy-on-write snapshot where guest RAM is private memory; for
        # shared RAM (a fork would not freeze it) the VM stopped for the copy,
        # saying why; either way the planted value is in the file at its gpa
        core = os.path.join(host.logdir, f"mem-{layout}.core")
        r = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {shlex.quote(core)}", 900)
        assert r.rc == 0, r.stderr
        if layout in SHARED_RAM:
            assert "no copy-on-write snapshot" in r.stderr and "(for the whole copy)" in r.stderr, r.stderr
        else:
            assert "(copy-on-write snapshot)" in r.stderr, r.stderr
        assert core_bytes(core, gpa, 16).hex() == value
        os.unlink(core)

        # a command through attach
        r = attach(host, vmsh_bin, guest, "sh", "-c", "ls /var/lib/vmsh; cat /proc/meminfo | head -1")
        assert r.rc == 0 and "init" in r.stdout.split(), (r.stdout, r.stderr)

        # the devices' DMA: a served disk read and written byte for byte
        served_disk_round_trip(host, vmsh_bin, guest, f"mem-{layout}.img")
        if layout == "dimm":
            dma_lands_in_the_dimm(host, vmsh_bin, guest)

        assert hypervisor_state(host, guest.pid) == before
        assert_guest_clean(guest, base)
    finally:
        if overcommit is not None:
            if guest:
                guest.stop()
            host.run(f"echo {overcommit} > /proc/sys/vm/overcommit_memory", 30)
        if reserved is not None and host.mode == "emulated":
            if guest:
                guest.stop()  # its huge pages go back first
            host.run(f"echo {reserved} > /proc/sys/vm/nr_hugepages", 30)
        if backing and backing.startswith(SHM):
            host.run(f"rm -f {shlex.quote(backing)}", 30)
