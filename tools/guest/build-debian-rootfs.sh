#!/usr/bin/env bash
# build-debian-rootfs.sh - an ordinary Debian 12 guest: root file system on
# the guest's own disk, booted through Debian's own initramfs.
#
# usage: build-debian-rootfs.sh KERNEL_DIR      (a fetch-kernel.sh directory)
#
# mmdebstrap --variant=minbase bookworm plus what a small real VM has
# (systemd as init, udev, kmod, initramfs-tools, e2fsprogs, procps), the
# kernel's modules installed under /lib/modules/<release> with depmod, and
# /boot/initrd.img-<release> made by initramfs-tools' mkinitramfs inside the
# chroot, exactly as the kernel package's postinst would (MODULES=most,
# Debian's default). / is found by label (root=LABEL=vmsh-root).
#
# For the test harness (vmshtest/harness.py): root is logged in
# automatically on ttyS0 by systemd's serial-getty@ttyS0 (agetty
# --autologin); root's ~/.profile prints "VMSH-GUEST-READY <release>" and
# sets the prompt "vmsh-guest:DIR# " the harness waits for. Nothing else is
# changed: PID 1 is systemd, modules come from the disk through udev and
# kmod's modprobe.
#
# Output (last line of stdout): $VMSH_TEST_CACHE/debian-root/<hash>/ with
#   root.ext4    the root disk image (raw ext4, label vmsh-root)
#   initrd.img   Debian's initramfs for the kernel
#   release      uname -r
# named by a hash of every input (this script, the kernel package), so it
# is rebuilt only when one changes (not when the archive moves on: delete
# the directory to pick up newer packages).
set -euo pipefail

kdir=${1:?usage: build-debian-rootfs.sh KERNEL_DIR}
kdir=$(readlink -f "$kdir")
cache=${VMSH_TEST_CACHE:-/var/cache/vmsh-test}
suite=bookworm
mirror=${VMSH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
label=vmsh-root
pkgs=systemd,systemd-sysv,udev,kmod,initramfs-tools,e2fsprogs,procps,zstd,python3,python3-apt

log() { echo "build-debian-rootfs: $*" >&2; }
[ -f "$kdir/release" ] && [ -d "$kdir/modules" ] || { log "$kdir is not a fetch-kernel.sh directory"; exit 2; }
release=$(cat "$kdir/release")

hash=$( { echo "v1 $suite $mirror $pkgs $label"; cat "$0"; cat "$kdir/package"; } | sha256sum | cut -c1-16)
out="$cache/debian-root/$release-$hash"
if [ -e "$out/.complete" ]; then
	echo "$out"
	exit 0
fi

need() {  # need CMD PACKAGE: install PACKAGE when CMD is missing
	command -v "$1" >/dev/null 2>&1 && return
	log "installing $2 (for $1)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2
}
need mmdebstrap mmdebstrap
need mke2fs e2fsprogs
[ "$(id -u)" -eq 0 ] || { log "needs root (mmdebstrap in root mode, mknod in the image)"; exit 1; }

mkdir -p "$cache/debian-root"
exec 9>>"$cache/debian-root/.lock"
flock 9
if [ -e "$out/.complete" ]; then
	echo "$out"
	exit 0
fi

work=$(mktemp -d "$cache/debian-root/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir "$root"

# The files the harness needs. Everything else is Debian's.
cat >"$work/autologin.conf" <<'EOF'
# vmsh test guest: log root in on the serial console (the harness types
# its commands there).
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - $TERM
EOF
cat >"$work/profile" <<'EOF'
# ~/.profile of root in the vmsh test guest (tools/guest/build-debian-rootfs.sh)
export TERM=dumb
export PS1='vmsh-guest:\w\$ '
bind 'set enable-bracketed-paste off' 2>/dev/null
if [ "$(tty)" = /dev/ttyS0 ]; then
	# the harness waits for this marker, then for the first prompt
	echo "VMSH-GUEST-READY $(uname -r)"
fi
EOF

log "mmdebstrap $suite ($pkgs) for $release"
mmdebstrap --variant=minbase --mode=root --include="$pkgs" \
	--customize-hook="mkdir -p \"\$1/lib/modules\" \"\$1/boot\"" \
	--customize-hook="cp -a '$kdir/modules' \"\$1/lib/modules/$release\"" \
	--customize-hook="cp '$kdir/config' \"\$1/boot/config-$release\"" \
	--customize-hook="cp '$kdir/System.map' \"\$1/boot/System.map-$release\"" \
	--customize-hook="cp '$kdir/vmlinuz' \"\$1/boot/vmlinuz-$release\"" \
	--customize-hook="chroot \"\$1\" depmod -a '$release'" \
	--customize-hook="chroot \"\$1\" mkinitramfs -o '/boot/initrd.img-$release' '$release'" \
	--customize-hook="echo 'LABEL=$label / ext4 errors=remount-ro 0 1' >\"\$1/etc/fstab\"" \
	--customize-hook="echo vmsh-debian >\"\$1/etc/hostname\"" \
	--customize-hook="printf 'kernel.printk = 1 4 1 7\n' >\"\$1/etc/sysctl.d/10-vmsh-quiet-console.conf\"" \
	--customize-hook="mkdir -p \"\$1/etc/systemd/system/serial-getty@ttyS0.service.d\"" \
	--customize-hook="cp '$work/autologin.conf' \"\$1/etc/systemd/system/serial-getty@ttyS0.service.d/\"" \
	--customize-hook="cp '$work/profile' \"\$1/root/.profile\"" \
	--customize-hook="rm -f \"\$1/etc/machine-id\"; touch \"\$1/etc/machine-id\"" \
	"$suite" "$root" "$mirror" >&2

cp "$root/boot/initrd.img-$release" "$work/initrd.img"
# room for what the tests write (the helper file goes to /dev or /run)
size_mb=$(( $(du -sm "$root" | cut -f1) * 5 / 4 + 256 ))
log "mke2fs: ${size_mb} MiB"
mke2fs -q -F -t ext4 -L "$label" -d "$root" "$work/root.ext4" "${size_mb}M"
echo "$release" >"$work/release"
rm -rf "$root"
mkdir -p "$out"
mv "$work/root.ext4" "$work/initrd.img" "$work/release" "$out/"
touch "$out/.complete"
echo "$out"
