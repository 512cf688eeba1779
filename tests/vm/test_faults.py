"""Faults during a vmsh session (issue 9): the guest or the hypervisor goes
away, the backing file fails, the console client disappears.  Each time
vmsh ends or carries on with a clear message, the hypervisor (if it is still
there) is untouched, and nothing of another process is touched."""
import os
import re
import time

import pytest

from vmshtest import harness
from vmshtest.devices import CONSOLE_CLIENT, Served, make_disk, scratch, tracer_pid, wait_for
from test_library import assert_guest_clean, warnings
import conftest

MB = 1 << 20

# Every fault on qemu pc, q35, microvm x Debian 6.1, 6.12 (issue 9); make
# check runs pc-6.1, make check-matrix the rest.
CHECK = {("pc", "6.1")}
CONFIGS = [(m, k) for (m, k, f) in conftest.GUEST_CONFIGS if f == "amd64" and k != "5.10"]


def configs(*extra):
    """(machine, kernel[, extra...]) params, `matrix` outside make check."""
    out = []
    for (m, k) in CONFIGS:
        for x in extra or [None]:
            vals = (m, k) if x is None else (m, k, x)
            xid = "" if x is None else f"-{x}"
            out.append(pytest.param(*vals, id=f"{m}-{k}{xid}",
                                    marks=() if (m, k) in CHECK else pytest.mark.matrix))
    return out


