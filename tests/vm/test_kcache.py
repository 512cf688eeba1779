"""The kernel cache (issue 12, src/core/kcache.h): the first run on a kernel
build searches its whole image and stores where the build keeps its banner
and export tables; the next run reads only those (a few hundred KiB) and
finds the same symbols, at the addresses /proc/kallsyms gives. A hint for
another build, or a corrupted one, costs a full search and never a wrong
address."""
import json
import re

from test_inspect import inspect_json, kallsyms

SYMS = ["jiffies", "queue_work_on", "iomem_resource", "irq_work_queue"]


def inspect_with_cache(host, vmsh_bin, guest, cache):
    args = [a for s in SYMS for a in ("--symbol", s)]
    r = host.exec(f"VMSH_CACHE_DIR={cache} {vmsh_bin} -v inspect --json {' '.join(args)} {guest.pid}", 300)
    assert r.rc == 0, r.stderr
    ms = re.search(r"kernel and symbols ([\d.]+) ms", r.stderr)
    return json.loads(r.stdout), float(ms.group(1)) if ms else None


def test_second_run_reads_the_kernel_where_the_first_found_it(guest, host, vmsh_bin):
    cache = f"/tmp/vmsh-kcache-{guest.pid}"
    host.check(f"rm -rf {cache}")
    want = kallsyms(guest, SYMS)
    try:
        first, t_search = inspect_with_cache(host, vmsh_bin, guest, cache)
        assert first["kernel"]["from_cache"] is False
        files = host.check(f"ls {cache}/kernels").split()
        assert len(files) == 1 and files[0].endswith(".hint"), files
        second, t_cached = inspect_with_cache(host, vmsh_bin, guest, cache)
        assert second["kernel"]["from_cache"] is True
        for j in (first, second):
            for s in SYMS:
                assert int(j["symbols"][s], 16) == want[s], (s, j["symbols"])
        for key in ("version", "banner", "text_base", "exported_symbols", "ksymtab_format", "image_size"):
            assert first["kernel"][key] == second["kernel"][key], key
        print(f"kernel search {t_search:.0f} ms, from the cache {t_cached:.0f} ms")
        assert t_cached < t_search, (t_search, t_cached)

        # a hint whose offsets are off: not used, the search runs and stores a good one again
        path = f"{cache}/kernels/{files[0]}"
        text = host.check(f"cat {path}")
        bad = re.sub(r"span_off ([0-9a-f]+)", lambda m: f"span_off {int(m.group(1), 16) + 0x2000:x}", text)
        host.check(f"cat > {path}", input=bad)
        third, _ = inspect_with_cache(host, vmsh_bin, guest, cache)
        assert third["kernel"]["from_cache"] is False
        for s in SYMS:
            assert int(third["symbols"][s], 16) == want[s], s
        assert host.check(f"cat {path}") == text
        # and a cache nobody else may write is required: a world-writable one is ignored
        host.check(f"chmod 777 {cache}/kernels")
        fourth, _ = inspect_with_cache(host, vmsh_bin, guest, cache)
        assert fourth["kernel"]["from_cache"] is False
    finally:
        host.check(f"rm -rf {cache}")
