"""harness.py — boot real KVM guests for vmsh's end-to-end tests.

vmsh attaches to a running hypervisor process, so a test needs a KVM host
with qemu guests on it.  Two ways to get one:

  direct    this machine's /dev/kvm is hardware KVM: guests run right here.
  emulated  /dev/kvm is missing or is software KVM (kvm_pvm, which cannot run
            a Linux guest): boot an emulated KVM host "L1" (qemu TCG with
            SVM + nested paging, Debian's kernel, kvm-amd) and run the guests
            ("L2") under real KVM inside it.  L1 sees this machine's root
            file system read-only (virtfs + chroot), so qemu, python3 and the
            freshly built vmsh run there unchanged at their usual paths, and
            the log directory is shared writable at the same path.

Either way a test sees one `Host` (run commands where vmsh must run, spawn
processes) and `Guest`s started on it (`.pid` as seen from the host,
`.console(cmd)` typed into the guest's serial shell).  Every process the
harness starts is tracked and killed on every exit path; in emulated mode
killing L1 takes everything inside with it.

Environment:
  VMSH_TEST_MODE      direct | emulated (default: detect)
  VMSH_TEST_CACHE     kernels and initramfs images (/var/cache/vmsh-test)
  VMSH_TEST_LOGDIR    parent of the per-session log directory (/tmp)
  VMSH_L1_MEM, VMSH_L1_SMP   emulated host size (3G, 1: see README.md)
  VMSH_L1_ACCEL, VMSH_L1_APPEND  override L1 qemu -accel, add to its kernel command line
  VMSH_TEST_TIMEOUT_SCALE    multiply every boot/command timeout (1)
  VMSH_SOAK           1: tests marked `soak` use their long sizes (make soak)
"""

import atexit
import base64
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import hostagent
from .hostagent import AgentError, CommandTimeout, ConsoleError  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "guest"
CACHE = os.environ.get("VMSH_TEST_CACHE", "/var/cache/vmsh-test")
QEMU = "qemu-system-x86_64"
MACHINES = ("pc", "q35", "microvm")
KERNELS = ("5.10", "6.1", "6.12")
READY_MARKER = "VMSH-GUEST-READY"
PROMPT = r"vmsh-guest:\S*[#$] "   # PS1 of the guest shell (guest-init.sh)
TIMEOUT_SCALE = float(os.environ.get("VMSH_TEST_TIMEOUT_SCALE", "1"))

# EPYC with SVM and nested paging, minus what TCG cannot emulate (keeps
# qemu from warning about each of them).
L1_CPU = ("EPYC,+svm,+npt,-rdseed,-sha-ni,-fxsr-opt,-misalignsse,-3dnowprefetch,"
          "-osvw,-topoext,-nrip-save,-xsavec")


class HarnessError(Exception):
    """The test environment itself failed (not the code under test)."""


def log(msg):
    print(f"vmsh-harness: {msg}", file=sys.stderr, flush=True)


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def sized(check, soak):
    """How many cycles/kills/repeats a test marked `soak` runs: a short run
    in make check (the same assertions, fewer repetitions), the long one in
    make soak (VMSH_SOAK=1)."""
    return soak if os.environ.get("VMSH_SOAK") == "1" else check


# -- cleanup on every exit path ------------------------------------------------

_LIVE = []              # objects with a close() that kills what they started
_LIVE_LOCK = threading.Lock()


def _track(obj):
    with _LIVE_LOCK:
        _LIVE.append(obj)


def _untrack(obj):
    with _LIVE_LOCK:
        if obj in _LIVE:
            _LIVE.remove(obj)


def cleanup_all():
    """Close (kill) everything still alive, newest first."""
    with _LIVE_LOCK:
        objs = list(reversed(_LIVE))
    for obj in objs:
        try:
            obj.close()
        except Exception as e:  # keep going: the others must die too
            log(f"cleanup of {obj!r} failed: {e}")


