"""Helpers for tests and benchmarks of vmsh's devices: `vmsh serve` run on
the KVM host, the guest-side names of its devices, and scratch files on a
tmpfs of the KVM host."""
import os
import re
import shlex
import signal
import time

from . import harness

SCRATCH = "/run/vmsh-e2e"

CONSOLE_CLIENT = r'''
import hashlib, socket, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(200):
    try:
        s.connect(sys.argv[1]); break
    except OSError:
        time.sleep(0.05)
if sys.argv[2] == "send":
    data = open(sys.argv[3], "rb").read()
    print("connected", flush=True)
    s.sendall(data)
    print("sent", len(data), hashlib.sha256(data).hexdigest(), flush=True)
    time.sleep(600)
else:
    n, h, got = int(sys.argv[3]), hashlib.sha256(), 0
    print("connected", flush=True)
    while got < n:
        b = s.recv(min(65536, n - got))
        if not b:
            break
        h.update(b)
        got += len(b)
    print("recv", got, h.hexdigest(), flush=True)
'''


def scratch(host):
    host.check(f"mkdir -p {SCRATCH}")
    return SCRATCH


def make_disk(host, name, size_mb, random=True):
    """A disk image on the KVM host's tmpfs; returns (path, sha256)."""
    path = f"{scratch(host)}/{name}"
    src = "/dev/urandom" if random else "/dev/zero"
    out = host.check(f"head -c {size_mb}M {src} > {path} && sha256sum {path}", 120)
    return path, out.split()[0]


def wait_for(host, path, pattern, timeout, what):
    deadline = time.monotonic() + harness.scaled(timeout)
    text = ""
    while time.monotonic() < deadline:
        try:
            text = host.read_file(path).decode(errors="replace")
        except Exception:
            text = ""
        if re.search(pattern, text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"{what}: {pattern!r} not seen within {timeout}s:\n{text}")


class Served:
    """`vmsh serve` of a disk (and a console port on a unix socket) to a
    guest (by its hypervisor's PID, or `target`: a name), from start to
    SIGTERM."""

    def __init__(self, host, vmsh_bin, guest, disk, *args, ident=None, target=None):
        self.host, self.guest = host, guest
        self.id = ident or f"t{os.getpid() % 100000}x{int(time.monotonic() * 1000) % 100000}"
        self.sock = f"{scratch(host)}/{self.id}.sock"
        self.log = os.path.join(host.logdir, f"serve-{self.id}.log")
        argv = [vmsh_bin, "-v", "serve", "--id", self.id, "--console-socket", self.sock, *args,
                target or str(guest.pid), disk]
        self.pid = host.spawn(argv, self.log)
        self.status = None
        try:
            self.text = wait_for(host, self.log, r"vmsh serve: ready|error|failed", 120, "vmsh serve")
        except AssertionError:
            self.stop()
            raise
        if "ready" not in self.text:
            self.stop()
            raise AssertionError(f"vmsh serve failed:\n{self.text}")
        self.dev = guest.console(
            f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {self.id} ] && echo ${{d##*/}}; done"
        ).strip()
        self.port = guest.console(
            f"for p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name 2>/dev/null)\" = {self.id} ] && echo ${{p##*/}}; "
            f"done; true"  # none at all with --no-console
        ).strip()

    def stop(self, sig=signal.SIGTERM):
        if self.status is None:
            self.status = self.host.kill(self.pid, sig, 60)
            self.text = self.host.read_file(self.log).decode(errors="replace")
        return self.status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def tracer_pid(host, pid):
    out = host.check(f"grep TracerPid /proc/{pid}/status")
    return int(out.split()[1])


def served_disk_round_trip(host, vmsh_bin, guest, name):
    """A 16 MiB disk served by `vmsh serve`: the guest reads it back by
    checksum, writes 4 MiB at 8 MiB with fsync, and the host file holds
    exactly those bytes; then the file goes."""
    disk, digest = make_disk(host, name, 16)
    with Served(host, vmsh_bin, guest, disk) as s:
        assert s.dev, guest.console("ls /sys/block")
        assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
        wrote = guest.console(f"dd if=/dev/urandom of=/tmp/w bs=1M count=4 2>/dev/null && dd if=/tmp/w "
                              f"of=/dev/{s.dev} bs=1M seek=8 conv=fsync 2>/dev/null; sha256sum /tmp/w; rm /tmp/w",
                              300).split()[0]
    assert s.status == 0, s.text
    got = host.check(f"dd if={disk} bs=1M skip=8 count=4 2>/dev/null | sha256sum").split()[0]
    assert got == wrote
    host.check(f"rm -f {disk}")
