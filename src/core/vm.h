/* vm.h - one running VM as vmsh sees it, opened and closed as a file is.
 *
 *   vm_open         attach to the hypervisor, read every vCPU's registers
 *                   (all its threads stopped for that moment only) and the
 *                   KVM memory slot ids; the hypervisor's injection thread
 *                   stays held (attached) for the calls that act on the VM
 *   vm_let_go /     detach from / attach again to the hypervisor, keeping
 *   vm_hold         what was learnt (slow guest reads run while it is free)
 *   vm_find_kernel  locate guest RAM and the guest kernel from the outside
 *                   (process_vm_readv): no tracer needed
 *   vm_open_guest   vm_open + vm_find_kernel, the hypervisor let go between
 *   vm_detach       leave the hypervisor as it was; vm->info stays readable
 *   vm_close        vm_detach and free everything
 *
 * Commands are a sequence of these calls (cli/cmd_*.c); what a session adds
 * to the guest is session.h. Everything read from the guest is bounded and
 * checked against what the hypervisor itself says (DESIGN.md section 4). */
#ifndef VMSH_CORE_VM_H
#define VMSH_CORE_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "guest/guestmem.h"
#include "guest/iomem.h"
#include "guest/kernel.h"
#include "kvm/kvm.h"
#include "tracer/tracer.h"

struct vm_vcpu {
	int index, fd;
	pid_t tid;
	struct vcpu_state st;
	bool ok;
	char error[1024];
};

/* What vmsh learnt about the VM. */
struct vm_info {
	pid_t pid;
	char exe[256];
	int vm_fd;
	bool seccomp_suspended;
	pid_t inject_tid;

	struct vm_vcpu *vcpus;
	size_t n_vcpus;

	unsigned guest_phys_bits; /* MAXPHYADDR of the vCPUs' CPUID (hypervisor's), 0 unknown */

	struct memslot_ids slots;
	bool slots_ok;
	char slots_error[1024];

	struct guest_mem mem;
	bool mem_ok;
	char mem_error[1024];

	struct iomem_entry iomem[256];
	int n_iomem;             /* 0: the guest's RAM map was not read (ram_error says why) */
	char ram_error[1024];
	char slot_placing[1280]; /* what placing RAM by memory slots found ("" if not needed) */

	struct guest_kernel kernel;
	bool kernel_ok;          /* banner found */
	bool ksyms_ok;           /* symbol table parsed */
	bool kernel_cached;      /* ... where core/kcache.h said, not by a search of the image */
	char kernel_error[1024];
	uint64_t free_region;    /* first unused 1 GiB region of the kernel's hole, 0 if none */

	uint64_t stopped_ns;     /* vCPU threads stopped */
	uint64_t attached_ns;    /* hypervisor injection thread held */
	uint64_t total_ns;
	uint64_t injected_syscalls;
};

struct vm {
	struct vm_info info;
	struct tracer tr;
	struct kvm_vm kvm;
	bool attached;           /* tr and kvm are open (vm_detach closes them) */
	uint64_t t_open, t_attach;
};

/* vm_fd: the VM's fd in the hypervisor, -1 for its only VM. On failure
 * nothing is left open and vm_close is still safe. */
int vm_open(struct vm *vm, pid_t pid, int vm_fd, struct vmsh_err *err);
/* vm_open, then vm_find_kernel with the hypervisor let go (finding the
 * kernel reads guest memory for up to a second; the VM runs meanwhile):
 * the first step of every command that acts on the guest. Without
 * all_vcpus only the first vCPU in 64-bit mode is read (the others' `ok`
 * stays false): the guest stands still for less. */
int vm_open_guest(struct vm *vm, pid_t pid, int vm_fd, bool all_vcpus, struct vmsh_err *err);
void vm_let_go(struct vm *vm);
int vm_hold(struct vm *vm, struct vmsh_err *err);
/* Fill info.mem, info.kernel, info.iomem (or their *_error). */
void vm_find_kernel(struct vm *vm);
/* The guest kernel's symbols, its memory and its own RAM map are known
 * (vm_find_kernel) and the slots are: what acting on the guest needs; else
 * an error saying why. */
int vm_need_kernel(const struct vm *vm, struct vmsh_err *err);
void vm_detach(struct vm *vm);
void vm_close(struct vm *vm);
/* End of the guest-physical space vmsh may place memory in: the guest's
 * physical address width, at most this host's, 2^39 when unknown. */
uint64_t vm_gpa_limit(const struct vm_info *info);

#endif
