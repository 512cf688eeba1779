"""vmsh on an ordinary Debian 12 guest (issue 18): systemd as init, udev,
the kernel's modules on the guest's own virtio disk, booted through Debian's
own initramfs (tools/guest/build-debian-rootfs.sh). The drivers vmsh's
devices need are not loaded when vmsh comes: the guest's own modprobe loads
them. Also: a library whose work is stuck names its step in vmsh's error,
and a later run removes it once the work has finished.

pc-6.1 and microvm-6.12 run in `make check`; the rest of the machine x
kernel matrix is marked `matrix`."""
import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile

import pytest

from vmshtest import harness
from vmshtest.devices import Served, make_disk
from test_library import assert_guest_clean, warnings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# make check boots one Debian guest (2-4 min inside the emulated host); the rest is check-matrix
REPRESENTATIVE = {("pc", "6.1")}
CONFIGS = [pytest.param((m, k), id=f"{m}-{k}", marks=() if (m, k) in REPRESENTATIVE else pytest.mark.matrix)
           for k in harness.KERNELS for m in harness.MACHINES]
# Like the guest in issue 18: 2 vCPUs, 1.5 GiB (python3 in it: the Ansible test manages it).
DEBIAN = dict(rootfs="debian", mem="1536M", smp=2, timeout=900)
# The first attach loads the guest's drivers from its disk through its own
# modprobe: seconds per module inside the emulated host, so more than the
# default 10 s (a timeout would name the step it hit).
SETUP = ("--timeout", "120000")


@pytest.fixture(scope="module", params=CONFIGS)
def debian_guest(request, guest_pool):
    """Module scope: pytest runs all tests of one configuration together, and
    one 1.5 GiB guest at a time fits the emulated host's 3 GiB."""
    machine, kernel = request.param
    g = guest_pool.get(machine, kernel, **DEBIAN)
    yield g
    guest_pool.discard(g)


def vmsh_cmd(vmsh_bin, *args):
    return " ".join(shlex.quote(str(a)) for a in (vmsh_bin, *args))


def hypervisor_fds(host, pid):
    """The hypervisor's fds and tracer (its threads are not compared: qemu's
    I/O thread pool for the guest's own disk comes and goes)."""
    return host.check(f"ls -l /proc/{pid}/fd | awk 'NR>1 {{print $9, $11}}'; grep TracerPid /proc/{pid}/status")


def vmsh_memfds(host, pid):
    """vmsh's memory still mapped in the hypervisor (library, register pages)."""
    return int(host.run(f"grep -c memfd:vmsh /proc/{pid}/maps")[1].strip() or 0)


def test_attach_serve_and_package_scan(debian_guest, host, vmsh_bin):
    g = debian_guest
    base = warnings(g)
    before = hypervisor_fds(host, g.pid)
    release = g.console("uname -r").strip()
    # attach: the guest's root, its modules on its own disk
    r = host.exec(vmsh_cmd(vmsh_bin, "attach", *SETUP, g.pid, "--", "sh", "-c",
                           "grep PRETTY_NAME /var/lib/vmsh/etc/os-release; ls /var/lib/vmsh/lib/modules; "
                           "readlink /var/lib/vmsh/sbin/init; exit 7"), 900)
    assert r.rc == 7, (r.stdout, r.stderr)
    assert "Debian GNU/Linux 12" in r.stdout and release in r.stdout.split(), r.stdout
    assert "systemd" in r.stdout, r.stdout
    # serve: a disk the guest reads back
    disk, digest = make_disk(host, "debian-serve.img", 8)
    with Served(host, vmsh_bin, g, disk, *SETUP) as s:
        assert s.dev, s.text
        out = g.console(f"head -c 8M /dev/{s.dev} | sha256sum", 300)
        assert out.split()[0] == digest
    assert s.status == 0, s.text
    # a package scan of its real dpkg database
    scan = open(os.path.join(ROOT, "tools", "pkgscan.sh")).read()
    r = host.exec(vmsh_cmd(vmsh_bin, "attach", *SETUP, g.pid, "--", "sh", "-c", scan, "pkgscan"), 900,
                  input="systemd CVE-2099-0002 (test advisory)\nno-such-package-xyz\n")
    assert r.rc == 3, (r.stdout[-2000:], r.stderr)
    installed = {tuple(l.split()[1:3]) for l in r.stdout.splitlines() if l.startswith("installed ")}
    want = {tuple(l.split()) for l in g.console("dpkg-query -W -f '${db:Status-Status} ${Package} ${Version}\\n' "
                                                "| awk '$1 == \"installed\" {print $2, $3}'", 120).splitlines()}
    assert installed == want and len(want) > 80, (len(installed), len(want))
    assert [l.split()[1] for l in r.stdout.splitlines() if l.startswith("VULNERABLE ")] == ["systemd"]
    assert hypervisor_fds(host, g.pid) == before
    assert vmsh_memfds(host, g.pid) == 0
    assert_guest_clean(g, base)


