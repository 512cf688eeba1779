"""An ext4 image with tools the busybox test guests lack (fio, dbench and
its load file, dropbear, stress-ng, sqlite3, with every shared library they
need; a C toolchain - tcc, make, libc's headers and start files - and a
generated C project in /usr/src/ccbench for the compile workload), for tests
and benchmarks that run them in a guest: attach it as a disk of the guest's
own hypervisor, mount it, chroot. Built once per content into the test cache
(no root needed: mke2fs -d)."""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

CACHE = os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test")
TOOLS = ["/usr/bin/fio", "/usr/bin/dbench", "/usr/sbin/dropbear", "/usr/bin/dropbearkey", "/usr/bin/stress-ng",
         "/usr/bin/sqlite3"]
PACKAGES = {"fio": "fio", "dbench": "dbench", "dropbear": "dropbear-bin", "dropbearkey": "dropbear-bin",
            "stress-ng": "stress-ng", "sqlite3": "sqlite3"}
DATA = ["/usr/share/dbench/client.txt"]  # dbench's default load file
# The compile workload's toolchain, whole packages: tcc (a compiler fast
# enough for a guest inside the emulated host), make, and what linking
# against glibc needs (headers, crt*.o, libc.so's linker script and
# libc_nonshared.a). Static archives other than those are left out.
TOOLCHAIN = ["tcc", "make", "libc6-dev", "linux-libc-dev"]
KEEP_ARCHIVES = ("libc_nonshared.a", "libtcc1.a")
CCBENCH = "/usr/src/ccbench"
CCBENCH_MODULES = 96
BUSYBOX = "/bin/busybox"  # static: the shell of ssh sessions into the tools chroot
SERIAL = "vmshtools"


def _closure(binary):
    out = subprocess.run(["ldd", binary], check=True, stdout=subprocess.PIPE, text=True).stdout
    libs = re.findall(r"=> (/\S+)", out) + re.findall(r"^\s*(/\S+) \(", out, re.M)
    return sorted(set(libs))


def _package_files(pkg):
    """The regular files dpkg lists for PKG, without documentation and
    without static archives other than KEEP_ARCHIVES."""
    r = subprocess.run(["dpkg", "-L", pkg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "install", "-y", "-q", pkg], check=True)
        r = subprocess.run(["dpkg", "-L", pkg], check=True, stdout=subprocess.PIPE, text=True)
    out = []
    for f in r.stdout.splitlines():
        if f.startswith(("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/lintian")):
            continue
        if f.endswith(".a") and not f.endswith(KEEP_ARCHIVES):
            continue
        if os.path.isfile(f) and not os.path.islink(f):
            out.append(f)
    return out


