# SPDX-License-Identifier: GPL-2.0-or-later
# (or-later, unlike the rest of vmsh: Ansible, which loads this file, is GPL-3.0+)
"""Ansible connection plugin: tasks run inside KVM virtual machines on the
controller's host through `vmsh attach`, with no network, no agent and no
ssh in the VM.

Every Ansible operation is one `vmsh attach` in pipe mode (-T):
exec_command runs `/bin/sh -c CMD` (stdin passed through), put_file is a
`cat >` of the file's bytes, fetch_file a `cat` of it. The target is the
guest's own root (vmsh attach --guest-root: its python3, its /etc; what a
task writes stays in the guest), or with vmsh_root=image the tools image
(-f vmsh_image), where what a task writes is gone at the end of each
attach: use it with pipelining, for commands and modules that only read
the guest (under /var/lib/vmsh).
"""
from __future__ import annotations

DOCUMENTATION = """
    name: vmsh
    short_description: run tasks inside local KVM VMs through vmsh attach
    description:
        - Runs commands and transfers files inside a KVM virtual machine of this host with
          C(vmsh attach), as root in the guest, without network or agent in the VM.
        - ansible_host (or the inventory name) is the VM's name or its hypervisor's PID
          (C(vmsh list)).
    author: vmsh
    extends_documentation_fragment:
        - connection_pipelining
    options:
      vm:
        description: the VM, by name or hypervisor PID
        default: inventory_hostname
        vars:
          - name: inventory_hostname
          - name: ansible_host
          - name: vmsh_vm
      vmsh_bin:
        description: the vmsh executable
        default: vmsh
        vars:
          - name: vmsh_bin
        env:
          - name: VMSH_BIN
      root:
        description: C(guest) (the guest's own root, the default) or C(image) (the tools image)
        default: guest
        choices: [guest, image]
        vars:
          - name: vmsh_root
      image:
        description: the tools image with C(root=image) (default vmsh's built-in toolbox)
        vars:
          - name: vmsh_image
      timeout:
        description: vmsh's --timeout in milliseconds (each step waiting on the guest)
        default: 60000
        type: int
        vars:
          - name: vmsh_timeout
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

VMSH_FAILED = 125  # vmsh attach's own failures; any other status is the command's


class Connection(ConnectionBase):
    """One `vmsh attach` per operation."""

    transport = "vmsh"
    has_pipelining = True
    # there is no login shell or tty in between: the command is the command
    has_tty = False

    def _connect(self):
        if not self._connected:
            display.vvv(f"VMSH CONNECTION TO {self._vm()}", host=self._vm())
            self._connected = True
        return self

    def _vm(self):
        vm = self.get_option("vm")
        return str(vm if vm else self._play_context.remote_addr)

    def _attach(self, argv, stdin=None):
        cmd = [self.get_option("vmsh_bin"), "-q", "attach", "-T", "--timeout", str(self.get_option("timeout"))]
        if self.get_option("root") == "guest":
            cmd.append("--guest-root")
        elif self.get_option("image"):
            cmd += ["-f", self.get_option("image")]
        cmd += [self._vm(), "--", *argv]
        display.vvvv(f"VMSH {shlex.join(cmd)}", host=self._vm())
        try:
            p = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True)
        except OSError as e:
            raise AnsibleConnectionFailure(f"cannot run vmsh: {to_native(e)}")
        if p.returncode == VMSH_FAILED:
            # vmsh itself failed (no such VM, no kernel found, ...): not a task result
            raise AnsibleConnectionFailure(f"vmsh attach {self._vm()} failed: {to_native(p.stderr).strip()}")
        return p

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {to_text(cmd)}", host=self._vm())
        p = self._attach(["/bin/sh", "-c", to_text(cmd)], in_data)
        return p.returncode, p.stdout, p.stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._vm())
        if not os.path.exists(to_bytes(in_path)):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(to_bytes(in_path), "rb") as f:
            data = f.read()
        p = self._attach(["/bin/sh", "-c", 'cat > "$1"', "put_file", to_text(out_path)], data)
        if p.returncode != 0:
            raise AnsibleError(f"failed to transfer file to {out_path}: {to_native(p.stderr).strip()}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._vm())
        p = self._attach(["/bin/cat", "--", to_text(in_path)])
        if p.returncode != 0:
            raise AnsibleError(f"failed to fetch file {in_path}: {to_native(p.stderr).strip()}")
        with open(to_bytes(out_path), "wb") as f:
            f.write(p.stdout)

    def close(self):
        self._connected = False
