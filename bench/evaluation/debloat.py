"""Image de-bloating: how much smaller an application's image gets when it
carries no debugging tools, because `vmsh attach -f IMAGE` brings them. The
paper measured 41 Docker Hub images; Docker Hub is out of reach here, so each
application image is built twice from Debian bookworm's packages with
mmdebstrap (no Recommends, as the official images install packages; merged
/usr the way debootstrap and thus the debian:bookworm image make it, with
usr-is-merged - mmdebstrap's merged-usr hook - where plain mmdebstrap would
pull in usrmerge and all of perl):

  with tools   what a Docker image of the application holds: Debian's base
               image (`--variant=minbase`: the Essential and Priority required
               packages and apt, like debian:bookworm), the application's
               packages, and TOOLS, debugging tools such images tend to carry
  minimal      the application's packages and what they depend on, on top of
               Debian's Essential set (`--variant=essential --include=APP`):
               the smallest tree dpkg installs. `--variant=custom` (the
               packages and their dependency closure alone) cannot make one:
               maintainer scripts need the Essential set's shell and tools
  closure only  the files dpkg lists for the application's packages and their
               Pre-Depends/Depends closure in the minimal tree (the first
               installed alternative of each): what a distroless-style image
               ships; a lower bound, as files made by maintainer scripts are
               not counted

Size is the apparent size of the unpacked tree, read from mmdebstrap's tar
output without unpacking it: st_size of the regular files and symlinks, hard
links counted once, outside /proc, /sys, /dev, /var/lib/apt/lists and
/var/cache/apt (mmdebstrap empties the last two, as Docker images do);
packages are those dpkg's status calls installed. The saving is 1 - minimal /
with tools, averaged over the images (an arithmetic mean; the row without an
application is the base alone and is not averaged). The .debs stay in
$VMSH_TEST_CACHE/eval-debs across builds and runs (hard-linked into each build
and back: mmdebstrap's documented sync-in/sync-out cache, with links for
copies; older versions of the packages used are dropped); the package indices
are downloaded for each build."""
import os
import posixpath
import re
import shlex
import signal
import subprocess
import tarfile
import tempfile
import time

from bench.evaluation.markdown import doc_items

NAME = "debloat"
TITLE = "Image de-bloating"
PAPER = "60 % smaller on average over 41 Docker Hub images (the paper's Section 6)"
PAPER_SAVING = 0.60
NEEDS_VM = False

SUITE = "bookworm"  # the package names below are bookworm's
TOOLS = ["procps", "iproute2", "iputils-ping", "net-tools", "less", "curl", "wget", "ca-certificates", "vim-tiny",
         "nano", "psmisc"]
# (image, its Debian packages): Docker Hub's most pulled application images
APPS = [("nginx", ["nginx"]), ("apache2", ["apache2"]), ("postgresql", ["postgresql"]),
        ("mariadb-server", ["mariadb-server"]), ("redis-server", ["redis-server"]), ("memcached", ["memcached"]),
        ("rabbitmq-server", ["rabbitmq-server"]), ("python3", ["python3"]), ("nodejs", ["nodejs"]),
        ("openjdk-17-jre-headless", ["openjdk-17-jre-headless"]), ("ruby", ["ruby"]), ("php-fpm", ["php-fpm"]),
        ("haproxy", ["haproxy"]), ("bind9", ["bind9"]), ("postfix", ["postfix"]), ("mosquitto", ["mosquitto"]),
        ("varnish", ["varnish"]), ("tomcat10", ["tomcat10"]), ("squid", ["squid"])]
QUICK_APPS = [("redis-server", ["redis-server"]), ("memcached", ["memcached"])]
BASE = "(no application)"  # the full run's first row: the two bases alone (minbase + TOOLS, Essential set)
EXCLUDED = ("/proc", "/sys", "/dev", "/var/lib/apt/lists", "/var/cache/apt")
MERGED_USR = "/usr/share/mmdebstrap/hooks/merged-usr"
ARCHIVES = "/var/cache/apt/archives"
BUILD_TIMEOUT = 3600
METHOD = (f"mmdebstrap --variant=minbase --include=APP,TOOLS (with tools) and --variant=essential --include=APP "
          f"(minimal), Debian {SUITE} main, no Recommends, --hook-dir={MERGED_USR}, --format=tar; the tarball's "
          f"members summed (regular files and symlinks, hard links once) outside {', '.join(EXCLUDED)}; closure "
          f"only: the minimal tree's files of APP's Pre-Depends/Depends closure (dpkg's .list files)")


def mirror():
    return os.environ.get("VMSH_DEBIAN_MIRROR") or "http://deb.debian.org/debian"


def norm(name):
    """A tar member's name as an absolute path."""
    name = name[2:] if name.startswith("./") else name.lstrip("/")
    return "/" + name.rstrip("/")


