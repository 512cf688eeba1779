/* devfind.c - find vmsh's devices in the guest through sysfs: the console
 * port by the name vmsh gave it (/sys/class/virtio-ports/X/name), the disk
 * by its virtio-blk serial (/sys/block/X/serial). The kernel library has
 * just registered them, so they may take a moment to appear: wait, bounded.
 * Device nodes: /dev/X when devtmpfs made it, otherwise one of our own in a
 * tmpfs that only this process's private mount namespace sees. */
#include "helper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"

/* Read a small sysfs attribute, without trailing whitespace. */
static int read_attr(const char *path, char *buf, size_t cap)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, cap - 1);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\0'))
		n--;
	buf[n] = '\0';
	return 0;
}

static int read_devnum(const char *path, dev_t *dev)
{
	char buf[32];
	unsigned maj, min;
	char extra;
	if (read_attr(path, buf, sizeof(buf)) < 0)
		return -1;
	if (sscanf(buf, "%u:%u%c", &maj, &min, &extra) != 2)
		return -1;
	*dev = makedev(maj, min);
	return 0;
}

/* One pass over the entries X of dir: the one whose attribute `attr` equals `want`. */
static int scan_once(const char *dir, const char *attr, const char *want, struct devfind_result *r)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int found = -1;
	struct dirent *e;
	while (found < 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(r->name))
			continue;
		char path[512], val[256];
		snprintf(path, sizeof(path), "%s/%s/%s", dir, e->d_name, attr);
		if (read_attr(path, val, sizeof(val)) < 0 || strcmp(val, want) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/dev", dir, e->d_name);
		if (read_devnum(path, &r->dev) < 0)
			continue; /* not fully registered yet: next pass */
		memcpy(r->name, e->d_name, strlen(e->d_name) + 1); /* length checked above */
		found = 0;
	}
	closedir(d);
	return found;
}


static int wait_for(const char *dir, const char *attr, const char *want, int timeout_ms, struct devfind_result *r)
{
	int64_t t0 = now_ms();
	for (;;) {
		if (scan_once(dir, attr, want, r) == 0)
			return 0;
		if ((now_ms() - t0) >= timeout_ms)
			return -1;
		sleep_ms(50);
	}
}

int devfind_port(const char *name, int timeout_ms, struct devfind_result *r, struct vmsh_err *err)
{
	if (wait_for("/sys/class/virtio-ports", "name", name, timeout_ms, r) == 0)
		return 0;
	if (access("/sys/class", F_OK) < 0)
		return vmsh_error(err, 0, "console port '%s': /sys is not mounted in the guest", name);
	if (access("/sys/class/virtio-ports", F_OK) < 0)
		return vmsh_error(err, 0, "console port '%s' did not appear within %d ms "
				  "(no virtio console ports: is virtio_console loaded?)", name, timeout_ms);
	return vmsh_error(err, 0, "console port '%s' did not appear within %d ms", name, timeout_ms);
}

int devfind_disk(const char *serial, int timeout_ms, struct devfind_result *r, struct vmsh_err *err)
{
	if (wait_for("/sys/block", "serial", serial, timeout_ms, r) == 0)
		return 0;
	/* older kernels put the attribute on the device only */
	if (scan_once("/sys/block", "device/serial", serial, r) == 0)
		return 0;
	return vmsh_error(err, 0, "disk with serial '%s' did not appear within %d ms (is virtio_blk loaded?)",
			  serial, timeout_ms);
}

/* Directories a private tmpfs may cover for a moment. */
static const char *const scratch_dirs[] = { "/dev", "/tmp", "/run", "/mnt", "/var", "/etc", "/proc", "/sys" };

static int open_private_node(const struct devfind_result *d, int flags, struct vmsh_err *err)
{
	/* A private mount namespace: the tmpfs and the node are never seen
	 * by the guest. Joining the target's mount namespace later replaces it. */
	if (unshare(CLONE_NEWNS) < 0)
		return vmsh_error(err, errno, "unshare mount namespace");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return vmsh_error(err, errno, "make / private");
	for (size_t i = 0; i < ARRAY_SIZE(scratch_dirs); i++) {
		const char *dir = scratch_dirs[i];
		struct stat st;
		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (mount("vmsh", dir, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0700") < 0)
			continue;
		char node[128];
		snprintf(node, sizeof(node), "%s/%s", dir, d->name);
		int fd = -1, e = 0;
		if (mknod(node, S_IFCHR | 0600, d->dev) < 0)
			e = errno;
		else if ((fd = open(node, flags | O_CLOEXEC | O_NOCTTY)) < 0)
			e = errno;
		umount2(dir, MNT_DETACH);
		if (fd < 0)
			return vmsh_error(err, e, "make a device node for %s (%u:%u)", d->name, major(d->dev), minor(d->dev));
		return fd;
	}
	return vmsh_error(err, 0, "no directory to make a device node for %s in", d->name);
}

int devfind_open_chardev(const struct devfind_result *d, int flags, struct vmsh_err *err)
{
	char path[128];
	snprintf(path, sizeof(path), "/dev/%s", d->name);
	struct stat st;
	if (stat(path, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == d->dev) {
		int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0)
			return fd;
		if (errno == EBUSY) /* a virtio port opens only once */
			return vmsh_error(err, errno, "open %s (is another vmsh attached?)", path);
	}
	return open_private_node(d, flags, err);
}
