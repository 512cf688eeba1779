"""Drives `vmsh attach` on a pty (run on the KVM host by test_attach.py):
the banner, prompt, the guest's root, window size and resize, Ctrl-C,
disconnect with Ctrl-] (exit status 129), and the terminal settings restored. Prints one JSON line.

usage: attach_pty.py VMSH PID [kill-worker]
kill-worker: at the prompt, SIGKILL vmsh's worker process (the one in raw
mode): the vmsh the user started must put the terminal back."""
import json
import os
import sys
import time

import pexpect

vmsh, pid = sys.argv[1], sys.argv[2]
kill_worker = len(sys.argv) > 3 and sys.argv[3] == "kill-worker"
res = {}
# stty -g of the terminal vmsh runs on, before and after (through a shell
# wrapper that owns the pty)
wrapper = f"stty -g > /run/stty-before; {vmsh} attach {pid}; st=$?; stty -g > /run/stty-after; exit $st"
child = pexpect.spawn("sh", ["-c", wrapper], dimensions=(30, 100), timeout=120, encoding="utf-8")
try:
    child.expect(r"Connected to VM (.*) \(pid (\d+)\)\. Escape character is \^\]\.\r\n")
    res["banner"] = [child.match.group(1), int(child.match.group(2))]
    child.expect(r"[#$] ")
    res["prompt"] = True
    if kill_worker:
        import subprocess
        def kids(p):
            return [int(x) for x in subprocess.run(["pgrep", "-P", str(p)], capture_output=True,
                                                   text=True).stdout.split()]
        user_vmsh = kids(child.pid)            # sh -> the vmsh the user started
        worker = kids(user_vmsh[0]) if user_vmsh else []
        res["worker_found"] = len(worker) == 1
        os.kill(worker[0], 9)
        child.expect(pexpect.EOF, timeout=120)
        child.close()
        res["exit_status"] = child.exitstatus
        res["stty_restored"] = open("/run/stty-before").read() == open("/run/stty-after").read()
        print(json.dumps(res))
        sys.exit(0)
    # markers are built by the shell, so the echoed command line never matches
    child.sendline("ls /var/lib/vmsh/ && echo ROOT-$((40+2))-OK")
    child.expect("ROOT-42-OK")
    res["guest_root"] = "init" in child.before
    if not res["guest_root"]:
        res["root_listing"] = child.before
    child.expect(r"[#$] ")
    child.sendline("ps | grep -q ' /init' && echo PS-$((1+1))-OK")
    i = child.expect(["PS-2-OK", r"[#$] "])
    res["ps"] = i == 0
    if i == 0:
        child.expect(r"[#$] ")
    child.sendline("stty size")
    child.expect(r"(\d+ \d+)\r\n")
    res["size"] = child.match.group(1)
    child.expect(r"[#$] ")
    child.setwinsize(40, 120)
    time.sleep(1)
    child.sendline("stty size")
    child.expect(r"(\d+ \d+)\r\n")
    res["resized"] = child.match.group(1)
    child.expect(r"[#$] ")
    child.sendline("sleep 100; echo SL''EPT")
    time.sleep(2)
    child.sendcontrol("c")
    t0 = time.monotonic()
    child.expect(r"[#$] ", timeout=30)
    res["ctrl_c"] = "SLEPT" not in child.before.replace("SL''EPT", "") and time.monotonic() - t0 < 30
    if not res["ctrl_c"]:
        res["ctrl_c_output"] = child.before
    child.sendline("sleep 3000")  # in the foreground: hung up with the shell, as over ssh
    time.sleep(1)
    child.sendcontrol("]")
    child.expect(r"disconnected", timeout=120)
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    res["disconnected"] = True
    res["exit_status"] = child.exitstatus
    res["stty_restored"] = open("/run/stty-before").read() == open("/run/stty-after").read()
except Exception as e:
    res["error"] = f"{type(e).__name__}: {e}; output: {child.before!r}"
    res.setdefault("prompt", False)
print(json.dumps(res))
