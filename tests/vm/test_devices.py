"""vmsh's virtio-mmio block and console devices in real guests (issue 4),
through `vmsh serve`: registered by the kernel library, served from eventfds
with the hypervisor untraced, and removed without a trace."""
import os
import re

import pytest

import conftest
from vmshtest import harness, tools_image

from vmshtest.devices import CONSOLE_CLIENT, Served, make_disk, scratch, tracer_pid, wait_for
from test_inspect import hypervisor_state
from test_library import assert_guest_clean, warnings

MB = 1 << 20

# the configurations issue 4 names: qemu pc and microvm, each kernel series
DEVICE_CONFIGS = [c for c in conftest.GUEST_CONFIGS if c[0] in ("pc", "microvm")] or conftest.GUEST_CONFIGS[:1]


@pytest.fixture(scope="module", params=conftest.config_params(DEVICE_CONFIGS))
def dev_config(request):
    return request.param


@pytest.fixture
def dev_guest(guest_pool, dev_config):
    return guest_pool.get(*dev_config)


def sample_tracer_pid(host, pid, out):
    """Start sampling the hypervisor's TracerPid every 20 ms into `out`."""
    return host.spawn(["sh", "-c", f"while :; do grep TracerPid /proc/{pid}/status; sleep 0.02; done"], out)


def test_block_device_reads_writes_flushes_discards_untraced(dev_guest, host, vmsh_bin):
    guest = dev_guest
    base = warnings(guest)
    before = hypervisor_state(host, guest.pid)
    disk, digest = make_disk(host, "blk.img", 64)
    with Served(host, vmsh_bin, guest, disk) as s:
        assert s.dev, "no block device with our serial in the guest:\n" + guest.console("ls /sys/block")
        dev = f"/dev/{s.dev}"
        assert int(guest.console(f"blockdev --getsize64 {dev}")) == 64 * MB
        assert guest.console(f"cat /sys/block/{s.dev}/ro").strip() == "0"
        # the device's topology: 1 MiB optimal I/O, so the guest reads ahead
        # 2 MiB (a program started from the disk comes in a few requests)
        q = f"/sys/block/{s.dev}/queue"
        assert guest.console(f"cat {q}/optimal_io_size {q}/read_ahead_kb").split() == ["1048576", "2048"]
        # event index on, indirect descriptors off: every chain is in the
        # table vmsh reads with the ring (features: one character per bit)
        feat = guest.console(f"cat /sys/block/{s.dev}/device/features").strip()
        assert feat[29] == "1" and feat[28] == "0", feat
        # each device has an interrupt line of its own: virtio-mmio's
        # handler acknowledges its device on every interrupt of its line (a
        # register write: a guest exit), so a shared line cost the console's
        # acknowledgement on every block request too
        m = re.findall(r"vmsh: 2 devices at \S+, interrupt line (\d+) \(irq (\d+)\), "
                       r"the second device's (\d+) \(irq (\d+)\)", guest.console("dmesg"))
        assert m, guest.console("dmesg | tail")
        gsi0, irq0, gsi1, irq1 = map(int, m[-1])
        assert gsi0 != gsi1 and irq0 != irq1, m[-1]
        table = guest.console("cat /proc/interrupts")
        for irq in (irq0, irq1):
            row = re.search(rf"^\s*{irq}:.*$", table, re.M)
            assert row and re.search(r"\bvirtio\d+$", row[0]) and "," not in row[0], table
        # the whole disk read in the guest, while the hypervisor is sampled
        samples = os.path.join(host.logdir, f"tracerpid-{s.id}.log")
        sampler = sample_tracer_pid(host, guest.pid, samples)
        try:
            got = guest.console(f"sha256sum {dev}", 300).split()[0]
        finally:
            host.kill(sampler)
        assert got == digest
        # 2000 requests one at a time (direct I/O, 4 KiB): an interrupt
        # each; the driver's acknowledgement of a used-buffer interrupt is
        # taken by KVM alone, so vmsh wakes about once per request, not
        # twice (the kick, then the acknowledgement)
        guest.console(f"dd if={dev} of=/dev/null bs=4096 count=2000 iflag=direct 2>&1", 300)
        seen = re.findall(r"TracerPid:\s*(\d+)", host.read_file(samples).decode())
        assert len(seen) >= 5 and set(seen) == {"0"}, seen
        # written and flushed in the guest: in the host file byte for byte
        out = guest.console(f"head -c 1048576 /dev/urandom > /tmp/w && sha256sum /tmp/w && "
                            f"dd if=/tmp/w of={dev} bs=65536 seek=128 conv=fsync 2>&1")
        want = out.split()[0]
        host_sum = host.check(f"dd if={disk} bs=65536 skip=128 count=16 2>/dev/null | sha256sum").split()[0]
        assert host_sum == want
        # discard and write-zeroes: the host file reads zeros there
        guest.console(f"blkdiscard -o {16 * MB} -l {MB} {dev}")
        zeros = host.check(f"head -c {MB} /dev/zero | sha256sum").split()[0]
        assert host.check(f"dd if={disk} bs=1M skip=16 count=1 2>/dev/null | sha256sum").split()[0] == zeros
        assert tracer_pid(host, guest.pid) == 0
    assert s.status == 0, s.text
    m = re.search(r"(\d+) \+ (\d+) interrupts, (\d+) wake-ups of the \d+ serving threads[^,]*, (\d+) guest-memory "
                  r"syscalls", s.text)
    assert m, s.text
    irqs, wakeups, calls = int(m[1]) + int(m[2]), int(m[3]), int(m[4])
    assert irqs >= 2000 and wakeups < 1.3 * irqs, s.text
    # guest memory is the hypervisor's anonymous memory here: per request
    # one look at ring and table, the header, one write of data and
    # completion, the look that finds the queue empty (7 before 2026-12-05)
    assert calls < 4.5 * irqs, s.text
    assert "devices removed" in guest.console("dmesg | tail -5")
    assert not guest.console(f"ls /sys/block | grep -x {s.dev} || true").strip()
    assert hypervisor_state(host, guest.pid) == before
    assert_guest_clean(guest, base)


