"""An ext4 image with tools the busybox test guests lack (fio, dbench and
its load file, dropbear, stress-ng, sqlite3, with every shared library they need), for tests and benchmarks that run them in a
guest: attach it as a disk of the guest's own hypervisor, mount it, chroot.
Built once per content into the test cache (no root needed: mke2fs -d)."""
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
BUSYBOX = "/bin/busybox"  # static: the shell of ssh sessions into the tools chroot
SERIAL = "vmshtools"


def _closure(binary):
    out = subprocess.run(["ldd", binary], check=True, stdout=subprocess.PIPE, text=True).stdout
    libs = re.findall(r"=> (/\S+)", out) + re.findall(r"^\s*(/\S+) \(", out, re.M)
    return sorted(set(libs))


def build():
    files = [BUSYBOX]
    for t in TOOLS:
        if not os.path.exists(t):
            pkg = PACKAGES[os.path.basename(t)]
            subprocess.run(["apt-get", "install", "-y", "-q", pkg], check=True)
        files += [t] + _closure(t)
    files += DATA
    h = hashlib.sha256()
    h.update(b"v3")
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
        for applet in ("sh", "ls", "cat", "echo", "stty"):
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
