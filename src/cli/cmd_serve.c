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
#include "cli/options.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/signals.h"
#include "core/session.h"
#include "core/vm.h"
#include "devices/virtio_blk.h"

enum { OPT_NO_CONSOLE = 0x200, OPT_CONSOLE_SOCKET, OPT_QUEUES, OPT_POLL_US }; /* long only */

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh serve [--ro] [--id ID] [--queues N] [--poll-us US] [--no-console]\n"
		     "                  [--console-socket PATH] [--timeout MS] [--vm-fd FD] PID|NAME DISK\n\n"
		     "Add a virtio block device backed by DISK (a file or block device) and a virtio console\n"
		     "port to the running guest, serve them until SIGINT/SIGTERM, then remove them. The guest\n"
		     "sees the disk as /dev/vdX with serial ID (/sys/block/vdX/serial) and the port as\n"
		     "/dev/vportNp0 named ID (/sys/class/virtio-ports/vportNp0/name). With --console-socket,\n"
		     "the port's bytes go to and from one client at a time of a unix socket at PATH.\n"
		     "The hypervisor is traced only while the guest's drivers set the devices up.\n\n"
		     "options:\n"
		     "  -r, --ro                    the disk read-only (default: read-write)\n"
		     "  -i, --id ID                 the disk's serial and the port's name (default: vmsh-PID of\n"
		     "                              this process)\n"
		     "      --queues N              the disk's request queues, 1-4, each served by a thread of\n"
		     "                              its own (default: one per vCPU, at most one per host CPU\n"
		     "                              vmsh may run on, at most 4; more than one: multiqueue)\n"
		     "      --poll-us US            after a queue runs dry, look for the next request for up\n"
		     "                              to US microseconds (adaptive, at most 1000) before asking\n"
		     "                              the guest to notify: no guest exit per request while\n"
		     "                              requests come back to back, CPU time spent (default: 0,\n"
		     "                              off; see README)\n"
		     "      --no-console            no console port\n"
		     "      --console-socket PATH   relay the port through a unix socket at PATH (default: no\n"
		     "                              relay)\n"
		     "      --timeout MS            how long each step may wait for the guest (default: 10000)\n"
		     "      --vm-fd FD              the hypervisor's VM fd, when it has more than one VM\n"
		     "  -h, --help                  this help\n\n"
		     "exit status: 0 once a signal ended serving, 2-7 and 125 as in vmsh(1).\n");
}

/* Serve until a terminating signal (blocked since before the VM was
 * opened: taken here) or until the hypervisor exits. */
