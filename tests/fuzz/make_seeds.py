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
    if target in ("virtqueue", "kernel", "pagetable"):
        data = bytes(data).rstrip(b"\0")  # the target pads RAM images with zeros
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


# ---- virtqueues ------------------------------------------------------------
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


class Ring:
    """A guest RAM image with one split virtqueue laid out as Linux's
    vring_init does it: descriptors, avail ring right after, used ring on the
    next 4 KiB boundary."""

    def __init__(self, qsize=256, base=0, ram=None):
        self.ram = ram if ram is not None else bytearray(0x10000)
        self.q = qsize
        self.desc = base
        self.avail = base + 16 * qsize
        self.used = (self.avail + 6 + 2 * qsize + 4095) & ~4095
        self.next_desc = 0
        self.avail_idx = 0

    def grow(self, end):
        if len(self.ram) < end:
            self.ram += bytes(end - len(self.ram))

    def w(self, gpa, data):
        self.grow(gpa + len(data))
        self.ram[gpa:gpa + len(data)] = data

    def chain(self, bufs, indirect_at=None):
        """bufs: (gpa, len, writable); published in the avail ring."""
        head = self.next_desc
        if indirect_at is not None:
            for i, (g, ln, wr) in enumerate(bufs):
                fl = (F_WRITE if wr else 0) | (F_NEXT if i + 1 < len(bufs) else 0)
                self.w(indirect_at + 16 * i, struct.pack("<QIHH", g, ln, fl, i + 1 if i + 1 < len(bufs) else 0))
            self.w(self.desc + 16 * head, struct.pack("<QIHH", indirect_at, 16 * len(bufs), F_INDIRECT, 0))
            self.next_desc += 1
        else:
            for i, (g, ln, wr) in enumerate(bufs):
                d = head + i
                fl = (F_WRITE if wr else 0) | (F_NEXT if i + 1 < len(bufs) else 0)
                self.w(self.desc + 16 * d, struct.pack("<QIHH", g, ln, fl, d + 1 if i + 1 < len(bufs) else 0))
            self.next_desc += len(bufs)
        self.w(self.avail + 4 + 2 * (self.avail_idx % self.q), struct.pack("<H", head))
        self.avail_idx += 1
        self.w(self.avail + 2, struct.pack("<H", self.avail_idx))
        self.grow(self.used + 6 + 8 * self.q)
        return head


def blk_req(r, typ, sector, data, status, hdr, data_writable=True, indirect_at=None, payload=None):
    r.w(hdr, struct.pack("<IIQ", typ, 0, sector))
    bufs = [(hdr, 16, False)] + [(g, ln, data_writable) for g, ln in data] + [(status, 1, True)]
    if payload is not None:
        for g, ln in data:
            r.w(g, payload[:ln])
    r.chain(bufs, indirect_at)


