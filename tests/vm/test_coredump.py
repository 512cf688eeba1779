"""vmsh coredump (issue 14): a running VM's RAM and vCPU registers as an ELF
core that crash and gdb open with the guest's vmlinux (debug info from
Debian's -dbg package), side by side with QEMU's own dump-guest-memory as
the control; a guest that has panicked; no residue in the hypervisor."""
import os
import re
import shlex
import subprocess
import time

import pytest

import conftest
from vmshtest import harness
from vmshtest.devices import scratch
from vmshtest.qmp import qmp
from test_inspect import hypervisor_state

# the slice make check runs; check-matrix adds the others
SLICE = {("pc", "6.1")}
CONFIGS = [pytest.param(m, k, marks=() if (m, k) in SLICE else pytest.mark.matrix, id=f"{m}-{k}")
           for (m, k, f) in conftest.GUEST_CONFIGS if f == "amd64"]


def vmlinux_dbg(kernel):
    """The guest kernel's vmlinux with debug info (fetched once, cached)."""
    p = subprocess.run(["bash", str(harness.TOOLS / "fetch-kernel.sh"), kernel.series, kernel.flavour],
                       capture_output=True, text=True, env=dict(os.environ, VMSH_FETCH_VMLINUX="1",
                                                                VMSH_TEST_CACHE=harness.CACHE))
    assert p.returncode == 0, p.stderr[-2000:]
    path = os.path.join(p.stdout.strip().splitlines()[-1], "vmlinux-dbg")
    assert os.path.getsize(path) > 100 << 20, path
    return path


def crash(vmlinux, core, *cmds, opts=()):
    p = subprocess.run(["crash", "-s", *opts, vmlinux, core], input="\n".join([*cmds, "quit"]) + "\n",
                       capture_output=True, text=True, timeout=600)
    return p.stdout + p.stderr


def gdb(vmlinux, core, offset, *exprs):
    argv = ["gdb", "-batch", "-nx", "-ex", f"symbol-file -o {offset:#x} {vmlinux}", "-ex", f"core-file {core}",
            "-ex", "set print elements 0"]
    for e in exprs:
        argv += ["-ex", e]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    return p.stdout + p.stderr


def kernel_offset(core):
    """KERNELOFFSET from the dump's VMCOREINFO note (read from the file)."""
    with open(core, "rb") as f:
        head = f.read(1 << 20)
    m = re.search(rb"KERNELOFFSET=([0-9a-f]+)\n", head)
    assert m, "no VMCOREINFO note with KERNELOFFSET in the first MiB"
    return int(m.group(1), 16)


def core_bytes(core, gpa, n):
    """n bytes of guest-physical memory at gpa from the dump's PT_LOADs
    (p_paddr), read from the file as any ELF reader would."""
    import struct
    with open(core, "rb") as f:
        eh = f.read(64)
        assert eh[:4] == b"\x7fELF" and eh[4] == 2, "not an ELF64 file"
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        for _ in range(phnum):
            p_type, _, off, _, paddr, filesz, _, _ = struct.unpack("<IIQQQQQQ", f.read(phentsize)[:56])
            if p_type == 1 and paddr <= gpa and gpa + n <= paddr + filesz:
                f.seek(off + gpa - paddr)
                return f.read(n)
    raise AssertionError(f"guest-physical {gpa:#x} is in no PT_LOAD of {core}")


def dump_state(host, pid):
    """The hypervisor as a dump must leave it: fds, threads, tracer (see
    test_inspect), no child process of its own left (the snapshot's fork),
    and the same mappings kept out of forks (MADV_DONTFORK on guest RAM)."""
    children = host.check(f"cat /proc/{pid}/task/*/children; echo; "
                          f"awk '/^[0-9a-f]+-[0-9a-f]+ / {{r=$1}} /^VmFlags:.* dc/ {{print r}}' /proc/{pid}/smaps")
    return hypervisor_state(host, pid) + "---\n" + children


def crash_reads(vmlinux, core, release):
    """Does Debian's crash open `core` at all (its RELEASE line)? crash 8.0.2
    (bookworm) cannot read Linux 6.12 (it fails on the first kernel
    variable, for QEMU's own dumps too); the test decides that from QEMU's
    dump of the same guest, never from the version string."""
    out = crash(vmlinux, core, "sys")
    return bool(re.search(rf"RELEASE: {re.escape(release)}\b", out)), out


