#!/usr/bin/env python3
"""build-initramfs.py — initramfs images for the end-to-end test VMs.

usage: build-initramfs.py guest|host KERNEL_DIR [--modules a,b,c] [--extra-modules a,b]

KERNEL_DIR is a directory made by fetch-kernel.sh (vmlinuz, release,
modules/).  Two kinds of image:

  guest  the L2 test guest: busybox, tools/guest/guest-init.sh as /init, the
         physmarker and spinner helpers, and the virtio modules (plus what they depend on)
         so that the guest's /init can modprobe them.
  host   the emulated KVM host (L1): busybox, tools/guest/host-init.sh as
         /init, kvm + kvm-amd and the 9p/virtio modules it needs to mount the
         real host's root.

The image is a gzip'd newc cpio written by this script (no root, no cpio(1)
needed, byte-for-byte reproducible), stored as
$VMSH_TEST_CACHE/initramfs/<kind>-<release>-<hash>.cpio.gz where <hash>
covers every input (scripts, busybox, helper sources, module files, the
module list).  An existing image is reused; its path is printed on stdout.

Module files are stored decompressed (.ko.xz/.ko.zst/.ko.gz -> .ko) with a
modules.dep of their own, so busybox modprobe needs no decompressor.
"""

import argparse
import gzip
import hashlib
import io
import lzma
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test")

# Loaded by the guest's /init (unless overridden on its command line).
GUEST_LOAD = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console", "crc32c_generic"]
# Present in the guest (for modprobe by tests or by vmsh) but not loaded.
GUEST_EXTRA = ["ext4", "overlay", "squashfs", "loop", "virtio_net", "9pnet_virtio", "9p"]
HOST_LOAD = ["virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "kvm_amd"]


def log(msg):
    print(f"build-initramfs: {msg}", file=sys.stderr)


def need(cmd, package):
    """Install a Debian package when a command it provides is missing."""
    if shutil.which(cmd):
        return
    log(f"installing {package} (for {cmd})")
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                   stdout=sys.stderr)


