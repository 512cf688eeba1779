/* options.c - the options every VM command shares (see options.h). */
#include "cli/options.h"

#include <limits.h>
#include <string.h>
#include <stdio.h>

#include "cli/commands.h"
#include "cli/vmlist.h"
#include "common/err.h"
#include "common/escape.h"
#include "common/num.h"

int num_option(const char *cmd, const char *name, const char *arg, uint64_t min, uint64_t max, uint64_t *out)
{
	if (parse_u64(arg, min, max, out) == 0)
		return 0;
	char safe[ESC_SIZE(64)];
	fprintf(stderr, "vmsh %s: %s wants a whole number from %llu to %llu, not \"%s\"\n", cmd, name,
		(unsigned long long)min, (unsigned long long)max, esc_bytes(safe, sizeof(safe), arg, strnlen(arg, 64)));
	return -1;
}

int vm_option(const char *cmd, int opt, const char *arg, struct vm_target *t)
{
	uint64_t v;
	switch (opt) {
	case OPT_TIMEOUT:
		/* a day at most: the budget is per step, and ten times it in all */
		if (num_option(cmd, "--timeout (milliseconds)", arg, 1, 86400000, &v) < 0)
			return -1;
		t->timeout_ms = (unsigned)v;
		return 0;
	case OPT_VM_FD:
		if (num_option(cmd, "--vm-fd", arg, 0, INT_MAX, &v) < 0)
			return -1;
		t->vm_fd = (int)v;
		return 0;
	default:
		return -1;
	}
}

int vm_target_resolve(const char *cmd, const char *arg, struct vm_target *t)
{
	struct vmsh_err err = { 0 };
	if (vm_resolve(arg, &t->pid, &err) < 0)
		return report_error(cmd, &err);
	return 0;
}
