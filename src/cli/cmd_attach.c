/* cmd_attach.c - `vmsh attach`: a shell (or any command) inside a running
 * VM, with a tools image as its root and the guest's root at /var/lib/vmsh.
 *
 * The story of an attach (cmd_attach below, step by step): open the VM
 * (core/vm.h: attach to the hypervisor, read its vCPUs), find the guest
 * kernel with the hypervisor let go, open a session (core/session.h: a
 * block device carrying the image and a console port, and vmsh-helper
 * started in the guest by the kernel library), relay the helper's command
 * to our terminal or pipes (relay/relay.h), close the session (the
 * devices, the helper's file and everything else of vmsh leave the guest),
 * close the VM, and exit with the command's status. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/escape.h"
#include "cli/commands.h"
#include "cli/fsprobe.h"
#include "cli/options.h"
#include "cli/vmlist.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/procfs.h"
#include "common/signals.h"
#include "relay/relay.h"
#include "core/session.h"
#include "core/vm.h"
#include "vmsh/channel.h" /* VMSH_HELPER_ARGV */

extern const uint8_t vmsh_helper_start[], vmsh_helper_end[];
extern const uint8_t vmsh_toolbox_start[], vmsh_toolbox_end[];

#define SELF_PLACEHOLDER "/@SELF@" /* the library puts the helper's path there */
#define OPT_TARGET 0x200                /* long only */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: vmsh attach [-f IMAGE [-w] | -g] [-t|-T] [--target GUESTPID] [-e ^X|none] [--timeout MS]\n"
		"                   [--vm-fd FD] PID|NAME [-- CMD ARGS...]\n\n"
		"Run CMD (default: a shell) inside the running VM, with IMAGE as its root, the guest's root\n"
		"file system at /var/lib/vmsh, and the guest's /proc, /sys and /dev; what it writes under /\n"
		"stays in guest memory (an overlay) unless --rw. It joins the namespaces and cgroup of guest\n"
		"process GUESTPID. On a terminal (stdin and stdout) the command gets a\n"
		"pty and Ctrl-] disconnects: the command is hung up (SIGHUP), as when an ssh connection drops.\n"
		"Otherwise pipes: stdin, stdout and stderr apart and binary-safe.\n\n"
		"options:\n"
		"  -f, --file IMAGE      the command's root file system: ext2/3/4, squashfs, erofs, xfs,\n"
		"                        btrfs or iso9660, as far as the guest kernel can mount it\n"
		"                        (default: vmsh's built-in busybox toolbox)\n"
		"  -w, --rw              IMAGE read-write: what the command writes under / lands in it\n"
		"                        (default: read-only, changes kept in guest memory until exit)\n"
		"  -g, --guest-root      the command runs with the guest's own root as /, its tools and\n"
		"                        libraries, like nsenter -t 1 -a (default: IMAGE as /)\n"
		"  -t, --pty             a pty even without a terminal here\n"
		"  -T, --pipe            pipes even on a terminal\n"
		"  -e, --escape ^X|none  the disconnect key (default: ^], Ctrl-])\n"
		"      --target GUESTPID the guest process whose namespaces and cgroup the command joins\n"
		"                        (default: 1)\n"
		"      --timeout MS      how long each step may wait for the guest (default: 10000)\n"
		"      --vm-fd FD        the hypervisor's VM fd, when it has more than one VM (default: its\n"
		"                        only one)\n"
		"  -h, --help            this help\n\n"
		"exit status: CMD's; 127 if CMD was not found, 126 if it could not be run, 129 after a\n"
		"disconnect, 128+N if vmsh was ended by signal N, 125 for every failure of vmsh itself\n"
		"(usage errors included). Nothing of vmsh stays in the guest afterwards.\n");
}

/* The built-in image where it already is: inside vmsh's own executable,
 * served from there as a read-only window (*base, *size). Copying it out
 * first cost 100-140 ms per attach on the emulated host (8 MiB of the
 * executable faulted in and written to a memfd). -1 if it cannot be found
 * there for sure; the copy is used then. */
