#!/usr/bin/env bash
# fetch-qemu.sh - a second QEMU generation for test guests, next to the
# host's own: QEMU 10 from bookworm-backports, unpacked into the test cache.
#
# usage: fetch-qemu.sh 10
#
# The packages (qemu-system-x86, qemu-system-data, and the seabios they
# want) come through an apt state of our own under
# $VMSH_TEST_CACHE/apt/bookworm-backports (the host's apt configuration is not
# touched) and are unpacked with dpkg-deb, not installed: the host's QEMU 7.2
# stays what `qemu-system-x86_64` runs. Result directory (last line of stdout):
#   $CACHE/qemu/<version>/
#       qemu-system-x86_64   the binary (bookworm's shared libraries)
#       share/qemu           its data directory (option ROMs, keymaps), for -L
#       share/seabios        the BIOS it wants (newer than bookworm's), for -L
#       version              `qemu-system-x86_64 --version`, first line
# A complete extraction is marked by .complete and reused without download.
set -euo pipefail

want=${1:?usage: fetch-qemu.sh 10}
cache=${VMSH_TEST_CACHE:-/var/cache/vmsh-test}
[ "$want" = 10 ] || { echo "fetch-qemu: only QEMU 10 (bookworm-backports) is known" >&2; exit 2; }
suite=bookworm-backports
log() { echo "fetch-qemu: $*" >&2; }

st="$cache/apt/$suite"
apt_opts=(-o "Dir::Etc::SourceList=$st/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o "Dir::State::Lists=$st/lists" -o "Dir::Cache=$st/cache")
mkdir -p "$cache/qemu"
if { exec 9>>"$cache/qemu/.lock"; } 2>/dev/null; then
	flock 9
fi
link="$cache/qemu/$want"
if [ ! -s "$st/sources.list" ] && mkdir -p "$st/lists/partial" "$st/cache/archives/partial" 2>/dev/null; then
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
		"$suite" >"$st/sources.list"
fi
candidate() {
	apt-cache "${apt_opts[@]}" policy qemu-system-x86 2>/dev/null |
		awk '/Candidate:/ {print $2}' | grep -E "^1:$want\\." || true
}
ver=$(candidate)
if [ -z "$ver" ]; then
	if [ -e "$link/.complete" ]; then
		log "apt knows no QEMU $want; using cached $(readlink "$link")"
		readlink -f "$link"
		exit 0
	fi
	apt-get "${apt_opts[@]}" update -q >&2 || true
	ver=$(candidate)
	[ -n "$ver" ] || { log "no qemu-system-x86 $want.* in $suite"; exit 1; }
fi
dir="$cache/qemu/${ver#1:}"
if [ ! -e "$dir/.complete" ]; then
	log "fetching QEMU $ver from $suite"
	tmp=$(mktemp -d "$cache/qemu/.fetch.XXXXXX")
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root \
		"qemu-system-x86=$ver" "qemu-system-data=$ver" "seabios/$suite" >&2)
	for deb in "$tmp"/*.deb; do
		dpkg-deb -x "$deb" "$tmp/root"
	done
	mkdir -p "$tmp/out"
	mv "$tmp/root/usr/bin/qemu-system-x86_64" "$tmp/out/"
	mv "$tmp/root/usr/share" "$tmp/out/share"
	"$tmp/out/qemu-system-x86_64" --version | head -n1 >"$tmp/out/version"
	touch "$tmp/out/.complete"
	rm -rf "$dir"
	mv "$tmp/out" "$dir"
	rm -rf "$tmp"
	trap - EXIT
	log "unpacked $(cat "$dir/version") into $dir"
fi
ln -sfn "$dir" "$link"
echo "$dir"