def scanner_image(vmsh_bin):
    """The version-aware scanner's image (tools/pkgscan.py on python3 and
    python3-apt from Debian, `vmsh image build --package`), built on this
    host once per scanner version into the test cache (mmdebstrap: ~1 min)."""
    src = open(os.path.join(ROOT, "tools", "pkgscan.py"), "rb").read()
    key = hashlib.sha256(src + b"python3,python3-apt").hexdigest()[:16]
    d = os.path.join(harness.CACHE, "images")
    os.makedirs(d, exist_ok=True)
    img = os.path.join(d, f"pkgscan-{key}.img")
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(img):
            with tempfile.TemporaryDirectory() as t:
                os.makedirs(os.path.join(t, "usr/local/bin"))
                tool = os.path.join(t, "usr/local/bin/vmsh-pkgscan")
                with open(tool, "wb") as f:
                    f.write(src)
                os.chmod(tool, 0o755)
                r = subprocess.run([vmsh_bin, "image", "build", "--package", "python3,python3-apt", "--from-dir", t,
                                    img], capture_output=True, text=True, timeout=1800)
                assert r.returncode == 0, r.stderr[-3000:]
    return img


def test_version_aware_scan_from_a_package_image(debian_guest, host, vmsh_bin):
    """Issue 15: the scanner runs from an image built from Debian packages,
    against the guest's own dpkg database and release, with tracker data
    made from the guest's real versions: bash fixed in a newer version and
    systemd unfixed are found, dpkg fixed in exactly its version and
    coreutils never affected are not; exit status 1."""
    g = debian_guest
    img = scanner_image(vmsh_bin)
    src = dict(l.split() for l in g.console("dpkg-query -W -f '${source:Package} ${source:Version}\\n' "
                                            "bash dpkg coreutils systemd | sort -u", 120).splitlines())
    assert set(src) == {"bash", "dpkg", "coreutils", "systemd"}, src

    def entry(status, fixed=None):
        r = {"status": status, "urgency": "high"}
        if fixed:
            r["fixed_version"] = fixed
        return {"releases": {"bookworm": r}}
    tracker = {"bash": {"CVE-2099-1001": entry("resolved", src["bash"] + "+vmsh1")},
               "systemd": {"CVE-2099-1002": entry("open")},
               "dpkg": {"CVE-2099-1003": entry("resolved", src["dpkg"])},
               "coreutils": {"CVE-2099-1004": entry("resolved", "0")}}
    r = host.exec(vmsh_cmd(vmsh_bin, "attach", *SETUP, "-f", img, g.pid, "--", "vmsh-pkgscan"), 900,
                  input=json.dumps(tracker))
    assert r.rc == 1, (r.stdout[-3000:], r.stderr)
    hits = [l.split() for l in r.stdout.splitlines() if l.startswith("VULNERABLE ")]
    assert {h[3] for h in hits} == {"bash", "systemd"}, r.stdout
    assert ["bash", "CVE-2099-1001", "fixed-in", src["bash"] + "+vmsh1"] in [[h[3], *h[4:7]] for h in hits]
    assert re.search(r"vmsh-pkgscan: \d+ packages installed \(bookworm\)", r.stdout), r.stdout