static int toolbox_in_exe(char *path, size_t cap, uint64_t *base, uint64_t *size, struct vmsh_err *err)
{
	uint64_t lo = (uintptr_t)vmsh_toolbox_start, hi = (uintptr_t)vmsh_toolbox_end;
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		vmsh_error(err, errno, "open vmsh's executable");
		goto fail;
	}
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(getpid(), &maps, &n, err) < 0)
		goto fail;
	bool found = false;
	for (size_t i = 0; i < n && !found; i++) {
		if (maps[i].start <= lo && hi <= maps[i].end && maps[i].inode == (uint64_t)st.st_ino &&
		    maps[i].path[0] == '/') {
			*base = maps[i].offset + (lo - maps[i].start);
			found = true;
		}
	}
	free(maps);
	*size = hi - lo;
	/* the bytes there are the image's: its first and last page */
	uint8_t head[4096], tail[4096];
	if (!found || *size < sizeof(head) ||
	    pread(fd, head, sizeof(head), (off_t)*base) != (ssize_t)sizeof(head) ||
	    pread(fd, tail, sizeof(tail), (off_t)(*base + *size - sizeof(tail))) != (ssize_t)sizeof(tail) ||
	    memcmp(head, vmsh_toolbox_start, sizeof(head)) || memcmp(tail, vmsh_toolbox_start + (*size - sizeof(tail)), sizeof(tail))) {
		vmsh_error(err, ENOENT, "the tools image is not where the executable's mapping says");
		goto fail;
	}
	snprintf(path, cap, "/proc/self/fd/%d", fd);
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The built-in image as a file the block device can serve. */
static int toolbox_file(char *path, size_t cap, struct vmsh_err *err)
{
	int fd = memfd_create("vmsh-toolbox", MFD_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno, "memfd for the tools image");
	size_t len = (size_t)(vmsh_toolbox_end - vmsh_toolbox_start);
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), dropped = (uintptr_t)vmsh_toolbox_start;
	for (size_t off = 0; off < len;) {
		size_t chunk = len - off < (1u << 20) ? len - off : (1u << 20);
		ssize_t w = write(fd, vmsh_toolbox_start + off, chunk);
		if (w <= 0) {
			close(fd);
			return vmsh_error(err, errno, "write the tools image");
		}
		off += (size_t)w;
		/* the image's pages of our executable, read once, are not kept
		 * resident (the image's size of vmsh's footprint otherwise) */
		uintptr_t upto = ((uintptr_t)vmsh_toolbox_start + off) & ~(page - 1);
		uintptr_t from = (dropped + page - 1) & ~(page - 1);
		if (upto > from) {
			madvise((void *)from, upto - from, MADV_DONTNEED);
			dropped = upto;
		}
	}
	snprintf(path, cap, "/proc/self/fd/%d", fd);
	return fd;
}

/* The user's image, checked before anything touches the VM: readable (and
 * writable with rw), a file system vmsh knows (its type for the guest's
 * mount), and not in use by another vmsh --rw (an flock shared for
 * read-only use, exclusive for rw, held until vmsh exits). The fd, or -1
 * after saying why. */
static int open_image(const char *path, bool rw, const char **fstype)
{
	int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "vmsh attach: image %s: %s\n", path, strerror(errno));
		return -1;
	}
	*fstype = fs_probe_fd(fd);
	if (!*fstype) {
		fprintf(stderr, "vmsh attach: image %s: no file system vmsh knows (%s)\n", path, FS_PROBE_KNOWN);
		close(fd);
		return -1;
	}
	if (flock(fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			fprintf(stderr, "vmsh attach: image %s is in use by another vmsh%s\n", path,
				rw ? " (--rw needs it alone)" : " with --rw");
			close(fd);
			return -1;
		}
		/* a file system without locks (some network ones): nothing to
		 * guard with, which matters only for writing */
		if (rw)
			log_info("image %s cannot be locked (%s): make sure nothing else uses it", path,
				 strerror(errno));
	}
	return fd;
}

/* The helper's command line for the library: what follows argv[0] (the
 * library sets that), and how many arguments. */
static int helper_args(const struct relay_opts *ro, const char *id, char *buf, size_t cap, struct session_opts *o)
{
	int n = relay_helper_argv(ro, SELF_PLACEHOLDER, id, id, buf, cap);
	if (n < 0) {
		if (errno == ENOSPC)
			fprintf(stderr, "vmsh attach: the command line is too long for the guest (%zu bytes at most)\n",
				cap);
		else
			fprintf(stderr, "vmsh attach: cannot pass this command to the guest: %s\n", strerror(errno));
		return -1;
	}
	size_t skip = strlen(buf) + 1;
	o->helper_args = buf + skip;
	o->helper_args_len = (size_t)n - skip;
	o->helper_argc = 0;
	for (size_t i = 0; i < o->helper_args_len; i++)
		o->helper_argc += o->helper_args[i] == '\0';
	return 0;
}

