#!/usr/bin/env bash
# fetch-kernel.sh — download and unpack a Debian kernel package for test guests.
#
# usage: fetch-kernel.sh SERIES [FLAVOUR]
#   SERIES   6.1 | 6.12 (Debian bookworm kernel series) | 5.10 (bullseye's,
#            from a bullseye apt source kept in $VMSH_TEST_CACHE/apt/bullseye:
#            the host's own apt configuration is not touched)
#   FLAVOUR  amd64 (default) | cloud-amd64 | rt-amd64
#
# Picks the newest installable linux-image-<series>*-<flavour>-unsigned package
# (falls back to the signed one), fetches it with `apt-get download` into
# $VMSH_TEST_CACHE (default /var/cache/vmsh-test) and unpacks it with dpkg-deb.
# Result directory (printed on stdout, last line):
#   $CACHE/kernels/<package>_<version>/
#       vmlinuz      bzImage
#       System.map   the real one, from the -dbg package (see below)
#       config       Debian's /boot/config-<release>
#       release      uname -r of the kernel (one line)
#       package      package name and version (one line)
#       modules/     the lib/modules/<release> tree (modules.dep etc.)
#       vmlinux-dbg  the vmlinux with debug info (only with VMSH_FETCH_VMLINUX=1)
# A complete extraction is marked by .complete; it is reused without any
# download.  $CACHE/kernels/<series>-<flavour> is a symlink to the newest one,
# used as an offline fallback when apt knows no candidate.
set -euo pipefail

series=${1:?usage: fetch-kernel.sh SERIES [FLAVOUR]}
flavour=${2:-amd64}
cache=${VMSH_TEST_CACHE:-/var/cache/vmsh-test}

case "$series" in
	6.1)  pattern="^linux-image-6\\.1\\.0-[0-9]+-${flavour}(-unsigned)?\$" ;;
	6.12) pattern="^linux-image-6\\.12\\.[0-9]+\\+deb12-${flavour}(-unsigned)?\$" ;;
	5.10) pattern="^linux-image-5\\.10\\.0-[0-9]+-${flavour}(-unsigned)?\$" suite=bullseye ;;
	*) echo "fetch-kernel: unknown series '$series' (want 5.10, 6.1 or 6.12)" >&2; exit 2 ;;
esac
case "$flavour" in
	amd64|cloud-amd64|rt-amd64) ;;
	*) echo "fetch-kernel: unknown flavour '$flavour'" >&2; exit 2 ;;
esac

