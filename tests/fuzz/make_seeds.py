#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora in tests/fuzz/corpus/<target>/.

The seeds are realistic starting points derived from the code and the unit
tests (we cannot boot guests here): the layouts qemu pc and Firecracker give,
the virtqueue layout Linux's virtio_ring uses, the frames a real session
exchanges, the ELF objects the loader test builds. Each encoder mirrors the
input format documented at the top of its fuzz_<target>.c.

Run from the repository root: python3 tests/fuzz/make_seeds.py
"""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(data))


# ---- memmap ---------------------------------------------------------------
def memmap_seed(flags, munits, lowfrac, hole_pages=0, m2units=0, g2pages=0, decoys=(), entries=(), ops=()):
    b = bytearray([flags, munits, lowfrac])
    if flags & 1:
        b += struct.pack("<H", hole_pages)
    if flags & 2:
        b += bytes([m2units]) + struct.pack("<H", g2pages)
    for d in decoys:
        b.append(d)
    b.append(len(entries))
    names = {"System RAM": 0, "Reserved": 1, "PCI Bus 0000:00": 2, "ACPI Tables": 3}
    for start, end, name, depth in entries:
        b.append(names[name] | depth << 2)
        b += struct.pack("<QQ", start, end)
    b += struct.pack("<Q", 0xd0000000)  # iomem_range_free probe
    for op, gpa, ln in ops:
        b += struct.pack("<BQH", op, gpa, ln)
    return b


def memmap():
    # qemu pc scaled down: 1 MiB of RAM in one mapping, slot A = gpa [0, 768K),
    # slot B = the rest of it above a 256 KiB "PCI hole" (qemu: 3 GiB / 4 GiB)
    pc = [
        (0x0, 0xfff, "Reserved", 0),
        (0x1000, 0x9fbff, "System RAM", 0),
        (0x9fc00, 0x9ffff, "Reserved", 0),
        (0xa0000, 0xbffff, "PCI Bus 0000:00", 0),
        (0xf0000, 0xfffff, "Reserved", 0),
        (0x100000, 0x13ffff, "System RAM", 0),
        (0x101000, 0x10ffff, "Reserved", 1),  # "Kernel code" and friends
        (0xb0000, 0xbffff, "Reserved", 0),
    ]
    ops = [(0, 0x1000, 4096), (1, 0x100000, 100), (0, 0x9f000, 0x2000), (0, 0x13f000, 0x1000)]
    put("memmap", "qemu-pc", memmap_seed(1, 15, 192, 0x40, entries=pc, ops=ops))
    # the same with a thread stack and the heap as rw mappings nearby
    put("memmap", "qemu-pc-decoys", memmap_seed(1 | 2 << 2, 15, 192, 0x40, decoys=(3, 15), entries=pc, ops=ops))
    # Firecracker: one mapping per region, no hole inside a mapping
    fc = [(0x0, 0x7ffff, "System RAM", 0), (0x100000, 0x17ffff, "System RAM", 0)]
    put("memmap", "firecracker", memmap_seed(2 | 1 << 2, 7, 0, 0, 7, 0x80, decoys=(15,), entries=fc,
                                             ops=[(0, 0x100000, 64), (1, 0x7f000, 0x2000)]))
    # qemu microvm: all RAM in one slot at 0
    mv = [(0x0, 0x9fbff, "System RAM", 0), (0x9fc00, 0x9ffff, "Reserved", 0), (0x100000, 0x1fffff, "System RAM", 0)]
    put("memmap", "qemu-microvm", memmap_seed(0, 31, 0, entries=mv, ops=[(0, 0x1ff000, 4096)]))


TARGETS = {"memmap": memmap}

if __name__ == "__main__":
    for name in sys.argv[1:] or TARGETS:
        TARGETS[name]()
