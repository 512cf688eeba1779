"""tools/pkgscan.py, the version-aware package scanner (issue 15), on a
made-up guest root: Debian version ordering (epochs, '~', revisions), open
and resolved issues, never-affected releases, source packages with their
own versions, packages not installed, hostile text, exit statuses. The
scanner in a real guest, from an image built with --package: test_debian.py."""
import json
import os
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCAN = os.path.join(REPO, "tools", "pkgscan.py")


def pkg(name, version, status="install ok installed", source=None):
    lines = [f"Package: {name}", f"Status: {status}", "Architecture: amd64", f"Version: {version}"]
    if source:
        lines.insert(2, f"Source: {source}")
    return "\n".join(lines) + "\n"


def guest(tmp_path, packages, codename="bookworm"):
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var/lib/dpkg/status").write_text("\n".join(packages))
    (root / "etc/os-release").write_text(f'PRETTY_NAME="Debian"\nVERSION_CODENAME={codename}\n')
    return root


def issue(status, fixed=None, release="bookworm", urgency="medium"):
    r = {"status": status, "urgency": urgency, "repositories": {release: "x"}}
    if fixed is not None:
        r["fixed_version"] = fixed
    return {"description": "d", "scope": "local", "releases": {release: r}}


def scan(root, tracker, *args):
    return subprocess.run(["python3", SCAN, "--root", str(root), *args], input=json.dumps(tracker),
                          capture_output=True, text=True, timeout=60)


def vulnerable(r):
    return sorted(tuple(l.split()[1:6]) for l in r.stdout.splitlines() if l.startswith("VULNERABLE"))


def test_debian_version_ordering_decides(tmp_path):
    root = guest(tmp_path, [
        pkg("epoch", "1:1.0-1"),            # epoch 1 beats an epoch-less 2.0
        pkg("tilde", "2.0~rc1-1"),          # ~ sorts before the release
        pkg("same", "3.1-2"),               # exactly the fixed version
        pkg("older", "3.1-2"),              # an older revision than the fix
        pkg("newer", "3.10-1"),             # 3.10 > 3.9: numeric, not lexical
    ])
    tracker = {
        "epoch": {"CVE-2026-0001": issue("resolved", "2.0-1")},
        "tilde": {"CVE-2026-0002": issue("resolved", "2.0-1")},
        "same": {"CVE-2026-0003": issue("resolved", "3.1-2")},
        "older": {"CVE-2026-0004": issue("resolved", "3.1-3")},
        "newer": {"CVE-2026-0005": issue("resolved", "3.9-1")},
    }
    r = scan(root, tracker)
    assert r.returncode == 1, r.stderr
    assert vulnerable(r) == [("older", "3.1-2", "older", "CVE-2026-0004", "fixed-in"),
                             ("tilde", "2.0~rc1-1", "tilde", "CVE-2026-0002", "fixed-in")]


def test_open_unaffected_other_release_and_not_installed(tmp_path):
    root = guest(tmp_path, [pkg("openssl", "3.0.15-1"), pkg("zlib1g", "1:1.2.13", source="zlib"),
                            pkg("gone", "1.0", status="deinstall ok config-files")])
    tracker = {
        "openssl": {"CVE-2026-0010": issue("open"),                          # no fix yet: vulnerable
                    "CVE-2026-0011": issue("resolved", "0"),                 # release never affected
                    "CVE-2026-0012": issue("resolved", "9.9", "trixie")},    # another release's entry
        "zlib": {"CVE-2026-0013": issue("resolved", "1:1.2.13.dfsg-2")},   # binary zlib1g, source zlib
        "gone": {"CVE-2026-0014": issue("open")},                           # removed, config files only
    }
    r = scan(root, tracker)
    assert r.returncode == 1, r.stderr
    assert vulnerable(r) == [("openssl", "3.0.15-1", "openssl", "CVE-2026-0010", "unfixed"),
                             ("zlib1g", "1:1.2.13", "zlib", "CVE-2026-0013", "fixed-in")]
    assert "2 packages installed (bookworm), 2 vulnerable, 2 issues" in r.stdout


def test_source_version_of_a_binnmu_is_compared(tmp_path):
    """A binNMU (1.2-1+b1) is built from source 1.2-1: the tracker's fixed
    versions are source versions."""
    root = guest(tmp_path, [pkg("libfoo1", "1.2-1+b1", source="foo (1.2-1)")])
    assert scan(root, {"foo": {"CVE-2026-0020": issue("resolved", "1.2-1")}}).returncode == 0
    r = scan(root, {"foo": {"CVE-2026-0020": issue("resolved", "1.2-2")}})
    assert vulnerable(r) == [("libfoo1", "1.2-1+b1", "foo", "CVE-2026-0020", "fixed-in")]


def test_clean_guest_exits_0_and_release_can_be_given(tmp_path):
    root = guest(tmp_path, [pkg("bash", "5.2.15-2+b7", source="bash")], codename="")
    tracker = {"bash": {"CVE-2026-0030": issue("resolved", "5.2.15-2", "bookworm")}}
    r = scan(root, tracker)
    assert r.returncode == 2 and "give --release" in r.stderr
    r = scan(root, tracker, "--release", "bookworm")
    assert r.returncode == 0, r.stderr
    assert "1 packages installed (bookworm), 0 vulnerable, 0 issues" in r.stdout


def test_hostile_text_is_escaped_and_bad_input_is_an_error(tmp_path):
    root = guest(tmp_path, [pkg("evil\x1b]2;owned\x07", "1.0")])
    r = scan(root, {"evil\x1b]2;owned\x07": {"CVE\x1b[31m": issue("open")}})
    assert r.returncode == 1
    assert "\x1b" not in r.stdout and "\\x1b" in r.stdout
    r = subprocess.run(["python3", SCAN, "--root", str(root)], input="[1, 2", capture_output=True, text=True)
    assert r.returncode == 2 and "vmsh-pkgscan:" in r.stderr
    r = scan(tmp_path / "nothing-here", {}, "--release", "bookworm")
    assert r.returncode == 2 and "status" in r.stderr


@pytest.mark.parametrize("apt_pkg", [True, False])
def test_both_version_comparators_agree(tmp_path, apt_pkg):
    """python3-apt's comparator, or dpkg --compare-versions without it."""
    root = guest(tmp_path, [pkg("a", "1.0~beta1"), pkg("b", "2:0.1"), pkg("c", "1.0+really0.9")])
    tracker = {"a": {"CVE-1": issue("resolved", "1.0")}, "b": {"CVE-2": issue("resolved", "1:9.9")},
               "c": {"CVE-3": issue("resolved", "1.0")}}
    env = dict(os.environ)
    if not apt_pkg:
        blocker = tmp_path / "noapt"
        blocker.mkdir()
        (blocker / "apt_pkg.py").write_text("raise ImportError('hidden for the test')\n")
        env["PYTHONPATH"] = str(blocker)
    r = subprocess.run(["python3", SCAN, "--root", str(root)], input=json.dumps(tracker), capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1, r.stderr
    assert [v[0] for v in vulnerable(r)] == ["a"]
