/* vmsh-helper.c - the in-guest helper: vmsh's kernel library starts it
 * (call_usermodehelper, as root, no stdin/stdout, cwd /, argv chosen by the
 * host). It finds vmsh's console port and disk, joins the target process's
 * namespaces, mounts the disk's image as / of a private mount namespace,
 * runs the command there on a pty or on pipes, and relays it over the port
 * with the framing protocol of include/vmsh/helper_proto.h.
 *
 * Usage:
 *   vmsh-helper --self PATH --port NAME --disk SERIAL [--target PID]
 *               [--pty ROWSxCOLS [--term NAME] | --pipe] [--fstype TYPE] [--rw] [--guest-root]
 *               [--test-fd N] -- CMD [ARGS...]
 *
 *   --self PATH    the helper's own file: unlinked first thing
 *   --port NAME    name of the virtio-console port (/sys/class/virtio-ports/X/name)
 *   --disk SERIAL  virtio-blk serial of the image disk (/sys/block/X/serial)
 *   --target PID   whose namespaces and cgroup to join (default 1)
 *   --pty RxC      run the command on a new pty of that size (default --pipe)
 *   --term NAME    TERM for the command in pty mode
 *   --fstype TYPE  filesystem of the image (default ext4)
 *   --rw           the image read-write as / (default: read-only, changes in
 *                  an overlay in guest memory)
 *   --guest-root   the command runs with the guest's root as / (the image is
 *                  mounted all the same: the helper's own namespace needs it)
 *   --test-fd N    test mode: the channel is fd N; no devices, namespaces or
 *                  mounts, the command runs as is (--port/--disk optional)
 *   --test-disk P  with --test-fd: do set up the overlay, from block device P
 *                  instead of the disk found by --disk (tests on the host)
 *   CMD            default /bin/sh
 *
 * Exit status (only the kernel log sees it): 0 after EXIT or DETACH,
 * 1 after an error, 2 for a bad command line. */
#include "helper.h"
#include "vmsh/helper_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FIND_TIMEOUT_MS 5000
#define SEND_TIMEOUT_MS 10000

static char *default_cmd[] = { "/bin/sh", NULL };

/* The helper file must not outlive the helper, whatever else goes wrong. */
static void unlink_self(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--self") == 0 && argv[i + 1][0])
			unlink(argv[i + 1]);
}

/* Started with fds 0-2 closed, the first files we open would become the
 * command's stdio by accident: fill them with /dev/null. */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n < 0)
			n = open("/", O_RDONLY | O_DIRECTORY);
		if (n >= 0 && n != fd) { /* a lower fd was free after all */
			dup2(n, fd);
			close(n);
		}
	}
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	if (!s || *s < '0' || *s > '9')
		return -1;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static bool plain_word(const char *s, size_t max)
{
	return vmsh_plain_word(s, max);
}

