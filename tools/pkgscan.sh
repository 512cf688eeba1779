#!/bin/sh
# pkgscan.sh - list the Debian packages installed in a VM and flag those a
# vulnerability list names. Runs inside the VM through vmsh (busybox awk is
# enough), reading the guest's dpkg database at /var/lib/vmsh:
#
#   vmsh attach VM -- sh -c "$(cat tools/pkgscan.sh)" pkgscan < vulns.txt
#
# vulns.txt: one package per line, optionally followed by an advisory text;
# '#' starts a comment. Output: "installed NAME VERSION" per package, then
# "VULNERABLE NAME VERSION ADVISORY" per match; exit status 3 if any matched.
db=${DPKG_STATUS:-/var/lib/vmsh/var/lib/dpkg/status}
[ -r "$db" ] || { echo "pkgscan: no dpkg database at $db" >&2; exit 2; }
awk -v db="$db" '
	BEGIN {
		while ((getline line < "/dev/stdin") > 0) {
			sub(/#.*/, "", line)
			n = split(line, f, /[ \t]+/)
			if (f[1] == "" && n > 1) { f[1] = f[2]; for (i = 2; i < n; i++) f[i] = f[i + 1]; n-- }
			if (f[1] == "") continue
			adv = ""
			for (i = 2; i <= n; i++) adv = adv (i > 2 ? " " : "") f[i]
			vuln[f[1]] = adv
		}
		RS = ""; FS = "\n"
		while ((getline rec < db) > 0) {
			name = ver = st = ""
			k = split(rec, l, "\n")
			for (i = 1; i <= k; i++) {
				if (l[i] ~ /^Package: /) name = substr(l[i], 10)
				else if (l[i] ~ /^Version: /) ver = substr(l[i], 10)
				else if (l[i] ~ /^Status: /) st = substr(l[i], 9)
			}
			if (name == "" || st !~ / installed$/) continue
			print "installed", name, ver
			if (name in vuln) hits[++nh] = "VULNERABLE " name " " ver (vuln[name] != "" ? " " vuln[name] : "")
		}
		for (i = 1; i <= nh; i++) print hits[i]
		exit nh ? 3 : 0
	}'