def test_read_only_image_refuses_writes(any_guest, host, vmsh_bin):
    """A read-only disk, and no console port (`--no-console`: vmsh serve
    failed at once without one, "console socket: Bad file descriptor")."""
    guest = any_guest
    disk, digest = make_disk(host, "ro.img", 8)
    with Served(host, vmsh_bin, guest, disk, "--ro", "--no-console") as s:
        assert s.port == "", s.port
        dev = f"/dev/{s.dev}"
        assert guest.console(f"cat /sys/block/{s.dev}/ro").strip() == "1"
        rc, out = guest.console_status(f"dd if=/dev/zero of={dev} bs=4096 count=1 conv=fsync 2>&1")
        assert rc != 0, out
        assert guest.console(f"sha256sum {dev}").split()[0] == digest
        assert re.search(r"vmsh: 1 device at \S+, interrupt line \d+", guest.console("dmesg | tail -5")), \
            guest.console("dmesg | tail -5")
    assert s.status == 0, s.text
    assert "and no console" in s.text, s.text
    assert host.check(f"sha256sum {disk}").split()[0] == digest


def test_polling_takes_requests_without_notifications(any_guest, host, vmsh_bin):
    """`vmsh serve --poll-us`: after the queue runs dry vmsh looks for the
    next request a while before asking to be notified, so back-to-back
    requests (one in flight at a time) are taken without a notification:
    fewer wake-ups of the serving thread than interrupts, and the data
    right both ways."""
    guest = any_guest
    disk, digest = make_disk(host, "poll.img", 16)
    with Served(host, vmsh_bin, guest, disk, "--poll-us", "1000", "--no-console") as s:
        guest.console(f"dd if=/dev/{s.dev} of=/dev/null bs=4096 count=1000 iflag=direct 2>&1", 300)
        assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
        wrote = guest.console(f"head -c 1048576 /dev/urandom > /tmp/p && sha256sum /tmp/p && "
                              f"dd if=/tmp/p of=/dev/{s.dev} bs=4096 seek=256 oflag=direct conv=fsync 2>&1; "
                              f"rm /tmp/p").split()[0]
    assert s.status == 0, s.text
    assert host.check(f"dd if={disk} bs=4096 skip=256 count=256 2>/dev/null | sha256sum").split()[0] == wrote
    m = re.search(r"(\d+) \+ \d+ interrupts, (\d+) wake-ups of the 1 serving threads, (\d+) polls of which "
                  r"(\d+) found a request", s.text)
    assert m, s.text
    irqs, wakeups, polls, hits = map(int, m.groups())
    harness.log(f"polling: {irqs} interrupts, {wakeups} wake-ups, {polls} polls, {hits} found a request")
    assert polls > 0 and hits > 0, s.text
    assert wakeups < irqs, s.text


def test_console_carries_10mb_each_way(dev_guest, host, vmsh_bin):
    guest = dev_guest
    disk, _ = make_disk(host, "con.img", 1)
    client = f"{scratch(host)}/conclient.py"
    host.check(f"cat > {client}", input=CONSOLE_CLIENT)
    n = 10 * MB
    with Served(host, vmsh_bin, guest, disk) as s:
        assert s.port, guest.console("ls /sys/class/virtio-ports/ || true")
        # host -> guest
        data, want = make_disk(host, "con-in.dat", 10)
        log_in = os.path.join(host.logdir, f"con-in-{s.id}.log")
        sender = host.spawn(["python3", client, s.sock, "send", data], log_in)
        try:
            wait_for(host, log_in, r"connected", 60, "console sender")
            got = guest.console(f"head -c {n} /dev/{s.port} | sha256sum", 300).split()[0]
        finally:
            host.kill(sender)
        assert got == want
        # guest -> host
        log_out = os.path.join(host.logdir, f"con-out-{s.id}.log")
        receiver = host.spawn(["python3", client, s.sock, "recv", str(n)], log_out)
        try:
            wait_for(host, log_out, r"connected", 60, "console receiver")
            want = guest.console(f"head -c {n} /dev/urandom > /tmp/c && sha256sum /tmp/c && "
                                 f"cat /tmp/c > /dev/{s.port} && rm /tmp/c", 300).split()[0]
            text = wait_for(host, log_out, r"recv \d+ \w+", 120, "console receiver")
        finally:
            host.kill(receiver)
        m = re.search(r"recv (\d+) (\w+)", text)
        assert int(m.group(1)) == n and m.group(2) == want, text
    assert s.status == 0, s.text


