/* cmd_library.c - `vmsh library`: load vmsh's kernel library into a running
 * guest, let it log the kernel version and its load address to the guest's
 * kernel log, and remove it again. Exercises the mechanism `vmsh attach`
 * builds on; --cycles repeats it within one attachment. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/inspect.h"
#include "cli/vmlist.h"
#include "common/clock.h"
#include "common/escape.h"
#include "loader/kernel_lib.h"

struct library_run {
	unsigned cycles, timeout_ms;
	unsigned done;
};

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh library [--cycles N] [--timeout MS] [--vm-fd FD] PID|NAME\n\n"
		     "Load vmsh's kernel library into the running guest kernel, enter it once (it logs the\n"
		     "kernel version and its load address to the guest's kernel log), and remove it: new\n"
		     "memory slot, page-table entry, everything. --cycles repeats that N times.\n");
}

static int cycles(struct kvm_vm *vm, struct inspect_result *res, void *opaque, struct vmsh_err *err)
{
	struct library_run *run = opaque;
	if (!res->ksyms_ok)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, 0, "guest kernel not found: %s", res->kernel_error);
	if (!res->slots_ok)
		return vmsh_error(err, 0, "memory slots unknown: %s", res->slots_error);
	unsigned reaped, left;
	if (klib_reap_stale(vm, &res->mem, &res->kernel, &res->slots, res->kernel.pt.root, &reaped, &left) == 0 &&
	    (reaped || left))
		printf("earlier vmsh kernel libraries: %u removed, %u still in the guest\n", reaped, left);
	for (run->done = 0; run->done < run->cycles; run->done++) {
		struct kernel_lib kl;
		if (klib_load(&kl, vm, &res->mem, &res->kernel, res->iomem, (size_t)res->n_iomem, &res->slots,
		      inspect_gpa_limit(res), err) < 0)
			return vmsh_err_prefix(err, "cycle %u", run->done + 1);
		int rc = klib_enter(&kl, run->timeout_ms, err);
		char msg[ESC_SIZE(sizeof(kl.chan->message))];
		if (rc == 0)
			printf("cycle %u: library at %#llx (gpa %#llx, slot %u) ran on vCPU %d: \"%s\"; entered after "
			       "%.1f ms (%u retries), done after %.1f ms\n",
			       run->done + 1, (unsigned long long)kl.region.va, (unsigned long long)kl.slot.gpa, kl.slot.id,
			       kl.entered_vcpu, klib_message(&kl, msg, sizeof(msg)), kl.enter_ns / 1e6, kl.enter_attempts, kl.done_ns / 1e6);
		klib_unload(&kl);
		if (rc < 0)
			return vmsh_err_prefix(err, "cycle %u", run->done + 1);
		fflush(stdout);
	}
	return 0;
}

int cmd_library(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cycles", required_argument, 0, 'n' },
		{ "timeout", required_argument, 0, 't' },
		{ "vm-fd", required_argument, 0, 'f' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct library_run run = { .cycles = 1, .timeout_ms = 5000 };
	struct inspect_opts o = { .vm_fd = -1, .while_attached = cycles, .opaque = &run };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "n:t:f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n': run.cycles = (unsigned)strtoul(optarg, NULL, 10); break;
		case 't': run.timeout_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'f': o.vm_fd = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 1 || run.cycles == 0) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	struct vmsh_err err = { 0 };
	if (vm_resolve(argv[optind], &o.pid, &err) < 0)
		return report_error("library", &err);
	struct inspect_result r;
	int rc = 0;
	if (inspect_vm(&o, &r, &err) < 0)
		rc = report_error("library", &err);
	else
		printf("%u cycles done; hypervisor held %.1f ms, %llu injected syscalls\n", run.done,
		       r.attached_ns / 1e6, (unsigned long long)r.injected_syscalls);
	inspect_result_free(&r);
	return rc;
}