def check_core(guest, vmlinux, core, marker, sleeper, with_crash=True, with_gdb=True):
    """What an engineer opening the dump needs, in crash and in gdb (with
    the KASLR offset from the dump's VMCOREINFO note)."""
    release = guest.console("uname -r").strip()
    if with_crash:
        out = crash(vmlinux, core, "sys", "log",
                    "list task_struct.tasks -s task_struct.comm -h init_task")
        assert re.search(rf"RELEASE: {re.escape(release)}\b", out), out[-3000:]
        assert marker in out, out[-3000:]
        # crash 8.0's own ps lists only swapper on Linux 6.1, for QEMU's dumps too:
        # the task list is walked by hand instead
        assert 'comm = "init' in out and f'comm = "{sleeper}' in out, out[-3000:]
    if not with_gdb:
        return
    banner = guest.console("cat /proc/version").strip()
    g = gdb(vmlinux, core, kernel_offset(core), "p linux_banner", "p init_task.comm", "info threads",
            "p (char *)init_uts_ns.name.release")
    assert banner in g.replace("\\n", ""), g[-3000:]
    assert '"swapper/0' in g, g[-3000:]
    assert re.search(r"\* 1\s+LWP 1", g), g[-3000:]
    assert f'"{release}"' in g, g[-3000:]


@pytest.mark.parametrize("machine,kernel", CONFIGS)
def test_crash_and_gdb_open_the_dump_like_qemus_own(guest_factory, host, vmsh_bin, machine, kernel):
    qsock = f"{host.sockdir}/qmp-dump-{machine}-{kernel}.sock"
    guest = guest_factory(machine=machine, kernel=kernel, smp=2, name=f"vmsh-dump-{machine}-{kernel}",
                          extra_qemu_args=["-qmp", f"unix:{qsock},server=on,wait=off"])
    vmlinux = vmlinux_dbg(guest.kernel)
    marker = f"vmsh-dump-marker-{os.getpid()}"
    guest.console(f"echo {marker} > /dev/kmsg; (sleep 4321 &); sleep 0.5")
    # the control first: QEMU's own dump of the same guest
    qcore = os.path.join(host.logdir, f"qemu-{machine}-{kernel}.core")
    qmp(host, qsock, {"execute": "dump-guest-memory", "arguments": {"paging": False, "protocol": f"file:{qcore}"}},
        timeout=900)
    release = guest.console("uname -r").strip()
    crash_ok, qout = crash_reads(vmlinux, qcore, release)
    if crash_ok:
        # crash only: without paging=true QEMU's dump has no virtual addresses
        # for gdb, and without -device vmcoreinfo no KASLR offset
        check_core(guest, vmlinux, qcore, marker, "sleep", with_gdb=False)
    os.unlink(qcore)

    before = dump_state(host, guest.pid)
    # QEMU keeps guest RAM out of forks: the snapshot has to lift that and put it back
    assert re.search(r"^[0-9a-f]+-[0-9a-f]+$", before.split("---\n")[-1], re.M), before
    core = os.path.join(host.logdir, f"vmsh-{machine}-{kernel}.core")
    r = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {core}", 900)
    assert r.rc == 0, r.stderr
    # the default: a copy-on-write snapshot (QEMU's RAM is private anonymous memory here)
    assert "VM stopped" in r.stderr and "(copy-on-write snapshot)" in r.stderr, r.stderr
    assert "MiB of guest RAM" in r.stderr, r.stderr
    assert not [f for f in os.listdir(host.logdir) if ".tmp-" in f], "temporary file left behind"
    if crash_ok:
        check_core(guest, vmlinux, core, marker, "sleep")
    else:
        # this crash cannot read this kernel: QEMU's dump stops at a kernel
        # structure crash does not know (Linux 6.4 replaced the module
        # layout crash 8.0.2 reads); vmsh's dump must get exactly as far
        # (KASLR found, memory read), and gdb checks it (registers, kernel
        # memory, the release)
        vout = crash(vmlinux, core, "sys", opts=("--kaslr=auto",))
        unknown = "invalid structure member"
        assert unknown in qout and unknown in vout, (qout[-2000:], vout[-2000:])
        assert "read error" not in vout, vout[-2000:]
        harness.log(f"crash cannot read {release}, QEMU's dump neither "
                    f"({[l for l in qout.splitlines() if unknown in l][0]!r}); vmsh's dump checked with gdb")
        check_core(guest, vmlinux, core, marker, "sleep", with_crash=False)
    assert dump_state(host, guest.pid) == before
    assert guest.console("echo alive").strip() == "alive"
    # --stop: the VM stopped for the whole copy, the same dump
    r = host.exec(f"{shlex.quote(vmsh_bin)} coredump --stop --force {guest.pid} {core}", 900)
    assert r.rc == 0 and "(for the whole copy)" in r.stderr, r.stderr
    check_core(guest, vmlinux, core, marker, "sleep", with_crash=False)
    assert dump_state(host, guest.pid) == before
    # an existing file is not replaced without --force
    r2 = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {core}", 120)
    assert r2.rc != 0 and "--force" in r2.stderr, r2.stderr
    os.unlink(core)
    # crash reads every kernel this project tests except where it cannot
    # read QEMU's own dump either; 5.10 and 6.1 must work
    assert crash_ok or kernel not in ("5.10", "6.1"), qout[-2000:]


