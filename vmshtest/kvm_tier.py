#!/usr/bin/env python3
"""kvm_tier.py — run the KVM API tests (pytest marker `kvm`) where KVM exists.

The API tier drives vmsh against tests/fixtures/testvmm, a tiny VMM that needs
nothing but the KVM API.  Our machines differ: some have a software KVM
(KVM-PVM) at /dev/kvm, which is enough for these tests; others have no
/dev/kvm at all.  So:

  host      /dev/kvm opens and KVM_CREATE_VM succeeds: run the tests here.
  emulated  otherwise: boot the emulated KVM host of the end-to-end tier
            (vmshtest/harness.py: qemu TCG with SVM, Debian's kernel with
            kvm-amd, this machine's root shared read-only) and run the very
            same pytest command inside it, on its real KVM.

  VMSH_API_MODE=host|emulated   force a mode (default: detect).  Forcing
                                `host` without a usable /dev/kvm fails.

`--host-usable` only says whether this machine's /dev/kvm can run the tier
(exit status 0) or not (1).  The mode is printed before and after the run.  Extra arguments go to pytest
(e.g. `-k inspect`).  The exit status is pytest's (2 for a setup failure of
this script, with the reason).  Nothing is skipped: a tier that can run
neither way fails loudly.
"""

import fcntl
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

KVM_CREATE_VM = 0xAE01
PYTHON = "/usr/bin/python3"     # Debian's, with python3-pytest (also inside L1's chroot)
# Inside L1 everything is emulated (about 30x slower than here); the agent
# kills the run after this long.
EMULATED_BUDGET = int(os.environ.get("VMSH_API_EMULATED_BUDGET", "1800"))


def say(msg):
    print(f"vmsh api tier: {msg}", flush=True)


def host_kvm():
    """(usable, description) of this machine's /dev/kvm."""
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"cannot open /dev/kvm: {e.strerror}"
    try:
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as e:
        return False, f"KVM_CREATE_VM failed: {e.strerror}"
    finally:
        os.close(fd)
    if os.path.isdir("/sys/module/kvm_pvm"):
        return True, "KVM-PVM, a software KVM"
    for m in ("kvm_intel", "kvm_amd"):
        if os.path.isdir(f"/sys/module/{m}"):
            return True, f"hardware KVM ({m})"
    return True, "KVM"


def choose_mode():
    forced = os.environ.get("VMSH_API_MODE", "")
    usable, what = host_kvm()
    if forced == "host":
        if not usable:
            raise SystemExit(f"vmsh api tier: VMSH_API_MODE=host but {what}")
        return "host", f"host /dev/kvm ({what}), forced by VMSH_API_MODE"
    if forced == "emulated":
        return "emulated", f"forced by VMSH_API_MODE (host: {what})"
    if forced:
        raise SystemExit(f"vmsh api tier: VMSH_API_MODE={forced!r}: want host or emulated")
    if usable:
        return "host", f"host /dev/kvm ({what})"
    return "emulated", what


def pytest_argv(extra):
    return [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-m", "kvm",
            str(REPO / "tests" / "api"), *extra]


def run_on_host(extra, reason):
    say(f"host /dev/kvm — {reason}")
    rc = subprocess.call(pytest_argv(extra), cwd=REPO)
    say(f"ran on the host's /dev/kvm ({reason}): pytest exit status {rc}")
    return rc


def _follow(path, stop):
    """Copy the growing file `path` to stdout until `stop` is set."""
    pos = 0
    while True:
        done = stop.is_set()
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            pos += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        if done:
            return
        stop.wait(0.5)


def run_emulated(extra, reason):
    from vmshtest import harness  # only needed in this mode

    say(f"inside the emulated KVM host — {reason}; booting it")
    # What the tests would otherwise build on the fly: inside L1 the
    # repository is read-only.
    for target in ("build/testvmm", "build/kvm_plumbing"):
        r = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            say(f"building {target} failed:\n{r.stdout}{r.stderr}")
            return 2
    try:
        host = harness.make_host(mode="emulated")
    except harness.HarnessError as e:
        say(f"the emulated KVM host did not boot:\n{e}")
        return 2
    log = os.path.join(host.logdir, "api-tier.log")
    env = {
        "VMSH_BIN": os.environ.get("VMSH_BIN", str(REPO / "build" / "san" / "vmsh")),
        "VMSH_TESTVMM": str(REPO / "build" / "testvmm"),
        "VMSH_API_IN_L1": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = (" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
           + f"cd {shlex.quote(str(REPO))} && "
           + " ".join(shlex.quote(a) for a in pytest_argv(extra))
           + f" >{shlex.quote(log)} 2>&1")
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(log, stop), daemon=True)
    follower.start()
    t0 = time.monotonic()
    try:
        rc, out = host.run(cmd, timeout=EMULATED_BUDGET)
    except harness.AgentError as e:
        say(f"the run inside the emulated KVM host failed: {e}")
        rc, out = 2, ""
    except harness.HarnessError as e:
        say(f"the emulated KVM host failed during the run: {e}")
        rc, out = 2, ""
    finally:
        stop.set()
        follower.join(10)
        secs = time.monotonic() - t0
    if out.strip():
        print(out, flush=True)
    say(f"ran inside the emulated KVM host ({host.describe()}; {reason}): "
        f"pytest exit status {rc} after {secs:.0f}s")
    host.close()
    if rc == 0 and not os.environ.get("VMSH_TEST_KEEP_LOGS"):
        harness.remove_logs(host)
    return rc


def main(argv):
    if argv == ["--host-usable"]:
        usable, what = host_kvm()
        say(f"this machine's /dev/kvm: {'usable' if usable else 'not usable'} ({what})")
        return 0 if usable else 1
    mode, reason = choose_mode()
    if mode == "host":
        return run_on_host(argv, reason)
    return run_emulated(argv, reason)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
