"""The test VMM itself: its ground truth is true, its guest runs, it survives what vmsh does to it.

Every other API test trusts testvmm's JSON line; these tests are why they may.
"""
import os
import signal
import subprocess
import time

import pytest

from testvmm import EXIT_SETUP_FAILED, TestVMM, TestVMMError

# needs KVM: run by vmshtest/kvm_tier.py on /dev/kvm or inside the emulated KVM host
pytestmark = pytest.mark.kvm

KVM_EXIT_IO, KVM_EXIT_MMIO = 2, 6
SYS_GETPPID = 110
SYS_GETTID = 186
PF_USER_WORKER = 0x4000


def ranges_overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]


def mapping_of(vmm, hva):
    return next(m for m in vmm.maps() if m[0] <= hva < m[1])


def test_truth_names_the_process_its_fds_and_threads(testvmm):
    vm = testvmm.truth["vms"][0]
    fds = testvmm.fd_map()
    assert testvmm.truth["pid"] == testvmm.pid and testvmm.alive()
    assert fds[vm["vm_fd"]] == "anon_inode:kvm-vm"
    assert [fds[fd] for fd in vm["vcpu_fds"]] == ["anon_inode:kvm-vcpu:0", "anon_inode:kvm-vcpu:1"]
    assert set(vm["vcpu_tids"]) <= set(testvmm.tasks())
    assert testvmm.pid not in vm["vcpu_tids"], "vCPUs run in their own threads, not the main one"
    for slot in vm["slots"]:
        if slot["backing"] == "memfd":
            assert fds[slot["fd"]].startswith("/memfd:testvmm-ram")


def test_default_layout_is_hard_for_slot_discovery(testvmm):
    slots = testvmm.slots()
    ids = [s["id"] for s in slots]
    assert len(set(ids)) == len(ids) and ids != list(range(len(ids))), "ids must be sparse"
    spans = sorted((s["gpa"], s["gpa"] + s["size"]) for s in slots)
    for a, b in zip(spans, spans[1:]):
        assert not ranges_overlap(a, b), (a, b)
    assert any(a[1] < b[0] for a, b in zip(spans, spans[1:])), "there must be holes"
    assert any(s["readonly"] for s in slots) and any(s["backing"] == "memfd" for s in slots)
    # two slots in one host mapping, at offsets that are not their gpa
    by_mapping = {}
    for s in slots:
        start, end, perms, _, _ = mapping_of(testvmm, s["hva"])
        assert s["hva"] + s["size"] <= end, "a slot lies inside one mapping"
        assert perms.startswith("r--" if s["readonly"] else "rw-"), (s, perms)
        by_mapping.setdefault(start, []).append(s)
    shared = [group for group in by_mapping.values() if len(group) > 1]
    assert shared and any(s["hva"] - start != s["gpa"] for start, group in by_mapping.items() for s in group)
    # two slots adjacent in gpa (one occupied range to a probe) but not in hva
    assert any(a["gpa"] + a["size"] == b["gpa"] and a["hva"] + a["size"] != b["hva"]
               for a in slots for b in slots)


def test_identity_layout_is_one_slot_at_offset_equal_gpa(testvmm_identity):
    (slot,) = testvmm_identity.slots()
    assert slot["gpa"] == 0 and slot["backing"] == "anon" and not slot["readonly"]
    start, _, _, _, _ = mapping_of(testvmm_identity, slot["hva"])
    assert slot["hva"] == start


@pytest.mark.parametrize("layout", ["default", "identity"])
def test_markers_are_in_guest_memory_where_the_truth_says(testvmm_factory, layout):
    vmm = testvmm_factory(["--layout", layout])
    markers = vmm.markers()
    starts = {s["gpa"] for s in vmm.slots()}
    assert starts < {gpa for gpa, _ in markers}, "one marker per slot start, and one more"
    assert len({m for _, m in markers}) == len(markers), "markers are distinct"
    for gpa, marker in markers:
        assert vmm.read_gpa(gpa, len(marker)) == marker, hex(gpa)


def test_every_vcpu_keeps_counting(testvmm):
    assert testvmm.wait_progress()
    c0 = testvmm.counter()
    time.sleep(0.2)
    assert testvmm.counter() > c0


def test_sigterm_stops_it_cleanly_and_reports_exits(testvmm):
    assert testvmm.wait_counts(2 * 256 + 1), "the guest exits to userspace every 256 iterations"
    assert testvmm.stop() == 0
    assert not testvmm.alive()
    stats = testvmm.exit_stats
    assert len(stats) == 2
    for vcpu in stats:
        # the guest's port and MMIO writes reached userspace.  No EINTR is
        # asserted: the stop kick finds the thread outside KVM_RUN when it is
        # handling an exit (often, under emulation), and then none is counted.
        assert vcpu["exits"].get(str(KVM_EXIT_IO), 0) > 0 and vcpu["exits"].get(str(KVM_EXIT_MMIO), 0) > 0


