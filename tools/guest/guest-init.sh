#!/bin/sh
# /init of the L2 test guest: the VM that vmsh inspects and attaches to.
#
# Mounts the pseudo file systems, loads the virtio modules (list in
# /etc/vmsh-modules, or vmsh.modules=a,b,c on the kernel command line;
# vmsh.modules=none loads nothing), quiets the kernel console, prints the
# ready marker and runs an interactive shell on the serial console for the
# test harness (vmshtest/hostagent.py types commands into it).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname vmsh-guest

modules=$(cat /etc/vmsh-modules 2>/dev/null)
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmsh.modules=none) modules= ;;
	vmsh.modules=*) modules=$(echo "${arg#vmsh.modules=}" | tr , ' ') ;;
	esac
done
for m in $modules; do
	modprobe "$m" || echo "vmsh-guest-init: modprobe $m failed"
done

# vmsh.root=SERIAL: boot the guest from its own disk (the virtio disk with
# that serial) instead, the way a normal VM does: switch to it and run its
# /sbin/init.
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	vmsh.root=*)
		serial=${arg#vmsh.root=}
		modprobe ext4 2>/dev/null
		for d in /sys/block/vd*; do
			[ "$(cat "$d/serial" 2>/dev/null)" = "$serial" ] && dev=/dev/${d##*/}
		done
		mkdir -p /newroot
		if [ -n "$dev" ] && mount -t ext4 "$dev" /newroot; then
			echo 1 >/proc/sys/kernel/printk
			umount /dev/pts /dev/shm /tmp /run 2>/dev/null
			mount --move /dev /newroot/dev
			mount --move /proc /newroot/proc
			mount --move /sys /newroot/sys
			exec switch_root /newroot /sbin/init
		fi
		echo "vmsh-guest-init: root disk $serial not found or not mountable"
		;;
	esac
done

# Kernel messages would interleave with command output on ttyS0; keep them
# in dmesg only.
echo 1 >/proc/sys/kernel/printk

# The harness waits for the marker, then for the first prompt, and only
# then types: input typed while the shell starts up can be lost.
export PS1='vmsh-guest:\w\$ '
echo "VMSH-GUEST-READY $(uname -r)"
# PID 1 stays this loop: ash reaps orphans while it waits for the shell.
while :; do
	setsid cttyhack sh
	echo "vmsh-guest-init: shell exited, restarting"
done
