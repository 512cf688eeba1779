/* cmd_serve.c - `vmsh serve`: give a running guest vmsh's block device (on
 * a file or block device of the host) and console port (on a unix socket
 * of the host) until interrupted, then remove them again. The devices of
 * `vmsh attach`, without the helper: for tests, benchmarks and for users
 * who want a disk in a VM that has none to spare. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/console_socket.h"
#include "cli/session.h"
#include "cli/vmlist.h"
#include "common/cleanup.h"
#include "common/log.h"

struct serve_opts {
	const char *socket_path;
	pid_t pid;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh serve [--ro] [--id ID] [--no-console] [--console-socket PATH] [--timeout MS]\n"
		     "                  [--vm-fd FD] PID|NAME DISK\n\n"
		     "Add a virtio block device backed by DISK (a file or block device) and a virtio console\n"
		     "port to the running guest, serve them until SIGINT/SIGTERM, then remove them. The guest\n"
		     "sees the disk as /dev/vdX with serial ID (/sys/block/vdX/serial) and the port as\n"
		     "/dev/vportNp0 named ID (/sys/class/virtio-ports/vportNp0/name). With --console-socket,\n"
		     "the port's bytes go to and from one client at a time of a unix socket at PATH.\n"
		     "The hypervisor is traced only while the guest's drivers set the devices up.\n");
}

static int serve(struct session *s, int con_fd, void *opaque, struct vmsh_err *err)
{
	struct serve_opts *so = opaque;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	_cleanup_close_ int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return vmsh_error(err, errno, "signalfd");
	_cleanup_close_ int lfd = -1;
	struct sock_file sf;
	if (so->socket_path && con_fd >= 0 && (lfd = console_socket_listen(so->socket_path, &sf, err)) < 0)
		return -1;
	printf("vmsh serve: ready\n");
	fflush(stdout);
	int rc = console_socket_serve(sfd, session_hypervisor_pidfd(s), lfd, con_fd, err);
	if (rc == 1)
		rc = vmsh_error(err, ESRCH, "the hypervisor (process %d) exited: the VM and vmsh's devices are gone",
				(int)so->pid);
	else if (rc == 0) {
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) == sizeof(si))
			log_verbose("signal %u: removing the devices", si.ssi_signo);
	}
	if (so->socket_path && lfd >= 0)
		console_socket_unlink(so->socket_path, &sf);
	return rc;
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ro", no_argument, 0, 'r' },
		{ "id", required_argument, 0, 'i' },
		{ "no-console", no_argument, 0, 'n' },
		{ "console-socket", required_argument, 0, 's' },
		{ "timeout", required_argument, 0, 't' },
		{ "vm-fd", required_argument, 0, 'f' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	char id[32];
	snprintf(id, sizeof(id), "vmsh-%d", (int)getpid());
	struct serve_opts so = { 0 };
	struct session_opts o = { .vm_fd = -1, .id = id, .console = true, .timeout_ms = 10000, .serve = serve,
				  .opaque = &so };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "ri:ns:t:f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r': o.disk_ro = true; break;
		case 'i': o.id = optarg; break;
		case 'n': o.console = false; break;
		case 's': so.socket_path = optarg; break;
		case 't': o.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'f': o.vm_fd = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 2 || strlen(o.id) > 19) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	o.disk = argv[optind + 1];
	struct vmsh_err err = { 0 };
	if (vm_resolve(argv[optind], &o.pid, &err) < 0)
		return report_error("serve", &err);
	so.pid = o.pid;
	struct session_stats st;
	int rc = session_run(&o, &st, &err);
	fprintf(stderr,
		"vmsh serve: block device %s (%llu sectors) and %s at gpa %#llx, interrupt line %u (guest irq %u); "
		"set-up %.0f ms of which %.0f ms traced (%lu register writes trapped in %lu syscall returns); "
		"%u + %u interrupts; removed in %.0f ms\n",
		o.id, (unsigned long long)st.disk_sectors, o.console ? "a console port" : "no console",
		(unsigned long long)st.dev_gpa, st.gsi, st.irq, st.setup_ns / 1e6, st.traced_ns / 1e6, st.trapped,
		st.syscall_exits, st.blk_interrupts, st.con_interrupts, st.teardown_ns / 1e6);
	if (rc < 0)
		return report_error("serve", &err);
	return 0;
}
