"""The use cases of issue 5 on a guest that boots from its own virtio disk
like a normal VM (vmshtest/rootdisk.py): rescue (a root password nobody
knows is changed through vmsh while the guest runs, then a login on its
serial console works) and a package scan of its Debian package database,
run from vmsh's overlay against a vulnerability list on the host."""
import os
import shlex
import time

import pytest

from vmshtest import harness
from vmshtest import rootdisk
from vmshtest.devices import scratch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def rescue_guest(guest_factory, host):
    img = rootdisk.build()
    disk = f"{scratch(host)}/rescue-root.img"
    host.check(f"cp {img} {disk}", 120)
    g = guest_factory(machine="pc", kernel="6.1", name="vmsh-rescue", append=f"vmsh.root={rootdisk.SERIAL}",
                      prompt=r"login: ",
                      extra_qemu_args=["-drive", f"id=root,file={disk},if=none,format=raw",
                                       "-device", f"virtio-blk-pci,drive=root,serial={rootdisk.SERIAL}"])
    return g


def console_end(g):
    return g.host._call("console_output", 30, path=g.sock)["end"]


def send(g, text):
    g.host._call("console_send", 30, path=g.sock, data=text)


def wait(g, pattern, start, timeout=60):
    return g.host._call("console_wait", timeout + 10, path=g.sock, pattern=pattern, start=start,
                        timeout=harness.scaled(timeout))


def login(g, password):
    """Log in as root on the serial console; True if a shell answered."""
    start = console_end(g)
    send(g, "\n")
    m = wait(g, r"login: ", start)
    send(g, "root\n")
    m = wait(g, r"Password: ", m["end"])
    time.sleep(0.5)
    send(g, password + "\n")
    m = wait(g, r"(rescued:\S*# |Login incorrect)", m["end"], 90)
    if "incorrect" in m["match"]:
        return False
    send(g, "echo LOGGED-IN-$((6*7)); exit\n")
    wait(g, r"LOGGED-IN-42", m["end"])
    return True


def test_rescue_a_forgotten_root_password(rescue_guest, host, vmsh_bin):
    g = rescue_guest
    assert not login(g, "guessing-does-not-work")
    new = "vmsh-rescued-1"
    script = ('h=$(mkpasswd -m sha512 "$1") && '
              'sed -i "s|^root:[^:]*:|root:$h:|" /var/lib/vmsh/etc/shadow && sync && grep -c "^root:" '
              '/var/lib/vmsh/etc/shadow')
    r = host.exec(f"{shlex.quote(vmsh_bin)} attach {g.pid} -- sh -c {shlex.quote(script)} rescue {new}", 300)
    assert r.rc == 0 and r.stdout.strip() == "1", (r.stdout, r.stderr)
    assert login(g, new)


def test_package_scan_of_the_guests_dpkg_database(rescue_guest, host, vmsh_bin):
    g = rescue_guest
    vulns = "libc6 CVE-2099-0001 (test advisory)\n# a comment\nbash\nno-such-package-xyz\n"
    scan = open(os.path.join(ROOT, "tools", "pkgscan.sh")).read()
    r = host.exec(f"{shlex.quote(vmsh_bin)} attach {g.pid} -- sh -c {shlex.quote(scan)} pkgscan", 300,
                  input=vulns)
    assert r.rc == 3, (r.stdout[-2000:], r.stderr)  # 3: something matched
    installed = {tuple(l.split()[1:3]) for l in r.stdout.splitlines() if l.startswith("installed ")}
    # the guest's database is a copy of this host's (a Debian 12 system)
    want = set()
    for line in open(rootdisk.DPKG_STATUS).read().split("\n\n"):
        f = dict(x.split(": ", 1) for x in line.splitlines() if ": " in x and not x.startswith(" "))
        if f.get("Status", "").endswith(" installed"):
            want.add((f["Package"], f["Version"]))
    assert installed == want
    flagged = [l for l in r.stdout.splitlines() if l.startswith("VULNERABLE ")]
    names = sorted(l.split()[1] for l in flagged)
    assert names == ["bash", "libc6"], flagged
    assert any("CVE-2099-0001" in l for l in flagged)
