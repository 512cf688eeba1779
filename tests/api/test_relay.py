"""The console conversation without a VM: build/relay_pair runs vmsh's relay
(relay_run, ASan build) against vmsh-helper in --test-fd mode over a
socketpair; the helper runs the command on the host as it would in the guest.

Covered: pipe mode (binary round trip, exit codes, stderr apart, EOF, signals,
SIGPIPE, bounded memory), pty mode through a real terminal (prompt, window
size and resize, Ctrl-C, escape key, terminal restored on detach and on
SIGTERM), the helper argv format, and hostile frames in both directions.
"""
import hashlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import time

import pexpect
import pytest

from testvmm import REPO

BUILD = REPO / "build"
RELAY_PAIR = BUILD / "relay_pair"
HELPERS = {"musl": BUILD / "vmsh-helper", "asan": BUILD / "san" / "vmsh-helper"}
HELPER = HELPERS["musl"]

# frame types (guest-helper/proto.h)
STDIN, STDIN_EOF, WINSIZE, SIGNAL, DETACH = 0x01, 0x02, 0x03, 0x04, 0x05
HELLO, READY, STDOUT, STDERR, EXIT, ERROR, STDIN_ACK = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87
STDIN_WINDOW = 256 * 1024
SANITIZER_WORDS = ("AddressSanitizer", "runtime error", "LeakSanitizer")


def frame(t, payload=b"", length=None, flags=0, reserved=0):
    return struct.pack("<BBHI", t, flags, reserved, len(payload) if length is None else length) + payload


def hello(version=1):
    return frame(HELLO, struct.pack("<HH", version, 0) + b"test-peer")


@pytest.fixture(scope="session", autouse=True)
def binaries():
    r = subprocess.run(["make", "-s", "build/relay_pair", "build/vmsh-helper", "build/san/vmsh-helper"],
                       cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"building the relay test binaries failed:\n{r.stdout}{r.stderr}", pytrace=False)


def relay(cmd, stdin=b"", mode="pipe", helper=HELPER, extra=(), timeout=60):
    args = [str(RELAY_PAIR), str(helper), "--mode", mode, *extra, "--", *cmd]
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)


def no_sanitizer_report(stderr):
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    for w in SANITIZER_WORDS:
        assert w not in text, text


def processes_with_arg(word):
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if word.encode() in f.read().split(b"\0"):
                        found.append(int(d))
            except OSError:
                pass
    return found