def wait_exit(host, pid, secs):
    """True once the process `pid` (spawned on the host) has ended."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if not host.alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("machine,kernel,how", [
    p if p.id != "pc-6.1-guest-poweroff" else pytest.param(*p.values, id=p.id, marks=pytest.mark.matrix)
    for p in configs("hypervisor-killed", "guest-poweroff", "guest-panic")])
def test_vm_gone_mid_session_ends_vmsh_clearly(guest_factory, host, vmsh_bin, machine, kernel, how):
    guest = guest_factory(machine=machine, kernel=kernel, name=f"vmsh-gone-{how}")
    disk, digest = make_disk(host, f"gone-{how}.img", 4)
    s = Served(host, vmsh_bin, guest, disk)
    try:
        if how == "hypervisor-killed":
            host.kill(guest.pid, 9, 10)   # waits for it and reaps it
        elif how == "guest-poweroff":
            guest.host._call("console_send", 30, path=guest.sock, data="poweroff -f\n")
        else:
            guest.host._call("console_send", 30, path=guest.sock, data="echo c > /proc/sysrq-trigger\n")
        if how != "hypervisor-killed":
            assert wait_exit(host, guest.pid, 60), "qemu did not end"
        assert wait_exit(host, s.pid, 60), "vmsh serve still runs after the VM is gone"
        text = host.read_file(s.log).decode(errors="replace")
        assert re.search(r"hypervisor .*(exited|gone|ended)", text), text
        assert "AddressSanitizer" not in text and "runtime error" not in text, text
    finally:
        s.stop(9)
        guest.stop()
    # the backing file is as it was
    assert host.check(f"sha256sum {disk}").split()[0] == digest


@pytest.mark.parametrize("machine,kernel", configs())
def test_full_backing_file_gives_the_guest_an_io_error_and_vmsh_carries_on(guest_pool, host, vmsh_bin, machine, kernel):
    guest = guest_pool.get(machine, kernel, "amd64")
    base = warnings(guest)
    small = f"{scratch(host)}/small"
    host.check(f"mkdir -p {small} && (mountpoint -q {small} || mount -t tmpfs -o size=4M tmpfs {small})")
    try:
        disk = f"{small}/sparse.img"
        host.check(f"rm -f {disk}; truncate -s 32M {disk}")
        with Served(host, vmsh_bin, guest, disk) as s:
            dev = f"/dev/{s.dev}"
            rc, out = guest.console_status(f"dd if=/dev/urandom of={dev} bs=1M count=16 oflag=direct 2>&1", 120)
            assert rc != 0 and re.search(r"Input/output error|No space", out), out
            assert re.search(r"I/O error", guest.console("dmesg | tail -20")), "no I/O error in the guest's log"
            # still serving: reads of the written part work
            assert guest.console(f"dd if={dev} of=/dev/null bs=1M count=2 iflag=direct 2>&1 && echo read-ok",
                                 60).strip().endswith("read-ok")
            assert tracer_pid(host, guest.pid) == 0
        assert s.status == 0, s.text
        assert "ENOSPC" in s.text or "No space" in s.text, s.text
    finally:
        host.run(f"umount {small}")
    assert_guest_clean(guest, base | {line for line in warnings(guest) if "I/O error" in line})


@pytest.mark.parametrize("machine,kernel", configs())
def test_console_client_disappearing_mid_transfer(guest_pool, host, vmsh_bin, machine, kernel):
    guest = guest_pool.get(machine, kernel, "amd64")
    disk, _ = make_disk(host, "conq.img", 1)
    client = f"{scratch(host)}/conclient.py"
    host.check(f"cat > {client}", input=CONSOLE_CLIENT)
    with Served(host, vmsh_bin, guest, disk) as s:
        # a client that reads part of a large stream and goes away
        log1 = os.path.join(host.logdir, f"conq1-{s.id}.log")
        reader = host.spawn(["python3", client, s.sock, "recv", str(64 * MB)], log1)
        wait_for(host, log1, r"connected", 60, "first console client")
        guest.console(f"head -c {4 * MB} /dev/zero > /dev/{s.port} & p=$!; sleep 2; "
                      f"kill $p 2>/dev/null; true", 60)
        host.kill(reader, 9)
        # the next client gets a working console in both directions
        data, want = make_disk(host, "conq-in.dat", 1)
        log2 = os.path.join(host.logdir, f"conq2-{s.id}.log")
        sender = host.spawn(["python3", client, s.sock, "send", data], log2)
        try:
            wait_for(host, log2, r"connected", 60, "second console client")
            got = guest.console(f"head -c {MB} /dev/{s.port} | sha256sum", 120).split()[0]
        finally:
            host.kill(sender)
        assert got == want
        assert tracer_pid(host, guest.pid) == 0
    assert s.status == 0, s.text


@pytest.mark.parametrize("machine,kernel", configs())
def test_vm_gone_during_attach_ends_it_clearly(guest_factory, host, vmsh_bin, machine, kernel):
    guest = guest_factory(machine=machine, kernel=kernel, name="vmsh-gone-attach")
    log = os.path.join(host.logdir, "attach-gone.log")
    pid = host.spawn(["sh", "-c", f"{vmsh_bin} attach --pipe {guest.pid} -- sh -c 'echo started; sleep 300'"
                      " </dev/null; echo exit=$?"], log)
    try:
        wait_for(host, log, r"started", 120, "vmsh attach")
        host.kill(guest.pid, 9, 10)
        assert wait_exit(host, pid, 60), "vmsh attach still runs after its VM is gone"
        text = host.read_file(log).decode(errors="replace")
        assert "exit=125" in text and "VM is gone" in text, text
        assert "AddressSanitizer" not in text and "runtime error" not in text, text
    finally:
        if host.alive(pid):
            host.kill(pid, 9)
        guest.stop()


@pytest.mark.parametrize("machine,kernel", configs())
def test_a_storm_of_terminating_signals_does_not_cut_the_removal_short(guest_pool, host, vmsh_bin, machine, kernel):
    """A shell killing the process group, a supervisor repeating its SIGTERM:
    vmsh takes the first one and removes its devices; the later ones must
    not abort that removal (they did: a SIGTERM pending during teardown made
    the wait for the library return EINTR and left the devices and the
    library in the guest, found by a CI run)."""
    guest = guest_pool.get(machine, kernel, "amd64")
    base = warnings(guest)
    disk, _ = make_disk(host, "storm.img", 4)
    s = Served(host, vmsh_bin, guest, disk)
    assert s.dev, s.text
    # SIGTERM to vmsh's worker (and its guard process, which forwards it),
    # back to back, until the worker is gone
    w = host.check(f"cat /proc/{s.pid}/task/*/children").split()
    assert len(w) == 1, w
    host.run(f"while kill -TERM {w[0]} 2>/dev/null; do kill -TERM {s.pid} 2>/dev/null; done", 120)
    assert wait_exit(host, s.pid, 60)
    s.stop()
    assert "removed in" in s.text, s.text
    assert "could not be removed" not in s.text and "nterrupted" not in s.text, s.text
    assert "AddressSanitizer" not in s.text and "runtime error" not in s.text, s.text
    # nothing of that session left in the guest: no disk with its serial, a
    # later session sets up and removes cleanly
    left = guest.console(f"grep -l {s.id} /sys/block/vd*/serial 2>/dev/null; echo end").split()
    assert left == ["end"], left
    with Served(host, vmsh_bin, guest, disk) as again:
        assert again.dev, again.text
    assert again.status == 0 and "could not be removed" not in again.text, again.text
    assert "earlier vmsh kernel libraries" not in again.text, again.text
    assert_guest_clean(guest, base)


@pytest.mark.parametrize("machine,kernel", configs())
def test_guest_restart_mid_session_is_left_alone(guest_factory, host, vmsh_bin, machine, kernel):
    """The guest reboots while vmsh serves it (qemu resets it: -action
    reboot=reset). With nokaslr the new kernel's page tables are exactly where
    the old ones were, so the top-level entry vmsh checks still matches; only
    vmsh's own entry below it is gone. vmsh must not send a vCPU into the
    library (it would fault: the guest oopses and reboots again) nor write
    into the new kernel's tables; it takes its devices out of the hypervisor,
    which is then as before, and a later attach works."""
    from test_attach import attach
    from test_inspect import inspect_json
    guest = guest_factory(machine=machine, kernel=kernel, name="vmsh-restart", append="nokaslr",
                          extra_qemu_args=["-action", "reboot=reset"])
    slots0 = inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"]
    fds0 = host.check(f"ls /proc/{guest.pid}/fd | sort -n")
    disk, digest = make_disk(host, "restart.img", 4)
    s = Served(host, vmsh_bin, guest, disk)
    try:
        assert guest.console(f"sha256sum /dev/{s.dev}", 120).split()[0] == digest
        start = host._call("console_output", 30, path=guest.sock)["end"]
        host._call("console_send", 30, path=guest.sock, data="reboot -f\n")
        ready = host._call("console_wait", harness.scaled(240), path=guest.sock, pattern=harness.READY_MARKER,
                           start=start, timeout=harness.scaled(240))
        host._call("console_wait", 120, path=guest.sock, pattern=harness.PROMPT, start=ready["end"],
                   timeout=harness.scaled(120))
        assert guest.console("echo alive", 60).strip() == "alive"
        base = warnings(guest)
        boot_id = guest.console("cat /proc/sys/kernel/random/boot_id").strip()
        s.stop()
    finally:
        s.stop(9)
    assert s.status == 0, s.text
    assert "restarted" in s.text, s.text
    # the new kernel ran on: no fault, no second reboot
    assert guest.alive()
    assert guest.console("cat /proc/sys/kernel/random/boot_id").strip() == boot_id
    assert_guest_clean(guest, base)
    # the hypervisor is as before the session: vmsh's slots and fds are gone
    assert inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"] == slots0
    assert host.check(f"ls /proc/{guest.pid}/fd | sort -n") == fds0
    assert tracer_pid(host, guest.pid) == 0
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo after")
    assert r.rc == 0 and r.stdout == "after\n", (r.stdout, r.stderr)


def vmsh_threads(guest):
    """Kernel threads of vmsh's library in the guest (one per live session)."""
    return int(guest.console("grep -lx vmsh /proc/[0-9]*/comm 2>/dev/null | wc -l").strip())