log() { echo "fetch-kernel: $*" >&2; }
need() {  # need CMD PACKAGE: install PACKAGE when CMD is missing
	command -v "$1" >/dev/null 2>&1 && return
	log "installing $2 (for $1)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}
need dpkg-deb dpkg
need apt-get apt

mkdir -p "$cache/kernels"
# Another Debian release's kernels come through an apt state of our own
# (sources, lists and downloads under $cache/apt/SUITE); apt-get and
# apt-cache below get its options, the host's apt stays as it is.
apt_opts=()
if [ -n "${suite:-}" ]; then
	st="$cache/apt/$suite"
	apt_opts=(-o "Dir::Etc::SourceList=$st/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$st/lists" -o "Dir::Cache=$st/cache")
	if [ ! -s "$st/sources.list" ] && mkdir -p "$st/lists/partial" "$st/cache/archives/partial" 2>/dev/null; then
		key=/usr/share/keyrings/debian-archive-keyring.gpg
		printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\ndeb [signed-by=%s] http://deb.debian.org/debian-security %s-security main\n' \
			"$key" "$suite" "$key" "$suite" >"$st/sources.list"
	fi
fi
link="$cache/kernels/$series-$flavour"
# One fetch at a time per cache (tests may run this concurrently); a
# read-only cache (inside the emulated host) needs no lock.
if { exec 9>>"$cache/kernels/.lock"; } 2>/dev/null; then
	flock 9
fi

# Newest package (by version-sorted name) that apt can actually install.
# Prefer -unsigned: same image, no dependency on the signing template.
candidate() {
	local names name ver
	names=$(apt-cache "${apt_opts[@]}" search --names-only "$pattern" 2>/dev/null | awk '{print $1}' | sort -rV) || true
	for name in $(grep -- '-unsigned$' <<<"$names") $(grep -v -- '-unsigned$' <<<"$names"); do
		ver=$(apt-cache "${apt_opts[@]}" policy "$name" 2>/dev/null | awk '/Candidate:/{print $2}')
		if [ -n "$ver" ] && [ "$ver" != "(none)" ]; then
			echo "$name $ver"
			return 0
		fi
	done
	return 1
}

if ! pick=$(candidate); then
	if [ -e "$link/.complete" ]; then
		log "apt knows no $series/$flavour package; using cached $(readlink "$link")"
		readlink -f "$link"
		exit 0
	fi
	log "no candidate for $series/$flavour; running apt-get update"
	apt-get "${apt_opts[@]}" update -q >&2 || true
	pick=$(candidate) || { log "no installable package matches $pattern"; exit 1; }
fi
read -r pkg ver <<<"$pick"
dir="$cache/kernels/${pkg}_${ver}"

if [ ! -e "$dir/.complete" ]; then
	log "fetching $pkg $ver"
	tmp=$(mktemp -d "$cache/kernels/.fetch.XXXXXX")
	chmod 755 "$tmp"  # apt-get download drops privileges to _apt
	trap 'rm -rf "$tmp"' EXIT
	got=$pkg
	if ! (cd "$tmp" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
		# a mirror may lack one of the two builds of the same image
		# (bullseye-security's cloud-amd64-unsigned, seen here): the signed one
		got=${pkg%-unsigned}
		[ "$got" != "$pkg" ] || exit 1
		log "$pkg $ver cannot be downloaded; trying $got"
		(cd "$tmp" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root "$got=$ver" >&2)
	fi
	deb=$(ls "$tmp"/*.deb)
	dpkg-deb -x "$deb" "$tmp/root"
	release=$(ls "$tmp/root/lib/modules" | head -n1)
	[ -n "$release" ] || { log "$deb has no lib/modules"; exit 1; }
	mkdir -p "$tmp/out"
	mv "$tmp/root/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
	mv "$tmp/root/boot/System.map-$release" "$tmp/out/System.map"
	mv "$tmp/root/boot/config-$release" "$tmp/out/config"
	mv "$tmp/root/lib/modules/$release" "$tmp/out/modules"
	# The package ships no modules.dep (postinst runs depmod): make one.
	if [ ! -s "$tmp/out/modules/modules.dep" ]; then
		need depmod kmod
		mkdir -p "$tmp/depmod/lib/modules"
		ln -s "$tmp/out/modules" "$tmp/depmod/lib/modules/$release"
		depmod -b "$tmp/depmod" "$release"
	fi
	echo "$release" >"$tmp/out/release"
	echo "$got $ver" >"$tmp/out/package"
	touch "$tmp/out/.complete"
	rm -rf "$dir"
	mv "$tmp/out" "$dir"
	rm -rf "$tmp"
	trap - EXIT
	log "unpacked $release into $dir"
fi
# Debian's /boot/System.map is a placeholder pointing at the -dbg package.
# Take the real one from there: it is the first big member of that package's
# data, so tar stops reading after a few seconds (the .deb is ~1 GB though;
# VMSH_FETCH_DBG=0 skips this and leaves the placeholder).
if [ "${VMSH_FETCH_DBG:-1}" != 0 ] && grep -q 'The real System.map' "$dir/System.map"; then
	dbg="${pkg%-unsigned}-dbg"
	log "fetching the real System.map from $dbg $ver"
	tmp=$(mktemp -d "$cache/kernels/.fetch.XXXXXX")
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	release=$(cat "$dir/release")
	# a mirror may lack the -dbg build (bullseye-security's cloud-amd64:
	# 404): the placeholder stays, and what needs the map says so
	if (cd "$tmp" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root "$dbg=$ver" >&2); then
		dpkg-deb --fsys-tarfile "$tmp"/*.deb 2>/dev/null |
			tar -xO --occurrence=1 "./usr/lib/debug/boot/System.map-$release" >"$tmp/System.map" || true
	fi
	touch "$tmp/System.map"
	if [ "$(wc -l <"$tmp/System.map")" -gt 1000 ]; then
		mv "$tmp/System.map" "$dir/System.map"
	else
		log "no System.map-$release in $dbg; keeping the placeholder"
	fi
	rm -rf "$tmp"
	trap - EXIT
fi
# The vmlinux with debug info (crash, gdb: the coredump tests) only on
# request, VMSH_FETCH_VMLINUX=1: it is most of the -dbg package.
if [ "${VMSH_FETCH_VMLINUX:-0}" = 1 ] && [ ! -s "$dir/vmlinux-dbg" ]; then
	dbg="${pkg%-unsigned}-dbg"
	log "fetching the vmlinux with debug info from $dbg $ver"
	tmp=$(mktemp -d "$cache/kernels/.fetch.XXXXXX")
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get "${apt_opts[@]}" download -q -o APT::Sandbox::User=root "$dbg=$ver" >&2)
	release=$(cat "$dir/release")
	dpkg-deb --fsys-tarfile "$tmp"/*.deb |
		tar -xO "./usr/lib/debug/boot/vmlinux-$release" >"$tmp/vmlinux-dbg"
	[ -s "$tmp/vmlinux-dbg" ] || { log "no vmlinux-$release in $dbg"; exit 1; }
	chmod 644 "$tmp/vmlinux-dbg"
	mv "$tmp/vmlinux-dbg" "$dir/vmlinux-dbg"
	rm -rf "$tmp"
	trap - EXIT
fi
ln -sfn "$(basename "$dir")" "$link" 2>/dev/null || true  # read-only cache: fine
echo "$dir"
