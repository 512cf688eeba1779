"""QMP (QEMU's machine protocol) from the KVM host: the tests' and the
benchmarks' way to ask a guest's QEMU for something (memory hotplug, its own
dump-guest-memory as a control). The client runs where QEMU runs."""
import json

from vmshtest.devices import scratch

CLIENT = r'''
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            return m
json.loads(f.readline())  # greeting
for line in sys.argv[2:]:
    f.write(line + "\n"); f.flush()
    m = reply()
    print(json.dumps(m), flush=True)
    if "error" in m:
        sys.exit(1)
'''


def qmp(host, sock, *cmds, timeout=60):
    """Send each command (a dict or its JSON text) after qmp_capabilities;
    returns the client's output, one JSON reply per line. Fails on an error
    reply."""
    client = f"{scratch(host)}/qmp.py"
    host.check(f"cat > {client}", input=CLIENT)
    texts = [c if isinstance(c, str) else json.dumps(c) for c in ({"execute": "qmp_capabilities"},) + cmds]
    args = " ".join("'" + c.replace("'", "'\\''") + "'" for c in texts)
    return host.check(f"python3 {client} {sock} {args}", timeout)
