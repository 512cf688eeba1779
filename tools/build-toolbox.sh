#!/bin/sh
# build-toolbox.sh OUT - the built-in tools image of `vmsh attach`: an ext4
# file system with busybox (static) and its applets, and the directories the
# in-guest helper mounts things on (/var/lib/vmsh for the guest's root,
# /proc, /sys, /dev, /tmp, /run). Needs busybox-static and e2fsprogs; no root.
set -eu
out=$1
busybox=$(command -v busybox || echo /bin/busybox)
[ -x "$busybox" ] || { echo "build-toolbox: busybox-static is not installed" >&2; exit 1; }
file "$busybox" 2>/dev/null | grep -q "statically linked" || ldd "$busybox" 2>&1 | grep -q "not a dynamic" ||
	{ echo "build-toolbox: $busybox is not static (install busybox-static)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" \
	"$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run" "$root/var/lib/vmsh" "$root/mnt"
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
	[ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
cat > "$root/etc/profile" <<'PROFILE'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PS1='vmsh:\w# '
PROFILE
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'vmsh toolbox: busybox %s. The guest'"'"'s root file system is at /var/lib/vmsh.\n' \
	"$("$busybox" 2>&1 | head -1 | awk '{print $2}')" > "$root/etc/motd"
# 4 KiB blocks: mke2fs would choose 1 KiB for a file system this small,
# and every directory, inode table and extent block the guest reads at
# attach would be a request of its own through vmsh. No journal and no
# room to grow: the image is only ever mounted read-only (vmsh serves it
# read-only from its own executable), and a journal is 4 MiB the guest
# checks at every mount. Sized to its contents with a margin; too small,
# mke2fs fails the build.
kib=$(du -sk --apparent-size "$root" | cut -f1)
inodes=$(( $(find "$root" | wc -l) + 64 ))
kib=$(( (kib + inodes / 4 + 256) * 5 / 4 ))
kib=$(( (kib + 1023) / 1024 * 1024 ))
mke2fs -q -F -t ext4 -b 4096 -O ^has_journal,^resize_inode -N "$inodes" -m 0 -L vmsh-toolbox \
	-E root_owner=0:0 -d "$root" "$out.tmp" "${kib}k"
mv "$out.tmp" "$out"