def excluded(path):
    return any(path == e or path.startswith(e + "/") for e in EXCLUDED)


def dep_name(s):
    m = re.match(r"\s*([a-z0-9][a-z0-9+.-]*)", s)
    return m.group(1) if m else None


def parse_status(text):
    """dpkg's status file: {package: fields} of the installed packages."""
    pkgs = {}
    for para in text.split("\n\n"):
        fields, key = {}, None
        for ln in para.splitlines():
            if ln[:1] in (" ", "\t"):
                if key:
                    fields[key] += " " + ln.strip()
                continue
            key, _, val = ln.partition(":")
            fields[key] = val.strip()
        if fields.get("Package") and fields.get("Status", "").split()[-1:] == ["installed"]:
            pkgs[fields["Package"]] = fields
    return pkgs


def closure(pkgs, roots):
    """The installed packages roots need: their Pre-Depends and Depends, each
    by its first installed alternative (a package, else one providing it)."""
    provides = {}
    for name, f in pkgs.items():
        for item in f.get("Provides", "").split(","):
            if dep_name(item):
                provides.setdefault(dep_name(item), []).append(name)
    seen, todo = set(), [r for r in roots if r in pkgs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for field in ("Pre-Depends", "Depends"):
            for group in filter(None, pkgs[p].get(field, "").split(",")):
                for alt in group.split("|"):
                    n = dep_name(alt)
                    cands = [n] if n in pkgs else sorted(provides.get(n, []))
                    if cands:
                        todo.append(cands[0])
                        break
    return seen


def resolve(path, symlinks):
    """path with its symlinked parent directories followed (merged /usr's
    /bin -> usr/bin: packages list /bin/bash, the tree has /usr/bin/bash)."""
    parts, done, hops = [p for p in path.split("/") if p], "", 0
    i = 0
    while i < len(parts) - 1:
        cur = done + "/" + parts[i]
        target = symlinks.get(cur)
        if target is not None and hops < 40:
            hops += 1
            new = posixpath.normpath((target if target.startswith("/") else done + "/" + target))
            parts, done, i = [p for p in new.split("/") if p] + parts[i + 1:], "", 0
            continue
        done, i = cur, i + 1
    return done + "/" + parts[-1] if parts else "/"


def measure(tar_path, roots=None):
    """Size and package count of the tree in a tarball (not unpacked); with
    roots, also of the files of roots' dependency closure."""
    total = files = 0
    sizes, hardlinks, symlinks, lists, status = {}, {}, {}, {}, ""
    with tarfile.open(tar_path) as tar:
        for m in tar:
            p = norm(m.name)
            if m.isreg():
                sizes[p] = m.size
                if p == "/var/lib/dpkg/status":
                    status = tar.extractfile(m).read().decode("utf-8", "replace")
                elif roots and p.startswith("/var/lib/dpkg/info/") and p.endswith(".list"):
                    lists[p[len("/var/lib/dpkg/info/"):-5]] = tar.extractfile(m).read().decode(
                        "utf-8", "replace").splitlines()
            elif m.issym():
                sizes[p] = len(m.linkname.encode())
                symlinks[p] = m.linkname
            elif m.islnk():
                hardlinks[p] = norm(m.linkname)  # the same file again: 0 bytes in the tarball
                continue
            else:
                continue
            if not excluded(p):
                total += sizes[p]
                files += 1
    pkgs = parse_status(status)
    res = {"bytes": total, "files": files, "packages": len(pkgs)}
    if roots:
        need = closure(pkgs, roots)
        counted, cbytes = set(), 0
        for name in need:
            arch = pkgs[name].get("Architecture", "")
            for listed in lists.get(name, lists.get(f"{name}:{arch}", [])):
                if not listed.startswith("/"):
                    continue
                p = resolve(listed, symlinks)
                key = hardlinks.get(p, p)
                if key in sizes and key not in counted and not excluded(p):
                    counted.add(key)
                    cbytes += sizes[key]
        res["closure"] = {"bytes": cbytes, "files": len(counted), "packages": len(need)}
    return res


def mmdebstrap(ctx, variant, packages, work, cache):
    """The tree as a tarball in work; returns its path and the .debs used."""
    tar, used, log = (os.path.join(work, n) for n in ("root.tar", "debs.txt", "mmdebstrap.log"))
    c, arch = shlex.quote(cache), f'"$1"{ARCHIVES}'
    # hard links both ways (copies across file systems); "|| true": the cache may be empty
    setup = f"mkdir -p {arch} && {{ cp -l {c}/*.deb {arch}/ 2>/dev/null || cp {c}/*.deb {arch}/ 2>/dev/null || true; }}"
    customize = (f"ls {arch} > {shlex.quote(used)}; cp -n -l {arch}/*.deb {c}/ 2>/dev/null || "
                 f"cp -n {arch}/*.deb {c}/ 2>/dev/null || true")
    cmd = ["nice", "-n", "19", "ionice", "-c3", "mmdebstrap", f"--variant={variant}",
           "--mode=root" if os.geteuid() == 0 else "--mode=unshare", "--format=tar", f"--hook-dir={MERGED_USR}",
           "--skip=essential/unlink", f"--setup-hook={setup}", f"--customize-hook={customize}"]
    if packages:
        cmd.append("--include=" + ",".join(packages))
    cmd += [SUITE, tar, mirror()]
    with open(log, "w") as lf:
        # nice and ionice exec: the pid is mmdebstrap's, which cleans up on SIGTERM
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                env=dict(os.environ, TMPDIR=work), start_new_session=True)
        try:
            rc = proc.wait(BUILD_TIMEOUT)
        except BaseException as e:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise RuntimeError(f"mmdebstrap --variant={variant} took more than {BUILD_TIMEOUT} s") from None
            raise
    if rc:
        with open(log, errors="replace") as lf:
            text = lf.read().splitlines()
        why = [ln for ln in text if ln.startswith("E:")] or text
        raise RuntimeError(f"mmdebstrap --variant={variant} failed ({rc}): "
                           + " / ".join(ln if len(ln) < 300 else ln[:300] + "..." for ln in why[-3:]))
    debs = set()
    if os.path.exists(used):
        with open(used) as f:
            debs = {ln.strip() for ln in f if ln.strip().endswith(".deb")}
    return tar, debs