@pytest.mark.soak
def test_live_dumps_and_snapshots_leave_no_residue_then_a_panicked_guest_dumps_too(guest_factory, host, vmsh_bin):
    # panic=0: after the sysrq crash the kernel stays in its panic loop instead of rebooting
    guest = guest_factory(machine="pc", kernel="6.1", name="vmsh-dump-live", append="panic=0")
    vmlinux = vmlinux_dbg(guest.kernel)
    guest.console("echo vmsh-live-marker > /dev/kmsg; (sleep 4322 &); sleep 0.5")
    before = dump_state(host, guest.pid)
    n = harness.sized(2, 20)
    for i in range(n):
        core = os.path.join(host.logdir, f"live-{i}.core")
        r = host.exec(f"{shlex.quote(vmsh_bin)} coredump --live {guest.pid} {core}", 900)
        assert r.rc == 0, r.stderr
        assert "live copy" in r.stderr, r.stderr
        if i == 0:
            check_core(guest, vmlinux, core, "vmsh-live-marker", "sleep")
        os.unlink(core)
    assert dump_state(host, guest.pid) == before
    assert guest.console("echo alive").strip() == "alive"
    # as many copy-on-write snapshots in a row
    for i in range(n):
        core = os.path.join(host.logdir, f"snap-{i}.core")
        r = host.exec(f"{shlex.quote(vmsh_bin)} coredump --snapshot {guest.pid} {core}", 900)
        assert r.rc == 0 and "(copy-on-write snapshot)" in r.stderr, r.stderr
        os.unlink(core)
    assert dump_state(host, guest.pid) == before
    assert guest.console("echo alive").strip() == "alive"
    # vmsh killed in the middle of a snapshot's copy: the VM runs on; the copy
    # ends by itself and is left a zombie of the hypervisor (documented), the
    # unfinished file had no name yet (O_TMPFILE on the host's tmpfs): nothing
    # is left of it; the next dump reaps the zombie
    core = f"{scratch(host)}/killed.core"
    # (VMSH_TEST_STALL_AFTER_SNAPSHOT: vmsh waits, the copy made, to be killed there)
    out = host.check(f"VMSH_TEST_STALL_AFTER_SNAPSHOT=1 {shlex.quote(vmsh_bin)} coredump --snapshot {guest.pid} "
                     f"{core} 2>/dev/null & p=$!; "
                     f"for i in $(seq 2400); do [ -n \"$(cat /proc/{guest.pid}/task/*/children)\" ] && break; "
                     f"sleep 0.05; done; sleep 0.2; kill -9 $p; wait $p; echo status $?", 300)
    assert "status 137" in out, out
    assert guest.console("echo alive").strip() == "alive"
    left = host.check(f"for i in $(seq 200); do s=$(for c in $(cat /proc/{guest.pid}/task/*/children); do "
                      f"awk '{{print $3}}' /proc/$c/stat; done); [ \"$s\" = Z ] && break; sleep 0.05; done; "
                      f"echo $s").split()
    assert left == ["Z"], left
    assert host.check(f"ls -a {scratch(host)} | grep -c '^killed.core' ; true").strip() == "0", \
        host.check(f"ls -la {scratch(host)}")
    r = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {core}", 900)
    assert r.rc == 0 and "(copy-on-write snapshot)" in r.stderr, r.stderr
    assert "a snapshot copy an earlier vmsh left" in r.stderr, r.stderr
    assert host.check(f"ls -a {scratch(host)} | grep '^killed.core'").split() == ["killed.core"]
    host.check(f"rm -f {core}")
    assert dump_state(host, guest.pid) == before
    # the guest panics: no guest cooperation is needed for a dump
    host._call("console_send", 30, path=guest.sock, data="echo c > /proc/sysrq-trigger\n")
    deadline = time.monotonic() + harness.scaled(60)
    while "Kernel panic" not in guest.output() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "Kernel panic" in guest.output()
    core = os.path.join(host.logdir, "panic.core")
    r = host.exec(f"{shlex.quote(vmsh_bin)} coredump {guest.pid} {core}", 900)
    assert r.rc == 0, r.stderr
    out = crash(vmlinux, core, "log")
    assert "sysrq: Trigger a crash" in out and "Kernel panic" in out, out[-3000:]
    assert guest.alive()
