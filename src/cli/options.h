/* options.h - what every command that opens a VM shares on its command
 * line: --timeout MS and --vm-fd FD (one table entry each, one checked
 * parser), other numeric options through the same parser, and the
 * VM-resolving first step (PID or name, reported as the command's error). */
#ifndef VMSH_CLI_OPTIONS_H
#define VMSH_CLI_OPTIONS_H

#include <getopt.h>
#include <stdint.h>
#include <sys/types.h>

/* Long only: a short -t would clash with attach's -t (a pty, as in ssh). */
#define OPT_TIMEOUT 0x101
#define OPT_VM_FD 0x100
/* getopt_long entries; the short letters go into each command's optstring */
#define VM_FD_OPTION { "vm-fd", required_argument, 0, OPT_VM_FD }
#define TIMEOUT_OPTION { "timeout", required_argument, 0, OPT_TIMEOUT }
#define VM_OPTIONS TIMEOUT_OPTION, VM_FD_OPTION
#define VM_FD_OPTSTRING ""
#define VM_OPTSTRING ""

struct vm_target {
	pid_t pid;
	int vm_fd;            /* -1: the process's only VM */
	unsigned timeout_ms;  /* for each step that waits on the guest */
};

/* Parse a VM option (OPT_TIMEOUT or OPT_VM_FD) into t; 0, or -1 after
 * printing why ("vmsh CMD: --timeout wants ..."). */
int vm_option(const char *cmd, int opt, const char *arg, struct vm_target *t);
/* A number option in [min, max]; 0, or -1 after printing why. */
int num_option(const char *cmd, const char *name, const char *arg, uint64_t min, uint64_t max, uint64_t *out);
/* PID|NAME to t->pid; 0, or the exit code after printing the error. */
int vm_target_resolve(const char *cmd, const char *arg, struct vm_target *t);

#endif