def wait_gone(word, seconds=5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not processes_with_arg(word):
            return True
        time.sleep(0.05)
    return False


def unique_sleep():
    """A sleep duration nobody else uses, to find the process later."""
    return str(1000000 + random.randrange(1000000))


# ---------------------------------------------------------------- pipe mode

@pytest.mark.parametrize("flavour", ["musl", "asan"])
def test_pipe_50mb_random_roundtrip(tmp_path, flavour):
    data = os.urandom(50 * 1024 * 1024)
    src = tmp_path / "in"
    src.write_bytes(data)
    with open(src, "rb") as fin:
        r = subprocess.run([str(RELAY_PAIR), str(HELPERS[flavour]), "--mode", "pipe", "--", "cat"],
                           stdin=fin, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == len(data)
    assert hashlib.sha256(r.stdout).hexdigest() == hashlib.sha256(data).hexdigest()
    no_sanitizer_report(r.stderr)


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_code(code):
    r = relay(["sh", "-c", f"exit {code}"])
    assert r.returncode == code, r.stderr
    assert f"relay_pair: exited {code}".encode() in r.stderr


def test_missing_command_is_127():
    r = relay(["no-such-command-vmsh"])
    assert r.returncode == 127
    assert b"no-such-command-vmsh: not found" in r.stderr
    assert r.stdout == b""


def test_killed_command_is_128_plus_signal():
    r = relay(["sh", "-c", "kill -TERM $$"])
    assert r.returncode == 128 + signal.SIGTERM, r.stderr


def test_stderr_apart_from_stdout():
    r = relay(["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3"])
    assert r.returncode == 3
    assert r.stdout == b"out1\nout2\n"
    assert b"err1\nerr2\n" in r.stderr


def test_stdin_eof_reaches_the_command():
    payload = bytes(range(256)) * 1000 + b"\0\r\n\x04\x1d"
    r = relay(["wc", "-c"], stdin=payload)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == len(payload)


def test_empty_stdin():
    r = relay(["cat"], stdin=b"")
    assert r.returncode == 0 and r.stdout == b""


def test_command_not_reading_stdin_gets_it_later():
    """20 MB arrive while the command sleeps: held back, not lost, not buffered without bound."""
    data = os.urandom(20 * 1024 * 1024)
    r = relay(["sh", "-c", "sleep 1; exec wc -c"], stdin=data)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == len(data)


def test_memory_stays_bounded_when_stdout_is_not_read(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    with open(src, "rb") as fin:
        p = subprocess.Popen([str(RELAY_PAIR), str(HELPER), "--mode", "pipe", "--", "cat"],
                             stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2)  # nobody reads p.stdout: everything must stall, bounded
        helper_pids = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        assert helper_pids
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{helper_pids[0]}/status").read()).group(1))
        assert rss_kb < 16 * 1024, f"helper holds {rss_kb} KiB"
        out = p.stdout.read()
        p.wait(timeout=60)
    assert len(out) == 50 * 1024 * 1024
    assert p.returncode == 0


def test_sigint_is_forwarded_in_pipe_mode():
    p = subprocess.Popen([str(RELAY_PAIR), str(HELPER), "--mode", "pipe", "--", "sh", "-c",
                          "echo ready; exec sleep 100"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=10)
    err = p.stderr.read()
    assert rc == 128 + signal.SIGINT, err
    assert b"relay_pair: exited 130" in err


def test_signal_overtakes_stdin_the_command_does_not_read():
    """Endless stdin, a command that never reads it: flow control keeps the
    channel clear, so ^C (SIGINT) still reaches the command at once."""
    with open("/dev/zero", "rb") as zero:
        p = subprocess.Popen([str(RELAY_PAIR), str(HELPER), "--mode", "pipe", "--", "sh", "-c",
                              "echo ready; exec sleep 100"],
                             stdin=zero, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    time.sleep(0.5)  # let the window fill up
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=10)
    assert rc == 128 + signal.SIGINT, p.stderr.read()


def test_second_signal_gives_up_on_a_command_that_ignores_it():
    word = unique_sleep()
    p = subprocess.Popen([str(RELAY_PAIR), str(HELPER), "--mode", "pipe", "--", "sh", "-c",
                          f"trap '' TERM; echo ready; sleep {word}; true"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert p.poll() is None  # the command ignores it: still running
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=10)
    err = p.stderr.read()
    assert rc == 128 + signal.SIGTERM, err
    assert b"signaled" in err
    assert wait_gone(word), "the command outlived the detach"


def test_closed_stdout_sends_sigpipe_to_the_command():
    p = subprocess.Popen([str(RELAY_PAIR), str(HELPER), "--mode", "pipe", "--", "yes"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(4) == b"y\ny\n"
    p.stdout.close()
    rc = p.wait(timeout=10)
    err = p.stderr.read()
    assert rc == 128 + signal.SIGPIPE, err
    no_sanitizer_report(err)


def test_background_job_gets_hangup_when_the_command_exits():
    word = unique_sleep()
    r = relay(["sh", "-c", f"sleep {word} >/dev/null 2>&1 & exit 5"])
    assert r.returncode == 5, r.stderr
    assert wait_gone(word), "a background job of the command outlived the session"


def test_helper_unlinks_its_self_file(tmp_path):
    self_file = tmp_path / "vmsh-helper.copy"
    self_file.write_bytes(b"x")
    r = relay(["true"], extra=["--self", str(self_file)])
    assert r.returncode == 0, r.stderr
    assert not self_file.exists()


# ---------------------------------------------------------------- helper argv

def helper_argv(*args):
    r = subprocess.run([str(RELAY_PAIR), "--print-argv", *args], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(b"\0")
    return r.stdout[:-1].decode().split("\0")


def test_helper_argv_pipe_mode():
    assert helper_argv("--", "ls", "-l", "") == [
        "/tmp/vmsh-helper.self", "--self", "/tmp/vmsh-helper.self", "--port", "vmsh-1a2b3c",
        "--disk", "vmsh-1a2b3c", "--pipe", "--", "ls", "-l", ""]


def test_helper_argv_default_command():
    assert helper_argv()[-2:] == ["--", "/bin/sh"]


def test_helper_argv_pty_mode_takes_size_and_term_from_the_terminal():
    child = pexpect.spawn(str(RELAY_PAIR), ["--print-argv"], dimensions=(31, 97),
                          env=dict(os.environ, TERM="xterm-256color"), timeout=10)
    out = child.read()
    child.wait()
    args = out.rstrip(b"\0").decode().split("\0")
    i = args.index("--pty")
    assert args[i + 1] == "31x97"
    assert args[args.index("--term") + 1] == "xterm-256color"


# ---------------------------------------------------------------- pty mode

class Term:
    """relay_pair inside a shell on a real terminal (pexpect), with the
    terminal's settings printed before (A:) and after (B:) and the exit
    code (RC:)."""

    def __init__(self, cmd, extra=(), dims=(33, 101)):
        rp = " ".join([str(RELAY_PAIR), str(HELPER), *extra, "--"] + [f"'{c}'" for c in cmd])
        script = f'echo "A:$(stty -g)"; {rp}; echo "RC:$?"; echo "B:$(stty -g)"'
        self.child = pexpect.spawn("/bin/sh", ["-c", script], dimensions=dims, timeout=15,
                                   env=dict(os.environ, TERM="xterm"))
        self.child.expect(r"A:(\S+)\r\n")
        self.before_settings = self.child.match.group(1)

    def finish(self):
        c = self.child
        c.expect(r"RC:(\d+)\r\n")
        rc = int(c.match.group(1))
        transcript = c.before.decode(errors="replace")
        c.expect(r"B:(\S+)\r\n")
        after = c.match.group(1)
        c.expect(pexpect.EOF)
        assert after == self.before_settings, "terminal settings not restored"
        no_sanitizer_report(transcript)
        return rc, transcript

    def relay_pid(self):
        for _ in range(100):
            out = subprocess.run(["pgrep", "-P", str(self.child.pid), "-x", "relay_pair"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                return int(out[0])
            time.sleep(0.05)
        raise AssertionError("relay_pair not found")


SHELL = ["env", "PS1=rp> ", "sh", "-i"]


def test_pty_prompt_size_resize_and_exit():
    t = Term(SHELL)
    c = t.child
    c.expect_exact("rp> ")
    c.send("stty size\r")
    c.expect(r"33 101\r\n")
    c.expect_exact("rp> ")
    c.setwinsize(40, 120)  # SIGWINCH -> WINSIZE -> TIOCSWINSZ in the "guest"
    c.send("stty size\r")
    c.expect(r"40 120\r\n")
    c.expect_exact("rp> ")
    c.send("tty; exit 7\r")
    c.expect(r"/dev/pts/\d+")
    rc, transcript = t.finish()
    assert rc == 7
    assert "relay_pair: exited 7" in transcript


def test_pty_ctrl_c_interrupts_a_foreground_command():
    t = Term(SHELL)
    c = t.child
    c.expect_exact("rp> ")
    c.send("sleep 100\r")
    time.sleep(0.5)
    start = time.time()
    c.sendcontrol("c")
    c.expect_exact("rp> ", timeout=5)
    assert time.time() - start < 5
    c.send("echo rc=$?\r")
    c.expect(r"rc=130")
    c.expect_exact("rp> ")
    c.send("exit\r")
    rc, _ = t.finish()
    assert rc == 0


def test_pty_escape_key_disconnects_and_hangs_the_command_up():
    word = unique_sleep()
    t = Term(SHELL)
    c = t.child
    c.expect_exact("rp> ")
    c.send(f"sleep {word}\r")
    deadline = time.time() + 5
    while not processes_with_arg(word) and time.time() < deadline:
        time.sleep(0.05)
    assert processes_with_arg(word)
    c.sendcontrol("]")
    c.expect_exact("relay_pair: disconnected")
    rc, transcript = t.finish()
    assert rc == 129  # 128 + SIGHUP: the command was hung up, as when ssh drops
    assert "relay_pair: helper exit 0" in transcript
    assert wait_gone(word), "the command outlived the disconnect"


def test_pty_escape_none_passes_ctrl_bracket_through():
    t = Term(["cat", "-v"], extra=["--escape", "none"])
    c = t.child
    time.sleep(0.3)
    c.sendcontrol("]")
    c.send("\r")
    c.expect_exact("^]")
    c.sendcontrol("d")
    rc, _ = t.finish()
    assert rc == 0


def test_pty_other_escape_key():
    t = Term(["cat"], extra=["--escape", "^a"])
    c = t.child
    time.sleep(0.3)
    c.sendcontrol("]")  # just a byte now
    c.sendcontrol("a")
    c.expect_exact("relay_pair: disconnected")
    rc, _ = t.finish()
    assert rc == 129


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_pty_signal_to_vmsh_restores_the_terminal(sig):
    word = unique_sleep()
    t = Term(["sleep", word])
    pid = t.relay_pid()
    deadline = time.time() + 5
    while not processes_with_arg(word) and time.time() < deadline:
        time.sleep(0.05)
    # relay_run has started once it holds the signal on its signalfd (blocked)
    while time.time() < deadline:
        blocked = int(re.search(r"SigBlk:\s+([0-9a-f]+)", open(f"/proc/{pid}/status").read()).group(1), 16)
        if blocked & (1 << (sig - 1)):
            break
        time.sleep(0.02)
    os.kill(pid, sig)
    rc, transcript = t.finish()
    assert rc == 128 + sig
    assert "relay_pair: signaled" in transcript
    assert wait_gone(word)


# ---------------------------------------------------------------- hostile helper (host side)

def raw_peer(tmp_path, data, extra=()):
    f = tmp_path / "peer"
    f.write_bytes(data)
    r = subprocess.run([str(RELAY_PAIR), "--raw-peer", str(f), "--mode", "pipe", *extra],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    no_sanitizer_report(r.stderr)
    return r


@pytest.mark.parametrize("data,what", [
    (hello() + frame(STDOUT, length=64 * 1024 + 1) + b"x" * 100, b"longer than 64 KiB"),
    (hello() + frame(0x7f, b"abc"), b"unknown frame type"),
    (hello() + frame(DETACH), b"unknown frame type"),  # a host->guest type from the guest
    (frame(STDOUT, b"hi"), b"not HELLO"),
    (hello(version=99), b"protocol version 99"),
    (hello() + frame(EXIT, struct.pack("<I", 300)), b"above 255"),
    (hello() + frame(EXIT, b"\0\0"), b"does not fit"),
    (hello() + frame(STDOUT, b"x", flags=1), b"non-zero flags"),
    (hello() + hello(), b"second HELLO"),
    (hello() + frame(ERROR, b""), b"does not fit"),
    (hello() + frame(STDIN_ACK, struct.pack("<I", 1)), b"acknowledges more stdin"),
])
def test_hostile_frames_from_the_guest(tmp_path, data, what):
    r = raw_peer(tmp_path, data)
    assert r.returncode == 125, r.stderr
    assert b"protocol" in r.stderr and what in r.stderr, r.stderr


def test_guest_error_message_is_made_printable(tmp_path):
    r = raw_peer(tmp_path, hello() + frame(ERROR, b"mount failed\x1b[2J\x07\n"))
    assert r.returncode == 125
    assert b"guest: mount failed\\x1b[2J\\x07\\n" in r.stderr
    assert b"\x1b" not in r.stderr


def test_output_before_exit_is_delivered(tmp_path):
    r = raw_peer(tmp_path, hello() + frame(READY, b"\1\0\0\0") + frame(STDOUT, b"\0out") +
                 frame(STDERR, b"err") + frame(EXIT, b"\x05\0\0\0"))
    assert r.returncode == 5
    assert r.stdout == b"\0out" and b"err" in r.stderr


@pytest.mark.parametrize("data", [b"", hello()[:5], hello() + frame(STDOUT, length=100) + b"short"])
def test_connection_lost(tmp_path, data):
    r = raw_peer(tmp_path, data)
    assert r.returncode == 125
    assert b"connection lost" in r.stderr


def test_start_timeout(tmp_path):
    f = tmp_path / "peer"
    f.write_bytes(hello())
    # the peer keeps the socket open (it reads until we leave) but never says READY
    r = subprocess.run([str(RELAY_PAIR), "--raw-peer", str(f), "--hold", "--mode", "pipe", "--timeout", "300"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert r.returncode == 125
    assert b"timeout" in r.stderr and b"did not start the command" in r.stderr


def test_random_garbage_never_crashes_the_relay(tmp_path):
    rnd = random.Random(1234)
    for i in range(40):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
        data = (hello() if i % 2 else b"") + body
        r = raw_peer(tmp_path, data)
        assert r.returncode in range(0, 256), r.stderr
        assert r.returncode >= 0


# ---------------------------------------------------------------- hostile host (helper side)

class HelperPeer:
    """vmsh-helper in test mode on a socketpair we drive frame by frame."""

    def __init__(self, helper, cmd, mode=("--pipe",)):
        self.sock, theirs = socket.socketpair()
        self.p = subprocess.Popen([str(helper), "--test-fd", str(theirs.fileno()), *mode, "--", *cmd],
                                  pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        theirs.close()
        self.sock.settimeout(10)
        self.buf = b""

    def recv_frame(self):
        while True:
            if len(self.buf) >= 8:
                t, _, _, n = struct.unpack("<BBHI", self.buf[:8])
                if len(self.buf) >= 8 + n:
                    f = (t, self.buf[8:8 + n])
                    self.buf = self.buf[8 + n:]
                    return f
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:  # it closed with our data unread: after what it sent
                d = b""
            if not d:
                return None
            self.buf += d

    def frames_until_close(self):
        out = []
        while (f := self.recv_frame()) is not None:
            out.append(f)
        return out

    def close(self):
        self.sock.close()
        rc = self.p.wait(timeout=10)
        no_sanitizer_report(self.p.stderr.read())
        return rc


@pytest.fixture(params=["musl", "asan"])
def helper(request):
    return HELPERS[request.param]


def start_sleeping(helper):
    word = unique_sleep()
    h = HelperPeer(helper, ["sleep", word])
    t, pl = h.recv_frame()
    assert t == HELLO and struct.unpack("<H", pl[:2])[0] == 1 and b"vmsh-helper" in pl
    t, pl = h.recv_frame()
    assert t == READY
    # the command itself, not the helper (whose own command line has the word too)
    deadline = time.time() + 5
    while not [p for p in processes_with_arg(word) if p != h.p.pid] and time.time() < deadline:
        time.sleep(0.05)
    return h, word


@pytest.mark.parametrize("bad,what", [
    (frame(STDIN, length=64 * 1024 + 1), b"longer than 64 KiB"),
    (frame(0x7f), b"unknown frame type"),
    (frame(EXIT, b"\0\0\0\0"), b"unknown frame type"),  # a guest->host type from the host
    (frame(WINSIZE, b"\1\0"), b"does not fit"),
    (frame(SIGNAL, struct.pack("<I", 0)), b"signal 0"),
    (frame(SIGNAL, struct.pack("<I", 1000)), b"signal 1000"),
    (frame(DETACH, b"x"), b"does not fit"),
    (frame(STDIN, b"x", reserved=7), b"non-zero flags"),
])
def test_hostile_frames_from_the_host(helper, bad, what):
    h, word = start_sleeping(helper)
    h.sock.sendall(bad)
    frames = h.frames_until_close()
    assert frames and frames[-1][0] == ERROR, frames
    assert what in frames[-1][1]
    assert h.close() == 1
    assert wait_gone(word), "the command outlived the helper"


def test_helper_refuses_more_stdin_than_the_window(helper):
    h, word = start_sleeping(helper)  # sleep reads no stdin: nothing is acknowledged
    chunk = frame(STDIN, b"z" * 65536)
    try:  # the window, plus what the stdin pipe itself takes, plus more
        for _ in range(STDIN_WINDOW // 65536 + 4):
            h.sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the helper already gave up on us
    frames = h.frames_until_close()
    assert frames and frames[-1][0] == ERROR and b"window" in frames[-1][1], frames
    assert h.close() == 1
    assert wait_gone(word)


def test_helper_acknowledges_stdin(helper):
    h = HelperPeer(helper, ["sh", "-c", "exec wc -c"])
    assert h.recv_frame()[0] == HELLO
    assert h.recv_frame()[0] == READY
    sent = acked = 0
    out = b""
    for _ in range(40):  # 2.5 MB, never more than the window unacknowledged
        while sent - acked + 65536 > STDIN_WINDOW:
            t, pl = h.recv_frame()
            assert t == STDIN_ACK, (t, pl)
            acked += struct.unpack("<I", pl)[0]
        h.sock.sendall(frame(STDIN, b"q" * 65536))
        sent += 65536
    h.sock.sendall(frame(STDIN_EOF))
    for t, pl in iter(h.recv_frame, None):
        if t == STDIN_ACK:
            acked += struct.unpack("<I", pl)[0]
        elif t == STDOUT:
            out += pl
        else:
            assert (t, pl) == (EXIT, b"\0\0\0\0")
            break
    assert acked == sent
    assert int(out) == sent
    assert h.close() == 0


def test_helper_detach_kills_the_command(helper):
    h, word = start_sleeping(helper)
    h.sock.sendall(frame(DETACH))
    assert h.frames_until_close() == []
    assert h.close() == 0
    assert wait_gone(word)


def test_helper_signal_frame(helper):
    h, word = start_sleeping(helper)
    h.sock.sendall(frame(WINSIZE, struct.pack("<HH", 50, 60)) + frame(SIGNAL, struct.pack("<I", 15)))
    frames = h.frames_until_close()
    assert frames == [(EXIT, struct.pack("<I", 143))]
    assert h.close() == 0


def test_helper_host_gone_kills_the_command(helper):
    h, word = start_sleeping(helper)
    h.sock.shutdown(socket.SHUT_WR)
    assert h.close() == 1
    assert wait_gone(word)


def test_helper_pty_mode_frames(helper):
    h = HelperPeer(helper, ["sh", "-c", "stty size; read x; echo got:$x"], mode=("--pty", "12x34"))
    assert h.recv_frame()[0] == HELLO
    assert h.recv_frame()[0] == READY
    h.sock.sendall(frame(STDIN, b"hello\r"))
    out = b""
    for t, pl in iter(h.recv_frame, None):
        if t == EXIT:
            assert pl == b"\0\0\0\0"
            break
        if t == STDIN_ACK:
            continue
        assert t == STDOUT
        out += pl
    assert b"12 34\r\n" in out and b"got:hello\r\n" in out
    assert h.close() == 0


def test_helper_bad_command_line():
    r = subprocess.run([str(HELPER), "--pty", "0x0", "--test-fd", "5", "--", "true"], capture_output=True,
                       timeout=10)
    assert r.returncode == 2


# ---------------------------------------------------------------- the overlay, on this host
# The helper's real setup (namespaces of a target, the image mounted as / of a
# private mount namespace, pivot_root, the guest's /proc /sys /dev bound in,
# tmpfs /tmp /run) run against a loop device holding a tiny busybox image:
# --test-disk replaces only the search for the virtio disk. The target is a
# sleep of our own, so only namespaces we are in already are joined.

APPLETS = "sh env ls cat mount touch stty echo id readlink sleep wc head tty".split()


def make_image(path, mount_points=True, fs="ext4", var_link=None):
    """A busybox image: with the helper's mount points or only bin/ (then
    var may be a symlink to var_link); ext4 or squashfs."""
    root = path.parent / (path.name + ".d")
    dirs = ["bin", "proc", "sys", "dev", "tmp", "run", "root", "var/lib/vmsh"] if mount_points else ["bin"]
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    if var_link:
        (root / "var").symlink_to(var_link)
    busybox = "/bin/busybox"
    (root / "bin" / "busybox").write_bytes(open(busybox, "rb").read())
    (root / "bin" / "busybox").chmod(0o755)
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    if fs == "squashfs":
        subprocess.run(["mksquashfs", str(root), str(path), "-quiet", "-noappend"], check=True, capture_output=True)
    else:
        subprocess.run(["mkfs.ext4", "-q", "-d", str(root), str(path), "8M"], check=True, capture_output=True)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class LoopImage:
    def __init__(self, path, rw=False):
        self.path = path
        self.dev = subprocess.run(["losetup", "-f", "--show", *([] if rw else ["-r"]), str(path)], check=True,
                                  capture_output=True, text=True).stdout.strip()

    def detach(self):
        # fails if anything still has it mounted: the private namespace must be gone
        r = subprocess.run(["losetup", "-d", self.dev], capture_output=True, text=True)
        return r.returncode == 0


@pytest.fixture
def image(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the overlay test needs root (loop devices, mount namespaces): run the tests as root")
    for tool in ("mkfs.ext4", "mksquashfs", "losetup", "/bin/busybox"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            pytest.fail(f"{tool} is missing (tools/install-deps.sh installs it)", pytrace=False)
    made = []

    def make(mount_points=True, fs="ext4", rw=False, var_link=None):
        p = tmp_path / f"img{len(made)}.{fs}"
        make_image(p, mount_points, fs, var_link)
        made.append(LoopImage(p, rw))
        return made[-1]

    target = subprocess.Popen(["sleep", "600"])
    make.target = target.pid
    yield make
    target.kill()
    target.wait()
    for m in made:
        for _ in range(50):
            if m.detach():
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{m.dev} is still busy: the helper's mounts outlived it")


def overlay_args(img, target, *more):
    return ["--helper-arg", "--test-disk", "--helper-arg", img.dev,
            "--helper-arg", "--target", "--helper-arg", str(target), *more]


@pytest.mark.parametrize("flavour", ["musl", "asan"])
def test_overlay_pipe_mode(image, flavour):
    img = image()
    before = open("/proc/mounts").read()
    script = ("echo PATH=$PATH; ls /; echo ==; ls -a /var/lib/vmsh; echo ==; readlink /proc/self/ns/mnt; "
              "touch /tmp/ok && echo tmp-writable; touch /run/ok && echo run-writable; "
              "touch /written && echo root-writable; test -c /dev/null && echo dev-ok; "
              "test -d /sys/class && echo sys-ok; exit 3")
    digest = sha256(img.path)
    r = relay(["sh", "-c", script], helper=HELPERS[flavour], extra=overlay_args(img, image.target))
    out = r.stdout.decode()
    assert r.returncode == 3, r.stderr
    assert "PATH=/usr/local/sbin:/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin" in out
    image_root, old_root, rest = out.split("==\n")
    assert "lost+found" in image_root and "etc" not in image_root.split()
    assert set(os.listdir("/")) <= set(old_root.split())  # the guest's own / at /var/lib/vmsh
    assert os.readlink("/proc/self/ns/mnt") not in rest  # a mount namespace of its own
    assert "tmp-writable" in rest and "run-writable" in rest
    assert "root-writable" in rest  # an overlay in memory: the image stays as it was
    assert "dev-ok" in rest and "sys-ok" in rest
    assert open("/proc/mounts").read() == before, "the overlay leaked into our mount namespace"
    assert sha256(img.path) == digest
    no_sanitizer_report(r.stderr)


def test_overlay_pty_mode(image):
    img = image()
    t = Term(SHELL, extra=overlay_args(img, image.target))
    c = t.child
    c.expect_exact("rp> ")
    c.send("tty; stty size; ls /var/lib/vmsh/proc/self >/dev/null && echo proc-ok\r")
    c.expect(r"/dev/pts/\d+\r\n")
    c.expect(r"33 101\r\n")
    c.expect_exact("proc-ok")
    c.send("exit 4\r")
    rc, _ = t.finish()
    assert rc == 4


@pytest.mark.parametrize("fs", ["ext4", "squashfs"])
def test_overlay_image_without_mount_points(image, fs):
    """Any image the kernel mounts, even without the directories the helper
    mounts on: they are made in the overlay, the image is untouched."""
    img = image(mount_points=False, fs=fs)
    digest = sha256(img.path)
    extra = overlay_args(img, image.target, "--helper-arg", "--fstype", "--helper-arg", fs)
    r = relay(["sh", "-c", "ls -a /var/lib/vmsh; echo ==; ls /; mkdir /new && echo made"], extra=extra)
    assert r.returncode == 0, r.stderr
    guest_root, image_root = r.stdout.decode().split("==\n")
    assert set(os.listdir("/")) <= set(guest_root.split())
    assert {"bin", "var", "proc", "sys", "dev", "tmp", "run"} <= set(image_root.split()) and "made" in image_root
    assert sha256(img.path) == digest


def test_overlay_rw_writes_land_in_the_image(image):
    img = image(mount_points=False, rw=True)
    extra = overlay_args(img, image.target, "--helper-arg", "--rw")
    r = relay(["sh", "-c", "echo kept > /root-file && ls /var/lib/vmsh >/dev/null && echo ok"], extra=extra)
    assert r.returncode == 0 and b"ok" in r.stdout, r.stderr
    out = subprocess.run(["debugfs", "-R", "cat /root-file", str(img.path)], capture_output=True, text=True)
    assert out.stdout == "kept\n", out


@pytest.mark.parametrize("rw", [False, True])
def test_overlay_never_makes_mount_points_through_a_symlink(image, tmp_path, rw):
    """An image whose /var is a symlink to an absolute path: making
    /var/lib/vmsh through it would create directories in the guest's own
    file system (what the helper's namespace still shows). Refused."""
    outside = tmp_path / "outside"
    img = image(mount_points=False, rw=rw, var_link=str(outside))
    extra = overlay_args(img, image.target, *(["--helper-arg", "--rw"] if rw else []))
    r = relay(["true"], extra=extra)
    assert r.returncode == 125, r.stderr
    assert b"/var (a symlink or not a directory) cannot be a mount point" in r.stderr, r.stderr
    assert not outside.exists()


@pytest.mark.parametrize("case,expect", [
    ("fstype", b"unknown filesystem type nosuchfs (is the nosuchfs module available?)"),
    ("target", b"no process"),
])
def test_overlay_setup_errors(image, case, expect):
    img = image()
    target = 0x7ffffff0 if case == "target" else image.target
    extra = overlay_args(img, target)
    if case == "fstype":
        extra += ["--helper-arg", "--fstype", "--helper-arg", "nosuchfs"]
    r = relay(["true"], extra=extra)
    assert r.returncode == 125, r.stderr
    assert b"relay_pair: guest error: guest: " in r.stderr and expect in r.stderr, r.stderr


def test_helper_started_with_stdio_closed(helper):
    """call_usermodehelper may start it with fds 0-2 closed: the pipes it
    makes must not land there and get mixed up with the command's stdio."""
    sock, theirs = socket.socketpair()
    fd = theirs.fileno()
    p = subprocess.Popen([str(helper), "--test-fd", str(fd), "--pipe", "--", "sh", "-c",
                          "echo out; echo err >&2; wc -c"],
                         pass_fds=[fd], preexec_fn=lambda: [os.close(i) for i in (0, 1, 2)])
    theirs.close()
    h = HelperPeer.__new__(HelperPeer)
    h.sock, h.p, h.buf = sock, p, b""
    sock.settimeout(10)
    sock.sendall(frame(STDIN, b"12345") + frame(STDIN_EOF))
    got = {}
    for t, pl in h.frames_until_close():
        got[t] = got.get(t, b"") + pl
    assert got[STDOUT] == b"out\n5\n"
    assert got[STDERR] == b"err\n"
    assert got[EXIT] == b"\0\0\0\0"
    sock.close()
    assert p.wait(timeout=10) == 0
