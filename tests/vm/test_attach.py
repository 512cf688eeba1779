"""`vmsh attach` in real guests (issue 5): commands and a shell inside the
VM with the built-in toolbox as root and the guest's root at /var/lib/vmsh,
in pipe mode and on a pty, leaving no trace."""
import json
import os
import shlex

import pytest

from test_inspect import hypervisor_state
from test_library import assert_guest_clean, warnings

PTY_DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attach_pty.py")


def attach(host, vmsh_bin, guest, *cmd, opts=(), input=None, timeout=300):
    argv = [vmsh_bin, "attach", *opts, str(guest.pid), "--", *cmd]
    return host.exec(" ".join(shlex.quote(a) for a in argv), timeout, input=input)


def guest_traces(guest):
    """What vmsh could leave in the guest: helper files, vmsh devices, mounts."""
    return guest.console("ls -a /dev /run /tmp 2>/dev/null | grep -i vmsh; "
                         "cat /sys/block/vd*/serial 2>/dev/null; cat /sys/class/virtio-ports/*/name 2>/dev/null; "
                         "grep -c . /proc/mounts; true")


def test_commands_see_the_guest_and_exit_codes_pass_through(guest, host, vmsh_bin):
    base = warnings(guest)
    before = hypervisor_state(host, guest.pid)
    traces = guest_traces(guest)
    marker = guest.console("echo vmsh-$$-$RANDOM > /tmp/marker; cat /tmp/marker").strip()
    r = attach(host, vmsh_bin, guest, "sh", "-c", "cat /var/lib/vmsh/tmp/marker; ls /var/lib/vmsh; ps")
    assert r.rc == 0, r.stderr
    assert marker in r.stdout
    assert "init" in r.stdout.split()  # the guest's root: its /init
    assert "physmarker" in r.stdout or "/bin/sh" in r.stdout or "sh" in r.stdout  # guest processes via ps
    for code in (0, 1, 42):
        r = attach(host, vmsh_bin, guest, "sh", "-c", f"echo out; echo err >&2; exit {code}")
        assert r.rc == code, (code, r.stdout, r.stderr)
        assert r.stdout == "out\n" and "err\n" in r.stderr
    r = attach(host, vmsh_bin, guest, "no-such-command-here")
    assert r.rc == 127, (r.stdout, r.stderr)
    assert "not found" in (r.stdout + r.stderr)
    r = attach(host, vmsh_bin, guest, "md5sum", input="hello vmsh\n")
    assert r.rc == 0, r.stderr
    assert r.stdout.split()[0] == host.check("printf 'hello vmsh\\n' | md5sum").split()[0]
    assert guest_traces(guest) == traces
    assert hypervisor_state(host, guest.pid) == before
    assert_guest_clean(guest, base)


def test_pipe_mode_50mb_round_trip_and_tar_into_the_guest(any_guest, host, vmsh_bin):
    guest = any_guest
    script = (f"set -o pipefail; head -c 50M /dev/urandom > /run/vmsh-50m && sha256sum < /run/vmsh-50m && "
              f"{shlex.quote(vmsh_bin)} attach {guest.pid} -- cat < /run/vmsh-50m | sha256sum; "
              f"st=$?; rm -f /run/vmsh-50m; exit $st")
    out = host.check(f"bash -c {shlex.quote(script)}", 900)
    sums = [l.split()[0] for l in out.splitlines() if len(l.split()) >= 1 and len(l.split()[0]) == 64]
    assert len(sums) == 2 and sums[0] == sums[1], out
    host.check("rm -rf /run/vmsh-tar && mkdir -p /run/vmsh-tar/d && echo one > /run/vmsh-tar/d/a && "
               "head -c 100000 /dev/urandom > /run/vmsh-tar/d/b")
    want = host.check("cd /run/vmsh-tar && sha256sum d/a d/b")
    host.check(f"tar c -C /run/vmsh-tar d | {shlex.quote(vmsh_bin)} attach {guest.pid} -- "
               f"tar x -C /var/lib/vmsh/tmp", 300)
    assert guest.console("cd /tmp && sha256sum d/a d/b") == want
    guest.console("rm -rf /tmp/d")


def test_interactive_shell_on_a_pty(any_guest, host, vmsh_bin):
    guest = any_guest
    host.check(f"cat > /run/attach_pty.py", input=open(PTY_DRIVER).read())
    out = host.check(f"python3 /run/attach_pty.py {shlex.quote(vmsh_bin)} {guest.pid}", 600)
    res = json.loads(out.strip().splitlines()[-1])
    assert res["prompt"], res
    assert res["guest_root"], res
    assert res["size"] == "30 100", res
    assert res["resized"] == "40 120", res
    assert res["ctrl_c"], res
    assert res["detached"] and res["exit_status"] == 0, res
    assert res["stty_restored"], res
