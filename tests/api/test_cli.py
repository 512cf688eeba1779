"""vmsh's command line as an operator meets it (issue 15), no KVM needed:
--version, every numeric option checked and named in the error, attach's
promise that its own failures exit 125 (any other status is the command's),
`make install` into a DESTDIR, and the bash completion."""
import json
import os
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VMSH = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
NO_SUCH_PID = "999999999"


def vmsh(*args):
    return subprocess.run([VMSH, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_version_names_the_release_and_the_commit():
    r = vmsh("--version")
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("vmsh 0."), line
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit is in the version
        assert "+g" + head.stdout.strip() in line, (line, head.stdout)


@pytest.mark.parametrize("args,option", [
    (["inspect", "--vm-fd", "x", "1"], "--vm-fd"),
    (["inspect", "--vm-fd", "-1", "1"], "--vm-fd"),
    (["library", "--cycles", "0", "1"], "--cycles"),
    (["library", "--timeout", "10s", "1"], "--timeout"),
    (["serve", "--timeout", "", "1", "/dev/null"], "--timeout"),
    (["serve", "--vm-fd", "99999999999", "1", "/dev/null"], "--vm-fd"),
    (["coredump", "--vm-fd", "3x", "1", "/dev/null"], "--vm-fd"),
])
def test_numeric_options_are_checked_and_named(args, option):
    r = vmsh(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert option in r.stderr and "whole number" in r.stderr, r.stderr


@pytest.mark.parametrize("args,why", [
    ([], "usage"),
    (["--timeout", "abc", "1"], "--timeout"),
    (["--target", "0", "1"], "--target"),
    (["--escape", "xy", "1"], "--escape"),
    (["--frobnicate", "1"], "usage"),
    ([NO_SUCH_PID], "no such process"),
    (["-f", "/nonexistent/image.ext4", "1"], "/nonexistent/image.ext4"),
])
def test_attach_exits_125_for_every_failure_of_its_own(args, why):
    r = vmsh("attach", *args)
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert why in r.stderr.lower() or why in r.stderr, r.stderr


def test_other_commands_keep_their_documented_codes():
    assert vmsh("inspect", NO_SUCH_PID).returncode == 3
    assert vmsh("inspect").returncode == 2


def test_make_install_into_a_destdir(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    binary = dest / "usr" / "bin" / "vmsh"
    completion = dest / "usr" / "share" / "bash-completion" / "completions" / "vmsh"
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == \
        sorted(str(p.relative_to(dest)) for p in (binary, completion))
    assert os.access(binary, os.X_OK)
    sections = subprocess.run(["readelf", "-S", "-W", str(binary)], capture_output=True, text=True).stdout
    assert ".symtab" not in sections and ".debug_info" not in sections, "not stripped"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("vmsh ")


def complete(tmp_path, words, vms):
    """Run the completion for `words` (the last one being completed) with a
    vmsh on PATH whose `list --json` prints vms."""
    fake = tmp_path / "bin" / "vmsh"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = 'list --json' ] && cat <<'EOF'\n"
                    + json.dumps(vms, indent=2) + "\nEOF\n")
    fake.chmod(0o755)
    script = (f"source {REPO}/tools/completion/vmsh.bash; COMP_WORDS=({' '.join(words)}); "
              f"COMP_CWORD={len(words) - 1}; _vmsh; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                       env=dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}"))
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.split("\n") if x)


def test_bash_completion_offers_commands_options_and_running_vms(tmp_path):
    vms = [{"pid": 4242, "uid": 0, "exe": "/usr/bin/qemu-system-x86_64", "name": "web01", "vms": 1},
           {"pid": 4343, "uid": 0, "exe": "/usr/bin/qemu-system-x86_64", "name": None, "vms": 1}]
    assert complete(tmp_path, ["vmsh", "at"], vms) == ["attach"]
    assert complete(tmp_path, ["vmsh", "attach", "--p"], vms) == ["--pipe", "--pty"]
    assert complete(tmp_path, ["vmsh", "attach", "''"], vms) == ["4242", "4343", "web01"]
    assert complete(tmp_path, ["vmsh", "inspect", "w"], vms) == ["web01"]
    assert complete(tmp_path, ["vmsh", "list", "''"], vms) == []