def guest_mmio_devices(guest):
    """The guest's virtio-mmio devices as its iomem tree lists them."""
    return guest.console("grep virtio-mmio /proc/iomem | sort").strip()


def assert_dead_session_gone(host, vmsh_bin, guest, fds0, slots0, mmio0):
    """Nothing of a vmsh session killed outright is left, in the hypervisor
    (fds, memory slots, vmsh's memory) or in the guest (its devices)."""
    from test_inspect import inspect_json
    assert host.check(f"ls /proc/{guest.pid}/fd | sort -n") == fds0
    assert inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"] == slots0
    maps = host.check(f"grep -c memfd:vmsh /proc/{guest.pid}/maps || true").strip()
    assert maps == "0", host.check(f"grep memfd:vmsh /proc/{guest.pid}/maps || true")
    assert guest_mmio_devices(guest) == mmio0
    assert "devices of an earlier vmsh removed" in guest.console("dmesg | grep 'vmsh:'")


def busy_fraction(guest, secs=5):
    """Share of the guest's CPU time spent outside idle over `secs`, measured
    inside the guest in one console command (the serial console's own work
    stays out of it); steal time (the emulated host's) does not count."""
    out = guest.console(f"head -1 /proc/stat; sleep {secs}; head -1 /proc/stat", 60).splitlines()
    a, b = ([int(x) for x in line.split()[1:9]] for line in out[-2:])
    d = [y - x for x, y in zip(a, b)]
    busy = d[0] + d[1] + d[2] + d[5] + d[6]  # user nice system irq softirq
    return busy / max(1, busy + d[3] + d[4])  # + idle iowait


