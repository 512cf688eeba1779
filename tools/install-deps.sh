#!/usr/bin/env bash
# install-deps.sh - install the Debian packages vmsh needs to build and test.
# Idempotent; run as root on Debian 12 (bookworm).
set -euo pipefail

pkgs=(
	# build
	gcc make pkg-config libjson-c-dev libseccomp-dev
	# man pages, the Debian package (make man, make deb) and its checks
	scdoc debhelper lintian
	# the Ansible connection plugin and its tests
	ansible-core
	# the zsh completion's test
	zsh
	# unit tests
	libcmocka-dev
	# fuzz targets (make fuzz / check-fuzz): clang 14 with libFuzzer and the sanitizer runtimes
	clang libclang-rt-14-dev
	# devices: io_uring backend; images; benchmarks
	liburing-dev e2fsprogs squashfs-tools fio dbench dropbear-bin openssh-client strace stress-ng sqlite3
	# the compile workload of the application benchmarks (tools image): tcc, make and libc6-dev
	tcc make libc6-dev linux-libc-dev
	# make eval: its plots
	python3-matplotlib
	# end-to-end: hypervisor, guest images, orchestration
	qemu-system-x86 qemu-utils busybox-static musl-tools cpio kmod crash gdb
	# a guest started by libvirt (tests/vm/test_libvirt.py; libvirtd runs in the emulated host)
	libvirt-daemon-system libvirt-clients
	# the Debian-rootfs test guest (tools/guest/build-debian-rootfs.sh)
	mmdebstrap
	xz-utils zstd lz4 gzip python3 python3-apt python3-pytest python3-pytest-xdist python3-pexpect util-linux procps
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#pkgs[@]} packages present"
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install packages" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
