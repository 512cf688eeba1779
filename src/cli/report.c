/* report.c - turning an error object into one line and an exit code. */
#include <stdio.h>

#include "cli/commands.h"
#include "common/err.h"
#include "common/escape.h"

int report_error(const char *cmd, const struct vmsh_err *err)
{
	char safe[ESC_SIZE(sizeof(err->msg))]; /* errors quote the guest and other users */
	fprintf(stderr, "vmsh %s: %s%s\n", cmd, err->msg[0] ? esc_str(safe, sizeof(safe), err->msg) : "failed",
		err->kind == VMSH_E_PERM ? " (run as root or with CAP_SYS_PTRACE)" : "");
	switch (err->kind) {
	case VMSH_E_USAGE: return EXIT_VMSH_USAGE;
	case VMSH_E_NOPROC: return EXIT_VMSH_NOPROC;
	case VMSH_E_NOTKVM: return EXIT_VMSH_NOTKVM;
	case VMSH_E_PERM: return EXIT_VMSH_PERM;
	case VMSH_E_AMBIGUOUS: return EXIT_VMSH_AMBIGUOUS;
	case VMSH_E_NOKERNEL: return EXIT_VMSH_NOKERNEL;
	default: return EXIT_VMSH_FAILED;
	}
}
