"""A guest started by libvirt (issue 11): libvirtd in the emulated KVM host
starts a transient domain (qemu `pc`, Debian 6.1, the test initramfs) as
its unprivileged user, under its seccomp sandbox and cgroups (not its mount
namespace: see vmshtest/libvirt.py). vmsh finds it by its domain name:
`vmsh list` names it, `vmsh attach NAME` runs a command in it (marker,
guest root, exit status), a disk served by name reads back by checksum,
and qemu's fds, threads, tracer and seccomp filter are as before."""
import pytest

from vmshtest.devices import Served, make_disk
from vmshtest.libvirt import LibvirtGuest, qemu_confinement
from test_attach import guest_traces
from test_inspect import hypervisor_state
from test_library import assert_guest_clean, warnings

NAME = "vmsh-libvirt-dom"


@pytest.fixture(scope="module")
def domain(host):
    g = LibvirtGuest.start(host, name=NAME)
    yield g
    g.stop()


@pytest.mark.matrix
def test_attach_to_a_libvirt_domain_by_name(domain, host, vmsh_bin):
    guest = domain
    conf = qemu_confinement(host, guest.pid)
    # libvirt's confinement is in place: an unprivileged qemu, its seccomp filter
    assert conf["uid"] != 0 and conf["seccomp"] == 2, conf
    assert "-sandbox on" in conf["cmdline"] and f"guest={NAME}" in conf["cmdline"], conf["cmdline"]
    base = warnings(guest)
    before = hypervisor_state(host, guest.pid)
    traces = guest_traces(guest)

    r = host.exec(f"{vmsh_bin} list", 120)
    assert r.rc == 0 and any(str(guest.pid) in l and NAME in l for l in r.stdout.splitlines()), r.stdout

    marker = guest.console("echo vmsh-$$-$RANDOM > /tmp/marker; cat /tmp/marker").strip()
    r = host.exec(f"{vmsh_bin} attach {NAME} -- sh -c 'cat /var/lib/vmsh/tmp/marker; ls /var/lib/vmsh; exit 7'", 300)
    assert r.rc == 7, r.stderr
    assert marker in r.stdout and "init" in r.stdout.split(), r.stdout

    disk, digest = make_disk(host, "libvirt.img", 16)
    with Served(host, vmsh_bin, guest, disk, target=NAME) as s:
        assert s.dev, guest.console("ls /sys/block")
        assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
    assert s.status == 0, s.text
    host.check(f"rm -f {disk}")

    assert guest_traces(guest) == traces
    assert hypervisor_state(host, guest.pid) == before
    assert qemu_confinement(host, guest.pid) == conf
    assert_guest_clean(guest, base)
