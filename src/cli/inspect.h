/* inspect.h - what `vmsh inspect` learns about a running VM, and the one
 * function that learns it with the VM stopped as briefly as possible. */
#ifndef VMSH_INSPECT_H
#define VMSH_INSPECT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "guest/guestmem.h"
#include "guest/iomem.h"
#include "guest/kernel.h"
#include "kvm/kvm.h"

struct inspect_result;

struct inspect_opts {
	pid_t pid;
	int vm_fd;          /* -1: the only VM of the process */
	const char **symbols;
	size_t n_symbols;
	/* if set: analyse the guest while still attached and call this before
	 * detaching (commands that act on the guest) */
	int (*while_attached)(struct kvm_vm *vm, struct inspect_result *res, void *opaque, struct vmsh_err *err);
	void *opaque;
};

struct inspect_vcpu {
	int index, fd;
	pid_t tid;
	struct vcpu_state st;
	bool ok;
	char error[1024];
};

struct inspect_result {
	pid_t pid;
	char exe[256];
	int vm_fd;
	bool seccomp_suspended;
	pid_t inject_tid;

	struct inspect_vcpu *vcpus;
	size_t n_vcpus;

	unsigned guest_phys_bits; /* MAXPHYADDR of the vCPUs' CPUID (hypervisor's), 0 unknown */

	struct memslot_ids slots;
	bool slots_ok;
	char slots_error[1024];

	struct guest_mem mem;
	bool mem_ok;
	char mem_error[1024];

	struct iomem_entry iomem[256];
	int n_iomem;

	struct guest_kernel kernel;
	bool kernel_ok;          /* banner found */
	bool ksyms_ok;           /* symbol table parsed */
	char kernel_error[1024];
	uint64_t free_region;    /* first unused 1 GiB region of the kernel's hole, 0 if none */

	uint64_t *sym_values;    /* per requested symbol */
	bool *sym_found;

	uint64_t stopped_ns;     /* vCPU threads stopped */
	uint64_t attached_ns;    /* hypervisor injection thread held */
	uint64_t total_ns;
	uint64_t injected_syscalls;
};

/* Fill res. Returns -1 (with err) only when nothing useful was learnt; a
 * guest without a recognizable kernel still gives registers and slots. */
int inspect_vm(const struct inspect_opts *o, struct inspect_result *res, struct vmsh_err *err);
void inspect_result_free(struct inspect_result *res);
/* End of the guest-physical space vmsh may place memory in: the guest's
 * physical address width, at most this host's, 2^39 when unknown. */
uint64_t inspect_gpa_limit(const struct inspect_result *res);

#endif