def _on_signal(signum, frame):
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(cleanup_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        if signal.getsignal(_sig) in (signal.SIG_DFL, None):
            signal.signal(_sig, _on_signal)
    except ValueError:  # not the main thread
        pass


# -- kernels and images ----------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package (see tools/guest/fetch-kernel.sh)."""
    series: str     # "6.1"
    flavour: str    # "amd64"
    dir: str
    release: str    # uname -r
    package: str    # e.g. linux-image-6.1.0-56-amd64-unsigned
    version: str    # Debian package version

    @property
    def vmlinuz(self):
        return os.path.join(self.dir, "vmlinuz")

    @property
    def system_map(self):
        return os.path.join(self.dir, "System.map")

    @property
    def config(self):
        return os.path.join(self.dir, "config")

    @property
    def modules(self):
        return os.path.join(self.dir, "modules")

    def symbol(self, name):
        """Link-time address of `name` from System.map (None if absent)."""
        found = None
        with open(self.system_map) as f:
            for n, line in enumerate(f):
                addr, _, sym = line.split()[:3]
                if sym == name:
                    found = int(addr, 16)
                    break
        if found is None and n < 100:
            raise HarnessError(f"{self.system_map} is Debian's placeholder: the real one comes "
                               "from the -dbg package (fetch-kernel.sh without VMSH_FETCH_DBG=0)")
        return found


_KERNELS = {}
_INITRDS = {}
_ROOTFS = {}
_PREP_LOCK = threading.Lock()


def fetch_kernel(series="6.1", flavour="amd64"):
    """Download/unpack (cached) the newest Debian kernel of a series."""
    key = (series, flavour)
    # "custom-6.1" kernels are built from Debian's linux-source-6.1 by the
    # harness (build-kernel.sh; flavour: builtin | nomodules)
    tool = ([str(TOOLS / "build-kernel.sh"), flavour] if series == "custom-6.1"
            else [str(TOOLS / "fetch-kernel.sh"), series, flavour])
    with _PREP_LOCK:
        if key not in _KERNELS:
            p = subprocess.run(tool,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, VMSH_TEST_CACHE=CACHE))
            if p.returncode != 0:
                raise HarnessError(f"{' '.join(tool)} failed:\n{p.stderr[-4000:]}")
            d = p.stdout.strip().splitlines()[-1]
            pkg, ver = open(os.path.join(d, "package")).read().split()
            _KERNELS[key] = Kernel(series, flavour, d,
                                   open(os.path.join(d, "release")).read().strip(), pkg, ver)
        return _KERNELS[key]


_QEMUS = {}
QEMU_VERSIONS = ("7.2", "10")  # the host's own (bookworm), and bookworm-backports'


def qemu_argv0(version):
    """The command that starts a test guest's QEMU: the host's own for "7.2"
    (bookworm), or QEMU 10 from bookworm-backports, unpacked (cached) next to
    it by fetch-qemu.sh, with its data and BIOS directories."""
    if version in (None, "7.2"):
        return [QEMU]
    if version not in QEMU_VERSIONS:
        raise ValueError(f"unknown QEMU {version!r} (want one of {QEMU_VERSIONS})")
    with _PREP_LOCK:
        if version not in _QEMUS:
            p = subprocess.run([str(TOOLS / "fetch-qemu.sh"), version], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, VMSH_TEST_CACHE=CACHE))
            if p.returncode != 0:
                raise HarnessError(f"fetch-qemu.sh {version} failed:\n{p.stderr}")
            d = p.stdout.strip().splitlines()[-1]
            _QEMUS[version] = [os.path.join(d, "qemu-system-x86_64"), "-L", os.path.join(d, "share", "seabios"),
                               "-L", os.path.join(d, "share", "qemu")]
        return list(_QEMUS[version])


def guest_cpu(host, kernel):
    """The guest's -cpu. Under emulation (TCG's EPYC), Linux 5.10 finds
    CPUID's XSAVE area size (832) inconsistent with its own sum for the same
    features (WARNING at fpu/xstate.c:692) and then refuses every signal
    frame it wrote itself (init dies: "bad frame in rt_sigreturn"); 6.1 and
    later boot. Such a 5.10 guest runs without XSAVE and so without the AVX
    family too (left in CPUID, aesni_intel's AVX code took an invalid-opcode
    oops on the Debian guest): FXSR and SSE only."""
    if host.mode == "emulated" and kernel.series == "5.10":
        return "host,-xsave,-xsaveopt,-xgetbv1,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq"
    return "host"