/* On a terminal, like telnet and virsh console: which VM, and the key that
 * leaves. The name is the hypervisor's command line (whoever started the
 * VM chose it): escaped. */
static void banner(pid_t pid, const struct relay_opts *ro)
{
	if (!relay_wants_pty(ro) || !isatty(STDIN_FILENO) || !isatty(STDERR_FILENO) || log_level() < LOG_NORMAL)
		return;
	struct vm_entry e;
	struct vmsh_err err = { 0 };
	char name[ESC_SIZE(sizeof(e.name))] = "";
	if (vm_entry_get(pid, &e, &err) == 0 && e.name[0])
		esc_str(name, sizeof(name), e.name);
	char key[32] = "none";
	if (ro->escape != RELAY_ESCAPE_NONE)
		snprintf(key, sizeof(key), "^%c", ro->escape + '@');
	fprintf(stderr, "Connected to VM %s%s(pid %d). Escape character is %s.\n", name, name[0] ? " " : "",
		(int)pid, key);
}

/* Relay the helper's command; its exit code, or ours if relaying failed. */
static int relay(struct session *s, struct relay_opts *ro, pid_t pid)
{
	struct relay_result rr;
	struct vmsh_err e = { 0 };
	ro->gone_fd = session_hypervisor_pidfd(s);
	banner(pid, ro);
	int ran = relay_run(session_console_fd(s), ro, &rr, &e);
	if (rr.outcome == RELAY_DISCONNECTED && log_level() >= LOG_NORMAL)
		fprintf(stderr, "vmsh attach: disconnected; the command was hung up\n");
	if (ran < 0 || rr.outcome > RELAY_SIGNALED) {
		char safe[ESC_SIZE(sizeof(e.msg))];
		if (e.msg[0])
			fprintf(stderr, "vmsh attach: %s\n", esc_str(safe, sizeof(safe), e.msg));
		else
			fprintf(stderr, "vmsh attach: %s\n", relay_outcome_name(rr.outcome));
	}
	return relay_exit_code(&rr);
}

struct attach_args {
	struct relay_opts ro;
	const char *image;     /* NULL: the built-in toolbox */
	bool rw;               /* --rw */
	struct vm_target t;
};