def remove_tree(top, log):
    """Removes top, never across a mount point: mounts a failed mmdebstrap
    left inside it are unmounted first; what stays mounted is left alone."""
    real = os.path.realpath(top)
    inside = []
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            mp = ln.split()[4].encode().decode("unicode_escape")
            if mp.startswith(real + "/"):
                inside.append(mp)
    for mp in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dev, left = os.lstat(real).st_dev, []

    def rm(d):
        for e in os.scandir(d):
            try:
                if e.is_dir(follow_symlinks=False):
                    if e.stat(follow_symlinks=False).st_dev != dev or os.path.ismount(e.path):
                        left.append(e.path)
                        continue
                    rm(e.path)
                    os.rmdir(e.path)
                else:
                    os.unlink(e.path)
            except OSError as err:
                left.append(f"{e.path}: {err.strerror}")
    try:
        rm(real)
        os.rmdir(real)
    except OSError as err:
        left.append(f"{real}: {err.strerror}")
    if left:
        log(f"debloat: could not remove all of {real}: {'; '.join(left[:3])}")


def build(ctx, label, variant, packages, roots, cache):
    work = tempfile.mkdtemp(prefix=f"debloat-{label}-{variant}.", dir=ctx.tmp)
    t = time.monotonic()
    try:
        tar, debs = mmdebstrap(ctx, variant, packages, work, cache)
        res = measure(tar, roots)
        res["build_s"] = round(time.monotonic() - t, 1)
        return res, debs
    finally:
        remove_tree(work, ctx.log)


def deb_key(name):
    """A .deb's package and architecture (name_version_arch.deb)."""
    parts = name.split("_")
    return parts[0], parts[-1]


