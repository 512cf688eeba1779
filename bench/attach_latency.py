"""Runs on the KVM host (bench/attach_bench.py copies it there): time to the
first prompt and keystroke echo latency of one interactive session, started
by the command line given. Prints one JSON line."""
import json
import os
import statistics
import sys
import time

import pexpect

PROMPT = r"[#$] (\x1b\[6n)?"  # busybox ash asks for the cursor position after its prompt
keep = sys.argv[1] == "--keep"  # the shell outlives the session (a serial port): no exit, no EOF
samples = int(sys.argv[1 + keep])
argv = sys.argv[2 + keep:]
res = {}
t0 = time.monotonic()
child = pexpect.spawn(argv[0], argv[1:], dimensions=(24, 80), timeout=120, encoding="utf-8")
child.expect(PROMPT)
res["to_prompt_ms"] = (time.monotonic() - t0) * 1000
child.sendline("stty -echoctl 2>/dev/null; echo READY-$((1+1))")
child.expect("READY-2")
child.expect(PROMPT)
# the session's processes: peak memory of everything the command started
pids = [child.pid]
for _ in range(3):
    for p in list(pids):
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                pids += [int(x) for x in f.read().split() if int(x) not in pids]
        except OSError:
            pass
rss = {}
for p in pids:
    try:
        st = dict(l.split(":", 1) for l in open(f"/proc/{p}/status") if ":" in l)
        rss[st["Name"].strip()] = rss.get(st["Name"].strip(), 0) + int(st["VmHWM"].split()[0])
    except (OSError, KeyError):
        pass
res["peak_rss_kib"] = rss
lat = []
for i in range(samples):
    t = time.monotonic()
    child.send("x")
    child.expect_exact("x")
    lat.append((time.monotonic() - t) * 1000)
    child.send("\x7f")  # erase it again
    child.expect(r"\x08")  # the line editor moves back over it
    time.sleep(0.05)
res["echo_ms"] = {"median": statistics.median(lat), "p90": sorted(lat)[int(0.9 * (len(lat) - 1))],
                  "min": min(lat), "n": len(lat), "samples": lat}
if keep:
    child.close(force=True)
else:
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
print(json.dumps(res))
