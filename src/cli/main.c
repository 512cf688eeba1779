/* main.c - vmsh entry point: global options and the command table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"

static const struct vmsh_command commands[] = {
	{ "list", "list the KVM virtual machines on this host", cmd_list },
	{ "inspect", "show vCPUs, memory and guest kernel of a running VM", cmd_inspect },
	{ "library", "load vmsh's kernel library into a guest, run it once, remove it", cmd_library },
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
		     "  -h, --help     this help; 'vmsh COMMAND --help' for a command\n");
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
	for (size_t k = 0; k < ARRAY_SIZE(commands); k++)
		if (!strcmp(argv[i], commands[k].name))
			return commands[k].run(argc - i, argv + i);
	fprintf(stderr, "vmsh: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return EXIT_VMSH_USAGE;
}
