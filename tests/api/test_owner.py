"""Whose VM is it? /dev/kvm may be open to every user, so any user can run a
process that holds a KVM VM and give it any name. Root running vmsh must see
the owner, and a VM NAME must not lead root into another user's process: a
name that resolves to a process of a non-root user other than the caller is
refused (give its PID to act on it)."""
import json
import uuid

import pytest

from test_inspect_api import EXIT_NOKERNEL, EXIT_NOPROC, vmsh
from testvmm import TestVMM

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm

NOBODY = 65534


def start_as_nobody(testvmm_binary, name):
    # uid 65534 with just enough (DAC override) to open root's 0600 /dev/kvm
    return TestVMM(["--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                    "--inh-caps", "+dac_override", "--ambient-caps", "+dac_override",
                    str(testvmm_binary), "--name", name], binary="/usr/bin/setpriv")


def test_list_shows_the_owner(testvmm_binary):
    name = f"vmsh-owner-{uuid.uuid4().hex[:8]}"
    vmm = start_as_nobody(testvmm_binary, name)
    try:
        r = vmsh("list")
        line = [l for l in r.stdout.splitlines() if name in l][0]
        header = r.stdout.splitlines()[0].split()
        assert "UID" in header, r.stdout
        assert line.split()[header.index("UID")] == str(NOBODY), r.stdout
        j = [v for v in json.loads(vmsh("list", "--json").stdout)["processes"] if v["pid"] == vmm.pid][0]
        assert j["uid"] == NOBODY
    finally:
        vmm.stop()


def test_name_of_another_users_vm_needs_its_pid(testvmm_binary):
    name = f"vmsh-owner-{uuid.uuid4().hex[:8]}"
    vmm = start_as_nobody(testvmm_binary, name)
    try:
        r = vmsh("inspect", "--json", name)
        assert r.returncode == EXIT_NOPROC, (r.returncode, r.stdout, r.stderr)
        assert f"uid {NOBODY}" in r.stderr and "PID" in r.stderr, r.stderr
        # by PID it works (the caller said which process; testvmm runs no kernel)
        r = vmsh("inspect", "--json", str(vmm.pid))
        assert r.returncode == EXIT_NOKERNEL, r.stderr
        assert json.loads(r.stdout)["pid"] == vmm.pid
    finally:
        vmm.stop()
