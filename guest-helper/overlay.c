/* overlay.c - the command's world inside the guest: the target process's
 * namespaces and cgroup, and a private mount namespace whose / is vmsh's
 * image (read-only under a writable overlayfs in guest memory, or the image
 * itself read-write), with the guest's own root at /var/lib/vmsh and the
 * guest's /proc, /sys and /dev bound in. Nothing here is visible to the
 * guest's own processes: every mount is made in our private namespace. */
#include "helper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"

#define OLD_ROOT GUEST_ROOT_DIR

static void warn(const struct overlay_opts *o, struct vmsh_err *e)
{
	if (o->warn)
		o->warn(o->warn_ctx, e->msg);
}

/* --- cgroup -------------------------------------------------------------- */

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* The cgroup2 mount: its mount point and the cgroup path it shows as its root. */
static int find_cgroup2_mount(char *mnt, size_t mcap, char *root, size_t rcap)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - ");
		if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0)
			continue;
		/* id parent maj:min root mountpoint ... */
		char *save = NULL, *tok = strtok_r(line, " ", &save);
		for (int i = 0; tok && i < 3; i++)
			tok = strtok_r(NULL, " ", &save);
		char *mp = tok ? strtok_r(NULL, " ", &save) : NULL;
		if (!tok || !mp || strlen(tok) >= rcap || strlen(mp) >= mcap)
			continue;
		strcpy(root, tok);
		strcpy(mnt, mp);
		unescape_mountinfo(root);
		unescape_mountinfo(mnt);
		return 0;
	}
	return -1;
}

/* Move ourselves (and so the command) into the target's cgroup v2 group.
 * Returns 1 if the guest has no cgroup v2 to join. */
static int join_cgroup(pid_t target, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)target);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return vmsh_error(err, errno, "cgroup: open %s", path);
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	char *group = NULL;
	while (getline(&line, &cap, f) > 0) {
		if (strncmp(line, "0::", 3) == 0) {
			group = line + 3;
			group[strcspn(group, "\n")] = '\0';
			break;
		}
	}
	if (!group)
		return 1;
	char mnt[512], root[512];
	if (find_cgroup2_mount(mnt, sizeof(mnt), root, sizeof(root)) < 0)
		return 1;
	size_t rl = strlen(root);
	if (strcmp(root, "/") != 0) {
		if (strncmp(group, root, rl) != 0 || (group[rl] != '/' && group[rl] != '\0'))
			return vmsh_error(err, 0, "cgroup: %s is outside the cgroup2 mount at %s", group, mnt);
		group += rl;
	}
	char procs[1200];
	int n = snprintf(procs, sizeof(procs), "%s/%s/cgroup.procs", mnt, group);
	if (n < 0 || (size_t)n >= sizeof(procs))
		return vmsh_error(err, ENAMETOOLONG, "cgroup: path of %s", group);
	_cleanup_close_ int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno, "cgroup: open %s", procs);
	char pid[24];
	int pl = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (write(fd, pid, pl) != pl)
		return vmsh_error(err, errno, "cgroup: join %s", group);
	return 0;
}

/* --- namespaces ---------------------------------------------------------- */

static const struct {
	const char *name;
	int type;
} namespaces[] = {
	/* mnt last: joining it changes our root and cwd */
	{ "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS },       { "net", CLONE_NEWNET },
	{ "pid", CLONE_NEWPID }, { "cgroup", CLONE_NEWCGROUP }, { "mnt", CLONE_NEWNS },
};

int overlay_join_target(const struct overlay_opts *o, struct vmsh_err *err)
{
	int fds[ARRAY_SIZE(namespaces)];
	char path[64];
	int rc = 0;
	size_t opened = 0;

	snprintf(path, sizeof(path), "/proc/%d", (int)o->target);
	if (access(path, F_OK) < 0)
		return vmsh_error(err, 0, "no process %d in the guest (--target)", (int)o->target);
	/* Open all first: once in another mount namespace, /proc may be another. */
	for (; opened < ARRAY_SIZE(namespaces); opened++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)o->target, namespaces[opened].name);
		fds[opened] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[opened] < 0 && errno != ENOENT) { /* ENOENT: a kernel without that namespace */
			rc = vmsh_error(err, errno, "open %s", path);
			goto out;
		}
	}
	if (fds[ARRAY_SIZE(namespaces) - 1] < 0) { /* every kernel has mount namespaces: it is gone */
		rc = vmsh_error(err, 0, "no process %d in the guest (--target)", (int)o->target);
		goto out;
	}

	struct vmsh_err w;
	if (join_cgroup(o->target, &w) < 0) {
		vmsh_err_prefix(&w, "not joining the cgroup of process %d", (int)o->target);
		warn(o, &w);
	}

	for (size_t i = 0; i < ARRAY_SIZE(namespaces); i++) {
		if (fds[i] >= 0 && setns(fds[i], namespaces[i].type) < 0) {
			rc = vmsh_error(err, errno, "join the %s namespace of process %d", namespaces[i].name,
					(int)o->target);
			goto out;
		}
	}
