"""Kernels other than Debian's generic one (issue 11). Kernels a user builds: from Debian's linux-source-6.1
with a small config (tools/guest/build-kernel.sh) - virtio, ext4 and
overlayfs built in (no module to load, none to find), KASLR off - once with
modules enabled and once with CONFIG_MODULES=n, where the kernel has no
exported-symbol table at all and vmsh reads its kallsyms instead.

On each: inspect finds the kernel at its fixed address with the symbols
vmsh needs, attach runs a command in the vmsh root with the guest's root at
/var/lib/vmsh, a served disk carries data both ways byte for byte, and the
guest and the hypervisor are left as they were. The kernels build in a few
minutes and are cached: check-matrix. The same for Debian's cloud flavour
(5.10, 6.1, 6.12: fewer drivers, a different config) on qemu pc."""
import pytest

from vmshtest.devices import served_disk_round_trip
from test_attach import attach
from test_inspect import hypervisor_state, inspect_json
from test_library import assert_guest_clean, warnings

KERNELS = [("custom-6.1", "builtin", "prel32+namespace"), ("custom-6.1", "nomodules", "kallsyms"),
           ("5.10", "cloud-amd64", "prel32+namespace"), ("6.1", "cloud-amd64", "prel32+namespace"),
           ("6.12", "cloud-amd64", "prel32+namespace")]


@pytest.mark.matrix
@pytest.mark.parametrize("series,flavour,fmt", KERNELS, ids=[f"{k}-{f}" for k, f, _ in KERNELS])
def test_attach_and_serve_on_other_kernels(guest_factory, host, vmsh_bin, series, flavour, fmt):
    custom = series.startswith("custom")
    guest = guest_factory(machine="pc", kernel=series, flavour=flavour, mem="512M",
                          name=f"vmsh-{series}-{flavour}")
    release = guest.console("uname -r").strip()
    if custom:
        assert release.endswith(f"-vmsh-{flavour}"), release
        modules = guest.console("cat /proc/modules 2>&1; ls /lib/modules/*/ 2>&1")
        assert ".ko" not in modules, modules
    else:
        assert release.endswith(flavour), release
    base = warnings(guest)
    before = hypervisor_state(host, guest.pid)

    j = inspect_json(host, vmsh_bin, guest.pid)
    k = j["kernel"]
    assert k["error"] is None, k
    assert k["version"] == release
    if custom:
        assert int(k["kaslr_offset"], 16) == 0
    assert k["ksymtab_format"] == fmt
    assert j["memory"]["error"] is None, j["memory"]

    r = attach(host, vmsh_bin, guest, "sh", "-c", "ls /var/lib/vmsh; uname -r")
    assert r.rc == 0 and "init" in r.stdout.split() and release in r.stdout, (r.stdout, r.stderr)

    served_disk_round_trip(host, vmsh_bin, guest, f"kernel-{series}-{flavour}.img")

    assert hypervisor_state(host, guest.pid) == before
    assert_guest_clean(guest, base)
