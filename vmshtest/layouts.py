"""The memory layouts hypervisors give their guests, as qemu arguments
(tests/vm/test_memlayout.py, the generality matrix of bench/eval.py)."""

HUGEPAGES_DIR = "/dev/hugepages"
SHM = "/dev/shm"


def layout_args(host, name, ident):
    """(qemu arguments, -m value, backing description) of a layout."""
    if name == "above-4g":
        # 256 MiB below the hole, 512 MiB from 4 GiB up (a pc/q35 property)
        return ["-machine", "max-ram-below-4g=256M"], "768M", None
    if name == "big":
        # 4.5 GiB: qemu pc puts 3 GiB below the PCI hole and 1.5 GiB from 4 GiB up
        return [], "4608M", None
    if name == "file-shared":
        path = f"{SHM}/vmsh-ram-{ident}"
        return (["-object", f"memory-backend-file,id=ram,size=512M,mem-path={path},share=on",
                 "-machine", "memory-backend=ram"], "512M", path)
    if name == "file-private":
        path = f"{SHM}/vmsh-ram-{ident}"
        return (["-object", f"memory-backend-file,id=ram,size=512M,mem-path={path},share=off",
                 "-machine", "memory-backend=ram"], "512M", path)
    if name == "hugetlbfs":
        return (["-object", f"memory-backend-file,id=ram,size=384M,mem-path={HUGEPAGES_DIR},share=on",
                 "-machine", "memory-backend=ram"], "384M", HUGEPAGES_DIR)
    if name == "prealloc":
        return (["-object", "memory-backend-ram,id=ram,size=512M,prealloc=on", "-machine", "memory-backend=ram"],
                "512M", None)
    if name == "memfd":
        return (["-object", "memory-backend-memfd,id=ram,size=512M,share=on", "-machine", "memory-backend=ram"],
                "512M", None)
    if name == "dimm":
        # a 256 MiB DIMM present from boot (ACPI memory hotplug): its own
        # mapping and memory slot; the guest onlines it movable (dimm_online)
        return (["-object", "memory-backend-ram,id=dimm1,size=256M", "-device", "pc-dimm,id=d1,memdev=dimm1"],
                "512M,slots=2,maxmem=2G", None)
    if name == "sandbox":
        return (["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"],
                "512M", None)
    raise ValueError(name)


def dimm_online(guest):
    """Online the guest's hotplugged memory blocks as movable memory (where
    the kernel puts page cache first, so the devices' DMA goes there);
    returns how many there were."""
    out = guest.console("n=0; for f in /sys/devices/system/memory/memory*/state; do "
                        "if [ \"$(cat $f)\" = offline ]; then echo online_movable > $f && n=$((n+1)); fi; done; "
                        "echo ONLINED $n")
    return int(out.split("ONLINED")[1].split()[0])


def hugepages(host, n):
    """At least n free 2 MiB huge pages and hugetlbfs mounted: in the emulated
    host (ours) they are reserved here; on a real host the test needs them
    reserved by its owner and fails saying so. Returns the reservation as it
    was, to put back."""
    host.check(f"mkdir -p {HUGEPAGES_DIR}; mountpoint -q {HUGEPAGES_DIR} || "
               f"mount -t hugetlbfs hugetlbfs {HUGEPAGES_DIR}")
    free = int(host.check("awk '/HugePages_Free/ {print $2}' /proc/meminfo").strip() or 0)
    total = int(host.check("cat /proc/sys/vm/nr_hugepages").strip())
    if free < n and host.mode == "emulated":
        host.check(f"echo {total + n - free} > /proc/sys/vm/nr_hugepages")
        free = int(host.check("awk '/HugePages_Free/ {print $2}' /proc/meminfo").strip() or 0)
    assert free >= n, (f"hugetlbfs layout: {n} free 2 MiB huge pages needed on the KVM host, {free} free "
                       f"(reserve them: echo N > /proc/sys/vm/nr_hugepages)")
    return total
