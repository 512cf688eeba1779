/* cmd_library.c - `vmsh library`: load vmsh's kernel library into a running
 * guest, let it log the kernel version and its load address to the guest's
 * kernel log, and remove it again. Exercises the mechanism `vmsh attach`
 * builds on; --cycles repeats it within one attachment. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "common/clock.h"
#include "common/escape.h"
#include "core/vm.h"
#include "loader/kernel_lib.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh library [--cycles N] [--timeout MS] [--vm-fd FD] PID|NAME\n\n"
		     "Load vmsh's kernel library into the running guest kernel, enter it once (it logs the\n"
		     "kernel version and its load address to the guest's kernel log), and remove it: new\n"
		     "memory slot, page-table entry, everything. --cycles repeats that N times.\n\n"
		     "options:\n"
		     "  -n, --cycles N   load, enter and remove the library N times (default: 1)\n"
		     "      --timeout MS how long each step may wait for the guest (default: 5000)\n"
		     "      --vm-fd FD   the hypervisor's VM fd, when it has more than one VM\n"
		     "  -h, --help       this help\n");
}

/* Load, enter and unload the library `cycles` times; *done counts them. */
static int cycles(struct vm *vm, unsigned n, unsigned timeout_ms, unsigned *done, struct vmsh_err *err)
{
	struct vm_info *info = &vm->info;
	if (vm_need_kernel(vm, err) < 0 || vm_hold(vm, err) < 0)
		return -1;
	unsigned reaped, left;
	if (klib_reap_stale(&vm->kvm, &info->mem, &info->kernel, &info->slots, info->kernel.pt.root, &reaped,
			    &left) == 0 &&
	    (reaped || left))
		printf("earlier vmsh kernel libraries: %u removed, %u still in the guest\n", reaped, left);
	for (*done = 0; *done < n; (*done)++) {
		struct kernel_lib kl;
		if (klib_load(&kl, &vm->kvm, &info->mem, &info->kernel, info->iomem, (size_t)info->n_iomem,
			      &info->slots, vm_gpa_limit(info), err) < 0)
			return vmsh_err_prefix(err, "cycle %u", *done + 1);
		int rc = klib_enter(&kl, timeout_ms, err);
		char msg[ESC_SIZE(sizeof(kl.chan->message))];
		if (rc == 0)
			printf("cycle %u: library at %#llx (gpa %#llx, slot %u) ran on vCPU %d: \"%s\"; entered after "
			       "%.1f ms (%u retries), done after %.1f ms\n",
			       *done + 1, (unsigned long long)kl.region.va, (unsigned long long)kl.slot.gpa, kl.slot.id,
			       kl.entered_vcpu, klib_message(&kl, msg, sizeof(msg)), kl.enter_ns / 1e6, kl.enter_attempts,
			       kl.done_ns / 1e6);
		klib_unload(&kl);
		if (rc < 0)
			return vmsh_err_prefix(err, "cycle %u", *done + 1);
		fflush(stdout);
	}
	return 0;
}

int cmd_library(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cycles", required_argument, 0, 'n' },
		VM_OPTIONS,
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct vm_target t = { .vm_fd = -1, .timeout_ms = 5000 };
	uint64_t n = 1;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "n:h" VM_OPTSTRING, opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (num_option("library", "--cycles", optarg, 1, 1000000, &n) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case OPT_TIMEOUT:
		case OPT_VM_FD:
			if (vm_option("library", c, optarg, &t) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	int rc = vm_target_resolve("library", argv[optind], &t);
	if (rc)
		return rc;
	struct vmsh_err err = { 0 };
	struct vm vm;
	unsigned done = 0;
	if (vm_open_guest(&vm, t.pid, t.vm_fd, false, &err) < 0 || cycles(&vm, (unsigned)n, t.timeout_ms, &done, &err) < 0)
		rc = -1;
	vm_detach(&vm);
	if (rc < 0)
		rc = report_error("library", &err);
	else
		printf("%u cycles done; hypervisor held %.1f ms, %llu injected syscalls\n", done,
		       vm.info.attached_ns / 1e6, (unsigned long long)vm.info.injected_syscalls);
	vm_close(&vm);
	return rc;
}