# ~50 s per Ansible command inside the emulated host (several attaches each,
# python3 in a nested guest): check-matrix, not make check's 30 minutes; the
# plugin itself is in make check (tests/api/test_ansible_plugin.py)
@pytest.mark.matrix
def test_ansible_manages_the_guest_through_vmsh(debian_guest, host, vmsh_bin):
    """Issue 15: Ansible's vmsh connection plugin (tools/ansible) runs tasks
    in a guest that has no network and no agent, from the hypervisor's
    host: ping, copy, fetch, user (the rescue case: a new account with a
    password), package_facts. Each module runs on the guest's own python3,
    its changes land in the guest's own root."""
    g = debian_guest
    d = f"/run/ansible-{g.pid}"
    password = "$6$vmshsalt$" + "x" * 20  # a crypt(3) hash; never checked here
    host.check(f"rm -rf {d} && mkdir -p {d}/tmp && cat > {d}/inventory", input=(
        f"[vms]\nguest ansible_connection=vmsh ansible_host={g.pid} vmsh_bin={vmsh_bin} vmsh_timeout=120000 "
        f"ansible_python_interpreter=/usr/bin/python3\n"))
    env = (f"ANSIBLE_CONNECTION_PLUGINS={ROOT}/tools/ansible/connection_plugins ANSIBLE_PIPELINING=1 "
           f"ANSIBLE_LOCAL_TEMP={d}/tmp ANSIBLE_HOME={d} ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 "
           f"ANSIBLE_STDOUT_CALLBACK=minimal ANSIBLE_LOAD_CALLBACK_PLUGINS=1")

    def ansible(module, args=""):
        r = host.exec(f"cd {d} && {env} ansible all -i inventory -m {module}"
                      + (f" -a {shlex.quote(args)}" if args else ""), 900)
        assert r.rc == 0, (module, r.stdout[-3000:], r.stderr[-3000:])
        m = re.search(r"^guest \| [A-Z!]+ => (\{.*\})\s*$", r.stdout, re.M | re.S)
        assert m, r.stdout[-3000:]
        res = json.loads(m.group(1))
        assert not res.get("failed"), res
        return res

    try:
        assert ansible("ping")["ping"] == "pong"
        assert ansible("copy", "content='from ansible\n' dest=/root/ansible-copy mode=0600")["changed"]
        assert g.console("cat /root/ansible-copy; stat -c %a /root/ansible-copy").split() == \
            ["from", "ansible", "600"]
        ansible("fetch", f"src=/etc/hostname dest={d}/fetched flat=yes")
        assert host.check(f"cat {d}/fetched").strip() == g.console("cat /etc/hostname").strip()
        assert ansible("user", f"name=rescue password={password} shell=/bin/bash")["changed"]
        assert g.console("getent passwd rescue | cut -d: -f7; getent shadow rescue | cut -d: -f2").split() == \
            ["/bin/bash", password]
        facts = ansible("package_facts")["ansible_facts"]["packages"]
        want = g.console("dpkg-query -W -f '${Version}' systemd").strip()
        assert facts["systemd"][0]["version"] == want and len(facts) > 80, len(facts)
    finally:
        g.console("userdel -r rescue 2>/dev/null; rm -f /root/ansible-copy; true")
        host.check(f"rm -rf {d}")


STALL = """#!/bin/sh
# a modprobe that hangs while /run/vmsh-stall exists (test_debian.py)
while [ -e /run/vmsh-stall ]; do sleep 1; done
exec /sbin/modprobe "$@"
"""


def test_stalled_library_names_its_step_and_a_later_run_removes_it(debian_guest, host, vmsh_bin):
    g = debian_guest
    base = warnings(g)
    # the kernel's usermode helper for modules: a modprobe that hangs; the
    # library asks it only for drivers not loaded yet (earlier tests here
    # loaded them): unload the ones nothing uses
    g.console("rmmod virtio_console virtio_mmio 2>/dev/null; true")
    assert g.console("ls /sys/module | grep -c -x -e virtio_console -e virtio_mmio; true").strip() in ("0", ""), \
        g.console("lsmod")
    g.console(f"printf %s {shlex.quote(STALL)} > /root/stall-modprobe && chmod +x /root/stall-modprobe && "
              "touch /run/vmsh-stall && echo /root/stall-modprobe > /proc/sys/kernel/modprobe")
    try:
        disk, _ = make_disk(host, "debian-stall.img", 1, random=False)
        r = host.exec(vmsh_cmd(vmsh_bin, "serve", "--timeout", "8000", g.pid, disk), 300)
        assert r.rc != 0
        assert re.search(r"made no progress for 8000 ms: it is waiting for request_module\(virtio_(mmio|console)\)",
                         r.stderr), r.stderr
        assert "leaving it mapped" in r.stderr, r.stderr
        assert vmsh_memfds(host, g.pid) == 1
        # while it is still stuck, a later run leaves it and says why
        r = host.exec(vmsh_cmd(vmsh_bin, "library", g.pid), 300)
        assert r.rc == 0, (r.stdout, r.stderr)
        assert re.search(r"still at work \(it is waiting for request_module\(virtio_(mmio|console)\)\)", r.stderr), \
            r.stderr
        assert vmsh_memfds(host, g.pid) == 1
    finally:
        g.console("rm -f /run/vmsh-stall; echo /sbin/modprobe > /proc/sys/kernel/modprobe")
    # the stuck work goes on, sees that vmsh gave up, and ends
    g.console("for i in $(seq 600); do dmesg | grep -q 'vmsh gave up' && break; sleep 1; done; "
              "dmesg | grep 'vmsh gave up'", 660)
    r = host.exec(vmsh_cmd(vmsh_bin, "-v", "attach", *SETUP, g.pid, "--", "echo", "after"), 900)
    assert r.rc == 0 and r.stdout == "after\n", (r.stdout, r.stderr)
    assert "removed the kernel library an earlier vmsh run left" in r.stderr, r.stderr
    assert vmsh_memfds(host, g.pid) == 0
    assert_guest_clean(g, base)