out:
	for (size_t i = 0; i < opened; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return rc;
}

/* --- mounts -------------------------------------------------------------- */

/* Existing directories a scratch tmpfs may cover while we mount the image. */
static const char *const stage_dirs[] = { "/tmp", "/run", "/mnt", "/dev",  "/var/tmp", "/media", "/opt",
					  "/srv", "/home", "/root", "/var", "/usr",     "/etc",   "/proc", "/sys" };

static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mount_error(struct vmsh_err *err, int e, const struct overlay_opts *o)
{
	switch (e) {
	case ENODEV:
		return vmsh_error(err, 0, "mount /dev/%s: unknown filesystem type %s (is the %s module available?)",
				  o->disk_name, o->fstype, o->fstype);
	case EINVAL:
		return vmsh_error(err, 0, "mount /dev/%s: not a valid %s filesystem (wrong --fstype, or a damaged image?)",
				  o->disk_name, o->fstype);
	case ENXIO:
	case ENOTBLK:
		return vmsh_error(err, e, "mount /dev/%s: the disk is gone", o->disk_name);
	default:
		return vmsh_error(err, e, "mount /dev/%s (%s)", o->disk_name, o->fstype);
	}
}

/* Is the module for fstype being loaded right now (by someone else)? */
static bool module_coming(const char *fstype)
{
	char path[96], state[16] = "";
	snprintf(path, sizeof(path), "/sys/module/%s/initstate", fstype);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool coming = fgets(state, sizeof(state), f) && !strncmp(state, "coming", 6);
	fclose(f);
	return coming;
}

/* Is a modprobe running in the guest (the kernel's request_module)? */
static bool modprobe_running(void)
{
	DIR *d = opendir("/proc");
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	for (unsigned n = 0; !found && n < 100000 && (e = readdir(d)); n++) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char path[64], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/%.20s/comm", e->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		found = fgets(comm, sizeof(comm), f) && !strncmp(comm, "modprobe", 8);
		fclose(f);
	}
	closedir(d);
	return found;
}

/* mount(2), waiting out "unknown filesystem type" while the module is
 * still being loaded (up to a minute): a modprobe counts a module someone
 * else is loading (e.g. the library of a vmsh run that was killed, on a busy
 * guest where that takes seconds) as loaded and returns at once, and may
 * have left its dependencies to that other modprobe. */
static int mount_waiting(const char *src, const char *dst, const char *fstype, unsigned long flags, const char *data)
{
	for (int i = 0; i < 600; i++) {
		if (mount(src, dst, fstype, flags, data) == 0)
			return 0;
		if (errno != ENODEV)
			return -1;
		if (!module_coming(fstype) && !modprobe_running()) /* unknown, unless it went live just now */
			return mount(src, dst, fstype, flags, data);
		usleep(100 * 1000);
	}
	errno = ENODEV;
	return -1;
}

/* The directories the helper mounts on, outermost first. */
static const char *const mount_points[] = { "var", "var/lib", "var/lib/vmsh", "proc", "sys", "dev", "tmp", "run" };

