/* main.c - vmsh entry point: global options and the command table. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"

static const struct vmsh_command commands[] = {
	{ "list", "list the KVM virtual machines on this host", cmd_list, false },
	{ "inspect", "show vCPUs, memory and guest kernel of a running VM", cmd_inspect, true },
	{ "library", "load vmsh's kernel library into a guest, run it once, remove it", cmd_library, true },
	{ "attach", "run a shell or command inside a running VM, with a tools image as its root", cmd_attach, true },
	{ "image", "make a tools image for vmsh attach -f from a directory", cmd_image, false },
	{ "serve", "give a running guest a block device and a console port served by vmsh", cmd_serve, true },
	{ "coredump", "write a running VM's memory and vCPU registers as an ELF core (crash, gdb)", cmd_coredump, true },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh [-v|-q] COMMAND [ARGS...]\n\n"
		     "Work inside running KVM virtual machines from the host, without an agent in the guest.\n\n"
		     "commands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nglobal options:\n"
		     "  -v, --verbose  more diagnostics (twice: debug)\n"
		     "  -q, --quiet    only errors\n"
		     "  -h, --help     this help; 'vmsh help COMMAND' or 'vmsh COMMAND --help' for a command\n"
		     "  --version      vmsh's version\n");
}

#ifndef VMSH_VERSION
#define VMSH_VERSION "unknown"
#endif

const char *vmsh_version(void)
{
	return VMSH_VERSION;
}

static pid_t guarded_child;

static void forward_signal(int sig)
{
	if (guarded_child > 0)
		kill(guarded_child, sig);
}

/* Commands that attach to a hypervisor run in a child process. If vmsh (the
 * process the user started) is killed, even with SIGKILL, the child gets
 * SIGTERM (PR_SET_PDEATHSIG), which it holds until it has let the
 * hypervisor go: a confined hypervisor's seccomp filter is never left to
 * judge a syscall we injected. Other signals are forwarded; the exit status
 * (or death by a signal) is passed through. A child killed outright (SIGKILL,
 * the OOM killer) cannot restore the user's terminal from raw mode: this
 * process saved it before and puts it back. */
static int run_guarded(const struct vmsh_command *c, int argc, char **argv)
{
	struct termios tty;
	bool have_tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &tty) == 0;
	fflush(NULL);
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return c->run(argc, argv);
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(EXIT_VMSH_FAILED);
		int rc = c->run(argc, argv);
		fflush(NULL);
		_exit(rc);
	}
	guarded_child = child;
	static const int fwd[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	for (size_t i = 0; i < ARRAY_SIZE(fwd); i++)
		signal(fwd[i], forward_signal);
	int st;
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			return EXIT_VMSH_FAILED;
	if (WIFSIGNALED(st) && have_tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &tty);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	int sig = WIFSIGNALED(st) ? WTERMSIG(st) : SIGABRT;
	signal(sig, SIG_DFL);
	raise(sig);
	return 128 + sig;
}

int main(int argc, char **argv)
{
	int i = 1, level = LOG_NORMAL;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
			level++;
		else if (!strcmp(a, "-vv"))
			level += 2;
		else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
			level = LOG_QUIET;
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("vmsh %s\n", vmsh_version());
			return 0;
		} else {
			fprintf(stderr, "vmsh: unknown option '%s'\n", a);
			usage(stderr);
			return EXIT_VMSH_USAGE;
		}
	}
	log_set_level(level);
	if (i >= argc) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	/* vmsh help [CMD]: as vmsh [CMD] --help */
	if (!strcmp(argv[i], "help")) {
		if (i + 1 >= argc) {
			usage(stdout);
			return 0;
		}
		for (size_t k = 0; k < ARRAY_SIZE(commands); k++)
			if (!strcmp(argv[i + 1], commands[k].name)) {
				char *help_argv[] = { argv[i + 1], "--help", NULL };
				return commands[k].run(2, help_argv);
			}
		fprintf(stderr, "vmsh: unknown command '%s'\n", argv[i + 1]);
		return EXIT_VMSH_USAGE;
	}
	for (size_t k = 0; k < ARRAY_SIZE(commands); k++)
		if (!strcmp(argv[i], commands[k].name))
			return commands[k].guarded && !getenv("VMSH_NO_GUARD") ? run_guarded(&commands[k], argc - i, argv + i)
								       : commands[k].run(argc - i, argv + i);
	fprintf(stderr, "vmsh: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return EXIT_VMSH_USAGE;
}
