/* cmd_attach.c - `vmsh attach`: a shell (or any command) inside a running
 * VM, with a tools image as its root and the guest's root at /var/lib/vmsh.
 *
 * The session (session.h) adds a block device carrying the image and a
 * console port to the guest and lets the kernel library start vmsh-helper
 * there; the relay (console/relay.h) connects the helper's command to our
 * terminal or pipes. When the command ends (or the user detaches), the
 * devices, the helper's file and everything else of vmsh leave the guest,
 * and vmsh exits with the command's status. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/escape.h"
#include "cli/commands.h"
#include "cli/session.h"
#include "channel.h" /* guest-lib/: VMSH_HELPER_ARGV */
#include "cli/vmlist.h"
#include "common/log.h"
#include "console/relay.h"

extern const uint8_t vmsh_helper_start[], vmsh_helper_end[];
extern const uint8_t vmsh_toolbox_start[], vmsh_toolbox_end[];

#define SELF_PLACEHOLDER "/@SELF@" /* the library puts the helper's path there */

struct attach_run {
	struct relay_opts ro;
	struct relay_result rr;
	bool relayed;
	int rc;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: vmsh attach [-f IMAGE] [--target GUESTPID] [--escape KEY|none] [--pty|--pipe]\n"
		"                   [--timeout MS] [--vm-fd FD] PID|NAME [-- CMD ARGS...]\n\n"
		"Run CMD (default: a shell) inside the running VM, with IMAGE (an ext4 file system image;\n"
		"default: vmsh's built-in busybox toolbox) as its root, the guest's root file system at\n"
		"/var/lib/vmsh, and the guest's /proc, /sys and /dev. It joins the namespaces and cgroup of\n"
		"guest process GUESTPID (default 1). Interactive when stdin is a terminal (Ctrl-] detaches),\n"
		"pipes otherwise. Exits with CMD's status; 125 if vmsh itself failed, 127 if CMD was not\n"
		"found. Nothing of vmsh stays in the guest afterwards.\n");
}

/* The built-in image as a file the block device can serve. */
static int toolbox_file(char *path, size_t cap, struct vmsh_err *err)
{
	int fd = memfd_create("vmsh-toolbox", MFD_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno, "memfd for the tools image");
	size_t len = (size_t)(vmsh_toolbox_end - vmsh_toolbox_start);
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, vmsh_toolbox_start + off, len - off);
		if (w <= 0) {
			close(fd);
			return vmsh_error(err, errno, "write the tools image");
		}
		off += (size_t)w;
	}
	snprintf(path, cap, "/proc/self/fd/%d", fd);
	return fd;
}

static int serve(struct session *s, int con_fd, void *opaque, struct vmsh_err *err)
{
	struct attach_run *run = opaque;
	run->relayed = true;
	run->ro.gone_fd = session_hypervisor_pidfd(s);
	struct vmsh_err e = { 0 };
	if (relay_run(con_fd, &run->ro, &run->rr, &e) < 0 || run->rr.outcome > RELAY_SIGNALED) {
		char safe[ESC_SIZE(sizeof(e.msg))];
		if (e.msg[0])
			fprintf(stderr, "vmsh attach: %s\n", esc_str(safe, sizeof(safe), e.msg));
		else
			fprintf(stderr, "vmsh attach: %s\n", relay_outcome_name(run->rr.outcome));
	}
	run->rc = relay_exit_code(&run->rr);
	(void)err;
	return 0;
}

int cmd_attach(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "file", required_argument, 0, 'f' },
		{ "target", required_argument, 0, 'T' },
		{ "escape", required_argument, 0, 'e' },
		{ "pty", no_argument, 0, 'P' },
		{ "pipe", no_argument, 0, 'p' },
		{ "timeout", required_argument, 0, 't' },
		{ "vm-fd", required_argument, 0, 'F' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct attach_run run = { .rc = EXIT_VMSH_FAILED };
	relay_opts_init(&run.ro);
	const char *image = NULL;
	struct session_opts o = { .vm_fd = -1, .console = true, .timeout_ms = 10000, .serve = serve, .opaque = &run };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+f:T:e:Ppt:F:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f': image = optarg; break;
		case 'T': run.ro.target = (pid_t)strtol(optarg, NULL, 10); break;
		case 'e':
			if (!strcmp(optarg, "none"))
				run.ro.escape = RELAY_ESCAPE_NONE;
			else if (optarg[0] == '^' && optarg[1] && !optarg[2])
				run.ro.escape = optarg[1] & 0x1f;
			else {
				fprintf(stderr, "vmsh attach: --escape wants ^X or none\n");
				return EXIT_VMSH_USAGE;
			}
			break;
		case 'P': run.ro.mode = RELAY_PTY; break;
		case 'p': run.ro.mode = RELAY_PIPE; break;
		case 't': o.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'F': o.vm_fd = atoi(optarg); break;
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
	run.ro.cmd = optind < argc ? argv + optind : NULL;

	struct vmsh_err err = { 0 };
	if (vm_resolve(target, &o.pid, &err) < 0)
		return report_error("attach", &err);
	char id[24], path[64];
	snprintf(id, sizeof(id), "vmsh-%d", (int)getpid());
	o.id = id;
	int image_fd = -1;
	if (!image) {
		if ((image_fd = toolbox_file(path, sizeof(path), &err)) < 0)
			return report_error("attach", &err);
		image = path;
	} else if (access(image, R_OK) < 0) {
		fprintf(stderr, "vmsh attach: image %s: %s\n", image, strerror(errno));
		return EXIT_VMSH_USAGE;
	}
	o.disk = image;
	o.disk_ro = true;
	char args[VMSH_HELPER_ARGV];
	int n = relay_helper_argv(&run.ro, SELF_PLACEHOLDER, id, id, args, sizeof(args));
	if (n < 0) {
		if (errno == ENOSPC)
			fprintf(stderr, "vmsh attach: the command line is too long for the guest (%zu bytes at most)\n",
				sizeof(args));
		else
			fprintf(stderr, "vmsh attach: cannot pass this command to the guest: %s\n", strerror(errno));
		if (image_fd >= 0)
			close(image_fd);
		return EXIT_VMSH_USAGE;
	}
	/* argv[0] is the library's to set */
	size_t skip = strlen(args) + 1;
	o.helper_args = args + skip;
	o.helper_args_len = (size_t)n - skip;
	o.helper_argc = 0;
	for (size_t i = 0; i < o.helper_args_len; i++)
		o.helper_argc += o.helper_args[i] == '\0';
	o.helper = vmsh_helper_start;
	o.helper_len = (size_t)(vmsh_helper_end - vmsh_helper_start);

	struct session_stats st;
	int rc = session_run(&o, &st, &err);
	if (image_fd >= 0)
		close(image_fd);
	log_verbose("attach: set-up %.0f ms (%.0f ms traced, %lu register writes trapped), removed in %.0f ms",
		    st.setup_ns / 1e6, st.traced_ns / 1e6, st.trapped, st.teardown_ns / 1e6);
	if (rc < 0) {
		report_error("attach", &err);
		return EXIT_VMSH_FAILED;
	}
	return run.relayed ? run.rc : EXIT_VMSH_FAILED;
}