def prune(cache, used):
    """Drops the cached .debs of the packages used whose version was not."""
    keys = {deb_key(n) for n in used}
    for n in os.listdir(cache):
        if n.endswith(".deb") and n not in used and deb_key(n) in keys:
            try:
                os.unlink(os.path.join(cache, n))
            except OSError:
                pass


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def run(ctx):
    cache = os.path.join(ctx.cache, "eval-debs")
    os.makedirs(cache, exist_ok=True)
    rows = QUICK_APPS if ctx.quick else [(BASE, [])] + APPS
    images, used = [], set()
    for app, pkgs in rows:
        img = {"app": app, "packages": pkgs}
        errors = []
        for key, variant, include in (("with_tools", "minbase", pkgs + TOOLS), ("minimal", "essential", pkgs)):
            try:
                res, debs = build(ctx, app.strip("()").replace(" ", "-"), variant, include, pkgs, cache)
                used |= debs
                if "closure" in res:
                    img["closure"] = res.pop("closure")
                img[key] = res
                ctx.log(f"debloat: {app}: {key.replace('_', ' ')} {res['bytes'] / 2**20:.1f} MiB, "
                        f"{res['packages']} packages ({res['build_s']:.0f} s)")
            except Exception as e:
                errors.append(f"{key.replace('_', ' ')}: " + (str(e).strip() or repr(e))[:800])
                ctx.log(f"debloat: {app}: {errors[-1]}")
        if errors:
            img["error"] = "; ".join(errors)
        if "with_tools" in img and "minimal" in img:
            w = img["with_tools"]["bytes"]
            img["saving"] = round(1 - img["minimal"]["bytes"] / w, 4)
            if "closure" in img:
                img["saving_closure"] = round(1 - img["closure"]["bytes"] / w, 4)
        images.append(img)
    if used:
        prune(cache, used)
    apps = [i for i in images if i["packages"]]
    avg = mean([i["saving"] for i in apps if "saving" in i])
    avg_c = mean([i["saving_closure"] for i in apps if "saving_closure" in i])
    ver = subprocess.run(["mmdebstrap", "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout.strip()
    return {"images": images, "tools": TOOLS, "suite": SUITE, "mirror": mirror(), "method": METHOD,
            "mmdebstrap": ver, "average_saving": avg, "average_saving_closure": avg_c,
            "paper_saving": PAPER_SAVING}


def render(data, ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mib = 2 ** 20
    imgs = data["images"]
    apps = [i for i in imgs if i["packages"]]
    n_ok = sum("saving" in i for i in apps)
    avg, avg_c = data.get("average_saving"), data.get("average_saving_closure")

    def pct(x):
        return "-" if x is None else f"{x * 100:.0f} %"

    def size(i, k):
        return f"{i[k]['bytes'] / mib:.1f}" if k in i else "-"

    def npk(i, k):
        return str(i[k]["packages"]) if k in i else "-"
    lines = [f"### {TITLE}", "", *doc_items(__doc__),
             f"TOOLS: {', '.join(data['tools'])}. Debian {data['suite']} (main) from {data['mirror']}, "
             f"{data.get('mmdebstrap', 'mmdebstrap')}.", "",
             f"**{pct(avg)} smaller on average over {n_ok} application images** (closure only: {pct(avg_c)}); "
             f"the paper: {PAPER}.", "",
             "| image | with tools (MiB) | minimal (MiB) | saving | closure only (MiB) | saving (closure only) "
             "| packages: with tools / minimal / closure |",
             "|---|---|---|---|---|---|---|"]
    for i in imgs:
        if not i["packages"]:
            name = f"*{i['app']}: minbase + TOOLS / Essential set*"
        else:
            name = i["app"] if i["packages"] == [i["app"]] else f"{i['app']} ({', '.join(i['packages'])})"
        if i.get("error"):
            name += " - FAILED: " + i["error"].replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {name} | {size(i, 'with_tools')} | {size(i, 'minimal')} | {pct(i.get('saving'))} | "
                     f"{size(i, 'closure')} | {pct(i.get('saving_closure'))} | "
                     f"{npk(i, 'with_tools')} / {npk(i, 'minimal')} / {npk(i, 'closure')} |")
    lines += [f"| **average of {n_ok}** | | | **{pct(avg)}** | | **{pct(avg_c)}** | |",
              f"| the paper: 41 Docker Hub images | | | {pct(PAPER_SAVING)} | | | |"]

    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(imgs) + 1.8))
    h = 0.27
    series = (("with_tools", "with tools (minbase + app + TOOLS)", "tab:orange"),
              ("minimal", "minimal (Essential set + app)", "tab:blue"),
              ("closure", "closure only (app's dependency closure)", "lightskyblue"))
    for k, (key, label, color) in enumerate(series):
        ax.barh([y + (k - 1) * h for y in range(len(imgs))], [i[key]["bytes"] / mib if key in i else 0 for i in imgs],
                height=h, color=color, label=label)
    for y, i in enumerate(imgs):
        if "saving" in i:
            ax.text(i["with_tools"]["bytes"] / mib, y - h, f" -{i['saving'] * 100:.0f} %"
                    + (f" (closure only -{i['saving_closure'] * 100:.0f} %)" if "saving_closure" in i else ""),
                    va="center", fontsize=7)
    ax.plot([], [], " ", label=f"average saving {pct(avg)} (closure only {pct(avg_c)}); paper: 60 % (41 images)")
    ax.set_yticks(list(range(len(imgs))))
    ax.set_yticklabels([i["app"] + (" (FAILED)" if i.get("error") else "") for i in imgs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("apparent size of the unpacked tree (MiB)")
    ax.set_ylabel("image (its Debian packages)")
    ax.set_xlim(0, max([i["with_tools"]["bytes"] / mib for i in imgs if "with_tools" in i] or [1]) * 1.35)
    ax.set_title(f"Image de-bloating: {pct(avg)} smaller on average without tools "
                 f"({pct(avg_c)} closure only); paper: 60 %", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    lines += ["", f"![image sizes with and without debugging tools]({ctx.save_figure(fig, 'debloat')})"]
    return "\n".join(lines)