def build_initramfs(kind, kernel):
    """Build (cached by content) the 'guest' or 'host' initramfs for a kernel."""
    key = (kind, kernel.dir)
    with _PREP_LOCK:
        if key not in _INITRDS:
            p = subprocess.run([sys.executable, str(TOOLS / "build-initramfs.py"), kind, kernel.dir],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, VMSH_TEST_CACHE=CACHE))
            if p.returncode != 0:
                raise HarnessError(f"build-initramfs.py {kind} failed:\n{p.stderr}")
            _INITRDS[key] = p.stdout.strip().splitlines()[-1]
        return _INITRDS[key]


@dataclass(frozen=True)
class DebianRootfs:
    """An ordinary Debian 12 guest for a kernel (build-debian-rootfs.sh):
    minbase + systemd on an ext4 root disk (label vmsh-root) with the
    kernel's modules, and Debian's own initramfs for it."""
    dir: str
    release: str

    @property
    def image(self):
        return os.path.join(self.dir, "root.ext4")

    @property
    def initrd(self):
        return os.path.join(self.dir, "initrd.img")


def build_debian_rootfs(kernel):
    """Build (cached by content) the Debian root disk and initramfs for a kernel."""
    with _PREP_LOCK:
        if kernel.dir not in _ROOTFS:
            p = subprocess.run([str(TOOLS / "build-debian-rootfs.sh"), kernel.dir],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, VMSH_TEST_CACHE=CACHE))
            if p.returncode != 0:
                raise HarnessError(f"build-debian-rootfs.sh failed:\n{p.stderr[-4000:]}")
            d = p.stdout.strip().splitlines()[-1]
            _ROOTFS[kernel.dir] = DebianRootfs(d, open(os.path.join(d, "release")).read().strip())
        return _ROOTFS[kernel.dir]


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


# -- hosts -----------------------------------------------------------------------

@dataclass
class CommandResult:
    rc: int
    stdout: str
    stderr: str     # empty when stderr was merged into stdout
    secs: float


class Host:
    """Where the guests' hypervisors run and where vmsh must run.

    mode     "direct" or "emulated"
    logdir   per-session directory for logs, the same path on this machine
             and on the host (shared into L1 in emulated mode)
    sockdir  directory for unix sockets on the host side
    """

    mode = None

    def __init__(self, logdir):
        self.logdir = logdir
        self.sockdir = None
        self.guests = []
        self.timings = {}

    # -- the API tests use --
    def run(self, cmd, timeout=60, input=None):
        """Run shell command `cmd` on the host; return (rc, output) with
        stderr merged into stdout.  Raises CommandTimeout."""
        r = self._call("run", timeout, cmd=cmd, timeout=scaled(timeout), input=input, merge=True)
        return r["rc"], r["out"]

    def exec(self, cmd, timeout=60, input=None):
        """Like run(), with stdout and stderr apart: a CommandResult."""
        r = self._call("run", timeout, cmd=cmd, timeout=scaled(timeout), input=input, merge=False)
        return CommandResult(r["rc"], r["out"], r["err"], r["secs"])

    def check(self, cmd, timeout=60, input=None):
        """run(), raising AssertionError with the output when rc != 0."""
        rc, out = self.run(cmd, timeout, input)
        if rc != 0:
            raise AssertionError(f"host command failed (rc={rc}): {cmd}\n{out}")
        return out

    def spawn(self, argv, log):
        """Start a long-running process on the host; return its host PID."""
        return self._call("spawn", 30, argv=list(argv), log=log)

    def alive(self, pid):
        return self._call("alive", 30, pid=pid)

    def kill(self, pid, sig=signal.SIGTERM, wait=10):
        """Stop a process started by spawn(); return its exit status."""
        return self._call("kill", wait + 10, pid=pid, sig=int(sig), wait=wait)

    def read_file(self, path):
        """Bytes of a (small) file on the host."""
        return base64.b64decode(self._call("read_file", 60, path=path))

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, op, budget, **args):
        raise NotImplementedError

    def describe(self):
        return f"{self.mode} (logs in {self.logdir})"