def virtqueue():
    def hdr(qlog, flags, r, unpop=0, sectors=64, flip=0):
        return struct.pack("<BBHHHHHI", qlog, flags, r.desc // 16, r.avail // 2, r.used // 4, unpop, sectors, flip)

    r = Ring(256)
    blk_req(r, 0, 0, [(0x5000, 512)], 0x6000, 0x4000)                     # read sector 0
    blk_req(r, 1, 8, [(0x5200, 1024)], 0x6001, 0x4010, False, payload=b"x" * 1024)  # write
    blk_req(r, 4, 0, [], 0x6002, 0x4020)                                  # flush
    blk_req(r, 8, 0, [(0x5600, 20)], 0x6003, 0x4030)                      # get id
    put("virtqueue", "linux-blk-mixed", hdr(8, 0, r) + r.ram)
    put("virtqueue", "linux-blk-mixed-zerocopy-ro", hdr(8, 2 | 4 | 8, r) + r.ram)
    # a later run takes the queue over (after a vmsh killed outright); the
    # second with a log that names heads the first run never held
    put("virtqueue", "linux-blk-mixed-take-over", hdr(8, 16, r, unpop=0x1) + r.ram)
    put("virtqueue", "linux-blk-take-over-wrong-log", hdr(8, 16 | 1, r, flip=0x8000000f) + r.ram)
    put("virtqueue", "linux-blk-mixed-contains", hdr(8, 32, r) + r.ram)
    # vmsh's own access: vectored ring reads and writes, a take-over on top
    put("virtqueue", "linux-blk-mixed-vectored", hdr(8, 32 | 64 | 1, r) + r.ram)
    put("virtqueue", "linux-blk-vectored-take-over", hdr(8, 16 | 32 | 64, r, unpop=0x1) + r.ram)
    r = Ring(128)
    seg = struct.pack("<QII", 2, 4, 0) + struct.pack("<QII", 10, 1, 1)
    blk_req(r, 11, 0, [(0x5000, 16)], 0x6000, 0x4000, False, payload=seg[:16])   # discard
    blk_req(r, 13, 0, [(0x5100, 32)], 0x6001, 0x4010, False, payload=seg)        # write zeroes
    blk_req(r, 0, 4, [(0x7000, 512), (0x7200, 512), (0x7400, 512)], 0x6002, 0x4020, True, indirect_at=0x8000)
    put("virtqueue", "discard-zeroes-indirect-eventidx", hdr(7, 1 | 4 | 8, r, unpop=0x5) + r.ram)
    r = Ring(4)
    for i in range(4):
        blk_req(r, i & 1, i, [(0x3000 + 0x200 * i, 512)], 0x2800 + i, 0x2000 + 16 * i, not (i & 1), payload=b"d" * 512)
    put("virtqueue", "small-queue-full", hdr(2, 0, r, sectors=8) + r.ram)


def console_rings(qlog=6):
    ram = bytearray(0x40000)
    rings = [Ring(1 << qlog, base=0x2000 * q, ram=ram) for q in range(4)]
    return ram, rings


def console_hdr(rings, qlog, flags, ops, absent=()):
    b = bytearray()
    for q, r in enumerate(rings):
        b += struct.pack("<BHHH", 9 if q in absent else qlog, r.desc // 16, r.avail // 2, r.used // 4)
    b.append(flags)
    for op, arg in ops:
        b += struct.pack("<BH", op, arg)
    return b + bytes(64 - len(b))


PROCESS, HWRITE, HREAD, HCONN, HSIZE, RESET, PUBLISH, CONFIG = range(8)


def virtio_console():
    # Linux's virtio_console: fill the control receiveq with pages, send
    # DEVICE_READY; after PORT_ADD fill the port's receiveq and send
    # PORT_READY; a process opens the port (PORT_OPEN 1) and writes.
    for flags in (0, 1):
        ram, r = console_rings(6)
        for i in range(8):
            r[2].chain([(0x10000 + 0x1000 * i, 0x1000, True)])
        for i, (ev, val) in enumerate([(0, 1), (3, 1), (6, 1)]):
            r[3].w(0x9000 + 16 * i, struct.pack("<IHH", 0xffffffff if ev == 0 else 0, ev, val))
            r[3].chain([(0x9000 + 16 * i, 8, False)])
        # Linux sends PORT_READY only after PORT_ADD arrived, and PORT_OPEN
        # when a process opens the port: only DEVICE_READY is published at
        # first, the PUBLISH op below makes the other two available
        r[3].w(r[3].avail + 2, struct.pack("<H", 1))
        for i in range(8):
            r[0].chain([(0xa000 + 0x200 * i, 0x200, True)])
        r[1].w(0xb000, b"hello from the guest\n")
        r[1].chain([(0xb000, 21, False)])
        r[1].chain([(0xb100, 0x100, False), (0xb200, 0x80, False)])
        ops = [(PROCESS, 0), (PUBLISH, 3 | 2 << 2), (HWRITE, 100), (PROCESS, 0), (HREAD, 4096), (HCONN, 0),
               (PROCESS, 0), (HSIZE, 0x1950)] if flags else [(PROCESS, 0), (PUBLISH, 3 | 2 << 2), (HWRITE, 100),
                                                            (PROCESS, 0), (HREAD, 4096), (RESET, 0), (PROCESS, 0),
                                                            (HREAD, 4096)]
        put("virtio_console", "linux-handshake-%s" % ("eventidx" if flags else "plain"),
            (console_hdr(r, 6, flags, ops) + ram).rstrip(b"\0"))
    # only the control queues set up (the port's queues come later)
    ram, r = console_rings(4)
    for i in range(4):
        r[2].chain([(0x10000 + 0x1000 * i, 0x1000, True)])
    r[3].w(0x9000, struct.pack("<IHH", 0xffffffff, 0, 1))
    r[3].chain([(0x9000, 8, False)])
    r[3].w(0x9010, struct.pack("<IHH", 7, 99, 1))  # unknown port and event: ignored
    r[3].chain([(0x9010, 8, False)])
    ops = [(PROCESS, 0), (PUBLISH, 3 | 1 << 2), (PROCESS, 0), (CONFIG, 0), (HWRITE, 5000), (PROCESS, 0), (HREAD, 10),
           (PROCESS, 0)]
    put("virtio_console", "control-only", (console_hdr(r, 4, 0, ops, absent=(0, 1)) + ram).rstrip(b"\0"))


# ---- virtio-mmio -----------------------------------------------------------
W, R, KICK, ACK = 0, 4, 5, 6


def linux_probe(rings, qsize, features_lo, kick_mask):
    """The register accesses of Linux's virtio_mmio_probe + virtio_dev_probe +
    vm_setup_vq for each queue, then a kick."""
    a = [(R, 4, 0x0, 0), (R, 4, 0x4, 0), (R, 4, 0x8, 0), (R, 4, 0xc, 0),
         (W, 4, 0x70, 0), (W, 4, 0x70, 1), (W, 4, 0x70, 3),
         (W, 4, 0x14, 1), (R, 4, 0x10, 0), (W, 4, 0x14, 0), (R, 4, 0x10, 0),
         (W, 4, 0x24, 1), (W, 4, 0x20, 1), (W, 4, 0x24, 0), (W, 4, 0x20, features_lo),
         (W, 4, 0x70, 0xb), (R, 4, 0x70, 0)]
    for q, r in enumerate(rings):
        a += [(W, 4, 0x30, q), (R, 4, 0x44, 0), (R, 4, 0x34, 0), (W, 4, 0x38, qsize),
              (W, 4, 0x80, r.desc), (W, 4, 0x84, 0), (W, 4, 0x90, r.avail), (W, 4, 0x94, 0),
              (W, 4, 0xa0, r.used), (W, 4, 0xa4, 0), (W, 4, 0x44, 1)]
    a += [(W, 4, 0x70, 0xf), (R, 4, 0x100, 0), (KICK, 4, 0, kick_mask), (R, 4, 0x60, 0), (W, 4, 0x64, 1),
          (ACK, 4, 0, 0), (KICK, 4, 0, 0xffffffff)]
    return a


def mmio_seed(kind, acc, ram):
    b = bytearray([kind, len(acc)])
    for what, size, off, val in acc:
        b += struct.pack("<BBHI", what, size, off, val)
    return (b + ram).rstrip(b"\0")


def virtio_mmio():
    r = Ring(256)
    blk_req(r, 0, 0, [(0x5000, 512)], 0x6000, 0x4000)
    blk_req(r, 1, 2, [(0x5200, 1024)], 0x6001, 0x4010, False, payload=b"w" * 1024)
    blk_req(r, 8, 0, [(0x5600, 20)], 0x6002, 0x4020)
    put("virtio_mmio", "blk-linux-probe", mmio_seed(0, linux_probe([r], 256, 1 << 29 | 1 << 28, 1), r.ram))
    put("virtio_mmio", "blk-ro-linux-probe", mmio_seed(2, linux_probe([r], 256, 1 << 28, 1), r.ram))
    ram, rs = console_rings(6)
    for i in range(4):
        rs[2].chain([(0x10000 + 0x1000 * i, 0x1000, True)])
    rs[3].w(0x9000, struct.pack("<IHH", 0xffffffff, 0, 1))
    rs[3].chain([(0x9000, 8, False)])
    rs[3].w(0x9010, struct.pack("<IHH", 0, 3, 1))
    rs[3].chain([(0x9010, 8, False)])
    rs[3].w(0x9020, struct.pack("<IHH", 0, 6, 1))  # a process opens /dev/vportNp0
    rs[3].chain([(0x9020, 8, False)])
    for i in range(4):
        rs[0].chain([(0xa000 + 0x200 * i, 0x200, True)])
    rs[1].w(0xb000, b"echo hi\n")
    rs[1].chain([(0xb000, 8, False)])
    rs[3].w(rs[3].avail + 2, struct.pack("<H", 1))  # PORT_READY only after PORT_ADD, as Linux
    acc = linux_probe(rs, 64, 1 << 29 | 3, 0xc) + [
        (7, 4, 0, 2 | 3 << 2 | 2 << 4), (KICK, 4, 0, 0xc),      # PORT_READY, PORT_OPEN
        (7, 4, 0, 1 | 300 << 2), (KICK, 4, 0, 0xf),             # host bytes for the guest
        (7, 4, 0, 0 | 80 << 2 | 25 << 16), (KICK, 4, 0, 0xf)]   # a new window size
    put("virtio_mmio", "console-linux-probe", mmio_seed(1, acc, ram))


# ---- kernel images ---------------------------------------------------------
BANNER = (b"Linux version 6.1.0-27-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, "
          b"GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)\n")
EXPORTS = ["jiffies", "kfree", "schedule", "init_task", "memcpy", "msleep", "kmalloc_caches", "queue_work_on",
           "synchronize_rcu", "__platform_driver_register", "platform_device_register_full", "call_rcu",
           "iomem_resource", "printk_ratelimit", "strlen", "vfree", "vmalloc", "mutex_lock", "mutex_unlock",
           "_printk", "mmiotrace_printk"]
KTEXT = 0xffffffff81000000


def kernel_image(fmt, base=KTEXT, size=0x4000, tab=0x1000, strs=0x2800, values=None):
    """An image with the two banners and one export table in layout fmt
    ('prel32ns', 'prel32', 'abs', 'absns'), names sorted, strings in their
    own section. values: name -> virtual address (default: in the text)."""
    img = bytearray(size)
    img[0x100:0x100 + len(BANNER)] = BANNER
    link = b"Linux version 6.1.0-27-amd64 (debian-kernel@lists.debian.org) (gcc-12)\0"
    img[0x300:0x300 + len(link)] = link
    names = sorted(EXPORTS)
    es = {"prel32ns": 12, "prel32": 8, "abs": 16, "absns": 24}[fmt]
    o = strs + 1
    for i, n in enumerate(names):
        nb = n.encode() + b"\0"
        img[o:o + len(nb)] = nb
        e = tab + es * i
        v = (values or {}).get(n, base + 0x40 + 0x10 * i)
        if fmt.startswith("prel32"):
            struct.pack_into("<ii", img, e, v - (base + e), o - (e + 4))
            if fmt == "prel32ns":
                struct.pack_into("<i", img, e + 8, strs - (e + 8))  # the empty namespace string
        else:
            struct.pack_into("<QQ", img, e, v, base + o)
            if fmt == "absns":
                struct.pack_into("<Q", img, e + 16, 0)
        o += len(nb)
    return img


def ksymtab():
    for fmt in ("prel32ns", "prel32", "abs", "absns"):
        put("ksymtab", "debian-6.1-like-" + fmt, b"\0" + kernel_image(fmt))
    put("ksymtab", "kaslr-prel32ns", b"\1" + kernel_image("prel32ns", base=0xffffffffaa000000))


def banner():
    put("banner", "linux-banner-both", struct.pack("<BH", 127, 511) + kernel_image("prel32ns")[:0x400])
    put("banner", "link-copy-only", struct.pack("<BH", 31, 80) + b"xx Linux version 5.10.0-9-cloud-amd64 (gcc) \0")


# guest-physical layout of the kernel seeds (fuzz_kernel, fuzz_pagetable)
PML4, PML4_USER, PDPT, PD, PT, PML5 = 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x7000
KPHYS, KPAGES = 0x8000, 4
IOMEM_OFF = 0x3800  # iomem_resource inside the image's last page


def res(img, off, start, end, name_off, parent, sibling, child):
    va = lambda o: KTEXT + o if o else 0
    struct.pack_into("<QQQQQQQQ", img, off, start, end, va(name_off), 0x200, 0, va(parent), va(sibling), va(child))


def guest_ram(levels=4, pti=False, two_mb=False):
    """Page tables mapping the kernel image at KTEXT (4 KiB pages, or one
    2 MiB page at gpa 0), and in the image: banners, an export table with
    iomem_resource, and a resource tree like /proc/iomem on qemu pc."""
    ram = bytearray(KPHYS + KPAGES * 0x1000)
    img = kernel_image("prel32ns", size=KPAGES * 0x1000, values={"iomem_resource": KTEXT + IOMEM_OFF})
    names = {}
    o = 0x3c00
    for n in (b"PCI mem", b"Reserved", b"System RAM", b"Kernel code", b"PCI Bus 0000:00"):
        names[n] = o
        img[o:o + len(n) + 1] = n + b"\0"
        o += 0x20
    R = IOMEM_OFF
    c = [R + 0x40 * i for i in range(1, 6)]
    res(img, R, 0, (1 << 64) - 1, names[b"PCI mem"], 0, 0, c[0])
    res(img, c[0], 0x0, 0xfff, names[b"Reserved"], R, c[1], 0)
    res(img, c[1], 0x1000, 0x9fbff, names[b"System RAM"], R, c[2], 0)
    res(img, c[2], 0xa0000, 0xbffff, names[b"PCI Bus 0000:00"], R, c[3], 0)
    res(img, c[3], 0x100000, 0x7ffdffff, names[b"System RAM"], R, 0, c[4])
    res(img, c[4], 0x1000000, 0x1e00000, names[b"Kernel code"], c[3], 0, 0)
    ram[KPHYS:KPHYS + len(img)] = img
    q = lambda a, v: struct.pack_into("<Q", ram, a, v)
    i4, i3, i2 = (KTEXT >> 39) & 511, (KTEXT >> 30) & 511, (KTEXT >> 21) & 511
    q(PML4 + 8 * i4, PDPT | 3)
    q(PDPT + 8 * i3, PD | 3)
    if two_mb:
        q(PD + 8 * i2, 0x0 | 0x83)
    else:
        q(PD + 8 * i2, PT | 3)
        for i in range(KPAGES):
            q(PT + 8 * i, (KPHYS + 0x1000 * i) | 0x63)
    if pti:  # the user half maps only an entry page
        q(PML4_USER + 8 * i4, PDPT | 3)
    if levels == 5:
        q(PML5 + 8 * ((KTEXT >> 48) & 511), PML4 | 3)
    return ram


def kernel():
    for name, levels, pti, two_mb in (("4level", 4, False, False), ("4level-pti-user-cr3", 4, True, False),
                                      ("5level", 5, False, False), ("4level-2mb-page", 4, False, True)):
        ram = guest_ram(levels, pti, two_mb)
        cr3 = PML5 if levels == 5 else PML4_USER if pti else PML4
        put("kernel", name, struct.pack("<BIQ", 1 if levels == 5 else 0, cr3, KTEXT + 0x40) + ram)


def pagetable():
    for name, levels, pti in (("4level-ktext", 4, False), ("5level-ktext", 5, False)):
        ram = guest_ram(levels, pti)
        root = (PML5 if levels == 5 else PML4) >> 12
        put("pagetable", name, struct.pack("<BIQQH", (levels == 5) | 3 << 1, root, 0xffffffff80000000,
                                           0xffffffffc0000000, 4096) + ram[:0x8000])
        put("pagetable", name + "-all", struct.pack("<BIQQH", (levels == 5) | 7 << 1, root, 0, 0, 64) + ram[:0x8000])


# ---- the helper protocol (guest-helper/proto.h) -------------------------------
def frame(t, payload=b""):
    return struct.pack("<BBHI", t, 0, 0, len(payload)) + payload


def chunks(stream, sizes):
    """stream cut into pieces of the given sizes (cycled), each as u16 length + bytes"""
    out, i, k = bytearray(), 0, 0
    while i < len(stream):
        n = sizes[k % len(sizes)]
        out += struct.pack("<H", n) + stream[i:i + n]
        i += n
        k += 1
    return out


STDIN, STDIN_EOF, WINSIZE, SIGNAL, DETACH = 1, 2, 3, 4, 5
HELLO, READY, STDOUT, STDERR, EXIT, ERROR, STDIN_ACK = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87


def relay_host():
    hello = frame(HELLO, struct.pack("<HH", 1, 0) + b"vmsh-helper 1")
    session = (hello + frame(STDERR, b"vmsh-helper: warning: /dev/pts not mounted\n") + frame(READY, struct.pack("<I", 321))
               + frame(STDOUT, b"root@guest:/# ") + frame(STDIN_ACK, struct.pack("<I", 6)) + frame(STDOUT, b"x" * 5000)
               + frame(STDERR, b"ls: /nope: No such file or directory\n") + frame(EXIT, struct.pack("<I", 2)))
    put("relay_host", "session-exit", struct.pack("<BIH", 0, 6, 1) + chunks(session, [4096]))
    put("relay_host", "session-exit-bytewise", struct.pack("<BIH", 3, 6, 7) + chunks(session, [1, 3, 8, 100]))
    put("relay_host", "setup-error", struct.pack("<BIH", 0, 0, 2) + chunks(hello + frame(ERROR, b"mount /dev/vdb: Invalid argument"), [64]))
    big = hello + frame(READY, struct.pack("<I", 1)) + frame(STDOUT, b"o" * 65536) + frame(EXIT, struct.pack("<I", 0))
    put("relay_host", "max-frames", struct.pack("<BIH", 1, 0, 3) + chunks(big, [8192]))


def relay_helper():
    host = (frame(WINSIZE, struct.pack("<HH", 24, 80)) + frame(STDIN, b"ls -l /var/lib/vmsh\n") + frame(SIGNAL, struct.pack("<I", 2))
            + frame(STDIN, b"y" * 3000) + frame(STDIN_EOF) + frame(DETACH))
    put("relay_helper", "pipe-session", struct.pack("<BH", 0, 1) + chunks(host, [4096]))
    put("relay_helper", "pty-session-bytewise", struct.pack("<BH", 1, 5) + chunks(host, [1, 7, 30]))
    put("relay_helper", "stdin-window", struct.pack("<BH", 0, 9) + chunks(b"".join(frame(STDIN, b"z" * 20000) for _ in range(3)) + frame(STDIN_EOF), [8192]))



# ---- kallsyms -------------------------------------------------------------
def kallsyms_image(layout, n=300):
    """Tables as scripts/kallsyms.c writes them (see kallsyms.h), token i
    being the character i except 1 = "ir", 2 = "_r", 3 = "sym"; layout
    "5.10" (8-byte markers), "6.1" (seqs before the tokens), "6.12"
    (offsets after the token index). Mapped at 0xffffffff81000000 = _text."""
    base = 0xffffffff81000000
    syms = [("_text", "T", base)] + [("sym_%04d" % i, "Tt"[i % 2], base + 0x40 * i) for i in range(1, n)]
    syms[3] = ("iomem_resource", "D", base + 0xc0)
    def tok(i):
        return {1: b"ir", 2: b"_r", 3: b"sym"}.get(i, bytes([i]) if 0x20 <= i < 0x7f else b"~%02x" % i)
    names, markers = bytearray(), []
    for i, (name, typ, _) in enumerate(syms):
        if i % 256 == 0:
            markers.append(len(names))
        enc = bytes([ord(typ)]) + name.replace("sym", "\x03").encode().replace(b"ir", b"\x01")
        names += bytes([len(enc)]) + enc
    tokens = b"".join(tok(i) + b"\0" for i in range(256))
    index, off = bytearray(), 0
    for i in range(256):
        index += struct.pack("<H", off)
        off += len(tok(i)) + 1
    parts = {
        "offsets": b"".join(struct.pack("<i", -(a - base) - 1) for _, _, a in syms),
        "base": struct.pack("<Q", base),
        "count": struct.pack("<I", len(syms)),
        "names": bytes(names),
        "markers": b"".join(struct.pack("<Q" if layout == "5.10" else "<I", m) for m in markers),
        "seqs": b"".join(struct.pack(">I", i)[1:] for i in range(len(syms))),
        "tokens": tokens,
        "index": bytes(index),
    }
    order = {"5.10": ["offsets", "base", "count", "names", "markers", "tokens", "index"],
             "6.1": ["offsets", "base", "count", "names", "markers", "seqs", "tokens", "index"],
             "6.12": ["count", "names", "markers", "tokens", "index", "offsets", "base", "seqs"]}[layout]
    img = bytearray(0x100)
    for part in order:
        img += b"\0" * (-len(img) % 8)
        img += parts[part]
    return bytes(img)


def kallsyms():
    for layout in ("5.10", "6.1", "6.12"):
        put("kallsyms", "layout-" + layout, b"\0" + kallsyms_image(layout))
    put("kallsyms", "wrong-text", b"\1" + kallsyms_image("6.1"))


TARGETS = {"kallsyms": kallsyms, "relay_host": relay_host, "relay_helper": relay_helper, "kernel": kernel, "pagetable": pagetable, "ksymtab": ksymtab, "banner": banner, "memmap": memmap, "virtqueue": virtqueue, "virtio_console": virtio_console, "virtio_mmio": virtio_mmio}

if __name__ == "__main__":
    for name in sys.argv[1:] or TARGETS:
        TARGETS[name]()