static int parse_args(int argc, char **argv, struct helper_args *a, struct vmsh_err *err)
{
	*a = (struct helper_args){ .fstype = "ext4", .target = 1, .test_fd = -1, .cmd = default_cmd };
	int i = 1;
	for (; i < argc; i++) {
		const char *o = argv[i];
		if (strcmp(o, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(o, "--pipe") == 0) {
			a->pty = false;
			continue;
		}
		if (strcmp(o, "--rw") == 0) {
			a->rw = true;
			continue;
		}
		if (strcmp(o, "--guest-root") == 0) {
			a->guest_root = true;
			continue;
		}
		if (i + 1 >= argc)
			return vmsh_error(err, 0, "option %s needs a value", o);
		const char *v = argv[++i];
		unsigned long n;
		if (strcmp(o, "--self") == 0) {
			a->self = v;
		} else if (strcmp(o, "--port") == 0) {
			if (!plain_word(v, 127))
				return vmsh_error(err, 0, "bad --port '%s'", v);
			a->port = v;
		} else if (strcmp(o, "--disk") == 0) {
			if (!plain_word(v, 20)) /* virtio-blk serials have 20 bytes */
				return vmsh_error(err, 0, "bad --disk '%s'", v);
			a->disk = v;
		} else if (strcmp(o, "--target") == 0) {
			if (parse_uint(v, 0x7fffffff, &n) < 0 || n == 0)
				return vmsh_error(err, 0, "bad --target '%s'", v);
			a->target = (pid_t)n;
		} else if (strcmp(o, "--pty") == 0) {
			unsigned rows, cols;
			char extra;
			if (sscanf(v, "%ux%u%c", &rows, &cols, &extra) != 2 || !rows || !cols || rows > 65535 ||
			    cols > 65535)
				return vmsh_error(err, 0, "bad --pty '%s' (ROWSxCOLS)", v);
			a->pty = true;
			a->rows = rows;
			a->cols = cols;
		} else if (strcmp(o, "--term") == 0) {
			if (plain_word(v, 64)) /* a strange TERM is dropped, not fatal */
				a->term = v;
		} else if (strcmp(o, "--fstype") == 0) {
			if (!plain_word(v, 31))
				return vmsh_error(err, 0, "bad --fstype '%s'", v);
			a->fstype = v;
		} else if (strcmp(o, "--test-disk") == 0) {
			a->test_disk = v;
		} else if (strcmp(o, "--test-fd") == 0) {
			if (parse_uint(v, 1 << 20, &n) < 0 || n < 3)
				return vmsh_error(err, 0, "bad --test-fd '%s'", v);
			a->test_fd = (int)n;
		} else {
			return vmsh_error(err, 0, "unknown option '%s'", o);
		}
	}
	if (i < argc)
		a->cmd = argv + i;
	/* --pipe is the default; if both are given, the last wins */
	if (a->test_fd < 0 && (!a->port || !a->disk))
		return vmsh_error(err, 0, "--port and --disk are required");
	if (a->test_disk && a->test_fd < 0)
		return vmsh_error(err, 0, "--test-disk needs --test-fd");
	return 0;
}

/* Non-fatal problems go to the host's stderr, before the command's output. */
struct warn_ctx {
	int port;
	bool pty;
};

static void warn_host(void *ctx, const char *msg)
{
	struct warn_ctx *w = ctx;
	helper_log("warning: %s", msg);
	char line[1100];
	int n = snprintf(line, sizeof(line), "vmsh-helper: warning: %s%s", msg, w->pty ? "\r\n" : "\n");
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	struct vmsh_err e;
	chan_send(w->port, VMSH_F_STDERR, line, (uint32_t)n, SEND_TIMEOUT_MS, &e);
}

static int open_port(const struct helper_args *a, struct vmsh_err *err)
{
	if (a->test_fd >= 0) {
		int fl = fcntl(a->test_fd, F_GETFL);
		if (fl < 0 || fcntl(a->test_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    fcntl(a->test_fd, F_SETFD, FD_CLOEXEC) < 0)
			return vmsh_error(err, errno, "--test-fd %d", a->test_fd);
		return a->test_fd;
	}
	struct devfind_result port;
	if (devfind_port(a->port, FIND_TIMEOUT_MS, &port, err) < 0)
		return -1;
	return devfind_open_chardev(&port, O_RDWR | O_NONBLOCK, err);
}

static int setup_overlay(const struct helper_args *a, struct warn_ctx *w, int *outer_ns, struct vmsh_err *err)
{
	struct devfind_result disk;
	if (a->test_disk) {
		struct stat st;
		if (stat(a->test_disk, &st) < 0 || !S_ISBLK(st.st_mode))
			return vmsh_error(err, errno, "--test-disk %s: not a block device", a->test_disk);
		disk.dev = st.st_rdev;
		const char *base = strrchr(a->test_disk, '/');
		snprintf(disk.name, sizeof(disk.name), "%s", base ? base + 1 : a->test_disk);
	} else if (devfind_disk(a->disk, FIND_TIMEOUT_MS, &disk, err) < 0) {
		return -1;
	}
	struct overlay_opts o = {
		.target = a->target,
		.disk = disk.dev,
		.disk_name = disk.name,
		.fstype = a->fstype,
		.rw = a->rw,
		.warn = warn_host,
		.warn_ctx = w,
	};
	if (overlay_join_target(&o, err) < 0)
		return -1;
	return overlay_mount_image(&o, outer_ns, err);
}

/* The last close of a virtio-console port sends the host a control message
 * (PORT_OPEN 0), and the guest kernel waits for the host to take it by
 * spinning with preemption off (virtio_console's __send_control_msg). If
 * vmsh is gone - SIGKILLed mid-session - nobody ever takes it: that vCPU is
 * lost for good (soft lockup). So the helper never closes its port while the
 * device exists: when its work is over it leaves the image's mount
 * namespace (the disk is free then) and waits until vmsh removes the
 * devices. An unplugged port fails reads with ENODEV, and its close sends
 * nothing. With vmsh gone, the helper sleeps here until a later vmsh run
 * removes the devices or the guest restarts. */
static void park_until_unplugged(int port)
{
	char buf[4096];
	for (;;) {
		struct pollfd p = { .fd = port, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		ssize_t n = read(port, buf, sizeof(buf));
		if (n < 0 && errno == ENODEV)
			return;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
		if (n == 0 || (p.revents & (POLLHUP | POLLERR))) {
			/* the host side is closed (POLLHUP for good): look again later */
			struct timespec step = { 1, 0 };
			nanosleep(&step, NULL);
		}
	}
	/* a port that fails otherwise: still never close it while it may exist */
	helper_log("the port failed (%s): waiting for the guest to restart", strerror(errno));
	for (;;)
		pause();
}

/* Every way out once the port is open (see park_until_unplugged). */
static int finish(const struct helper_args *a, int port, int *outer_ns, int code)
{
	overlay_leave(outer_ns);
	if (a->test_fd < 0)
		park_until_unplugged(port);
	return code;
}

static int fail(const struct helper_args *a, int port, int *outer_ns, struct vmsh_err *err)
{
	helper_log("%s", err->msg);
	chan_send_error(port, err->msg);
	return finish(a, port, outer_ns, 1);
}

int main(int argc, char **argv)
{
	unlink_self(argc, argv);
	ensure_std_fds();

	struct helper_args a;
	struct vmsh_err err = { 0 };
	if (parse_args(argc, argv, &a, &err) < 0) {
		bool test = false;
		for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
			test |= strcmp(argv[i], "--test-fd") == 0;
		helper_log_open(test);
		helper_log("%s", err.msg);
		return 2;
	}
	helper_log_open(a.test_fd >= 0);

	/* Signals arrive on a signalfd, read by the relay loop; the command
	 * gets a clean mask and default dispositions back (spawn.c). */
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		helper_log("signalfd: %s", strerror(errno));
		return 1;
	}

	int port = open_port(&a, &err);
	if (port < 0) {
		helper_log("%s", err.msg);
		return 1;
	}
	uint8_t hello[4 + sizeof(HELPER_VERSION) - 1];
	vmsh_put_le16(hello, VMSH_PROTO_VERSION);
	vmsh_put_le16(hello + 2, 0);
	memcpy(hello + 4, HELPER_VERSION, sizeof(HELPER_VERSION) - 1);
	int outer_ns = -1;
	if (chan_send(port, VMSH_F_HELLO, hello, sizeof(hello), SEND_TIMEOUT_MS, &err) < 0) {
		helper_log("%s", err.msg);
		return finish(&a, port, &outer_ns, 1);
	}

	struct warn_ctx w = { .port = port, .pty = a.pty };
	bool overlay = a.test_fd < 0 || a.test_disk;
	if (overlay && setup_overlay(&a, &w, &outer_ns, &err) < 0)
		return fail(&a, port, &outer_ns, &err);

	struct child c;
	if (spawn_command(&a, overlay, &c, &err) < 0)
		return fail(&a, port, &outer_ns, &err);
	uint8_t ready[4];
	vmsh_put_le32(ready, (uint32_t)c.pid);
	if (chan_send(port, VMSH_F_READY, ready, sizeof(ready), SEND_TIMEOUT_MS, &err) < 0) {
		spawn_kill(&c);
		return fail(&a, port, &outer_ns, &err);
	}

	int term_sig = 0;
	enum pump_end end = pump_run(port, &c, a.pty, sigfd, &term_sig, &err);
	switch (end) {
	case PUMP_EXITED:
		spawn_close(&c);
		spawn_hangup(&c);
		return finish(&a, port, &outer_ns, 0);
	case PUMP_DETACHED:
		spawn_kill(&c);
		return finish(&a, port, &outer_ns, 0);
	case PUMP_HOST_GONE:
		spawn_kill(&c);
		helper_log("the host went away%s%s", err.msg[0] ? ": " : "", err.msg);
		return finish(&a, port, &outer_ns, 1);
	case PUMP_FAILED:
		break;
	}
	spawn_kill(&c);
	return fail(&a, port, &outer_ns, &err);
}
