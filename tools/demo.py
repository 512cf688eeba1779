#!/usr/bin/env python3
"""Boot a demo VM, show what `vmsh list` and `vmsh inspect` see, load vmsh's
kernel library into it once (`vmsh library`), and run commands inside it
with `vmsh attach` (an interactive shell too, on hardware KVM in a terminal).

usage: python3 -m tools.demo (or tools/demo.sh) [--machine pc|q35|microvm] [--kernel 6.1|6.12] [--json]

Uses the test harness (vmshtest/harness.py): the guest is qemu running a
Debian kernel, directly on /dev/kvm when it is hardware KVM, otherwise inside
an emulated KVM host. The guest is stopped when the demo ends."""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vmshtest import harness


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machine", default="pc", choices=harness.MACHINES)
    ap.add_argument("--kernel", default="6.1", choices=harness.KERNELS)
    ap.add_argument("--json", action="store_true", help="inspect --json")
    ap.add_argument("--no-shell", action="store_true", help="no interactive shell at the end (hardware KVM only)")
    a = ap.parse_args()
    vmsh = os.environ.get("VMSH_BIN", os.path.join(REPO, "build", "vmsh"))
    host = harness.make_host()
    try:
        g = harness.Guest.start(host, a.machine, a.kernel, name="vmsh-demo")
        print(f"\n== demo VM 'vmsh-demo' ({a.machine}, Linux {g.console('uname -r').strip()}) "
              f"runs as qemu PID {g.pid} on the {host.mode} KVM host\n")
        for cmd in (f"{vmsh} list",
                    f"{vmsh} inspect {'--json ' if a.json else ''}-s jiffies -s _printk -s iomem_resource vmsh-demo",
                    f"{vmsh} library vmsh-demo",
                    f"{vmsh} attach vmsh-demo -- sh -c 'cat /etc/motd; uname -a; ls /var/lib/vmsh; ps | head -5'",
                    f"echo hello from the host | {vmsh} attach vmsh-demo -- sh -c 'cat; sha256sum /var/lib/vmsh/init'",
                    f"{vmsh} attach vmsh-demo -- sh -c 'exit 42'; echo \"exit status $?\""):
            print(f"$ {cmd.replace(vmsh, 'vmsh')}")
            rc, out = host.run(cmd, 300)
            print(out.rstrip())
            if rc != 0:
                print(f"(exit status {rc})")
                return rc
            print()
        print("$ grep -E ' (_text|jiffies|_printk|iomem_resource)$' /proc/kallsyms   # inside the guest")
        print(g.console("grep -E ' (_text|jiffies|_printk|iomem_resource)$' /proc/kallsyms").rstrip())
        print("$ dmesg | grep vmsh   # inside the guest: the kernel library's lines")
        print(g.console("dmesg | grep vmsh").rstrip())
        if host.mode == "direct" and sys.stdin.isatty() and not a.no_shell:
            print(f"\n$ vmsh attach vmsh-demo   # an interactive shell in the VM; Ctrl-] or 'exit' leaves")
            import subprocess
            subprocess.call([vmsh, "attach", "vmsh-demo"])
        elif host.mode != "direct":
            print("\n(the demo VM runs inside the emulated KVM host, so no interactive shell here; on a machine "
                  "with hardware KVM, `vmsh attach PID` in a terminal gives one)")
        return 0
    finally:
        host.close()


if __name__ == "__main__":
    sys.exit(main())
