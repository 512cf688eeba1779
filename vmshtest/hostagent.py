#!/usr/bin/env python3
"""hostagent.py — the test harness's hands on the KVM host.

On the KVM host where the test guests run, something has to start qemu, run
vmsh, and type into the guests' serial consoles.  `Supervisor` does that:

  run(cmd, timeout)          a shell command; leftovers of it are killed after
  spawn(argv, log)           a long-running process (qemu), tracked by PID
  alive(pid) / kill(pid)     only for processes this supervisor spawned
  console_*(path, ...)       a guest's serial console on a unix socket: wait
                             for a marker, run a shell command, get its output

In direct mode (hardware KVM on this machine) vmshtest/harness.py uses a
Supervisor in-process.  In emulated mode this file runs inside the emulated
KVM host (L1) as `hostagent.py --serve /dev/vportNpM` and answers JSON
requests, one per line, on a virtio-serial port; the harness is the client.

Only the Python standard library: it runs with the machine's own
/usr/bin/python3 from the chroot of the host root inside L1.
"""

import base64
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback


class AgentError(Exception):
    """A request failed; `partial` holds output gathered before the failure."""

    def __init__(self, message, partial=""):
        super().__init__(message)
        self.partial = partial


class CommandTimeout(AgentError):
    pass


class ConsoleError(AgentError):
    pass


ERRORS = {cls.__name__: cls for cls in (AgentError, CommandTimeout, ConsoleError)}


def _decode(data):
    return data.decode("utf-8", errors="replace")


