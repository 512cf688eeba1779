#!/bin/sh
# /init of the emulated KVM host ("L1"), booted by vmshtest/harness.py under
# qemu TCG with SVM when the machine has no usable hardware KVM.
#
# Loads kvm + kvm-amd, mounts the real host's root (virtfs tag "hostroot",
# read-only) at /host and turns it into a usable chroot (tmpfs /tmp and /run,
# proc, sys, dev), mounts the writable exchange share (tag "xchg") at the
# same absolute path it has on the real host, and runs the command agent
# (vmshtest/hostagent.py, from the host root) on the virtio-serial port
# named vmsh.agent.  Kernel command line:
#   vmsh.agent=PATH    agent script (a path on the real host)
#   vmsh.xchg=PATH     exchange directory (a path on the real host)
#   vmsh.python=PATH   interpreter inside the chroot (default /usr/bin/python3)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

agent='' xchg='' python=/usr/bin/python3
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmsh.agent=*) agent=${arg#vmsh.agent=} ;;
	vmsh.xchg=*) xchg=${arg#vmsh.xchg=} ;;
	vmsh.python=*) python=${arg#vmsh.python=} ;;
	esac
done

for m in $(cat /etc/vmsh-modules); do
	modprobe "$m" || echo "vmsh-l1-init: modprobe $m failed"
done
[ -c /dev/kvm ] || echo "vmsh-l1-init: no /dev/kvm (kvm-amd did not load)"

p9=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /host
# cache=loose: the root does not change during a test session and
# executables and libraries are read many times.
mount -t 9p -o $p9,ro,cache=loose hostroot /host || echo "vmsh-l1-init: mounting hostroot failed"
# Writable /tmp and /var/tmp that still show the host's files (the repo, the
# cache or vmsh may live there): overlays with a tmpfs upper layer.
mkdir -p /rw
mount -t tmpfs -o mode=0755 tmpfs /rw
for d in tmp var/tmp; do
	mkdir -p /rw/$d/upper /rw/$d/work
	chmod 1777 /rw/$d/upper
	mount -t overlay -o lowerdir=/host/$d,upperdir=/rw/$d/upper,workdir=/rw/$d/work overlay /host/$d ||
		mount -t tmpfs -o mode=1777 tmpfs /host/$d
done
mount -t tmpfs -o mode=0755 tmpfs /host/run
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
if [ -n "$xchg" ]; then
	mkdir -p "/host$xchg"
	mount -t 9p -o $p9 xchg "/host$xchg" || echo "vmsh-l1-init: mounting xchg failed"
fi

port=
for d in /sys/class/virtio-ports/*; do
	[ "$(cat "$d/name" 2>/dev/null)" = vmsh.agent ] && port=/dev/${d##*/}
done
echo "VMSH-L1-READY kvm=$([ -c /dev/kvm ] && echo yes || echo no) port=$port"

# vmsh's kernel cache (src/core/kcache.h) for the session, where a host
# keeps it in /var/cache/vmsh (read-only here): each kernel build is searched
# once per emulated host, as on a host vmsh runs on repeatedly.
# PID 1 stays this loop (ash reaps orphans while it waits).
while :; do
	chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 VMSH_CACHE_DIR=/run/vmsh-cache \
		"$python" "$agent" --serve "$port"
	echo "vmsh-l1-init: agent exited ($?), restarting"
	sleep 1
done