@pytest.mark.parametrize("machine,kernel", configs())
def test_vmsh_killed_mid_command_costs_the_guest_nothing_and_is_cleaned_up(guest_factory, host, vmsh_bin, machine,
                                                                           kernel):
    """vmsh (the user's process and its worker) SIGKILLed while the command
    runs: nobody serves vmsh's devices any more. The helper used to give up
    (at once, or after its flush timeout) and exit; the last close of its port
    sends a control message the guest kernel spins for with preemption off
    (virtio_console's __send_control_msg), so that vCPU was lost for good
    ("soft lockup - CPU#1 stuck"). Now the helper leaves the image's mount
    namespace and waits, asleep, until the devices are unplugged. The next
    vmsh run removes what the dead session left in the hypervisor (issue 9,
    item 10): before, its eventfds stayed open and registered in KVM."""
    from test_attach import attach
    from test_inspect import inspect_json
    guest = guest_factory(machine=machine, kernel=kernel, name="vmsh-killed-mid", smp=2)
    slots0 = inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"]
    fds0 = host.check(f"ls /proc/{guest.pid}/fd | sort -n")
    mmio0 = guest_mmio_devices(guest)
    out = os.path.join(host.logdir, f"killed-mid-{machine}-{kernel}.log")  # (one worker runs several)
    pid = host.spawn([vmsh_bin, "attach", "--pipe", str(guest.pid), "--", "sh", "-c",
                      "echo started; sleep 3; echo more output; sleep 1; echo end"], out)
    try:
        wait_for(host, out, r"(?m)^started$", 120, "the command's first line")
        worker = host.check(f"pgrep -P {pid}").split()
        assert worker, "no worker process"
        host.run(f"kill -9 {pid} {' '.join(worker)}")
    finally:
        host.kill(pid, 9, 10)
    helper = guest.console("ps | grep '[.]vmsh-helper' | awk '{print $1}'").split()
    assert len(helper) == 1, helper
    h = helper[0]
    # the helper notices that the host is gone (at the latest after its
    # flush timeout, 30 s) and then either parks or, as before, exits
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ns = guest.console(f"readlink /proc/{h}/ns/mnt; readlink /proc/1/ns/mnt; "
                           f"cat /proc/{h}/cmdline 2>/dev/null | wc -c").split()
        if len(ns) == 3 and ns[0] == ns[1] or ns[-1] == "0":
            break
        time.sleep(2)
    else:
        raise AssertionError(f"the helper still works for a host that is gone: {ns}")
    busy = busy_fraction(guest)
    assert busy < 0.3, f"the guest's CPUs are {busy:.0%} busy after vmsh died (a vCPU spinning?)"
    state = guest.console(f"grep State /proc/{h}/status")
    assert "S (sleeping)" in state, state  # parked, not spinning or gone
    # the old failure's signature: the helper stuck in its exit (the port's
    # close). Under two loaded emulated hosts the guest sometimes reports a
    # soft lockup of an idle vCPU (swapper, migration, kworker) while its
    # CPUs measure idle above: vCPU starvation of the nested emulation, not
    # a spinning vCPU, which the busy check catches.
    log = guest.console("dmesg")
    stuck = [line for line in log.splitlines() if "soft lockup" in line and "vmsh" in line]
    assert not stuck, log[-3000:]
    # it left the image's mount namespace: the image is mounted nowhere
    ns = guest.console(f"readlink /proc/{h}/ns/mnt; readlink /proc/1/ns/mnt").split()
    assert len(ns) == 2 and ns[0] == ns[1], ns
    dead = host.check(f"ls /proc/{guest.pid}/fd | sort -n")
    assert dead != fds0  # the dead session's eventfds
    # the dead session's library still has its thread, which waits for a
    # word that will not come from that run: the next run ends it before it
    # takes the library away (its sleep returns into the library)
    assert vmsh_threads(guest) == 1
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo after")
    assert r.rc == 0 and r.stdout == "after\n", (r.stdout, r.stderr)
    assert "the thread of an earlier vmsh run's kernel library ended when asked" in r.stderr, r.stderr
    assert vmsh_threads(guest) == 0
    # that attach removed what the dead session left in the hypervisor
    # (found through its ledger): its eventfds and their KVM registrations,
    # its library - and took its devices over to have its own library
    # remove them from the guest; then their register pages went too (the
    # slot and memory stayed until the guest restarted, before)
    assert_dead_session_gone(host, vmsh_bin, guest, fds0, slots0, mmio0)
    assert guest.console(f"test -e /proc/{h} && echo helper-left || echo helper-gone").strip() == "helper-gone"
    assert tracer_pid(host, guest.pid) == 0