# fio comes from a disk of the guest's own qemu: on microvm that is a
# virtio-mmio device of qemu's next to vmsh's (an interrupt line of its own
# must be found: see README, Devices)
@pytest.mark.parametrize("machine,kernel", [("pc", "6.1"),  # microvm: check-matrix (make check's 30 minutes)
                                            pytest.param("microvm", "6.12", marks=pytest.mark.matrix)])
def test_block_device_with_one_queue_and_with_multiqueue(guest_factory, host, vmsh_bin, machine, kernel):
    """The block device's checks with one request queue and with multiqueue
    (a 2-vCPU guest, two queues: two jobs on different CPUs then, each
    queue served by a thread of its own): fio writes and verifies through
    vmsh's disk; the whole disk read in the guest has the host file's
    checksum; a discard reads as zeros in the host file; a read-only disk
    refuses writes and stays unchanged."""
    img = tools_image.build()
    guest = guest_factory(machine=machine, kernel=kernel, smp=2,
                          extra_qemu_args=tools_image.qemu_args(machine, img))
    chroot = tools_image.mount_in_guest(guest)
    disk, _ = make_disk(host, f"fio-{machine}.img", 64, random=False)
    # the default: a queue per vCPU, at most one per CPU of the KVM host
    # (with fewer, the threads take turns and lose: README, bench)
    host_cpus = int(host.check("nproc").strip())
    with Served(host, vmsh_bin, guest, disk) as s:
        pass
    assert s.status == 0, s.text
    assert f"{min(2, host_cpus)} request queues" in s.text, s.text
    for queues, args in ((1, ["--queues", "1"]), (2, ["--queues", "2"])):
        with Served(host, vmsh_bin, guest, disk, *args) as s:
            # the driver took as many hardware queues as offered
            assert guest.console(f"ls /sys/block/{s.dev}/mq | wc -l").strip() == str(queues)
            jobs = "--numjobs=1 --size=32M" if queues == 1 else "--numjobs=2 --size=16M --offset_increment=16M"
            out = guest.console(f"{chroot} /usr/bin/fio --name=verify --filename=/dev/{s.dev} --rw=randwrite --bs=4k "
                                f"{jobs} --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c "
                                f"--verify_fatal=1 --do_verify=1 --group_reporting 2>&1", 900)
            assert "err= 0" in out, out
            assert "verify failed" not in out and "bad magic" not in out, out
            # what the guest reads is what the host file holds, byte for byte
            want = host.check(f"sha256sum {disk}").split()[0]
            assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == want
            # a discard spread over both queues' CPUs: zeros in the host file
            # where fio's data was
            zeros = host.check(f"head -c {MB} /dev/zero | sha256sum").split()[0]
            for at in (8, 24):
                assert host.check(f"dd if={disk} bs=1M skip={at} count=1 2>/dev/null | sha256sum").split()[0] != zeros
            guest.console(f"taskset -c 1 blkdiscard -o {8 * MB} -l {MB} /dev/{s.dev} && "
                          f"taskset -c 0 blkdiscard -o {24 * MB} -l {MB} /dev/{s.dev}")
            for at in (8, 24):
                assert host.check(f"dd if={disk} bs=1M skip={at} count=1 2>/dev/null | sha256sum").split()[0] == zeros
            assert tracer_pid(host, guest.pid) == 0
        assert s.status == 0, s.text
        assert f"{queues} request queues" in s.text, s.text
        # a serving thread per queue, and each served requests
        m = re.search(rf"wake-ups of the {queues} serving threads(?: \(([\d +]+)\))?,", s.text)
        assert m, s.text
        if queues > 1:
            lanes = [int(n) for n in m[1].split(" + ")]
            assert len(lanes) == queues and min(lanes) > 0, s.text
        # read-only, a writer on each CPU
        digest = host.check(f"sha256sum {disk}").split()[0]
        with Served(host, vmsh_bin, guest, disk, "--ro", "--no-console", *args) as s:
            assert guest.console(f"ls /sys/block/{s.dev}/mq | wc -l").strip() == str(queues)
            assert guest.console(f"cat /sys/block/{s.dev}/ro").strip() == "1"
            for cpu in (0, 1):
                rc, out = guest.console_status(f"taskset -c {cpu} dd if=/dev/zero of=/dev/{s.dev} bs=4096 count=1 "
                                               f"oflag=direct 2>&1")
                assert rc != 0, out
            assert guest.console(f"sha256sum /dev/{s.dev}", 300).split()[0] == digest
        assert s.status == 0, s.text
        assert host.check(f"sha256sum {disk}").split()[0] == digest
