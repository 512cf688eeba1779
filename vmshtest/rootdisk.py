"""A guest that boots from its own virtio disk like a normal VM (the test
initramfs switches to it: vmsh.root=SERIAL): busybox, a root password
nobody knows, a login prompt on the serial console, and a Debian package
database (this host's own /var/lib/dpkg/status: a Debian 12 system's).
Built once per content into the test cache with mke2fs -d (no root)."""
import hashlib
import os
import secrets
import subprocess
import tempfile

CACHE = os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test")
SERIAL = "rootdisk"
BUSYBOX = "/bin/busybox"
DPKG_STATUS = "/var/lib/dpkg/status"

INITTAB = """::sysinit:/etc/rcS
ttyS0::respawn:/bin/getty -L 0 ttyS0 vt100
::ctrlaltdel:/bin/reboot
"""
RCS = """#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname rescue-me
echo 1 >/proc/sys/kernel/printk
echo "VMSH-GUEST-READY $(uname -r)"
"""


def build():
    h = hashlib.sha256(b"rootdisk-v1")
    for path in (BUSYBOX, DPKG_STATUS, __file__):
        with open(path, "rb") as f:
            h.update(f.read())
    out = os.path.join(CACHE, f"rootdisk-{h.hexdigest()[:16]}.ext4")
    if os.path.exists(out):
        return out
    os.makedirs(CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root", "var/lib/dpkg"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        subprocess.run(["cp", BUSYBOX, os.path.join(root, "bin/busybox")], check=True)
        applets = subprocess.run([BUSYBOX, "--list"], check=True, stdout=subprocess.PIPE, text=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        os.symlink("/bin/busybox", os.path.join(root, "sbin/init"))
        files = {
            "etc/inittab": INITTAB,
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
            "etc/group": "root:x:0:\n",
            # a password nobody knows: hash of 32 random bytes, thrown away
            "etc/shadow": "root:" + subprocess.run([BUSYBOX, "mkpasswd", "-m", "sha512", secrets.token_hex(32)],
                                                    check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
                          + ":19000:0:99999:7:::\n",
            "etc/securetty": "ttyS0\n",
            "etc/profile": "export PS1='rescued:\\w# '\n",
        }
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        os.chmod(os.path.join(root, "etc/shadow"), 0o600)
        with open(os.path.join(root, "etc/rcS"), "w") as f:
            f.write(RCS)
        os.chmod(os.path.join(root, "etc/rcS"), 0o755)
        subprocess.run(["cp", DPKG_STATUS, os.path.join(root, "var/lib/dpkg/status")], check=True)
        part = out + f".{os.getpid()}"
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d", root, part, "64M"],
                       check=True)
        os.replace(part, out)
    return out


if __name__ == "__main__":
    print(build())
