"""`vmsh inspect` and `vmsh list` on real Linux guests (issue 2).

Every check compares what vmsh found from the outside with what the guest
says about itself on its console: uname -r, /proc/kallsyms, /proc/iomem, and
a marker it wrote at a physical address it looked up in /proc/self/pagemap.
"""
import json
import re
import shlex

import pytest

from vmshtest import harness

def symbols(series):
    """Symbols to look up; _text is not exported (it is the KASLR base).
    printk became _printk in Linux 5.15."""
    return ("_text", "jiffies", "printk" if series == "5.10" else "_printk", "iomem_resource", "init_task",
            "schedule", "kfree")


def run_vmsh(host, vmsh_bin, *args, timeout=300):
    cmd = " ".join(shlex.quote(str(a)) for a in (vmsh_bin, *args))
    return host.exec(cmd, timeout)


def inspect_json(host, vmsh_bin, pid, *args):
    r = run_vmsh(host, vmsh_bin, "inspect", "--json", *args, pid)
    assert r.rc == 0, f"vmsh inspect failed (rc={r.rc}):\n{r.stderr}\n{r.stdout[-2000:]}"
    return json.loads(r.stdout)


def kallsyms(guest, names):
    out = guest.console("grep -E ' (%s)$' /proc/kallsyms" % "|".join(names))
    syms = {}
    for line in out.splitlines():
        addr, _kind, name = line.split()[:3]
        syms.setdefault(name, int(addr, 16))
    assert set(syms) == set(names), f"kallsyms lacks {set(names) - set(syms)}"
    assert all(syms.values()), "kallsyms shows zero addresses (kptr_restrict?)"
    return syms


def guest_ram(guest):
    """Top-level "System RAM" ranges of the guest's /proc/iomem, as (start, end]."""
    ram = []
    for line in guest.console("cat /proc/iomem").splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if m:
            ram.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
    assert ram
    return ram


def host_read(host, pid, addr, size):
    code = (f"import os; f = os.open('/proc/{pid}/mem', os.O_RDONLY); "
            f"print(os.pread(f, {size}, {addr}).hex())")
    r = host.exec(f"python3 -c {shlex.quote(code)}", 60)
    assert r.rc == 0, r.stderr
    return r.stdout.strip()


def hypervisor_state(host, pid):
    out = host.check(f"ls -l /proc/{pid}/fd | awk 'NR>1 {{print $9, $11}}'; echo ---; "
                     f"ls /proc/{pid}/task; echo ---; grep TracerPid /proc/{pid}/status")
    return out


def test_kernel_version_kaslr_base_and_symbols_match_the_guest(guest, host, vmsh_bin):
    release = guest.console("uname -r").strip()
    wanted = symbols(guest.kernel.series)
    syms = kallsyms(guest, wanted)
    exported = wanted[1:]
    args = [a for name in exported for a in ("--symbol", name)]
    j = inspect_json(host, vmsh_bin, guest.pid, *args)
    k = j["kernel"]
    assert k["found"] and k["error"] is None, k
    assert k["version"] == release
    assert int(k["text_base"], 16) == syms["_text"]
    assert int(k["kaslr_offset"], 16) == syms["_text"] - 0xffffffff81000000
    # KASLR must be on in the test guest; its draw may still be the linked
    # base (seen once in a CI run on Debian 5.10: offset 0, /proc/kallsyms
    # agreeing), which the assertions above then check all the same
    assert "nokaslr" not in guest.console("cat /proc/cmdline"), "KASLR is off in the test guest"
    if k["kaslr_offset"] == "0x0":
        harness.log(f"{guest.name}: this boot's KASLR draw was the linked base (offset 0)")
    assert k["exported_symbols"] > 5000 and k["ksymtab_format"] == "prel32+namespace"
    for name in exported:
        assert int(j["symbols"][name], 16) == syms[name], name
    assert guest.console(f"cat /proc/version").strip() == k["banner"]
    for v in j["vcpus"]:
        assert "error" not in v, v
        assert v["paging"] == "4-level"
    assert 0 < j["timing"]["vcpus_stopped_us"] < j["timing"]["total_us"]