def _toolchain():
    files = []
    for pkg in TOOLCHAIN:
        files += _package_files(pkg)
    for t in ("/usr/bin/tcc", "/usr/bin/make"):
        files += _closure(t)
    # libc.so.6 names the dynamic loader as a needed library; tcc looks for
    # it in the library directories (the closure has it in /lib64 only)
    files.append("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return files


def ccbench_sources(modules=CCBENCH_MODULES):
    """A generated C project: MODULES files of 24 small hashing functions
    each, a header, a main that calls them all and prints one checksum, and
    a Makefile (make -jN CC=tcc builds ./proj). {relative path: text}."""
    src = {}
    for i in range(modules):
        body = ['#include <stdio.h>', '#include <string.h>', '#include "proj.h"']
        for j in range(24):
            body += [f"static unsigned long h{j}(const char *s, unsigned long a)", "{",
                     f"    unsigned long x = a ^ {i * 131 + j}u;",
                     "    while (*s)", "        x = x * 33 + (unsigned char)*s++;",
                     f"    for (int k = 0; k < {j + 3}; k++)", f"        x ^= x >> {j % 13 + 1};",
                     "    return x;", "}"]
        body += [f"unsigned long mod{i}(const char *s)", "{", "    char buf[64];", "    unsigned long x = 0;",
                 f'    snprintf(buf, sizeof buf, "%s-{i}", s);']
        body += [f"    x += h{j}(buf, x);" for j in range(24)]
        body += ["    return x;", "}", ""]
        src[f"m{i:03d}.c"] = "\n".join(body)
    src["proj.h"] = "".join(f"unsigned long mod{i}(const char *s);\n" for i in range(modules))
    src["main.c"] = ('#include <stdio.h>\n#include "proj.h"\nint main(void)\n{\n    unsigned long x = 0;\n' +
                     "".join(f'    x ^= mod{i}("vmsh");\n' for i in range(modules)) +
                     '    printf("%lx\\n", x);\n    return 0;\n}\n')
    objs = " ".join(["main.o"] + [f"m{i:03d}.o" for i in range(modules)])
    src["Makefile"] = (f"CC = tcc\nOBJS = {objs}\nproj: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n"
                       "%.o: %.c proj.h\n\t$(CC) -O2 -c -o $@ $<\nclean:\n\trm -f proj $(OBJS)\n")
    return src


def build():
    files = [BUSYBOX]
    for t in TOOLS:
        if not os.path.exists(t):
            pkg = PACKAGES[os.path.basename(t)]
            subprocess.run(["apt-get", "install", "-y", "-q", pkg], check=True)
        files += [t] + _closure(t)
    files += DATA
    files = sorted(set(files + _toolchain()))
    sources = ccbench_sources()
    h = hashlib.sha256()
    h.update(b"v4")
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode())
    for f in files:
        h.update(f.encode() + b"\0")
        st = os.stat(f)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    out = os.path.join(CACHE, f"tools-{h.hexdigest()[:16]}.ext4")
    if os.path.exists(out):
        return out
    os.makedirs(CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc/dropbear", "bin"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(root, "etc/group"), "w") as f:
            f.write("root:x:0:\n")
        with open(os.path.join(root, "etc/shells"), "w") as f:
            f.write("/bin/sh\n")
        total = 0
        for f in files:
            dst = os.path.join(root, f.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(os.path.realpath(f), dst)
            total += os.path.getsize(dst)
        for name, text in sources.items():
            dst = os.path.join(root, CCBENCH.lstrip("/"), name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "w") as f:
                f.write(text)
            total += len(text)
        for applet in ("sh", "ls", "cat", "echo", "stty", "rm", "cp", "mkdir"):
            os.symlink("busybox", os.path.join(root, "bin", applet))
        size_mb = total * 13 // 10 // (1 << 20) + 16
        part = out + f".{os.getpid()}"
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", SERIAL, "-d", root, part, f"{size_mb}M"],
                       check=True)
        os.replace(part, out)
    return out


def qemu_args(machine, image, ident="tools", serial=SERIAL, readonly=True, cache="none"):
    """qemu arguments for a virtio-blk disk of the guest's own hypervisor."""
    ro = ",readonly=on" if readonly else ""
    dev = "virtio-blk-device" if machine == "microvm" else "virtio-blk-pci"
    return ["-drive", f"id={ident},file={image},if=none,format=raw,cache={cache},aio=threads{ro}",
            "-device", f"{dev},drive={ident},serial={serial}"]


def mount_in_guest(guest, serial=SERIAL, where="/mnt/tools"):
    """Mount the tools disk in the guest with /dev, /proc, /sys bound in;
    returns the chroot prefix for commands."""
    guest.console(
        f"modprobe ext4 2>/dev/null; mkdir -p {where}; "
        f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {serial} ] && dev=${{d##*/}}; done; "
        f"mkdir -p /dev/pts; mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts; "
        f"mount -o ro /dev/$dev {where} && mount --rbind /dev {where}/dev && "
        f"mount -t proc proc {where}/proc && mount -t sysfs sys {where}/sys && mount -t tmpfs tmp {where}/tmp && "
        f"mount -t tmpfs root {where}/root && mount -t tmpfs etc {where}/etc/dropbear", 120)
    return f"chroot {where}"


if __name__ == "__main__":
    print(build())