@pytest.mark.parametrize("machine,kernel", configs())
def test_vmsh_killed_holding_a_disk_request_is_taken_over_and_removed(guest_factory, host, vmsh_bin, machine,
                                                                        kernel):
    """vmsh SIGKILLed while it holds one of the guest's block requests (a test
    hook kills its serving process as it takes the first request after the
    set-up): the guest's virtio_blk waits for that request for ever, and
    removing the device waits for it too. The next run takes the dead
    session's devices over from the record its ledger kept - the held
    request fails with an I/O error, later ones too - and its library
    removes them; then their slot and memory go (issue 9, item 10)."""
    from test_attach import attach
    from test_inspect import inspect_json
    guest = guest_factory(machine=machine, kernel=kernel, name="vmsh-killed-io", smp=2)
    slots0 = inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"]
    fds0 = host.check(f"ls /proc/{guest.pid}/fd | sort -n")
    mmio0 = guest_mmio_devices(guest)
    out = os.path.join(host.logdir, f"killed-io-{machine}-{kernel}.log")
    pid = host.spawn(["env", "VMSH_TEST_DIE_AT_BLK_REQUEST=1", vmsh_bin, "attach", "--pipe", str(guest.pid), "--",
                      "sh", "-c", "echo started; cat /bin/* >/dev/null; echo read"], out)
    try:
        assert wait_exit(host, pid, harness.scaled(240)), "vmsh did not die at its test hook"
    finally:
        host.kill(pid, 9, 10)
    text = host.read_file(out).decode(errors="replace")
    assert "read" not in text.split(), text
    # the dead session's devices are in the guest, one request held
    assert guest_mmio_devices(guest) != mmio0
    assert tracer_pid(host, guest.pid) == 0
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo after")
    assert r.rc == 0 and r.stdout == "after\n", (r.stdout, r.stderr)
    # Removing a block device waits for every request it issued: that the
    # removal finished shows the held request was completed (with the held
    # requests left alone, the library's removal hangs and this attach
    # times out - tried). Which request is held varies (often the helper's
    # GET_ID for the disk's serial, whose error the kernel does not log).
    assert_dead_session_gone(host, vmsh_bin, guest, fds0, slots0, mmio0)
    # the killed run's helper ends once its port is gone with the devices
    # (it kills its command, leaves the image's namespace): given the time
    # that takes on a loaded machine (once still there 0.6 s after the
    # removal, under make check's two workers), not asked for at once
    left = guest.console(f"for i in $(seq {int(harness.scaled(30))}); do ps | grep -q '[.]vmsh-helper' || break; "
                         f"sleep 1; done; ps | grep '[.]vmsh-helper' || echo none", int(harness.scaled(30)) + 60)
    assert left.strip() == "none", left
    busy = busy_fraction(guest)
    assert busy < 0.3, f"the guest's CPUs are {busy:.0%} busy after the takeover"
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo again")
    assert r.rc == 0 and r.stdout == "again\n", (r.stdout, r.stderr)
    assert inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"] == slots0


