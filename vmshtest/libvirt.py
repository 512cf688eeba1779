"""A guest started by libvirt (issue 11), for tests that find it by its
domain name. libvirtd runs inside the emulated KVM host: its state
directories become tmpfs overlays there (the host root is read-only), /dev/kvm
gets the group udev would give it, and qemu runs as libvirt's unprivileged
user under libvirt's seccomp sandbox (`-sandbox on,obsolete=deny,
elevateprivileges=deny,spawn=deny,resourcecontrol=deny`) with its cgroups.
Not libvirt's per-domain mount namespace: inside the emulated host (a chroot
of this machine's root over 9p) qemu finds no /dev/kvm in the /dev libvirt
builds for it, so `namespaces = []` (a limit of the test host, measured:
"Could not access KVM kernel module: No such file or directory").

On a machine with hardware KVM the harness does not touch the host's own
libvirt: these tests then say so and fail."""
import re
import time

from vmshtest import harness
from vmshtest.harness import Guest, HarnessError, fetch_kernel, build_initramfs, log, scaled

SETUP = r"""
set -e
for d in /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt; do
	mkdir -p /run/vmsh-lv$d/u /run/vmsh-lv$d/w
	mount -t overlay -o lowerdir=$d,upperdir=/run/vmsh-lv$d/u,workdir=/run/vmsh-lv$d/w overlay $d
done
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup
# the kernel and initrd stay as they are (read-only here): no relabelling
printf 'dynamic_ownership = 0\nremember_owner = 0\nnamespaces = []\n' >> /etc/libvirt/qemu.conf
chgrp kvm /dev/kvm && chmod 0660 /dev/kvm   # what udev does on a normal host
mkdir -p /run/vmsh-libvirt && chmod 0777 /run/vmsh-libvirt
virtlogd -d
libvirtd -d
"""

DOMAIN = """<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='host-passthrough'/>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='unix'>
      <source mode='bind' path='{sock}'/>
      <log file='{log}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""

VIRSH = "virsh -c qemu:///system"


def start_libvirtd(host):
    """Once per emulated host: libvirtd and virtlogd, answering virsh."""
    if getattr(host, "libvirtd", False):
        return
    if host.mode != "emulated":
        raise HarnessError("the libvirt tests start libvirtd inside the emulated KVM host; on a host with "
                           "hardware KVM they would have to use (and change) the machine's own libvirt: not done")
    host.check("cat > /run/vmsh-libvirt-setup.sh", input=SETUP)
    host.check("sh /run/vmsh-libvirt-setup.sh", 120)
    deadline = time.monotonic() + scaled(180)
    while True:  # libvirtd probes qemu's capabilities first
        r = host.exec(f"{VIRSH} version", 60)
        if r.rc == 0:
            break
        if time.monotonic() > deadline:
            raise HarnessError(f"libvirtd does not answer: {r.stderr.strip()}")
        time.sleep(2)
    host.libvirtd = True


class LibvirtGuest(Guest):
    """A transient libvirt domain with the test initramfs; its serial console
    on a unix socket (libvirt's qemu listens without waiting, so the harness
    types a command until the shell answers instead of waiting for the
    boot marker)."""

    @classmethod
    def start(cls, host, name="vmsh-libvirt", kernel="6.1", mem="512M", timeout=180):
        start_libvirtd(host)
        k = fetch_kernel(kernel, "amd64")
        initrd = build_initramfs("guest", k)
        sock = f"/run/vmsh-libvirt/{name}.sock"
        console_log = f"/run/vmsh-libvirt/{name}.console.log"
        xml = DOMAIN.format(name=name, mib=harness._mib(mem), kernel=k.vmlinuz, initrd=initrd, sock=sock,
                            log=console_log)
        host.check(f"cat > /run/vmsh-libvirt/{name}.xml", input=xml)
        t0 = time.monotonic()
        host.check(f"{VIRSH} create /run/vmsh-libvirt/{name}.xml", 180)
        pid = int(host.check(f"cat /run/libvirt/qemu/{name}.pid").strip())
        g = cls(host, name, "pc", k, None, sock, console_log, f"/var/log/libvirt/qemu/{name}.log")
        g.pid = pid
        try:
            host._call("console_open", 30, path=sock, pid=None, timeout=scaled(30))
            deadline = time.monotonic() + scaled(timeout)
            while True:
                try:
                    if g.console("echo up", 20).strip().endswith("up"):
                        break
                except (AssertionError, HarnessError, Exception):
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            g.stop()
            raise
        g.boot_secs = time.monotonic() - t0
        log(f"libvirt domain {name} (qemu pid {pid}, {k.release}) ready in {g.boot_secs:.1f}s")
        return g

    def alive(self):
        if self.stopped:
            return False
        return self.host.exec(f"kill -0 {self.pid}").rc == 0

    def _end(self, wait):
        self.host.exec(f"{VIRSH} destroy {self.name}", 60)

def qemu_confinement(host, pid):
    """What libvirt confines its qemu with, as the kernel shows it."""
    st = host.check(f"cat /proc/{pid}/status")
    return {"uid": int(re.search(r"^Uid:\s+(\d+)", st, re.M).group(1)),
            "seccomp": int(re.search(r"^Seccomp:\s+(\d+)", st, re.M).group(1)),
            "cgroup": host.check(f"cat /proc/{pid}/cgroup").strip(),
            "cmdline": host.check(f"tr '\\0' ' ' < /proc/{pid}/cmdline")}