def test_memory_map_covers_guest_ram_at_the_right_host_addresses(guest, host, vmsh_bin):
    marker = guest.console("physmarker")
    m = re.search(r"PHYSMARKER gpa=(0x[0-9a-f]+) value=([0-9a-f]{32})", marker)
    assert m, marker
    gpa, value = int(m.group(1), 16), m.group(2)
    j = inspect_json(host, vmsh_bin, guest.pid)
    ranges = [(int(r["gpa"], 16), int(r["size"], 16), r) for r in j["memory"]["ranges"]]
    assert j["memory"]["error"] is None
    for start, end in guest_ram(guest):
        assert any(g <= start and end <= g + s and r["hva"] for g, s, r in ranges), \
            f"guest RAM {start:#x}-{end:#x} not covered by {j['memory']['ranges']}"
    hit = [(g, r) for g, s, r in ranges if g <= gpa < g + s]
    assert len(hit) == 1, f"marker gpa {gpa:#x} in {len(hit)} ranges"
    g, r = hit[0]
    assert r["verified"]
    assert host_read(host, guest.pid, int(r["hva"], 16) + gpa - g, 16) == value


def test_inspect_leaves_guest_and_hypervisor_as_they_were(guest, host, vmsh_bin):
    before = hypervisor_state(host, guest.pid)
    first = inspect_json(host, vmsh_bin, guest.pid)
    second = inspect_json(host, vmsh_bin, guest.pid)
    assert hypervisor_state(host, guest.pid) == before
    assert "TracerPid:\t0" in before
    assert first["memslots"]["ids"] == second["memslots"]["ids"] and first["memslots"]["count"] > 0
    assert guest.console("echo guest-still-answers").strip() == "guest-still-answers"
    assert "Oops" not in guest.console("dmesg | grep -E 'Oops|BUG|WARNING' || true")


def test_list_names_the_vm(guest, host, vmsh_bin):
    r = run_vmsh(host, vmsh_bin, "list", "--json")
    assert r.rc == 0, r.stderr
    mine = [e for e in json.loads(r.stdout)["processes"] if e["pid"] == guest.pid]
    assert len(mine) == 1
    assert mine[0]["name"] == guest.name
    assert mine[0]["vcpus"] >= 1 and mine[0]["ram_source"] == "cmdline"
    j = inspect_json(host, vmsh_bin, guest.name)
    assert j["pid"] == guest.pid


@pytest.mark.soak
def test_inspects_in_a_row(any_guest, host, vmsh_bin):
    """10 inspects in a row in make check, 50 in make soak."""
    g = any_guest
    n = harness.sized(10, 50)
    before = hypervisor_state(host, g.pid)
    script = (f"ok=0; for i in $(seq {n}); do {shlex.quote(vmsh_bin)} inspect --json {g.pid} "
              f"> /tmp/vmsh-50.json 2>/tmp/vmsh-50.err && ok=$((ok+1)) || cat /tmp/vmsh-50.err; "
              f"done; echo ok=$ok")
    r = host.exec(script, 3600)
    assert f"ok={n}" in r.stdout, r.stdout[-3000:]
    assert hypervisor_state(host, g.pid) == before
    assert g.console("echo alive").strip() == "alive"


def test_busy_smp_guest_in_user_mode(guest_factory, host, vmsh_bin):
    """Two vCPUs spinning in user mode: their CR3 is the user half of the
    PTI pair, which maps almost nothing of the kernel. inspect still finds
    the kernel through the kernel half, and reports each vCPU on its own
    thread."""
    g = guest_factory(machine="q35", kernel="6.12", smp=2)
    syms = kallsyms(g, ("_text", "jiffies"))
    g.console("for i in 1 2; do (while :; do :; done) & echo $! >> /tmp/spinners; done; sleep 1")
    try:
        # a spinning vCPU is in user mode most of the time, but a stop can
        # catch one in the kernel (timer ticks): try until both are in user
        # mode, so that only user page tables are at hand
        seen_user = False
        for attempt in range(60):
            j = inspect_json(host, vmsh_bin, g.pid, "--symbol", "jiffies")
            assert len(j["vcpus"]) == 2
            tids = [v["tid"] for v in j["vcpus"]]
            assert all(tids) and len(set(tids)) == 2, tids
            # whatever mode the vCPUs were caught in, the kernel is found
            assert int(j["kernel"]["text_base"], 16) == syms["_text"]
            assert int(j["symbols"]["jiffies"], 16) == syms["jiffies"]
            if all(v["mode"] == "user" for v in j["vcpus"]):
                seen_user = True
                break
        assert seen_user, "the vCPUs were never both caught in user mode"
    finally:
        g.console("kill $(cat /tmp/spinners); rm /tmp/spinners")