@pytest.mark.parametrize("machine,kernel", configs())
def test_vmsh_killed_while_the_console_driver_sets_up_costs_no_vcpu_after_the_next_run(guest_factory, host,
                                                                                         vmsh_bin, machine,
                                                                                         kernel):
    """vmsh SIGKILLed the moment the guest's console driver reports its
    device ready (a test hook): the driver then sends its first control
    message and spins, preemption off, until the host takes it - a vCPU
    lost while nobody serves the device (one of the guest's two CPUs busy,
    measured). The next run takes the dead session's devices over and
    consumes that message at once: the vCPU is back; since the dead run's
    library was still at work (stuck in that probe), the devices are
    removed by the run after."""
    from test_attach import attach
    from test_inspect import inspect_json
    guest = guest_factory(machine=machine, kernel=kernel, name="vmsh-killed-setup", smp=2)
    slots0 = inspect_json(host, vmsh_bin, guest.pid)["memslots"]["ids"]
    fds0 = host.check(f"ls /proc/{guest.pid}/fd | sort -n")
    mmio0 = guest_mmio_devices(guest)
    out = os.path.join(host.logdir, f"killed-setup-{machine}-{kernel}.log")
    pid = host.spawn(["env", "VMSH_TEST_DIE_AT_CONSOLE_READY=1", vmsh_bin, "attach", "--pipe", str(guest.pid), "--",
                      "echo", "never"], out)
    try:
        assert wait_exit(host, pid, harness.scaled(240)), "vmsh did not die at its test hook"
    finally:
        host.kill(pid, 9, 10)
    assert tracer_pid(host, guest.pid) == 0
    busy = busy_fraction(guest)
    assert busy > 0.35, f"the guest's CPUs are only {busy:.0%} busy: no vCPU waits for the dead console?"
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo after")
    assert r.rc == 0 and r.stdout == "after\n", (r.stdout, r.stderr)
    busy = busy_fraction(guest)
    assert busy < 0.3, f"the guest's CPUs are {busy:.0%} busy after the next run"
    r = attach(host, vmsh_bin, guest, "sh", "-c", "echo again")
    assert r.rc == 0 and r.stdout == "again\n", (r.stdout, r.stderr)
    assert_dead_session_gone(host, vmsh_bin, guest, fds0, slots0, mmio0)