/* Is every mount point a directory of the tree at root_fd (no symlinks)? */
static bool has_mount_points(int root_fd)
{
	for (size_t i = 0; i < ARRAY_SIZE(mount_points); i++) {
		int fd = openat(root_fd, mount_points[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return false;
		close(fd);
	}
	return true;
}

/* Make directory `name` in parent unless it is there; it must be a
 * directory, not a symlink (path: for messages). */
static int make_dir_at(int parent, const char *name, const char *path, struct vmsh_err *err)
{
	if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
		return vmsh_error(err, errno, "make the mount point /%s in the image", path);
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno == ELOOP ? ENOTDIR : errno,
				  "the image's /%s (a symlink or not a directory) cannot be a mount point", path);
	close(fd);
	return 0;
}

/* Make the mount points the tree at root_fd lacks. Never through a symlink:
 * one in the image could point anywhere in the guest's own file systems,
 * which this namespace still shows (outermost first, so every parent was
 * checked to be a directory before). */
static int make_mount_points(int root_fd, struct vmsh_err *err)
{
	for (size_t i = 0; i < ARRAY_SIZE(mount_points); i++) {
		const char *p = mount_points[i], *slash = strrchr(p, '/');
		int parent = root_fd;
		if (slash) {
			char dir[32];
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - p), p);
			parent = openat(root_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (parent < 0)
				return vmsh_error(err, errno, "the image's /%s", dir);
		}
		int rc = make_dir_at(parent, slash ? slash + 1 : p, p, err);
		if (parent != root_fd)
			close(parent);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* The command's root, assembled under the scratch tmpfs `stage`: the disk
 * mounted at stage/img; read-write, that is the root; read-only, an
 * overlayfs at stage/root with the image below and a tmpfs (stage/mem)
 * above, so that / is writable and the image stays as it is. Mount points
 * the image lacks are made in the root. Without overlayfs in the guest, an
 * image that has them all is used read-only as it is. *root: the path. */
static int assemble_root(const struct overlay_opts *o, const char *stage, char *root, size_t cap,
			 struct vmsh_err *err)
{
	char disk[64], img[64], mem[64], upper[72], work[72], data[256];
	snprintf(disk, sizeof(disk), "%s/disk", stage);
	snprintf(img, sizeof(img), "%s/img", stage);
	snprintf(mem, sizeof(mem), "%s/mem", stage);
	snprintf(upper, sizeof(upper), "%s/upper", mem);
	snprintf(work, sizeof(work), "%s/work", mem);
	if (mkdir(img, 0700) < 0 || mknod(disk, S_IFBLK | 0600, o->disk) < 0)
		return vmsh_error(err, errno, "prepare %s to mount /dev/%s", stage, o->disk_name);
	int rc = mount_waiting(disk, img, o->fstype, o->rw ? 0 : MS_RDONLY, NULL);
	int e = errno;
	unlink(disk);
	if (rc < 0)
		return mount_error(err, e, o);
	snprintf(root, cap, "%s", img);
	if (o->rw) {
		_cleanup_close_ int fd = open(img, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? vmsh_error(err, errno, "open the image's root") : make_mount_points(fd, err);
	}
	snprintf(data, sizeof(data), "lowerdir=%s,upperdir=%s,workdir=%s", img, upper, work);
	char over[64];
	snprintf(over, sizeof(over), "%s/root", stage);
	if (mkdir(mem, 0700) < 0 || mkdir(over, 0700) < 0)
		return vmsh_error(err, errno, "prepare %s for the overlay", stage);
	if (mount("vmsh-overlay", mem, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
		return vmsh_error(err, errno, "mount a tmpfs for the overlay's changes");
	if (mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0)
		return vmsh_error(err, errno, "prepare the overlay's directories");
	if (mount_waiting("vmsh-overlay", over, "overlay", 0, data) == 0) {
		snprintf(root, cap, "%s", over);
		_cleanup_close_ int fd = open(over, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? vmsh_error(err, errno, "open the overlay's root") : make_mount_points(fd, err);
	}
	e = errno;
	umount2(mem, MNT_DETACH);
	_cleanup_close_ int fd = open(img, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 && has_mount_points(fd)) {
		struct vmsh_err w;
		vmsh_error(&w, e, "no overlayfs in the guest: / is the image, read-only");
		warn(o, &w);
		return 0;
	}
	return vmsh_error(err, e,
			  "the image on /dev/%s lacks /var/lib/vmsh, /proc, /sys, /dev, /tmp or /run, and the guest "
			  "kernel cannot mount an overlayfs to add them (vmsh image build adds them to an image)",
			  o->disk_name);
}

/* Make the image at `root` (our cwd) the root, the old root landing at OLD_ROOT. */
static int switch_root(struct vmsh_err *err)
{
	if (syscall(SYS_pivot_root, ".", "." OLD_ROOT) == 0)
		return chdir("/") < 0 ? vmsh_error(err, errno, "chdir /") : 0;
	if (errno != EINVAL)
		return vmsh_error(err, errno, "pivot_root into the image");
	/* The guest's root is the initramfs (rootfs cannot be pivoted away) or
	 * the target is chrooted: copy the old tree under the image, then move
	 * the image over /, as switch_root does. */
	if (mount("/", "." OLD_ROOT, NULL, MS_BIND | MS_REC, NULL) < 0)
		return vmsh_error(err, errno, "bind the guest's / to " OLD_ROOT);
	if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
		return vmsh_error(err, errno, "move the image to /");
	if (chroot(".") < 0 || chdir("/") < 0)
		return vmsh_error(err, errno, "chroot into the image");
	return 0;
}

/* Bind the guest's /X (now OLD_ROOT/X) onto our /X; if the guest has none
 * (`probe` missing afterwards), mount a fresh one of `fstype`. */
static void bind_guest_dir(const struct overlay_opts *o, const char *dir, const char *probe, const char *fstype)
{
	char src[64], chk[64];
	snprintf(src, sizeof(src), OLD_ROOT "%s", dir);
	snprintf(chk, sizeof(chk), "%s/%s", dir, probe);
	struct vmsh_err w;
	if (mount(src, dir, NULL, MS_BIND | MS_REC, NULL) == 0 && access(chk, F_OK) == 0)
		return;
	if (mount(fstype, dir, fstype, MS_NOSUID | (strcmp(fstype, "devtmpfs") ? MS_NODEV | MS_NOEXEC : 0), NULL) == 0)
		return;
	vmsh_error(&w, errno, "the guest has no usable %s, and mounting %s there failed", dir, fstype);
	warn(o, &w);
}

static void mount_tmpfs(const struct overlay_opts *o, const char *dir, const char *opts)
{
	if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) == 0)
		return;
	struct vmsh_err w;
	vmsh_error(&w, errno, "mount a tmpfs on %s", dir);
	warn(o, &w);
}

int overlay_mount_image(const struct overlay_opts *o, int *outer_ns, struct vmsh_err *err)
{
	/* the way back out (overlay_leave) */
	*outer_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	if (*outer_ns < 0)
		return vmsh_error(err, errno, "open /proc/self/ns/mnt");
	if (unshare(CLONE_NEWNS) < 0)
		return vmsh_error(err, errno, "unshare the mount namespace");
	/* nothing we mount may propagate back into the guest's namespaces */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return vmsh_error(err, errno, "make / private");

	const char *stage = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(stage_dirs) && !stage; i++)
		if (is_dir(stage_dirs[i]) &&
		    mount("vmsh", stage_dirs[i], "tmpfs", MS_NOSUID, "size=64k,mode=0700") == 0)
			stage = stage_dirs[i];
	if (!stage)
		return vmsh_error(err, errno, "no directory to mount the image on (tried /tmp, /run, /mnt, ...)");

	char root[64], old_stage[96];
	snprintf(old_stage, sizeof(old_stage), OLD_ROOT "%s", stage);
	if (assemble_root(o, stage, root, sizeof(root), err) < 0)
		goto fail;
	if (chdir(root) < 0) {
		vmsh_error(err, errno, "chdir to the image");
		goto fail;
	}
	if (switch_root(err) < 0)
		goto fail;

	/* The scratch tmpfs now sits on the guest's dir under OLD_ROOT: drop it. */
	if (umount2(old_stage, MNT_DETACH) < 0) {
		struct vmsh_err w;
		vmsh_error(&w, errno, "unmount the scratch tmpfs at %s", old_stage);
		warn(o, &w);
	}
	bind_guest_dir(o, "/proc", "self", "proc");
	bind_guest_dir(o, "/sys", "class", "sysfs");
	bind_guest_dir(o, "/dev", "null", "devtmpfs");
	mount_tmpfs(o, "/tmp", "mode=1777");
	mount_tmpfs(o, "/run", "mode=0755");
	return 0;

fail:
	if (chdir("/") < 0) {
		/* unmounting below still works from anywhere */
	}
	umount2(stage, MNT_DETACH); /* with everything mounted under it */
	return -1;
}

void overlay_leave(int *outer_ns)
{
	if (*outer_ns < 0)
		return;
	if (setns(*outer_ns, CLONE_NEWNS) < 0)
		helper_log("leaving the image's mount namespace: %s", strerror(errno));
	else if (chdir("/") < 0)
		helper_log("chdir / after leaving the image's mount namespace: %s", strerror(errno));
	close(*outer_ns);
	*outer_ns = -1;
}