def _set_pdeathsig():
    """Child side of fork: die with SIGKILL when the parent thread dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _proc_state(pid):
    """State, wait channel and kernel stack of a process, for error messages."""
    parts = []
    for name in ("status", "wchan", "stack"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                text = f.read()
        except OSError as e:
            text = str(e)
        if name == "status":
            text = " ".join(l for l in text.splitlines() if l.startswith(("State", "Threads")))
        parts.append(f"{name}: {text.strip()}")
    return "; ".join(parts)


class SerialConsole:
    """A shell on a guest serial console, reached through qemu's unix socket.

    A reader thread appends everything the guest prints to `self.buf`.
    Commands are typed as base64 (so quoting, newlines and length do not
    matter), run with stdin from /dev/null and stderr merged into stdout, and
    delimited by markers that the typed line itself does not contain (the
    guest's shell echoes what it is given)."""

    LINE = 600  # characters typed per line; busybox line editing caps at 1024

    def __init__(self, path, connect_timeout=30.0, alive=None):
        self.path = path
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.closed = False
        self.cmd_lock = threading.Lock()
        self.counter = 0
        deadline = time.monotonic() + connect_timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if alive is not None and not alive():
                    raise ConsoleError(f"console {path}: process exited before the socket appeared")
                if time.monotonic() > deadline:
                    raise ConsoleError(f"console {path}: cannot connect: {e}")
                time.sleep(0.05)
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"console {path}")
        self.reader.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.buf += data
                self.cond.notify_all()

    def wait_for(self, pattern, timeout, start=0, alive=None):
        """Wait until regex `pattern` (bytes) matches the output from offset
        `start`; return the match.  `alive()` is polled so that a dead qemu
        fails fast instead of at the timeout."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf, start)
                if m:
                    return m
                if self.closed:
                    raise ConsoleError(f"console {self.path} closed while waiting for {pattern!r}"
                                       f"{self._exit_note(alive)}", _decode(self.buf[start:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConsoleError(f"timeout after {timeout:.0f}s waiting for {pattern!r}",
                                       _decode(self.buf[start:]))
                self.cond.wait(min(left, 1.0))
                if alive is not None and not alive():
                    m = rx.search(self.buf, start)
                    if m:
                        return m
                    raise ConsoleError(f"waiting for {pattern!r}{self._exit_note(alive)}",
                                       _decode(self.buf[start:]))

    def _exit_note(self, alive):
        """', qemu exited with ...' when the process behind the console died."""
        if alive is None:
            return ""
        for _ in range(20):
            if not alive():
                return f": the process exited ({getattr(alive, 'status', lambda: '?')()})"
            time.sleep(0.1)
        return ""

    def send(self, data):
        self.sock.sendall(data)

    def command(self, cmd, timeout, alive=None):
        """Run `cmd` in the guest shell; return (rc, output)."""
        with self.cmd_lock:
            self.counter += 1
            tag = f"{secrets.token_hex(3)}{self.counter}"
            encoded = base64.b64encode(cmd.encode()).decode()
            run = (f'echo "VMSH-B""EGIN-{tag}"; sh /tmp/.vmsh-s </dev/null 2>&1;'
                   f' echo "VMSH-E""ND-{tag}-$?"')
            if len(encoded) <= self.LINE:
                lines = [f"echo {encoded} | base64 -d >/tmp/.vmsh-s; {run}"]
            else:
                lines = ["rm -f /tmp/.vmsh-c"]
                for i in range(0, len(encoded), self.LINE):
                    lines.append(f"printf %s {encoded[i:i + self.LINE]} >>/tmp/.vmsh-c")
                lines.append(f"base64 -d /tmp/.vmsh-c >/tmp/.vmsh-s; {run}")
            with self.cond:
                start = len(self.buf)
            self.send(("\n".join(lines) + "\n").encode())
            try:
                begin = self.wait_for(rb"VMSH-BEGIN-" + tag.encode() + rb"\r?\n", timeout, start, alive)
                end = self.wait_for(rb"VMSH-END-" + tag.encode() + rb"-(\d+)\r?\n", timeout,
                                    begin.end(), alive)
            except ConsoleError as e:
                # Interrupt the command so the next one finds a shell.
                try:
                    self.send(b"\x03")
                except OSError:
                    pass
                raise ConsoleError(f"guest command {cmd!r}: {e}", e.partial) from None
            out = _decode(self.buf[begin.end():end.start()]).replace("\r\n", "\n")
            return int(end.group(1)), out

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Supervisor:
    """Runs commands and processes on this machine and remembers every PID it
    started, so that `shutdown()` can kill exactly those."""

    def __init__(self, pdeathsig=False):
        self.pdeathsig = pdeathsig
        self.procs = {}      # pid -> Popen, for spawned processes
        self.consoles = {}   # socket path -> SerialConsole
        self.lock = threading.Lock()

    def _preexec(self):
        # PR_SET_PDEATHSIG follows the forking *thread*: only safe from the
        # main thread, whose end is the end of the harness.
        if self.pdeathsig and threading.current_thread() is threading.main_thread():
            return _set_pdeathsig
        return None

    # -- commands ---------------------------------------------------------
    def run(self, cmd, timeout=60.0, input=None, merge=True):
        """Run `cmd` with /bin/sh; return {"rc", "out", "err", "secs"}.

        Output is collected until the shell exits; then whatever the command
        left running in its process group is killed (start long-running
        things with spawn()).  On timeout the group is killed and
        CommandTimeout raised with the output so far."""
        t0 = time.monotonic()
        p = subprocess.Popen(
            ["/bin/sh", "-c", cmd], start_new_session=True, preexec_fn=self._preexec(),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE)
        chunks = {"out": [], "err": []}

        def drain(stream, key):
            for data in iter(lambda: stream.read1(65536), b""):
                chunks[key].append(data)

        readers = [threading.Thread(target=drain, args=(p.stdout, "out"), daemon=True)]
        if not merge:
            readers.append(threading.Thread(target=drain, args=(p.stderr, "err"), daemon=True))
        for r in readers:
            r.start()
        if input is not None:
            try:
                p.stdin.write(input.encode() if isinstance(input, str) else input)
                p.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = False
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = p.wait()
        for r in readers:
            r.join(5)
        out = _decode(b"".join(chunks["out"]))
        err = _decode(b"".join(chunks["err"]))
        if timed_out:
            raise CommandTimeout(f"command timed out after {timeout}s: {cmd}", out + err)
        return {"rc": rc, "out": out, "err": err, "secs": time.monotonic() - t0}

    # -- processes --------------------------------------------------------
    def spawn(self, argv, log, env=None):
        """Start argv in its own session, stdout+stderr to file `log`."""
        with open(log, "ab") as logf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=self._preexec(),
                                 env=None if env is None else dict(os.environ, **env))
        with self.lock:
            self.procs[p.pid] = p
        return p.pid

    def _proc(self, pid):
        with self.lock:
            p = self.procs.get(pid)
        if p is None:
            raise AgentError(f"pid {pid} was not started by this supervisor")
        return p

    def alive(self, pid):
        return self._proc(pid).poll() is None

    def returncode(self, pid):
        return self._proc(pid).poll()

    def kill(self, pid, sig=signal.SIGTERM, wait=10.0):
        """Signal a spawned process (its whole process group), wait for it to
        exit (SIGKILL after `wait` seconds) and reap it; return its exit code."""
        p = self._proc(pid)
        if p.poll() is None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    raise AgentError(f"pid {pid} survives SIGKILL: {_proc_state(pid)}") from None
        # Kill whatever else is left in its group (qemu helpers, if any).
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with self.lock:
            self.procs.pop(pid, None)
        return p.returncode

    # -- guest consoles ---------------------------------------------------
    def console_open(self, path, pid=None, timeout=30.0):
        con = SerialConsole(path, timeout, self._alive_fn(pid))
        con.pid = pid
        with self.lock:
            old = self.consoles.pop(path, None)
            self.consoles[path] = con
        if old:
            old.close()

    def _alive_fn(self, pid):
        """alive() for a console's process, with .status() describing its end."""
        if pid is None:
            return None
        p = self._proc(pid)

        def alive():
            return p.poll() is None

        def status():
            rc = p.poll()
            if rc is None:
                return "still running"
            return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        alive.status = status
        return alive

    def _console(self, path):
        with self.lock:
            con = self.consoles.get(path)
        if con is None:
            raise ConsoleError(f"no console open on {path}")
        return con, self._alive_fn(con.pid)

    def console_wait(self, path, pattern, timeout=60.0, start=0):
        con, alive = self._console(path)
        m = con.wait_for(pattern.encode(), timeout, start, alive)
        return {"match": _decode(m.group(0)), "end": m.end()}

    def console_cmd(self, path, cmd, timeout=60.0):
        con, alive = self._console(path)
        rc, out = con.command(cmd, timeout, alive)
        return {"rc": rc, "out": out}

    def console_output(self, path, start=0):
        con, _ = self._console(path)
        with con.cond:
            return {"out": _decode(con.buf[start:]), "end": len(con.buf)}

    def console_send(self, path, data):
        con, _ = self._console(path)
        con.send(data.encode())

    def console_close(self, path):
        with self.lock:
            con = self.consoles.pop(path, None)
        if con:
            con.close()

    # -- files (small ones; the exchange share is for big ones) -----------
    def read_file(self, path):
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()

    def ping(self):
        return {"pid": os.getpid(), "time": time.time(), "kvm": os.path.exists("/dev/kvm")}

    def shutdown(self):
        """Close every console and kill every spawned process."""
        with self.lock:
            consoles = list(self.consoles.values())
            self.consoles.clear()
            pids = list(self.procs)
        for con in consoles:
            con.close()
        for pid in pids:
            try:
                self.kill(pid, signal.SIGKILL, wait=5)
            except Exception:
                pass


