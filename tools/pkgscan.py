#!/usr/bin/python3
"""vmsh-pkgscan: which installed Debian packages of a VM are vulnerable, by
version, from Debian's security tracker data. Runs inside the VM through
vmsh, from an image built with the packages it needs:

    vmsh image build --package python3,python3-apt --from-dir DIR scan.img
        (DIR/usr/local/bin/vmsh-pkgscan is this file)
    vmsh attach -f scan.img VM -- vmsh-pkgscan < tracker.json

tracker.json: the tracker's JSON (https://security-tracker.debian.org/
tracker/data/json, or any part of it): {source package: {issue: {"releases":
{codename: {"status": "resolved" | "open" | ..., "fixed_version": V,
"urgency": U}}}}}. The guest's dpkg database and release are read under
--root (default /var/lib/vmsh, where vmsh shows the guest's root).

A package is vulnerable to an issue of its source package when the issue is
open in the guest's release, or resolved there in a version newer than the
installed one (Debian version ordering: epochs, '~', revisions - apt_pkg's,
or dpkg --compare-versions without python3-apt). fixed_version "0" means the
release was never affected.

Output: "VULNERABLE package version source issue fixed-in|unfixed [urgency]"
per finding, then a summary line. Exit status: 0 clean, 1 vulnerable, 2 the
scan could not run. Everything printed that comes from the guest or the
tracker is made printable first."""
import argparse
import json
import os
import re
import subprocess
import sys

UNFIXED = ("open", "undetermined")


def printable(s, spaces=True):
    """s with control characters (and, for a field, spaces) as \\xNN."""
    return "".join(c if (" " <= c < "\x7f" and (spaces or c != " ")) else f"\\x{ord(c):02x}" for c in str(s))


def version_compare():
    try:
        import apt_pkg
        apt_pkg.init_system()
        return apt_pkg.version_compare
    except ImportError:
        def dpkg_compare(a, b):
            for op, r in (("lt", -1), ("eq", 0)):
                if subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0:
                    return r
            return 1
        return dpkg_compare


def installed(status_path):
    """(package, version, source, source version) of every installed package."""
    with open(status_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for para in text.split("\n\n"):
        fields = {}
        for line in para.splitlines():
            m = re.match(r"([A-Za-z-]+):\s?(.*)$", line)
            if m:
                fields[m.group(1).lower()] = m.group(2).strip()
        name, version = fields.get("package"), fields.get("version")
        if not name or not version or not fields.get("status", "").endswith(" installed"):
            continue
        source, source_version = name, version
        m = re.match(r"(\S+)(?:\s+\((\S+)\))?$", fields.get("source", ""))
        if m:
            source = m.group(1)
            source_version = m.group(2) or version
        yield name, version, source, source_version


def release_of(root):
    try:
        with open(os.path.join(root, "etc/os-release"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def scan(packages, tracker, release, compare):
    findings = []
    for name, version, source, source_version in packages:
        issues = tracker.get(source)
        if not isinstance(issues, dict):
            continue
        for issue, data in sorted(issues.items()):
            rel = data.get("releases", {}).get(release) if isinstance(data, dict) else None
            if not isinstance(rel, dict):
                continue
            status, fixed = rel.get("status"), rel.get("fixed_version")
            if status in UNFIXED:
                findings.append((name, version, source, issue, "unfixed", rel.get("urgency")))
            elif status == "resolved" and isinstance(fixed, str) and fixed != "0" and \
                    compare(source_version, fixed) < 0:
                findings.append((name, version, source, issue, f"fixed-in {fixed}", rel.get("urgency")))
    return findings


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="/var/lib/vmsh", help="the guest's root (default /var/lib/vmsh)")
    p.add_argument("--release", help="Debian codename (default: the guest's /etc/os-release)")
    p.add_argument("tracker", nargs="?", help="the tracker's JSON (default: standard input)")
    a = p.parse_args()
    try:
        release = a.release or release_of(a.root)
        if not release:
            raise ValueError(f"no VERSION_CODENAME in {a.root}/etc/os-release: give --release")
        packages = list(installed(os.path.join(a.root, "var/lib/dpkg/status")))
        src = open(a.tracker, encoding="utf-8") if a.tracker else sys.stdin
        tracker = json.load(src)
        if not isinstance(tracker, dict):
            raise ValueError("the tracker data is not a JSON object of source packages")
    except (OSError, ValueError) as e:
        print(f"vmsh-pkgscan: {printable(e)}", file=sys.stderr)
        return 2
    findings = scan(packages, tracker, release, version_compare())
    for name, version, source, issue, what, urgency in findings:
        fields = ("VULNERABLE", name, version, source, issue, *what.split(" "), urgency or "")
        print(" ".join(printable(x, spaces=False) for x in fields).rstrip())
    vulnerable = len({f[0] for f in findings})
    print(f"vmsh-pkgscan: {len(packages)} packages installed ({printable(release)}), {vulnerable} vulnerable, "
          f"{len(findings)} issues")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
