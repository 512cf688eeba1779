"""The Ansible connection plugin (tools/ansible/connection_plugins/vmsh.py)
against a stand-in vmsh that records its command line and runs the command
here: what the plugin asks vmsh for (pipe mode, the guest's root or an
image, the timeout, the VM), that modules run and files go both ways
byte for byte, and that a failure of vmsh itself (125) is a connection
failure, not a task result. Against a real guest: tests/vm/test_debian.py."""
import json
import os
import re
import subprocess

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLUGINS = os.path.join(REPO, "tools", "ansible", "connection_plugins")

FAKE = """#!/bin/sh
# a stand-in for vmsh attach: log the arguments, run what follows --
printf '%s\\n' "$*" >> "$FAKE_LOG"
[ -n "$FAKE_FAIL" ] && { echo "vmsh attach: no such process" >&2; exit 125; }
while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done
shift
exec "$@"
"""


@pytest.fixture
def env(tmp_path):
    if subprocess.run(["sh", "-c", "command -v ansible"], capture_output=True).returncode:
        pytest.fail("ansible-core is missing (tools/install-deps.sh installs it)", pytrace=False)
    fake = tmp_path / "vmsh"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "inventory").write_text(
        f"vm1 ansible_connection=vmsh vmsh_bin={fake} ansible_host=4242 vmsh_timeout=5000 "
        f"ansible_python_interpreter=/usr/bin/python3\n")
    return dict(os.environ, ANSIBLE_CONNECTION_PLUGINS=PLUGINS, ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
                ANSIBLE_HOME=str(tmp_path), ANSIBLE_STDOUT_CALLBACK="minimal", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                ANSIBLE_NOCOLOR="1", FAKE_LOG=str(tmp_path / "log"), ANSIBLE_REMOTE_TMP=str(tmp_path / "rtmp"))


def ansible(tmp_path, env, module, args="", extra=()):
    r = subprocess.run(["ansible", "all", "-i", str(tmp_path / "inventory"), "-m", module,
                        *(["-a", args] if args else []), *extra], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    return r, result(r.stdout, "vm1")


def result(out, host):
    """The host's result from the minimal callback: 'HOST | STATUS => {json}'."""
    m = re.search(rf"^{host} \| [A-Z!]+ => (\{{.*\}})\s*$", out, re.M | re.S)
    return json.loads(m.group(1)) if m else None


@pytest.mark.parametrize("pipelining", ["1", "0"])
def test_modules_run_and_files_travel_through_vmsh_attach(tmp_path, env, pipelining):
    env = dict(env, ANSIBLE_PIPELINING=pipelining)
    r, res = ansible(tmp_path, env, "ping")
    assert r.returncode == 0 and res["ping"] == "pong", (r.stdout, r.stderr)
    data = bytes(range(256)) * 40
    (tmp_path / "src.bin").write_bytes(data)
    r, res = ansible(tmp_path, env, "copy", f"src={tmp_path}/src.bin dest={tmp_path}/dst.bin")
    assert r.returncode == 0 and res["changed"], (r.stdout, r.stderr)
    assert (tmp_path / "dst.bin").read_bytes() == data
    r, res = ansible(tmp_path, env, "fetch", f"src={tmp_path}/dst.bin dest={tmp_path}/back.bin flat=yes")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert (tmp_path / "back.bin").read_bytes() == data
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls and all(c.startswith("-q attach -T --timeout 5000 --guest-root 4242 -- ") for c in calls), calls


def test_image_root_and_vmsh_failure(tmp_path, env):
    inv = tmp_path / "inventory"
    inv.write_text(inv.read_text().strip() + " vmsh_root=image vmsh_image=/srv/tools.img\n")
    r, res = ansible(tmp_path, dict(env, ANSIBLE_PIPELINING="1"), "ping")
    assert r.returncode == 0, r.stdout
    assert (tmp_path / "log").read_text().startswith("-q attach -T --timeout 5000 -f /srv/tools.img 4242 -- ")
    r, res = ansible(tmp_path, dict(env, ANSIBLE_PIPELINING="1", FAKE_FAIL="1"), "ping")
    assert r.returncode != 0 and res.get("unreachable"), r.stdout
    assert "no such process" in res["msg"], res