# -- JSON server on a virtio-serial port (emulated mode) ---------------------

OPS = {"run", "spawn", "alive", "returncode", "kill", "console_open", "console_wait",
       "console_cmd", "console_output", "console_send", "console_close", "read_file",
       "ping", "shutdown"}


def serve(port):
    sup = Supervisor()
    fd = os.open(port, os.O_RDWR)
    wlock = threading.Lock()

    def reply(msg):
        data = (json.dumps(msg) + "\n").encode()
        with wlock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except OSError as e:
                    print(f"hostagent: reply lost: {e}", file=sys.stderr)
                    return
                view = view[n:]

    def handle(req):
        rid = req.get("id")
        try:
            op = req["op"]
            if op not in OPS:
                raise AgentError(f"unknown op {op!r}")
            result = getattr(sup, op)(**req.get("args", {}))
            reply({"id": rid, "result": result})
        except AgentError as e:
            reply({"id": rid, "error": type(e).__name__, "message": str(e), "partial": e.partial})
        except Exception as e:
            reply({"id": rid, "error": "AgentError", "message": f"{type(e).__name__}: {e}",
                   "partial": traceback.format_exc()})

    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not data:
            # The harness is not connected (virtio-serial reads return 0).
            time.sleep(0.1)
            continue
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except ValueError:
                print(f"hostagent: bad request {line[:200]!r}", file=sys.stderr)
                continue
            threading.Thread(target=handle, args=(req,), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit("usage: hostagent.py --serve VIRTIO_PORT")
