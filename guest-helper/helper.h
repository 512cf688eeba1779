/* helper.h - declarations shared by the files of vmsh-helper, the in-guest
 * userspace helper (see vmsh-helper.c for what it does and its usage).
 *
 * Each file owns one concept:
 *   vmsh-helper.c  command line, the order of the steps, fatal errors
 *   chan.c         the port: sending frames during setup; the helper's log
 *   devfind.c      finding vmsh's port and disk in sysfs, opening device nodes
 *   overlay.c      joining the target's namespaces, mounting the image as /
 *   spawn.c        starting the command on a pty or on pipes
 *   pump.c         relaying between the port and the command until it exits
 *
 * Errors: functions return -1 and fill a struct vmsh_err (src/common/err.c,
 * compiled into the helper too). */
#ifndef VMSH_HELPER_H
#define VMSH_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define HELPER_VERSION "vmsh-helper 1"
#define HELPER_PATH "/usr/local/sbin:/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin"

/* The command line, validated. */
/* where the guest's own root shows in the image */
#define GUEST_ROOT_DIR "/var/lib/vmsh"

struct helper_args {
	const char *self;    /* --self: our own file, unlinked first thing */
	const char *port;    /* --port: name of the virtio-console port */
	const char *disk;    /* --disk: serial of the virtio-blk disk */
	const char *fstype;  /* --fstype, default ext4 */
	bool rw;             /* --rw: the image read-write as /; else read-only under an overlay in memory */
	bool guest_root;     /* --guest-root: the command runs in the guest's root, not the image */
	const char *term;    /* --term: TERM for the command (pty mode) */
	pid_t target;        /* --target, default 1 */
	bool pty;            /* --pty ROWSxCOLS (else --pipe) */
	unsigned rows, cols; /* initial window size in pty mode */
	int test_fd;         /* --test-fd N: relay on fd N, no devices/namespaces/mounts; -1 if not */
	const char *test_disk; /* --test-disk PATH: with --test-fd, the overlay from this block device */
	char **cmd;          /* the command, NULL-terminated, at least one element */
};

/* chan.c */

/* Where diagnostics go: the guest's kernel log (/dev/kmsg), or stderr in
 * test mode. Opened once, before the helper changes its mount namespace. */
void helper_log_open(bool to_stderr);
void helper_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Write one whole frame on a non-blocking fd, waiting at most timeout_ms
 * for the other side to make room. */
int chan_send(int fd, uint8_t type, const void *payload, uint32_t len, int timeout_ms, struct vmsh_err *err);
/* ERROR frame with a printf-style message (truncated to the protocol's limit). */
void chan_send_error(int fd, const char *msg);

/* devfind.c */

struct devfind_result {
	char name[64]; /* kernel name, e.g. "vport2p1" or "vdb" */
	dev_t dev;     /* device number from sysfs */
};

/* Wait up to timeout_ms for the console port named `name`
 * (/sys/class/virtio-ports/X/name). */
int devfind_port(const char *name, int timeout_ms, struct devfind_result *r, struct vmsh_err *err);
/* Wait up to timeout_ms for the block device whose serial is `serial`
 * (/sys/block/X/serial). */
int devfind_disk(const char *serial, int timeout_ms, struct devfind_result *r, struct vmsh_err *err);
/* Open a character device: /dev/NAME if it is that device, else a node made
 * in a private tmpfs (leaves nothing behind in the guest). */
int devfind_open_chardev(const struct devfind_result *d, int flags, struct vmsh_err *err);

/* overlay.c */

typedef void (*overlay_warn_fn)(void *ctx, const char *msg);

struct overlay_opts {
	pid_t target;
	dev_t disk;
	const char *disk_name; /* for messages: "vdb" */
	const char *fstype;
	bool rw;               /* the image itself as /, read-write */
	overlay_warn_fn warn;  /* non-fatal problems */
	void *warn_ctx;
};

/* Join the target's cgroup and its ipc, uts, net, pid (for children),
 * cgroup and mount namespaces. */
int overlay_join_target(const struct overlay_opts *o, struct vmsh_err *err);
/* In a new private mount namespace: the image as / (read-only, under a
 * writable overlayfs whose changes stay in guest memory; or, with rw, the
 * image itself read-write), the guest's root at /var/lib/vmsh, the guest's
 * /proc /sys /dev, tmpfs on /tmp and /run. Mount points the image lacks
 * are made in the overlay (in the image with rw).
 * *outer_ns: the namespace it came from (an fd, -1 if none was opened), for
 * overlay_leave. */
int overlay_mount_image(const struct overlay_opts *o, int *outer_ns, struct vmsh_err *err);
/* Go back to that namespace: once the helper's command and its group are
 * gone, nothing holds the image's mounts any more (its disk is free). */
void overlay_leave(int *outer_ns);

/* spawn.c */

struct child {
	pid_t pid;
	int master;  /* pty mode: the pty master (command's input and output); else -1 */
	int in_fd;   /* pipe mode: write end of the command's stdin; else -1 */
	int out_fd;  /* pipe mode: read end of its stdout; else -1 */
	int err_fd;  /* pipe mode: read end of its stderr; else -1 */
	bool exited; /* reaped; status is valid */
	int status;  /* 0..255: exit code, or 128+signal */
};

/* Start a->cmd on a new pty (a->pty) or on three pipes, in its own session.
 * Our ends are non-blocking and close-on-exec. An exec failure does not fail
 * here: the command prints "CMD: not found" and exits 127 (126: not
 * executable), as a shell would. may_mount_devpts: if the guest has no usable
 * /dev/ptmx, mount a private devpts instance on /dev/pts. */
int spawn_command(const struct helper_args *a, bool may_mount_devpts, struct child *c, struct vmsh_err *err);
/* Reap the command if it has exited; returns true once it has. */
bool spawn_reap(struct child *c);
/* Kill the command's process group (and the pty's foreground group): SIGHUP,
 * then SIGKILL if it has not gone within a moment; reap it. */
void spawn_kill(struct child *c);
/* After the command exited: what it left running in its process group (a
 * background job) gets SIGHUP, as on a terminal hangup; nohup survives. */
void spawn_hangup(struct child *c);
void spawn_close(struct child *c);

/* pump.c */

enum pump_end {
	PUMP_EXITED,    /* EXIT sent */
	PUMP_DETACHED,  /* the host sent DETACH */
	PUMP_HOST_GONE, /* the port closed */
	PUMP_FAILED,    /* protocol error or a local error: in err */
};

/* Relay between the port and the command until it exits (then send EXIT)
 * or the host leaves. sigfd: signalfd for SIGCHLD and the termination
 * signals. *term_sig: set if a termination signal ended the relay. */
enum pump_end pump_run(int port, struct child *c, bool pty, int sigfd, int *term_sig, struct vmsh_err *err);

#endif
