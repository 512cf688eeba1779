"""The Debian package (issue 15): `make deb` builds vmsh_VERSION_amd64.deb
with dpkg-buildpackage from debian/, lintian reports no error, and the
package installs with apt into a fresh Debian 12 - mmdebstrap's `apt`
variant, cached as a tarball and unpacked anew for every run - where vmsh
runs, its man pages and completion are in place, and it removes cleanly.
Needs root (the chroot) and Debian's mirror (apt), as tools/test.sh has."""
import glob
import os
import shlex
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test")
MIRROR = os.environ.get("VMSH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
COMMANDS = ["attach", "coredump", "image", "inspect", "library", "list", "serve"]
APT_OPTS = "-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false -o APT::Sandbox::User=root"


def run(cmd, timeout=900, **kw):
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd}: rc {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def deb():
    assert os.geteuid() == 0, "the package test needs root (dpkg-buildpackage's chroot test, mmdebstrap)"
    for old in glob.glob(os.path.join(REPO, "build", "deb", "vmsh_*")):
        os.unlink(old)
    run(["make", "-s", "deb"], cwd=REPO)
    debs = glob.glob(os.path.join(REPO, "build", "deb", "vmsh_*_amd64.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def fresh_debian(tmp_path):
    """A fresh Debian 12 root (mmdebstrap --variant=apt), unpacked from a
    cached tarball."""
    tar = os.path.join(CACHE, "pkgtest", "bookworm-apt.tar")
    if not os.path.exists(tar):
        os.makedirs(os.path.dirname(tar), exist_ok=True)
        run(["mmdebstrap", "--quiet", "--variant=apt", "--mode=root", "--format=tar", "bookworm", tar + ".part", MIRROR],
            timeout=1200)
        os.rename(tar + ".part", tar)
    root = tmp_path / "root"
    root.mkdir()
    run(["tar", "-xf", tar, "-C", str(root)])
    run(["cp", "/etc/resolv.conf", str(root / "etc" / "resolv.conf")])
    return root


def in_chroot(root, script, timeout=900):
    """script in the chroot, with /proc and /dev, in a mount namespace of its
    own (nothing stays mounted on the host, whatever happens)."""
    inner = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
             f"chroot {root} /bin/sh -ec {shlex.quote(script)}")
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", inner], timeout=timeout)


def test_lintian_finds_no_error(deb):
    r = subprocess.run(["lintian", "--fail-on", "error", deb], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [line for line in r.stdout.splitlines() if line.startswith("E:")], r.stdout


def test_package_fields_and_contents(deb):
    info = run(["dpkg-deb", "-f", deb, "Package", "Architecture", "Depends", "Built-Using"])
    assert "Package: vmsh" in info and "Architecture: amd64" in info
    # the embedded static busybox and musl are declared
    assert "busybox (= " in info and "musl (= " in info, info
    files = run(["dpkg-deb", "-c", deb])
    for f in ["./usr/bin/vmsh", "./usr/share/bash-completion/completions/vmsh",
              "./usr/share/zsh/vendor-completions/_vmsh", "./usr/share/doc/vmsh/copyright",
              "./usr/share/man/man1/vmsh.1.gz"] + [f"./usr/share/man/man1/vmsh-{c}.1.gz" for c in COMMANDS]:
        assert f" {f}\n" in files + "\n", f"{f} missing:\n{files}"


def test_installs_runs_and_removes_cleanly_on_a_fresh_debian_12(deb, tmp_path):
    root = fresh_debian(tmp_path)
    run(["cp", deb, str(root / "tmp" / "vmsh.deb")])
    out = in_chroot(root, f"""
        export DEBIAN_FRONTEND=noninteractive
        apt-get {APT_OPTS} -q update >/dev/null
        apt-get {APT_OPTS} -q install -y --no-install-recommends /tmp/vmsh.deb >/dev/null
        vmsh --version
        vmsh list >/dev/null && echo list-rc=0
        vmsh attach 2>/dev/null || echo usage-rc=$?
        ls /usr/share/man/man1/ | grep -c '^vmsh'
        zcat /usr/share/man/man1/vmsh-attach.1.gz | grep -c 'Ctrl-]'
        test -f /usr/share/bash-completion/completions/vmsh && echo completion
        apt-get {APT_OPTS} -q remove -y vmsh >/dev/null
        test ! -e /usr/bin/vmsh && echo removed
        dpkg -s vmsh 2>&1 | grep -q 'not installed\\|deinstall' && echo gone
    """)
    lines = out.split()
    assert lines[0] == "vmsh" and lines[1].startswith("0.") and "+g" not in lines[1], out  # a release version
    assert "list-rc=0" in lines and "usage-rc=125" in lines, out
    assert str(1 + len(COMMANDS)) in lines, out        # the man pages
    assert "completion" in lines and "removed" in lines and "gone" in lines, out
