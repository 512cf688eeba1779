/* commands.h - the vmsh command table: one file per command. */
#ifndef VMSH_COMMANDS_H
#define VMSH_COMMANDS_H

#include <stdbool.h>

struct vmsh_command {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
	bool guarded; /* attaches to a hypervisor: run in a child that outlives us (main.c) */
};

int cmd_list(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_library(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_attach(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_coredump(int argc, char **argv);

/* Exit codes of vmsh's own failures (a command's status passes through). */
enum {
	EXIT_VMSH_USAGE = 2,
	EXIT_VMSH_FAILED = 125,
	EXIT_VMSH_NOPROC = 3,
	EXIT_VMSH_NOTKVM = 4,
	EXIT_VMSH_PERM = 5,
	EXIT_VMSH_AMBIGUOUS = 6,
	EXIT_VMSH_NOKERNEL = 7,
};

struct vmsh_err;
/* Print err on stderr and map its kind to an exit code. */
int report_error(const char *cmd, const struct vmsh_err *err);

/* vmsh's version (git describe style), from main.c. */
const char *vmsh_version(void);
/* The head of every --json output: {"format": JSON_FORMAT, "vmsh_version": ...}.
 * The format number changes when a field changes meaning or goes away. */
#define JSON_FORMAT 1
struct json_object;
struct json_object *json_head(void);

#endif
