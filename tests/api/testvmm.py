"""TestVMM: run build/testvmm (tests/fixtures/testvmm.c) and look at it from the outside.

    with TestVMM(["--vcpus", "2"]) as vmm:
        vmm.pid, vmm.truth          # the process and its JSON ground truth
        vmm.counter()               # guest loop iterations, read from /proc/PID/mem
        vmm.wait_progress()         # every vCPU counted further within a timeout
        vmm.wait_counts(1000)       # every vCPU counted at least this far
        vmm.read_gpa(0x2345a0, 16)  # guest memory through the ground-truth slots
        vmm.fds(), vmm.tasks(), vmm.proc_status()
        vmm.wait_main_in_event_loop()  # main thread's /proc syscall line once back in ppoll
        rc = vmm.stop()             # SIGTERM, then SIGKILL; vmm.exit_stats afterwards

Only the process this object started is ever signalled, by its PID, and it is
stopped on exceptions (context manager) and at interpreter exit (atexit).
"""

import atexit
import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# exit statuses of testvmm (see the top of tests/fixtures/testvmm.c)
EXIT_SETUP_FAILED = 1
EXIT_GUEST_DIED = 2
EXIT_GUEST_NOT_RUNNING = 3


# ------------------------------------------------------------ ptrace, as vmsh uses it
# Just enough to poke testvmm the way vmsh does (seize, interrupt, inject one
# syscall, detach), so the fixture's own tests can show it survives that.

PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_SINGLESTEP, PTRACE_DETACH = 12, 13, 9, 17
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
PTRACE_EVENT_STOP = 128
PTRACE_O_SUSPEND_SECCOMP = 1 << 21
WALL = 0x40000000
PR_SET_PDEATHSIG = 1
SYS_PPOLL = 271

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


class UserRegs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
        "fs_base gs_base ds es fs gs").split()]


