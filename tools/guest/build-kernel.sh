#!/usr/bin/env bash
# build-kernel.sh — build a small custom kernel for test guests from Debian's
# linux-source-6.1 (what a user who builds their own kernel runs: virtio and
# ext4 built in, no KASLR).
#
# usage: build-kernel.sh VARIANT
#   builtin    modules on, but everything vmsh and the test guest need built
#              in (virtio pci/mmio/blk/console, ext4, overlayfs): no module
#              is loaded, none exists; CONFIG_RANDOMIZE_BASE off
#   nomodules  the same with CONFIG_MODULES=n: the kernel has no table of
#              exported symbols at all (EXPORT_SYMBOL expands to nothing),
#              only kallsyms
#
# The source package is fetched with `apt-get download` into $VMSH_TEST_CACHE
# (default /var/cache/vmsh-test) and unpacked once; the build needs flex,
# bison, bc, libelf-dev and libssl-dev (installed when missing). Result
# directory (printed on stdout, last line), laid out like fetch-kernel.sh's:
#   $CACHE/kernels/custom-6.1-VARIANT/
#       vmlinuz  System.map  config  release  package
#       modules/  modules.dep (empty) and modules.builtin
# A complete build is marked by .complete and reused. A small config builds
# in a few minutes on 2 cores (nice'd: tests may run beside it).
set -euo pipefail

variant=${1:?usage: build-kernel.sh builtin|nomodules}
case "$variant" in
	builtin|nomodules) ;;
	*) echo "build-kernel: unknown variant '$variant' (want builtin or nomodules)" >&2; exit 2 ;;
esac
cache=${VMSH_TEST_CACHE:-/var/cache/vmsh-test}
out="$cache/kernels/custom-6.1-$variant"

log() { echo "build-kernel: $*" >&2; }
if [ -e "$out/.complete" ]; then
	echo "$out"
	exit 0
fi
need() {  # need CMD PACKAGE: install PACKAGE when CMD (or a file) is missing
	{ command -v "$1" || [ -e "$1" ]; } >/dev/null 2>&1 && return
	log "installing $2 (for $1)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}
need flex flex
need bison bison
need bc bc
need make make
need gcc gcc
need /usr/include/libelf.h libelf-dev
need /usr/include/openssl/ssl.h libssl-dev
need xz xz-utils

mkdir -p "$cache/kernels" "$cache/src"
exec 9>>"$cache/kernels/.lock-build"
flock 9
[ -e "$out/.complete" ] && { echo "$out"; exit 0; }

# the source: Debian's linux-source-6.1 (its version names the build)
src="$cache/src/linux-source-6.1"
if [ ! -e "$src/.complete" ]; then
	ver=$(apt-cache policy linux-source-6.1 2>/dev/null | awk '/Candidate:/{print $2}')
	if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		apt-get update -q >&2 || true
		ver=$(apt-cache policy linux-source-6.1 | awk '/Candidate:/{print $2}')
	fi
	log "fetching linux-source-6.1 $ver"
	tmp=$(mktemp -d "$cache/src/.fetch.XXXXXX")
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "linux-source-6.1=$ver" >&2)
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf "$tmp"/root/usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1
	echo "linux-source-6.1 $ver" >"$src/.package"
	touch "$src/.complete"
	rm -rf "$tmp"
	trap - EXIT
fi

# the config: tinyconfig plus what a virtio guest with a shell needs
build="$cache/kernels/.build-$variant"
mkdir -p "$build"
make -s -C "$src" O="$build" tinyconfig >&2
cfg() { "$src/scripts/config" --file "$build/.config" "$@"; }
for opt in 64BIT SMP PRINTK PRINTK_TIME BUG TTY SERIAL_8250 SERIAL_8250_CONSOLE UNIX98_PTYS \
	BLK_DEV_INITRD RD_GZIP BINFMT_ELF BINFMT_SCRIPT PROC_FS PROC_SYSCTL SYSFS DEVTMPFS \
	DEVTMPFS_MOUNT TMPFS SHMEM MULTIUSER FUTEX EPOLL SIGNALFD TIMERFD EVENTFD POSIX_TIMERS \
	FILE_LOCKING FHANDLE NAMESPACES PID_NS UTS_NS IPC_NS HIGH_RES_TIMERS NO_HZ_IDLE \
	X86_LOCAL_APIC X86_IO_APIC X86_MPPARSE ACPI PCI PCI_MSI HYPERVISOR_GUEST PARAVIRT KVM_GUEST \
	BLOCK VIRTIO_MENU VIRTIO VIRTIO_PCI VIRTIO_PCI_LEGACY VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES \
	VIRTIO_BLK VIRTIO_CONSOLE EXT4_FS OVERLAY_FS KALLSYMS KALLSYMS_ALL IRQ_WORK PERF_EVENTS \
	RTC_CLASS RTC_DRV_CMOS INPUT_KEYBOARD SERIO; do
	cfg --enable "$opt"
done
cfg --disable RANDOMIZE_BASE --disable RANDOMIZE_MEMORY
if [ "$variant" = nomodules ]; then
	cfg --disable MODULES
else
	cfg --enable MODULES --enable MODULE_UNLOAD
fi
cfg --set-str LOCALVERSION "-vmsh-$variant" --disable LOCALVERSION_AUTO
make -s -C "$src" O="$build" olddefconfig >&2
for opt in VIRTIO_MMIO VIRTIO_BLK VIRTIO_CONSOLE EXT4_FS OVERLAY_FS KALLSYMS; do
	grep -q "^CONFIG_$opt=y" "$build/.config" || { log "CONFIG_$opt did not stay on"; exit 1; }
done
if grep -q '^CONFIG_RANDOMIZE_BASE=y' "$build/.config"; then log "KASLR did not go off"; exit 1; fi

log "building $variant in $build ($(nproc) jobs)"
nice -n 19 make -s -C "$src" O="$build" -j"$(nproc)" bzImage >&2
[ "$variant" = nomodules ] || nice -n 19 make -s -C "$src" O="$build" -j"$(nproc)" modules >&2

tmp=$(mktemp -d "$cache/kernels/.out.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
release=$(cat "$build/include/config/kernel.release")
cp "$build/arch/x86/boot/bzImage" "$tmp/vmlinuz"
cp "$build/System.map" "$tmp/System.map"
cp "$build/.config" "$tmp/config"
mkdir -p "$tmp/modules"
: >"$tmp/modules/modules.dep"
cp "$build/modules.builtin" "$tmp/modules/modules.builtin" 2>/dev/null || : >"$tmp/modules/modules.builtin"
echo "$release" >"$tmp/release"
srcver=$(awk '{print $2}' "$src/.package")
echo "linux-source-6.1-vmsh-$variant $srcver" >"$tmp/package"
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "built $release into $out"
echo "$out"