class DirectHost(Host):
    """This machine is the KVM host: a Supervisor in this process."""

    mode = "direct"

    def __init__(self, logdir):
        super().__init__(logdir)
        self.sockdir = os.path.join(logdir, "sock")
        os.makedirs(self.sockdir, exist_ok=True)
        self.sup = hostagent.Supervisor(pdeathsig=True)
        _track(self)

    def _call(self, op, budget, **args):
        return getattr(self.sup, op)(**args)

    def close(self):
        for g in list(self.guests):
            g.stop()
        self.sup.shutdown()
        _untrack(self)


class EmulatedHost(Host):
    """An emulated KVM host (L1): qemu TCG with SVM, Debian's kernel with
    kvm-amd, this machine's root read-only as a chroot, and
    vmshtest/hostagent.py answering on a virtio-serial port."""

    mode = "emulated"

    def __init__(self, logdir, mem=None, smp=None, kernel="6.1", boot_timeout=240):
        super().__init__(logdir)
        self.sockdir = "/run/vmsh-sock"   # tmpfs inside L1
        self.mem = mem or os.environ.get("VMSH_L1_MEM", "3G")
        self.smp = int(smp or os.environ.get("VMSH_L1_SMP", "1"))
        self.kernel = fetch_kernel(kernel, "amd64")
        self.initrd = build_initramfs("host", self.kernel)
        self.console_log = os.path.join(logdir, "l1-console.log")
        self.qemu_log = os.path.join(logdir, "l1-qemu.log")
        self.agent_sock = os.path.join(logdir, "l1-agent.sock")
        self.monitor_sock = os.path.join(logdir, "l1-monitor.sock")
        self.proc = None
        self.sock = None
        self.ids = itertools.count(1)
        self.waiters = {}
        self.wlock = threading.Lock()
        self.closed = False
        for path in (str(REPO), logdir):
            if re.search(r"[\s,]", path):
                raise HarnessError(f"path {path!r} must not contain spaces or commas "
                                   "(it goes on qemu's and the kernel's command lines)")
        _track(self)
        try:
            self._boot(scaled(boot_timeout))
        except BaseException:
            self.close()
            raise

    def _boot(self, timeout):
        agent = REPO / "vmshtest" / "hostagent.py"
        append = (f"console=ttyS0 panic=-1 vmsh.agent={agent} vmsh.xchg={self.logdir} "
                  f"vmsh.python=/usr/bin/python3 {os.environ.get('VMSH_L1_APPEND', '')}")
        accel = os.environ.get("VMSH_L1_ACCEL", "tcg,thread=multi")
        argv = [QEMU, "-name", "vmsh-test-l1", "-accel", accel, "-cpu", L1_CPU,
                "-m", self.mem, "-smp", str(self.smp), "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot",
                "-kernel", self.kernel.vmlinuz, "-initrd", self.initrd, "-append", append,
                # HMP monitor for post-mortems of a wedged L1 (info registers -a).
                "-chardev", f"socket,id=mon,path={self.monitor_sock},server=on,wait=off",
                "-mon", "chardev=mon,mode=readline",
                "-chardev", f"file,id=con,path={self.console_log}", "-serial", "chardev:con",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                           "multidevs=remap",
                "-virtfs", f"local,path={self.logdir},mount_tag=xchg,security_model=none,"
                           "multidevs=remap",
                "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=agent,path={self.agent_sock},server=on,wait=off",
                "-device", "virtserialport,chardev=agent,name=vmsh.agent"]
        t0 = time.monotonic()
        with open(self.qemu_log, "wb") as qlog:
            qlog.write((" ".join(argv) + "\n\n").encode())
            qlog.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=hostagent._set_pdeathsig
                if threading.current_thread() is threading.main_thread() else None)
        log(f"emulated KVM host: qemu pid {self.proc.pid}, console {self.console_log}")
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise self._failure(f"L1 qemu exited with {self.proc.returncode} while booting")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.agent_sock)
                break
            except OSError:
                self.sock.close()
                self.sock = None
                if time.monotonic() > deadline:
                    raise self._failure("L1 agent socket never appeared")
                time.sleep(0.05)
        threading.Thread(target=self._reader, daemon=True, name="l1-agent-reader").start()
        # The agent starts after the kernel, the modules and python: ping
        # until it answers (early pings are read late or lost, harmlessly).
        while True:
            try:
                info = self._call("ping", 2)
                break
            except HarnessError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise self._failure(f"L1 agent did not answer within {timeout:.0f}s")
        self.timings["l1_boot"] = time.monotonic() - t0
        if not info.get("kvm"):
            raise self._failure("L1 booted but has no /dev/kvm (kvm-amd did not load?)")
        log(f"emulated KVM host ready in {self.timings['l1_boot']:.1f}s")

    def _failure(self, msg):
        return HarnessError(f"{msg}\n--- {self.qemu_log} (tail)\n{_tail(self.qemu_log, 15)}"
                            f"\n--- {self.console_log} (tail)\n{_tail(self.console_log)}")

    def _reader(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                slot = self.waiters.get(msg.get("id"))
                if slot is not None:
                    slot["msg"] = msg
                    slot["event"].set()
        # L1 is gone: wake everybody.
        for slot in list(self.waiters.values()):
            slot["event"].set()

    def _call(self, op, budget, **args):
        if self.closed or self.sock is None:
            raise HarnessError("emulated host is closed")
        rid = next(self.ids)
        slot = {"event": threading.Event(), "msg": None}
        self.waiters[rid] = slot
        try:
            data = (json.dumps({"id": rid, "op": op, "args": args}) + "\n").encode()
            with self.wlock:
                self.sock.sendall(data)
            # The agent enforces the command's own timeout; allow for the
            # emulated machine being slow to report back.
            deadline = time.monotonic() + scaled(budget) + 30
            while not slot["event"].wait(min(1.0, scaled(budget))):
                if self.proc.poll() is not None:
                    raise self._failure(f"L1 qemu died (rc={self.proc.returncode}) during {op}")
                if time.monotonic() > deadline or op == "ping":
                    raise HarnessError(f"L1 agent did not answer {op} within {budget}s")
            msg = slot["msg"]
            if msg is None:
                raise self._failure(f"connection to the L1 agent lost during {op}")
            if "error" in msg:
                cls = hostagent.ERRORS.get(msg["error"], AgentError)
                raise cls(msg["message"], msg.get("partial", ""))
            return msg["result"]
        finally:
            self.waiters.pop(rid, None)

    def close(self):
        if self.closed:
            return
        for g in list(self.guests):
            try:
                g.stop()
            except Exception as e:
                log(f"stopping {g.name} failed: {e}")
        self.closed = True
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        _untrack(self)

    def describe(self):
        return (f"emulated (L1: qemu TCG {L1_CPU.split(',')[0]}+svm+npt, {self.mem}, "
                f"{self.smp} vCPUs, kernel {self.kernel.release}; logs in {self.logdir})")


# -- guests ----------------------------------------------------------------------

# Machine type -> qemu arguments.  microvm: its own isa-serial and qboot BIOS.
MACHINE_ARGS = {
    "pc": ["-machine", "pc"],
    "q35": ["-machine", "q35"],
    "microvm": ["-machine", "microvm"],
}
# microvm has none of the reset devices Linux's default reboot tries (it
# prints "Restarting system" and stops): reboot by triple fault there, so
# that a guest that reboots or panics (panic=-1) ends qemu (-no-reboot) or
# resets it (-action reboot=reset) as on pc and q35.
MACHINE_APPEND = {"pc": "", "q35": "", "microvm": "reboot=t", "minivmm": "reboot=t pci=off"}
# The project's own small VMM (tests/fixtures/minivmm): the lightweight-VMM
# family next to qemu's machines. extra_qemu_args are its own options there
# (--sandbox, --disk FILE).
MINIVMM = os.environ.get("VMSH_MINIVMM", str(REPO / "build" / "minivmm"))
# How the Debian-rootfs guest's own disk is attached: PCI where there is PCI,
# qemu's virtio-mmio transport on microvm (described to the guest by ACPI).
ROOT_DISK_DEVICE = {"pc": "virtio-blk-pci", "q35": "virtio-blk-pci", "microvm": "virtio-blk-device"}
ROOTFS = (None, "debian")


def _mib(mem):
    m = re.fullmatch(r"(\d+)([MG]?)", str(mem))
    if not m:
        raise ValueError(f"memory size {mem!r}: want N, NM or NG")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def _qemu_argv(qemu, name, machine, host, k, initrd, cmdline, mem, smp, sock, console_log, extra):
    return [*qemu_argv0(qemu), "-name", name, *MACHINE_ARGS[machine], "-accel", "kvm", "-cpu", guest_cpu(host, k),
            "-m", str(mem), "-smp", str(smp), "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-kernel", k.vmlinuz, "-initrd", initrd, "-append", cmdline,
            # wait=on: qemu starts the guest only once the harness is
            # connected, so no console output is lost; logfile keeps it all.
            "-chardev", f"socket,id=console,path={sock},server=on,wait=on,"
                        f"logfile={console_log}",
            "-serial", "chardev:console", *extra]


def _minivmm_argv(name, k, initrd, cmdline, mem, smp, sock, console_log, extra):
    if not os.path.exists(MINIVMM):
        raise HarnessError(f"{MINIVMM} is missing: build it (make fixtures) or set VMSH_MINIVMM")
    # like qemu's console: a socket server that waits for the harness
    return [MINIVMM, "--name", name, "--kernel", k.vmlinuz, "--initrd", initrd, "--append", cmdline,
            "--mem", str(_mib(mem)), "--cpus", str(smp), "--console", sock, "--console-log", console_log,
            *extra]


class Guest:
    """A Linux guest (L2) under a qemu process on `host`, with a root shell on
    its serial console.  Start with Guest.start(...)."""

    _seq = itertools.count(1)

    def __init__(self, host, name, machine, kernel, argv, sock, console_log, qemu_log):
        self.host = host
        self.name = name
        self.machine = machine
        self.kernel = kernel
        self.argv = argv
        self.sock = sock
        self.console_log = console_log
        self.qemu_log = qemu_log
        self.pid = None
        self.boot_secs = None
        self.stopped = False

    @classmethod
    def start(cls, host, machine="pc", kernel="6.1", flavour="amd64", mem="512M", smp=1,
              extra_qemu_args=(), modules=None, append="", name=None, timeout=180, prompt=None,
              rootfs=None, qemu=None):
        """Boot a guest and wait for its ready marker.

        machine          pc | q35 | microvm
        kernel, flavour  Debian kernel series and flavour (fetch-kernel.sh)
        modules          modules the guest's /init loads (None: virtio set)
        append           extra kernel command line
        name             qemu -name (default vmsh-test-<machine>-<kernel>)
        prompt           what the console shows when the guest is ready
                         (default: the test shell's prompt)
        rootfs           None: the busybox test initramfs is the whole guest;
                         "debian": an ordinary Debian 12 system (systemd,
                         udev, modules on its own virtio disk) booted
                         through Debian's initramfs, root found by label
                         (build-debian-rootfs.sh); its disk is a qcow2
                         overlay in the log directory, so the cached image
                         stays as built. `modules` does not apply.
        qemu             None/"7.2": the host's QEMU; "10": QEMU 10 from
                         bookworm-backports (qemu_argv0)
        The kernel boots from its bzImage with KASLR on."""
        if machine not in MACHINE_ARGS and machine != "minivmm":
            raise ValueError(f"unknown machine {machine!r} (want one of {MACHINES})")
        if machine == "minivmm" and (rootfs or qemu):
            raise ValueError("minivmm boots the test initramfs only (no rootfs=, no qemu=)")
        if rootfs not in ROOTFS:
            raise ValueError(f"unknown rootfs {rootfs!r} (want one of {ROOTFS})")
        k = fetch_kernel(kernel, flavour)
        seq = next(cls._seq)
        name = name or (f"vmsh-test-{machine}-{kernel}" + ("" if flavour == "amd64" else f"-{flavour}")
                        + (f"-{rootfs}" if rootfs else ""))
        base = f"{name}.{seq}"
        sock = f"{host.sockdir}/g{seq}.sock"
        console_log = os.path.join(host.logdir, f"{base}.console.log")
        qemu_log = os.path.join(host.logdir, f"{base}.qemu.log")
        disk_args = []
        if rootfs == "debian":
            rfs = build_debian_rootfs(k)
            initrd = rfs.initrd
            overlay = os.path.join(host.logdir, f"{base}.root.qcow2")
            host.check(f"qemu-img create -q -f qcow2 -F raw -b {rfs.image} {overlay}", 60)
            disk_args = ["-drive", f"id=root,file={overlay},if=none,format=qcow2",
                         "-device", f"{ROOT_DISK_DEVICE[machine]},drive=root"]
            # Debian's own boot: root by label, read-only until systemd
            # remounts it; systemd's status lines would interleave with
            # the test shell's output on ttyS0.
            boot = "root=LABEL=vmsh-root ro console=ttyS0 panic=-1 quiet systemd.show_status=0"
        else:
            initrd = build_initramfs("guest", k)
            boot = "console=ttyS0 panic=-1 quiet"
        cmdline = " ".join(x for x in (
            boot, MACHINE_APPEND[machine],
            "vmsh.modules=" + (",".join(modules) or "none") if modules is not None and not rootfs else "",
            append) if x)
        if machine == "minivmm":
            # the CPUID of guest_cpu(): 5.10 under emulation without XSAVE
            nox = ["--no-xsave"] if guest_cpu(host, k) != "host" else []
            argv = _minivmm_argv(name, k, initrd, cmdline, mem, smp, sock, console_log, [*nox, *extra_qemu_args])
        else:
            argv = _qemu_argv(qemu, name, machine, host, k, initrd, cmdline, mem, smp, sock, console_log,
                              [*disk_args, *extra_qemu_args])
        g = cls(host, name, machine, k, argv, sock, console_log, qemu_log)
        t0 = time.monotonic()
        host.run(f"mkdir -p {host.sockdir} && rm -f {sock}", 30)
        g.pid = host.spawn(argv, qemu_log)
        host.guests.append(g)
        try:
            host._call("console_open", 30, path=sock, pid=g.pid, timeout=scaled(30))
            ready = host._call("console_wait", timeout, path=sock, pattern=READY_MARKER,
                               timeout=scaled(timeout))
            host._call("console_wait", 60, path=sock, pattern=prompt or PROMPT, start=ready["end"],
                       timeout=scaled(60))
        except (AgentError, HarnessError) as e:
            partial = getattr(e, "partial", "")
            g.stop()
            raise HarnessError(f"guest {name} ({machine}, {k.release}) did not boot: {e}\n"
                               f"--- {qemu_log} (tail)\n{_tail(qemu_log, 15)}\n"
                               f"--- {console_log} (tail)\n{_tail(console_log)}"
                               + (f"\n--- console output\n{partial[-3000:]}" if partial else "")
                               ) from None
        g.boot_secs = time.monotonic() - t0
        host.timings[f"{base} boot"] = g.boot_secs
        log(f"guest {name} (pid {g.pid} on the {host.mode} host, {k.release}) "
            f"ready in {g.boot_secs:.1f}s")
        return g

    def console_status(self, cmd, timeout=60):
        """Run shell command `cmd` in the guest as root; return (rc, output)
        (stdout and stderr together, stdin /dev/null).  Raises ConsoleError
        on timeout (after interrupting the command with ^C)."""
        r = self.host._call("console_cmd", timeout, path=self.sock, cmd=cmd,
                            timeout=scaled(timeout))
        return r["rc"], r["out"]

    def console(self, cmd, timeout=60, check=True):
        """Run `cmd` in the guest; return its output.  With check (default)
        a non-zero exit status raises AssertionError."""
        rc, out = self.console_status(cmd, timeout)
        if check and rc != 0:
            raise AssertionError(f"guest command failed in {self.name} (rc={rc}): {cmd}\n{out}")
        return out

    def output(self):
        """Everything the guest printed on its console so far."""
        return self.host._call("console_output", 30, path=self.sock)["out"]

    def alive(self):
        """True while the qemu process runs."""
        if self.stopped:
            return False
        return self.host.alive(self.pid)

    def stop(self, wait=10):
        """Stop qemu (SIGTERM, SIGKILL after `wait` s) and reap it. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.host._call("console_close", 30, path=self.sock)
        except Exception:
            pass
        self._end(wait)
        if self in self.host.guests:
            self.host.guests.remove(self)

    def _end(self, wait):
        """End the hypervisor process (a harness-spawned qemu/minivmm)."""
        if self.pid is not None:
            try:
                self.host.kill(self.pid, signal.SIGTERM, wait)
            except AgentError:
                pass

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<Guest {self.name} pid={self.pid} {self.machine} {self.kernel.release}>"


class GuestPool:
    """Guests keyed by (machine, kernel, flavour), booted on first use and
    reused while alive; at most `max_alive` run at once (least recently used
    stopped first), so a parametrized session does not exhaust L1's memory."""

    def __init__(self, host, max_alive=2):
        self.host = host
        self.max_alive = max_alive
        self.guests = {}    # key -> Guest, in use order

    def get(self, machine="pc", kernel="6.1", flavour="amd64", **kw):
        key = (machine, kernel, flavour, kw.get("rootfs"))
        g = self.guests.pop(key, None)
        if g is not None and not g.alive():
            log(f"{g.name} died; booting a new one (console log {g.console_log})")
            g.stop()
            g = None
        if g is None:
            while len(self.guests) >= self.max_alive:
                old_key = next(iter(self.guests))
                self.guests.pop(old_key).stop()
            g = Guest.start(self.host, machine, kernel, flavour, **kw)
        self.guests[key] = g
        return g

    def discard(self, guest):
        """Forget and stop a guest (e.g. one a test left in a bad state)."""
        for key, g in list(self.guests.items()):
            if g is guest:
                del self.guests[key]
        guest.stop()

    def close(self):
        for g in self.guests.values():
            g.stop()
        self.guests.clear()


# -- mode detection ----------------------------------------------------------------

def detect_mode():
    """Return (mode, reason) without booting anything: 'emulated' when
    /dev/kvm is missing, is software KVM (kvm_pvm) or the CPU has no VMX/SVM;
    otherwise 'direct' (still to be confirmed by a test boot)."""
    forced = os.environ.get("VMSH_TEST_MODE")
    if forced:
        if forced not in ("direct", "emulated"):
            raise HarnessError(f"VMSH_TEST_MODE={forced!r}: want direct or emulated")
        return forced, "VMSH_TEST_MODE"
    if not os.path.exists("/dev/kvm"):
        return "emulated", "no /dev/kvm"
    modules = ""
    try:
        modules = open("/proc/modules").read()
    except OSError:
        pass
    if re.search(r"^kvm_pvm\s", modules, re.M) or os.path.isdir("/sys/module/kvm_pvm"):
        return "emulated", "/dev/kvm is software KVM (kvm_pvm)"
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if not flags & {"vmx", "svm"}:
        return "emulated", "CPU shows neither vmx nor svm"
    return "direct", "hardware KVM"


def make_host(mode=None, logdir=None):
    """The Host for this machine: direct when hardware KVM boots a guest,
    else emulated.  Raises HarnessError when neither works."""
    if logdir is None:
        parent = os.environ.get("VMSH_TEST_LOGDIR", "/tmp")
        os.makedirs(parent, exist_ok=True)
        logdir = tempfile.mkdtemp(prefix="vmsh-vm-", dir=parent)
    os.chmod(logdir, 0o755)
    forced = mode is not None
    if mode is None:
        mode, reason = detect_mode()
        forced = reason == "VMSH_TEST_MODE"
    else:
        reason = "requested"
    if mode == "direct":
        # Hardware KVM claims to be there: prove it with one real boot.
        host = DirectHost(logdir)
        try:
            Guest.start(host, "pc", "6.1", mem="256M", timeout=60).stop()
            host.mode_reason = f"{reason}, test boot passed"
            _banner(host)
            return host
        except HarnessError as e:
            host.close()
            if forced:
                raise HarnessError(f"direct mode ({reason}) but a test guest does not boot on "
                                   f"this machine's /dev/kvm:\n{e}") from None
            mode, reason = "emulated", f"a test boot on /dev/kvm failed: {str(e)[:300]}"
    try:
        host = EmulatedHost(logdir)
    except HarnessError as e:
        raise HarnessError(f"no usable KVM host: emulated mode ({reason}) failed too:\n{e}"
                           ) from None
    host.mode_reason = reason
    _banner(host)
    return host


def _banner(host):
    bar = "=" * 72
    log(f"\n{bar}\nvmsh e2e tests: {host.mode.upper()} MODE - {host.mode_reason}\n"
        f"  {host.describe()}\n{bar}")


def remove_logs(host):
    """Delete the session's log directory (call only when everything passed)."""
    shutil.rmtree(host.logdir, ignore_errors=True)