static int serve(struct session *s, const char *socket_path, pid_t pid, struct vmsh_err *err)
{
	sigset_t set;
	term_signals(&set);
	_cleanup_close_ int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return vmsh_error(err, errno, "signalfd");
	int con_fd = session_console_fd(s);
	_cleanup_close_ int lfd = -1;
	struct sock_file sf;
	if (socket_path && con_fd >= 0 && (lfd = console_socket_listen(socket_path, &sf, err)) < 0)
		return -1;
	printf("vmsh serve: ready\n");
	fflush(stdout);
	int rc = console_socket_serve(sfd, session_hypervisor_pidfd(s), lfd, con_fd, err);
	if (rc == 1)
		rc = vmsh_error(err, ESRCH, "the hypervisor (process %d) exited: the VM and vmsh's devices are gone",
				(int)pid);
	else if (rc == 0) {
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) == sizeof(si))
			log_verbose("signal %u: removing the devices", si.ssi_signo);
	}
	if (socket_path && lfd >= 0)
		console_socket_unlink(socket_path, &sf);
	return rc;
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ro", no_argument, 0, 'r' },
		{ "id", required_argument, 0, 'i' },
		{ "no-console", no_argument, 0, OPT_NO_CONSOLE },
		{ "console-socket", required_argument, 0, OPT_CONSOLE_SOCKET },
		{ "queues", required_argument, 0, OPT_QUEUES },
		{ "poll-us", required_argument, 0, OPT_POLL_US },
		VM_OPTIONS,
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	char id[32];
	snprintf(id, sizeof(id), "vmsh-%d", (int)getpid());
	struct session_opts o = { .id = id, .console = true };
	struct vm_target t = { .vm_fd = -1, .timeout_ms = 10000 };
	const char *socket_path = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "ri:h" VM_OPTSTRING, opts, NULL)) != -1) {
		switch (c) {
		case 'r': o.disk_ro = true; break;
		case 'i': o.id = optarg; break;
		case OPT_NO_CONSOLE: o.console = false; break;
		case OPT_CONSOLE_SOCKET: socket_path = optarg; break;
		case OPT_QUEUES: {
			uint64_t v;
			if (num_option("serve", "--queues", optarg, 1, BLK_MAX_QUEUES, &v) < 0)
				return EXIT_VMSH_USAGE;
			o.blk_queues = (unsigned)v;
			break;
		}
		case OPT_POLL_US: {
			uint64_t v;
			if (num_option("serve", "--poll-us", optarg, 0, BLK_MAX_POLL_US, &v) < 0)
				return EXIT_VMSH_USAGE;
			o.blk_poll_us = (unsigned)v;
			break;
		}
		case OPT_TIMEOUT:
		case OPT_VM_FD:
			if (vm_option("serve", c, optarg, &t) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 2 || strlen(o.id) > 19) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	o.disk = argv[optind + 1];
	o.timeout_ms = t.timeout_ms;
	int rc = vm_target_resolve("serve", argv[optind], &t);
	if (rc)
		return rc;

	sigset_t old;
	term_signals_block(&old);
	struct vmsh_err err = { 0 };
	struct vm vm;
	struct session_stats st = { 0 };
	struct session *s = NULL;
	if (vm_open_guest(&vm, t.pid, t.vm_fd, false, &err) == 0)
		s = session_open(&vm, &o, &st, &err);
	rc = s ? serve(s, socket_path, t.pid, &err) : -1;
	session_close(s);
	vm_close(&vm);
	/* the summary and the error first: a terminating signal that arrives
	 * once they are unblocked ends the process at once (a supervisor
	 * repeating its SIGTERM cut the summary off in a CI run) */
	char con_line[64] = "";
	if (o.console)
		snprintf(con_line, sizeof(con_line), ", the console's %u (guest irq %u)", st.gsi[1], st.irq[1]);
	char polls[64] = "";
	if (o.blk_poll_us)
		snprintf(polls, sizeof(polls), ", %llu polls of which %llu found a request",
			 (unsigned long long)st.blk_polls, (unsigned long long)st.blk_poll_hits);
	char lanes[96] = "";
	for (unsigned l = 0; st.serve_threads > 1 && l < st.serve_threads && l < 4; l++)
		snprintf(lanes + strlen(lanes), sizeof(lanes) - strlen(lanes), "%s%lu", l ? " + " : " (", st.lane_wakeups[l]);
	if (lanes[0])
		snprintf(lanes + strlen(lanes), sizeof(lanes) - strlen(lanes), ")");
	fprintf(stderr,
		"vmsh serve: block device %s (%llu sectors, %u request queues) and %s at gpa %#llx, interrupt line %u (guest irq %u)%s; "
		"set-up %.0f ms of which %.0f ms traced (%lu register writes trapped in %lu syscall returns); "
		"%u + %u interrupts, %lu wake-ups of the %u serving threads%s%s, %llu guest-memory syscalls moving %llu bytes; removed in %.0f ms\n",
		o.id, (unsigned long long)st.disk_sectors, st.blk_queues, o.console ? "a console port" : "no console",
		(unsigned long long)st.dev_gpa, st.gsi[0], st.irq[0], con_line, st.setup_ns / 1e6, st.traced_ns / 1e6, st.trapped,
		st.syscall_exits, st.blk_interrupts, st.con_interrupts, st.wakeups, st.serve_threads, lanes, polls, (unsigned long long)st.serve_remote_calls,
		(unsigned long long)st.serve_remote_bytes,
		st.teardown_ns / 1e6);
	rc = rc < 0 ? report_error("serve", &err) : 0;
	term_signals_restore(&old);
	return rc;
}
