"""vmsh image build DIR IMAGE (issue 15): never writes into its source, never
replaces an existing file without --force, leaves nothing behind on failure,
and the image has the directories the in-guest helper mounts on."""
import os
import subprocess

import pytest

VMSH = os.environ.get("VMSH_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "vmsh"))


def build(*args):
    return subprocess.run([VMSH, "image", "build", *map(str, args)], capture_output=True, text=True)


def tree(path):
    out = []
    for root, dirs, files in os.walk(path):
        for n in sorted(dirs + files):
            p = os.path.join(root, n)
            st = os.lstat(p)
            out.append((os.path.relpath(p, path), st.st_mode, st.st_size, st.st_mtime_ns))
    return sorted(out)


def debugfs_ls(image, path):
    r = subprocess.run(["debugfs", "-R", f"ls -p {path}", image], capture_output=True, text=True)
    return [line.split("/")[5] for line in r.stdout.splitlines() if line.count("/") >= 6]


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(d / "bin" / "tool", 0o755)
    return d


def test_source_directory_is_left_as_it_was(src, tmp_path):
    before = tree(src)
    r = build(src, tmp_path / "a.img")
    assert r.returncode == 0, r.stderr
    assert tree(src) == before
    # the helper's mount points are in the image all the same
    assert {"proc", "sys", "dev", "tmp", "run", "var", "bin"} <= set(debugfs_ls(tmp_path / "a.img", "/"))
    assert "vmsh" in debugfs_ls(tmp_path / "a.img", "/var/lib")


def test_existing_image_is_kept_without_force(src, tmp_path):
    img = tmp_path / "b.img"
    img.write_bytes(b"precious")
    r = build(src, img)
    assert r.returncode != 0 and "--force" in r.stderr, r.stderr
    assert img.read_bytes() == b"precious"
    r = build("--force", src, img)
    assert r.returncode == 0, r.stderr
    assert img.stat().st_size > 1 << 20


def test_failed_build_leaves_nothing_and_keeps_the_old_image(src, tmp_path):
    (src / "big").write_bytes(os.urandom(3 << 20))
    img = tmp_path / "c.img"
    img.write_bytes(b"old")
    r = build("--force", "--size", "1", src, img)   # 1 MiB cannot hold 3 MiB
    assert r.returncode != 0
    assert img.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["c.img", "src"], os.listdir(tmp_path)


@pytest.mark.parametrize("size", ["abc", "0", "-5", "12x", "99999999999999999999"])
def test_bad_size_is_a_usage_error(src, tmp_path, size):
    r = build("--size", size, src, tmp_path / "d.img")
    assert r.returncode == 2, r.stderr
    assert "size" in r.stderr
    assert not (tmp_path / "d.img").exists()


def test_image_from_debian_packages_with_files_on_top(src, tmp_path):
    """--package: Debian's essential set, the package and its dependencies
    (mmdebstrap from the configured mirror), --from-dir's files on top, the
    mount points; the scratch tree is gone afterwards."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    img = tmp_path / "p.img"
    r = subprocess.run([VMSH, "image", "build", "--package", "busybox-static", "--from-dir", str(src), str(img)],
                       capture_output=True, text=True, timeout=1200, env=dict(os.environ, TMPDIR=str(scratch)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "busybox-static" in r.stdout
    usr_bin = debugfs_ls(img, "/usr/bin")  # /bin is a symlink to it (merged /usr)
    assert "tool" in usr_bin and "busybox" in usr_bin
    assert "dpkg" in debugfs_ls(img, "/var/lib")          # the essential set came along
    assert "vmsh" in debugfs_ls(img, "/var/lib")
    status = subprocess.run(["debugfs", "-R", "cat /var/lib/dpkg/status", str(img)], capture_output=True,
                            text=True).stdout
    assert "Package: busybox-static\nStatus: install ok installed" in status
    assert os.listdir(scratch) == []


def test_failed_package_build_leaves_nothing(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    img = tmp_path / "q.img"
    # a mirror that does not exist: mmdebstrap fails at once, as a missing package would later
    r = subprocess.run([VMSH, "image", "build", "--package", "busybox-static", "--mirror",
                        f"file://{tmp_path}/no-such-mirror", str(img)],
                       capture_output=True, text=True, timeout=1200, env=dict(os.environ, TMPDIR=str(scratch)))
    assert r.returncode == 125, r.stderr[-2000:]
    assert "mmdebstrap" in r.stderr and "not written" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["scratch"] and os.listdir(scratch) == []


@pytest.mark.parametrize("args", [["--package", "Bad Name", "x.img"], ["--package", "a", "dir", "x.img"],
                                  ["--from-dir", "d", "dir", "x.img"], ["--suite", "../x", "--package", "a", "x.img"]])
def test_package_options_are_checked(tmp_path, args):
    r = build(*args)
    assert r.returncode == 2, r.stderr