/* -1: go on; else the exit code (usage, --help) */
static int parse_args(int argc, char **argv, struct attach_args *a)
{
	static const struct option opts[] = {
		{ "file", required_argument, 0, 'f' },
		{ "rw", no_argument, 0, 'w' },
		{ "guest-root", no_argument, 0, 'g' },
		{ "target", required_argument, 0, OPT_TARGET },
		{ "escape", required_argument, 0, 'e' },
		{ "pty", no_argument, 0, 't' },
		{ "pipe", no_argument, 0, 'T' },
		VM_OPTIONS,
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	*a = (struct attach_args){ .t = { .vm_fd = -1, .timeout_ms = 10000 } };
	relay_opts_init(&a->ro);
	uint64_t num;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+f:wge:tTh" VM_OPTSTRING, opts, NULL)) != -1) {
		switch (c) {
		case 'f': a->image = optarg; break;
		case 'w': a->rw = true; break;
		case 'g': a->ro.guest_root = true; break;
		case OPT_TARGET:
			if (num_option("attach", "--target", optarg, 1, INT_MAX, &num) < 0)
				return EXIT_VMSH_USAGE;
			a->ro.target = (pid_t)num;
			break;
		case 'e':
			if (!strcmp(optarg, "none"))
				a->ro.escape = RELAY_ESCAPE_NONE;
			else if (optarg[0] == '^' && optarg[1] && !optarg[2])
				a->ro.escape = optarg[1] & 0x1f;
			else {
				fprintf(stderr, "vmsh attach: --escape wants ^X or none\n");
				return EXIT_VMSH_USAGE;
			}
			break;
		case 't': a->ro.mode = RELAY_PTY; break;
		case 'T': a->ro.mode = RELAY_PIPE; break;
		case OPT_TIMEOUT:
		case OPT_VM_FD:
			if (vm_option("attach", c, optarg, &a->t) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	const char *target = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	a->ro.cmd = optind < argc ? argv + optind : NULL;
	if (a->ro.guest_root && a->image) {
		fprintf(stderr, "vmsh attach: --guest-root runs the command in the guest's root: no -f IMAGE\n");
		return EXIT_VMSH_USAGE;
	}
	if (a->rw && !a->image) {
		fprintf(stderr, "vmsh attach: --rw needs an image of yours (-f IMAGE)\n");
		return EXIT_VMSH_USAGE;
	}
	int rc = vm_target_resolve("attach", target, &a->t);
	return rc ? rc : -1;
}

int cmd_attach(int argc, char **argv)
{
	/* Every failure of vmsh itself exits 125, whatever it was (the message
	 * says): any other status is the command's own. */
	struct attach_args a;
	int rc = parse_args(argc, argv, &a);
	if (rc >= 0)
		return rc == 0 ? 0 : EXIT_VMSH_FAILED;

	/* what the session adds: the image as a disk (read-only unless
	 * --rw), a console port, and the helper with the command's line */
	char id[24], args[VMSH_HELPER_ARGV], path[64];
	snprintf(id, sizeof(id), "vmsh-%d", (int)getpid());
	/* one request queue: the tools image's reads are few and sequential,
	 * and each queue is one more set of register writes to trap */
	struct session_opts o = { .id = id, .console = true, .disk = path, .disk_ro = !a.rw, .blk_queues = 1,
				  .timeout_ms = a.t.timeout_ms, .helper = vmsh_helper_start,
				  .helper_len = (size_t)(vmsh_helper_end - vmsh_helper_start) };
	struct vmsh_err err = { 0 };
	_cleanup_close_ int image_fd = -1;
	if (a.image) {
		/* served through our fd: the file checked is the file served */
		if ((image_fd = open_image(a.image, a.rw, &a.ro.fstype)) < 0)
			return EXIT_VMSH_FAILED;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", image_fd);
		a.ro.image_rw = a.rw;
	} else {
		struct vmsh_err e = { 0 };
		if ((image_fd = toolbox_in_exe(path, sizeof(path), &o.disk_base, &o.disk_size, &e)) < 0) {
			log_verbose("tools image: %s: serving a copy", e.msg);
			o.disk_base = o.disk_size = 0;
			if ((image_fd = toolbox_file(path, sizeof(path), &err)) < 0) {
				report_error("attach", &err);
				return EXIT_VMSH_FAILED;
			}
		}
	}
	if (helper_args(&a.ro, id, args, sizeof(args), &o) < 0)
		return EXIT_VMSH_FAILED;
	/* the library loads what the helper's mounts need, by module name */
	o.modules[0] = fs_module(a.ro.fstype ? a.ro.fstype : "ext4");
	o.modules[1] = a.rw ? NULL : "overlay";

	/* Terminating signals wait until the guest is left as it was: the
	 * relay takes them (signalfd), the session's removal always runs. */
	sigset_t old;
	term_signals_block(&old);
	/* 1. the VM and its kernel */
	struct vm vm;
	struct session_stats st = { 0 };
	struct session *s = NULL;
	if (vm_open_guest(&vm, a.t.pid, a.t.vm_fd, false, &err) == 0)
		/* 2. the devices, the helper and its command in the guest */
		s = session_open(&vm, &o, &st, &err);
	bool opened = s != NULL;
	if (opened)
		/* 3. the command's input and output, until it ends */
		rc = relay(s, &a.ro, a.t.pid);
	else
		report_error("attach", &err);
	log_memory("at the command's end");
	/* 4. nothing of vmsh left in the guest or the hypervisor */
	session_close(s);
	vm_close(&vm);
	log_verbose("attach: set-up %.0f ms (%.0f ms traced, %lu register writes trapped in %lu syscall returns), removed in %.0f ms; "
		    "vCPUs stopped %.1f ms in %lu windows",
		    st.setup_ns / 1e6, st.traced_ns / 1e6, st.trapped, st.syscall_exits, st.teardown_ns / 1e6,
		    vm.tr.stopped_ns / 1e6,
		    vm.tr.stops);
	term_signals_restore(&old); /* last: a signal then ends vmsh at once (cmd_serve.c) */
	return opened ? rc : EXIT_VMSH_FAILED;
}