def test_two_vms_in_one_process(testvmm_two_vms):
    vmm = testvmm_two_vms
    a, b = vmm.vms
    assert len(vmm.vms) == 2 and a["vm_fd"] != b["vm_fd"]
    assert not set(a["vcpu_fds"]) & set(b["vcpu_fds"]) and not set(a["vcpu_tids"]) & set(b["vcpu_tids"])
    assert not {s["hva"] for s in a["slots"]} & {s["hva"] for s in b["slots"]}
    assert vmm.markers(0) != vmm.markers(1)
    for vm in (0, 1):
        for gpa, marker in vmm.markers(vm):
            assert vmm.read_gpa(gpa, len(marker), vm) == marker
    assert vmm.wait_progress()
    names = [n for n in vmm.fd_map().values() if n == "anon_inode:kvm-vm"]
    assert len(names) == 2


def test_long_mode_guest_runs_at_a_kernel_address(testvmm_long):
    vm = testvmm_long.vms[0]
    assert testvmm_long.truth["mode"] == "long"
    assert int(vm["entry_rip"], 16) >= 0xffffffff80000000
    assert testvmm_long.translate(int(vm["entry_rip"], 16)) == int(vm["entry_gpa"], 16)
    assert testvmm_long.translate(0x2345a0) == 0x2345a0, "low 4 GiB are identity mapped"
    assert testvmm_long.wait_progress()


def test_interrupting_every_thread_does_not_disturb_it(testvmm):
    tasks, fds = testvmm.tasks(), testvmm.fds()
    for _ in range(20):
        testvmm.interrupt_all_threads(hold=0.005)
    assert testvmm.alive() and testvmm.wait_progress()
    assert testvmm.tasks() == tasks and testvmm.fds() == fds
    assert testvmm.proc_status()["TracerPid"] == "0"
    assert testvmm.stop() == 0
    # vCPUs interrupted inside KVM_RUN left it with EINTR for the tracer and
    # simply went back in (the progress above). A vCPU thread that happened
    # to be handling an exit in user space at each of the 20 interrupts sees
    # none: under emulation testvmm's vCPUs spend much time there (one CI
    # run: vCPU 0 0 of 20, vCPU 1 5), so the path must be seen, not on each
    assert sum(v["eintr"] for v in testvmm.exit_stats) >= 2, testvmm.exit_stats


def test_injected_syscall_in_the_main_thread(testvmm):
    for _ in range(20):
        assert testvmm.inject_syscall(SYS_GETPPID) == os.getpid()
    assert testvmm.alive() and testvmm.wait_progress()
    assert testvmm.stop() == 0, "the main thread went back into its event loop and saw SIGTERM"


def user_workers(vmm):
    workers = []
    for tid in vmm.tasks():
        stat = open(f"/proc/{vmm.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        if int(stat[6]) & PF_USER_WORKER:
            workers.append(tid)
    return workers


def test_kvm_worker_threads_look_like_vcpus_but_are_not(testvmm):
    """The kernel's kvm-nx-lpage-recovery workers (one per VM, where the kernel has them) live
    in the VMM's thread group, and their /proc/TID/syscall and registers read like an ioctl
    KVM_RUN on a vCPU fd, with rip 0: vmsh must skip them by PF_USER_WORKER."""
    workers = user_workers(testvmm)
    assert not set(workers) & set(testvmm.vms[0]["vcpu_tids"])
    for tid in workers:
        with pytest.raises((OSError, TestVMMError)):
            testvmm.inject_syscall(SYS_GETPPID, tid=tid)
    assert testvmm.stop() == 0, "a failed injection left nothing seized"


def test_injected_syscall_in_every_thread(testvmm):
    """vCPU threads (in KVM_RUN) and the I/O thread (in read) take injected syscalls too."""
    workers = user_workers(testvmm)
    for tid in testvmm.tasks():
        if tid not in workers:
            assert testvmm.inject_syscall(SYS_GETTID, tid=tid) == tid
    assert testvmm.alive() and testvmm.wait_progress()
    assert testvmm.stop() == 0


def test_sandbox_kills_it_on_a_foreign_syscall(testvmm_sandboxed):
    vmm = testvmm_sandboxed
    assert vmm.truth["sandbox"]
    for tid in vmm.tasks():
        status = vmm.proc_status(tid)
        assert status["Seccomp"] == "2" or status["Name"].startswith("kvm-"), status
    # what vmsh must do: suspend the filter while it injects
    assert vmm.inject_syscall(SYS_GETPPID, suspend_seccomp=True) == os.getpid()
    assert vmm.alive() and vmm.wait_progress()
    # what happens to a tool that does not
    with pytest.raises(TestVMMError):
        vmm.inject_syscall(SYS_GETPPID)
    assert vmm.stop() == -signal.SIGSYS


def test_name_is_on_the_command_line(testvmm_named):
    cmdline = open(f"/proc/{testvmm_named.pid}/cmdline", "rb").read().split(b"\0")
    assert testvmm_named.name.encode() in cmdline


def test_no_irqchip_mode_runs(testvmm_factory):
    vmm = testvmm_factory(["--no-irqchip", "--vcpus", "1"])
    assert not vmm.truth["irqchip"] and vmm.wait_progress()


def test_bad_arguments_are_refused(testvmm_binary):
    for args in (["--vcpus", "0"], ["--layout", "nope"], ["--bogus"], ["extra"]):
        with pytest.raises(TestVMMError, match="exited with 1"):
            TestVMM(args, binary=testvmm_binary)
    r = subprocess.run([str(testvmm_binary), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--layout" in r.stdout
    assert EXIT_SETUP_FAILED == 1