def find_busybox():
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path) and is_static(path):
            return path
    log("installing busybox-static")
    subprocess.run(["apt-get", "install", "-y", "-q", "busybox-static"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                   stdout=sys.stderr)
    return "/bin/busybox"


def is_static(path):
    """True for an ELF64 executable without a PT_INTERP program header."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return False
        phoff = int.from_bytes(hdr[32:40], "little")
        phentsize = int.from_bytes(hdr[54:56], "little")
        phnum = int.from_bytes(hdr[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], "little") != 3  # PT_INTERP
               for i in range(0, len(table), phentsize))


def norm(name):
    return name.replace("-", "_")


def modname(relpath):
    base = os.path.basename(relpath)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            return norm(base[: -len(ext)])
    return norm(base)


def plain_ko(relpath):
    for ext in (".xz", ".zst", ".gz"):
        if relpath.endswith(ext):
            return relpath[: -len(ext)]
    return relpath


class Modules:
    """The modules tree of one kernel: modules.dep and modules.builtin."""

    def __init__(self, moddir):
        self.dir = moddir
        self.deps = {}      # relpath -> [relpath of dependencies]
        self.by_name = {}   # module name -> relpath
        with open(os.path.join(moddir, "modules.dep")) as f:
            for line in f:
                if ":" not in line:
                    continue
                mod, deps = line.split(":", 1)
                self.deps[mod] = deps.split()
                self.by_name[modname(mod)] = mod
        self.builtin = set()
        path = os.path.join(moddir, "modules.builtin")
        if os.path.exists(path):
            with open(path) as f:
                self.builtin = {modname(l.strip()) for l in f if l.strip()}

    def closure(self, names, optional=()):
        """Module files for `names` and everything they depend on, in
        dependency order.  Built-in names are dropped; unknown names are an
        error, except those in `optional` (a custom kernel may lack what
        the guest only keeps at hand).  Returns (relpaths, loadable names)."""
        order, seen, loadable = [], set(), []

        def visit(rel):
            if rel in seen:
                return
            seen.add(rel)
            for dep in self.deps[rel]:
                visit(dep)
            order.append(rel)

        for name in names:
            n = norm(name)
            if n in self.by_name:
                visit(self.by_name[n])
                loadable.append(n)
            elif n not in self.builtin and name not in optional:
                raise SystemExit(f"build-initramfs: no module {name} in {self.dir}")
        return order, loadable

    def read_plain(self, rel):
        with open(os.path.join(self.dir, rel), "rb") as f:
            data = f.read()
        if rel.endswith(".xz"):
            return lzma.decompress(data)
        if rel.endswith(".gz"):
            return gzip.decompress(data)
        if rel.endswith(".zst"):
            need("zstd", "zstd")
            return subprocess.run(["zstd", "-dc"], input=data, check=True,
                                  stdout=subprocess.PIPE).stdout
        return data


class Cpio:
    """A newc cpio archive built in memory, every file owned by root, mtime 0."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % v for v in fields)
        self.out.write(hdr + name_b)
        self.out.write(b"\0" * (-(len(hdr) + len(name_b)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, path):
        path = path.strip("/")
        if not path or path in self.dirs:
            return
        self.dir(os.path.dirname(path))
        self.dirs.add(path)
        self._entry(path, 0o040755, nlink=2)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self._entry(path, 0o120777, target.encode())

    def chardev(self, path, major, minor, mode=0o600):
        path = path.strip("/")
        self.dir(os.path.dirname(path))
        self._entry(path, 0o020000 | mode, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


GUEST_TOOLS = ("physmarker", "spinner")


def build_tool(tmp, name):
    need("musl-gcc", "musl-tools")
    src = os.path.join(HERE, f"{name}.c")
    out = os.path.join(tmp, name)
    subprocess.run(["musl-gcc", "-static", "-O2", "-Wall", "-o", out, src], check=True)
    return read(out)


def build(kind, kernel_dir, load=None, extra=None):
    """Build (or reuse) the initramfs; return its path."""
    kernel_dir = os.path.abspath(kernel_dir)
    release = open(os.path.join(kernel_dir, "release")).read().strip()
    mods = Modules(os.path.join(kernel_dir, "modules"))
    if kind == "guest":
        init = os.path.join(HERE, "guest-init.sh")
        load = GUEST_LOAD if load is None else load
        extra = GUEST_EXTRA if extra is None else extra
    elif kind == "host":
        init = os.path.join(HERE, "host-init.sh")
        load = HOST_LOAD if load is None else load
        extra = [] if extra is None else extra
    else:
        raise SystemExit(f"build-initramfs: unknown kind {kind}")
    files, loadable = mods.closure(list(load) + list(extra), optional=extra)
    loadable = [n for n in loadable if n in {norm(m) for m in load}]
    busybox = find_busybox()

    h = hashlib.sha256()
    for part in (kind, release, " ".join(loadable), " ".join(files)):
        h.update(part.encode() + b"\0")
    inputs = [__file__, init, busybox] + [os.path.join(mods.dir, f) for f in files]
    if kind == "guest":
        inputs += [os.path.join(HERE, f"{t}.c") for t in GUEST_TOOLS]
    for path in inputs:
        h.update(read(path))
    out = os.path.join(CACHE, "initramfs", f"{kind}-{release}-{h.hexdigest()[:16]}.cpio.gz")
    if os.path.exists(out):
        return out

    log(f"building {out}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cpio = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc", "sbin", "usr/bin", "usr/sbin"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", read(busybox), 0o755)
    applets = subprocess.run([busybox, "--list"], check=True, stdout=subprocess.PIPE,
                             text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    # where the kernel looks for it (request_module): /sbin/modprobe
    cpio.symlink("sbin/modprobe", "/bin/busybox")
    cpio.file("init", read(init), 0o755)
    cpio.file("etc/vmsh-modules", ("\n".join(loadable) + "\n").encode())
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")

    moddir = f"lib/modules/{release}"
    dep_lines = []
    for rel in files:
        plain = plain_ko(rel)
        cpio.file(f"{moddir}/{plain}", mods.read_plain(rel))
        dep_lines.append(f"{plain}: " + " ".join(plain_ko(d) for d in mods.deps[rel]))
    cpio.file(f"{moddir}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
    builtin = os.path.join(mods.dir, "modules.builtin")
    if os.path.exists(builtin):
        cpio.file(f"{moddir}/modules.builtin", read(builtin))

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "guest":
            for t in GUEST_TOOLS:
                cpio.file(f"bin/{t}", build_tool(tmp, t), 0o755)
        data = gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
        part = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{os.getpid()}")
        with open(part, "wb") as f:
            f.write(data)
        os.replace(part, out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["guest", "host"])
    ap.add_argument("kernel_dir")
    ap.add_argument("--modules", help="comma-separated modules /init loads (default per kind)")
    ap.add_argument("--extra-modules", help="comma-separated modules included but not loaded")
    args = ap.parse_args()
    split = lambda s: None if s is None else [m for m in s.split(",") if m]
    print(build(args.kind, args.kernel_dir, split(args.modules), split(args.extra_modules)))


if __name__ == "__main__":
    main()