def _ptrace(req, tid, addr=0, data=0):
    if _libc.ptrace(req, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({req:#x}, {tid}): {os.strerror(err)}")


def _ptrace_quiet(req, tid, addr=0, data=0):
    """ptrace that ignores failure: for cleanup of a thread that may be gone."""
    _libc.ptrace(req, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data))


def _detach(tid, sig=0):
    _ptrace_quiet(PTRACE_DETACH, tid, 0, sig)


def _die_with_parent():
    # a killed pytest must not leave vCPUs spinning at 100% CPU behind
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def testvmm_path():
    return Path(os.environ.get("VMSH_TESTVMM", REPO / "build" / "testvmm"))


class TestVMMError(RuntimeError):
    """testvmm did not come up (or died); the message carries its stderr."""

    __test__ = False


_live = weakref.WeakSet()


@atexit.register
def _stop_all():
    for vmm in list(_live):
        vmm.stop(timeout=2)


class TestVMM:
    __test__ = False  # a helper, not a pytest test class

    def __init__(self, args=(), *, binary=None, ready_timeout=20.0, start=True):
        self.args = [str(a) for a in args]
        self.binary = Path(binary) if binary else testvmm_path()
        self.ready_timeout = ready_timeout
        self.proc = None
        self.truth = None
        self.exit_stats = None
        self.returncode = None
        self._stderr = None
        self._out = b""
        if start:
            self.start()

    # ------------------------------------------------------------ lifecycle

    def start(self):
        if not self.binary.exists():
            raise TestVMMError(f"{self.binary} does not exist: build it with "
                               f"'make -f tests/fixtures/fixtures.mk build/testvmm' (or set VMSH_TESTVMM)")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([str(self.binary), *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     preexec_fn=_die_with_parent)
        _live.add(self)
        try:
            line = self._read_line(self.ready_timeout)
            self.truth = json.loads(line)
        except BaseException:
            self.stop(timeout=2)
            raise
        if self.truth.get("pid") != self.proc.pid:
            self.stop(timeout=2)
            raise TestVMMError(f"ground truth names pid {self.truth.get('pid')}, started {self.proc.pid}")
        if not self.wait_main_in_event_loop(self.ready_timeout):
            self.stop(timeout=2)
            raise TestVMMError(f"testvmm's main thread never reached its event loop{self._stderr_note()}")
        return self

    def wait_main_in_event_loop(self, timeout=5.0):
        """The main thread's /proc/PID/syscall line once it sleeps in its ppoll, or None.
        Ready means that (it prints the truth just before it gets there); after a tracer
        detaches, the thread needs a CPU to get back in, which on a busy two-core machine
        (the vCPUs spin) can take milliseconds: poll this rather than read the line once."""
        deadline = time.monotonic() + timeout
        while self.proc is not None:
            line = Path(f"/proc/{self.pid}/syscall").read_text().strip()
            if line.startswith(f"{SYS_PPOLL} "):
                return line
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return None
            time.sleep(0.001)
        return None

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestVMMError(f"testvmm {' '.join(self.args)}: no ground truth within {timeout} s"
                                   f"{self._stderr_note()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    rc = self.proc.wait()
                    raise TestVMMError(f"testvmm {' '.join(self.args)} exited with {rc} before it was ready"
                                       f"{self._stderr_note()}")
                self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line.decode()

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL after timeout. Returns the exit status (negative: killed by a signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # Popen signals only its own, not yet reaped, child
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        rest = self._out + (self.proc.stdout.read() or b"")
        self._out = b""
        self.proc.stdout.close()
        for line in rest.decode(errors="replace").splitlines():
            if line.startswith('{"exit_stats"'):
                self.exit_stats = json.loads(line)["exit_stats"]
        _live.discard(self)
        self.proc = None
        return self.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __del__(self):
        if getattr(self, "proc", None) is not None:
            self.stop(timeout=2)

    def stderr(self):
        """Everything testvmm wrote to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _stderr_note(self):
        text = self.stderr().strip()
        return f"; its stderr:\n{text}" if text else ""

    # ------------------------------------------------------------ the process

    @property
    def pid(self):
        return self.truth["pid"]

    @property
    def name(self):
        """The --name NAME given on the command line, or None."""
        for i, a in enumerate(self.args):
            if a == "--name" and i + 1 < len(self.args):
                return self.args[i + 1]
            if a.startswith("--name="):
                return a[len("--name="):]
        return None

    @property
    def vms(self):
        return self.truth["vms"]

    def alive(self):
        if self.proc is None or self.proc.poll() is not None:
            return False
        return self.proc_status().get("State", "").split()[:1] != ["Z"]

    def proc_status(self, tid=None):
        path = f"/proc/{self.pid}/task/{tid}/status" if tid else f"/proc/{self.pid}/status"
        status = {}
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            status[key] = value.strip()
        return status

    def wait_untraced(self, timeout=30.0):
        """True once no tracer holds the process.  After vmsh's user-facing
        process is SIGKILLed, its worker child is told and detaches cleanly,
        which takes as long as the rest of its run (seconds under emulation)."""
        deadline = time.monotonic() + timeout
        while self.proc_status()["TracerPid"] != "0":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def fd_map(self):
        """{fd: readlink target} of the running process."""
        out = {}
        for entry in os.scandir(f"/proc/{self.pid}/fd"):
            try:
                out[int(entry.name)] = os.readlink(entry.path)
            except FileNotFoundError:  # closed meanwhile
                pass
        return out

    def fds(self):
        """Sorted readlink targets of /proc/PID/fd/*: compare before/after to find leaks."""
        return sorted(self.fd_map().values())

    def tasks(self):
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))

    def thread_names(self):
        return {tid: Path(f"/proc/{self.pid}/task/{tid}/comm").read_text().strip() for tid in self.tasks()}

    def maps(self):
        """[(start, end, perms, offset, path)] from /proc/PID/maps."""
        out = []
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end, parts[1], int(parts[2], 16), parts[5] if len(parts) > 5 else ""))
        return out

    # ------------------------------------------------------------ guest memory

    def slots(self, vm=0):
        """Slots of one VM with the hex strings parsed to ints."""
        return [dict(s, gpa=int(s["gpa"], 16), size=int(s["size"], 16), hva=int(s["hva"], 16))
                for s in self.vms[vm]["slots"]]

    def gpa_to_hva(self, gpa, vm=0):
        for s in self.slots(vm):
            if s["gpa"] <= gpa < s["gpa"] + s["size"]:
                return s["hva"] + gpa - s["gpa"]
        raise ValueError(f"gpa {gpa:#x} is not in any slot of vm {vm}")

    def read_hva(self, hva, size):
        with open(f"/proc/{self.pid}/mem", "rb", buffering=0) as mem:
            mem.seek(hva)
            return mem.read(size)

    def read_gpa(self, gpa, size, vm=0):
        return self.read_hva(self.gpa_to_hva(gpa, vm), size)

    def markers(self, vm=0):
        """[(gpa, bytes)] the VMM wrote at start."""
        return [(int(m["gpa"], 16), bytes.fromhex(m["hex"])) for m in self.vms[vm]["markers"]]

    def counters(self, vm=0):
        """Loop iterations of each vCPU of one VM, as the guest counted them."""
        return [struct.unpack("<Q", self.read_gpa(int(g, 16), 8, vm))[0]
                for g in self.vms[vm]["vcpu_counter_gpas"]]

    def counter(self, vm=0, vcpu=None):
        """One vCPU's count, or the sum over the VM's vCPUs."""
        counts = self.counters(vm)
        return sum(counts) if vcpu is None else counts[vcpu]

    def wait_progress(self, timeout=5.0):
        """True once every vCPU of every VM has counted further than now."""
        before = [self.counters(vm) for vm in range(len(self.vms))]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = [self.counters(vm) for vm in range(len(self.vms))]
            if all(n > b for nv, bv in zip(now, before) for n, b in zip(nv, bv)):
                return True
        return False

    def wait_counts(self, at_least, timeout=10.0):
        """True once every vCPU of every VM has counted at least this far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(c >= at_least for vm in range(len(self.vms)) for c in self.counters(vm)):
                return True
            time.sleep(0.02)
        return False

    def translate(self, gva, vm=0):
        """Walk the long-mode guest's 4-level page tables (from the ground-truth cr3) to a gpa."""
        cr3 = int(self.vms[vm]["cr3"], 16)
        table = cr3 & ~0xfff
        for level, shift in enumerate((39, 30, 21, 12)):
            entry = struct.unpack("<Q", self.read_gpa(table + ((gva >> shift) & 511) * 8, 8, vm))[0]
            if not entry & 1:
                raise ValueError(f"gva {gva:#x} not present at level {4 - level}")
            if shift in (30, 21) and entry & 0x80:  # 1 GiB / 2 MiB page
                return (entry & 0x000ffffffffff000 & ~((1 << shift) - 1)) | (gva & ((1 << shift) - 1))
            table = entry & 0x000ffffffffff000
        return table | (gva & 0xfff)

    # ------------------------------------------------------------ poking it like vmsh

    def _waitstop(self, tid):
        """Wait for a ptrace stop of tid; if the process died instead, record that and raise."""
        _, status = os.waitpid(tid, WALL)
        if os.WIFSTOPPED(status):
            return status
        if tid == self.proc.pid:  # we reaped our own child: let Popen know how it ended
            self.proc.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        raise TestVMMError(f"thread {tid} ended while traced (status {status:#x}){self._stderr_note()}")

    def _seize_and_stop(self, tid, options=0):
        _ptrace(PTRACE_SEIZE, tid, 0, options)
        try:
            _ptrace(PTRACE_INTERRUPT, tid)
            status = self._waitstop(tid)
        except OSError:
            _detach(tid)
            raise
        if status >> 16 != PTRACE_EVENT_STOP:
            # e.g. a signal-delivery-stop came first: hand the signal back
            _detach(tid, os.WSTOPSIG(status))
            raise TestVMMError(f"thread {tid}: unexpected stop {status:#x}")

    def interrupt_all_threads(self, hold=0.0):
        """Seize and interrupt every thread (vCPU threads leave KVM_RUN with EINTR), hold, detach."""
        seized = []
        try:
            for tid in self.tasks():
                self._seize_and_stop(tid)
                seized.append(tid)
            time.sleep(hold)
        finally:
            for tid in seized:
                _detach(tid)
        return seized

    def _seize_at_syscall(self, tid, saved, options, attempts=200):
        """Seize and interrupt tid until it stops right after a syscall instruction (blocked in
        KVM_RUN, ppoll, read). A vCPU thread can be caught in user mode between two KVM_RUN calls
        (handling an exit, busiest on a 1-CPU host): let it go on and try again, as vmsh's tracer
        waits for a syscall stop instead of guessing. Leaves tid seized, its registers in saved."""
        for _ in range(attempts):
            self._seize_and_stop(tid, options)
            try:
                _ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(saved))
                if self.read_hva(saved.rip - 2, 2) == b"\x0f\x05":
                    return
            except BaseException:
                _detach(tid)
                raise
            _detach(tid)
            time.sleep(0.005)
        raise TestVMMError(f"thread {tid} is never stopped right after a syscall instruction")

    def inject_syscall(self, nr, *args, tid=None, suspend_seccomp=False):
        """Run one syscall in a thread (default: the main thread, which sits in ppoll) the way
        vmsh does: interrupt, point rip at the syscall instruction it is blocked behind, single-step,
        restore. Returns the raw result (negative errno on failure)."""
        tid = tid or self.pid
        saved, regs, restore = UserRegs(), UserRegs(), False
        self._seize_at_syscall(tid, saved, PTRACE_O_SUSPEND_SECCOMP if suspend_seccomp else 0)
        try:
            regs = UserRegs.from_buffer_copy(saved)
            regs.rip, regs.rax, regs.orig_rax = saved.rip - 2, nr, 2**64 - 1  # orig_rax -1: no restart
            for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
                setattr(regs, name, value % 2**64)
            restore = True
            _ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))
            _ptrace(PTRACE_SINGLESTEP, tid)
            self._waitstop(tid)
            _ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
            return ctypes.c_longlong(regs.rax).value
        finally:
            # never leave a thread seized: a traced thread that dies stays a zombie only its
            # tracer can reap, and Popen.wait() would wait for it forever
            if restore:
                _ptrace_quiet(PTRACE_SETREGS, tid, 0, ctypes.addressof(saved))
            _detach(tid)

    def __repr__(self):
        state = f"pid {self.pid}" if self.truth else "not started"
        return f"TestVMM({' '.join(self.args)}; {state})"
