/* kvm.h - the hypervisor's KVM objects seen from outside: its VM and vCPU
 * fds, ioctls run inside it, vCPU registers, and memory slot ids.
 *
 * KVM refuses VM and vCPU ioctls from any process but the one that created
 * the VM (the mm check), so every ioctl here is injected into the hypervisor
 * with the tracer, with its argument staged in a scratch page mapped there. */
#ifndef VMSH_KVM_H
#define VMSH_KVM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "tracer/tracer.h"

#define KVM_MAX_VCPUS_SEEN 1024

struct kvm_vcpu_ref {
	int index; /* N of anon_inode:kvm-vcpu:N */
	int fd;    /* fd number in the hypervisor */
	pid_t tid; /* thread seen in KVM_RUN on it, 0 if unknown */
};

/* What /proc/PID/fd says about the KVM objects of a process. */
struct kvm_fds {
	int vm_fds[16];
	size_t n_vms;
	struct kvm_vcpu_ref *vcpus;
	size_t n_vcpus;
};

int kvm_fds_scan(pid_t pid, struct kvm_fds *out, struct vmsh_err *err);
void kvm_fds_free(struct kvm_fds *f);
/* Classify a readlink target of /proc/PID/fd/N: 1 = vm, 2 = vcpu (index in *idx), 0 = other. */
int kvm_fd_kind(const char *target, int *idx);

struct hv_ledger_page;

/* An attached VM: the tracer plus a scratch page in the hypervisor. */
struct kvm_vm {
	struct tracer *tr;
	pid_t pid;
	int vm_fd;
	struct kvm_vcpu_ref *vcpus;
	size_t n_vcpus;
	uint64_t scratch;      /* address of our page in the hypervisor, 0 if none */
	size_t scratch_size;
	struct hv_ledger_page *ledger; /* where objects created in the hypervisor are recorded, if set (hv_ledger.h) */
};

int kvm_vm_open(struct kvm_vm *vm, struct tracer *tr, int vm_fd, const struct kvm_fds *fds, struct vmsh_err *err);
void kvm_vm_close(struct kvm_vm *vm);
/* Let the hypervisor go completely (nothing traced) while keeping what we
 * know about the VM, and take it again later (a new injection thread and
 * scratch area). */
void kvm_vm_release(struct kvm_vm *vm);
int kvm_vm_reacquire(struct kvm_vm *vm, struct vmsh_err *err);

/* ioctl(fd, req, arg) inside the hypervisor. arg (len bytes, may be NULL) is
 * copied in before and out after. *ret gets the result or -errno. */
int kvm_ioctl(struct kvm_vm *vm, int fd, unsigned long req, void *arg, size_t len, int64_t *ret, struct vmsh_err *err);
/* A vCPU ioctl, run in that vCPU's own thread when it was stopped out of
 * KVM_RUN (see tracer_syscall_in), else like kvm_ioctl. Only inside a
 * tracer_stop_others window. */
int kvm_vcpu_ioctl(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, unsigned long req, void *arg, size_t len,
		   int64_t *ret, struct vmsh_err *err);
/* ioctl with an integer argument (no memory). */
int kvm_ioctl_val(struct kvm_vm *vm, int fd, unsigned long req, uint64_t val, int64_t *ret, struct vmsh_err *err);

struct vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
};
/* Stop the vCPUs' threads for a window on vCPU state (tracer_stop_vcpus:
 * only those threads where they are known); tracer_resume_others ends it. */
int kvm_vm_stop_vcpus(struct kvm_vm *vm, struct vmsh_err *err);
/* ... of vCPU i (vm->vcpus[i]) only. */
int kvm_vm_stop_vcpu(struct kvm_vm *vm, size_t i, struct vmsh_err *err);
/* Must be called while every vCPU thread is stopped (tracer_stop_others). */
int kvm_vcpu_get_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct vcpu_state *st, struct vmsh_err *err);

/* The guest's physical address width (MAXPHYADDR) from the CPUID the
 * hypervisor gave this vCPU (KVM_GET_CPUID2, leaf 0x80000008): set by the
 * hypervisor, not guest data.  *bits = 0 when the leaf is absent.  Must be
 * called while the vCPU thread is stopped, like kvm_vcpu_get_state. */
int kvm_vcpu_phys_bits(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, unsigned *bits, struct vmsh_err *err);
/* This host CPU's physical address width (CPUID 0x80000008), 36 if unknown. */
unsigned host_phys_bits(void);

int kvm_vcpu_set_regs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, const struct kvm_regs *regs,
		      struct vmsh_err *err);
int kvm_vcpu_get_regs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct kvm_regs *regs, struct vmsh_err *err);
int kvm_vcpu_set_sregs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, const struct kvm_sregs *sregs,
		       struct vmsh_err *err);
/* KVM_GET_VCPU_EVENTS: exceptions, interrupts and NMIs pending or being
 * injected, the interrupt shadow, SMM. */
int kvm_vcpu_get_events(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct kvm_vcpu_events *ev,
			struct vmsh_err *err);
/* One MSR of the vCPU (KVM_GET_MSRS). */
int kvm_vcpu_get_msr(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t index, uint64_t *value,
		     struct vmsh_err *err);
int kvm_vcpu_get_mp_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t *state, struct vmsh_err *err);
int kvm_vcpu_set_mp_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t state, struct vmsh_err *err);
/* KVM_SET_USER_MEMORY_REGION; *ret gets 0 or -errno (EEXIST: range taken). */
int kvm_set_memory_region(struct kvm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva,
			  int64_t *ret, struct vmsh_err *err);

/* Memory slot ids in use in address space as_id, found without side effects
 * (see memslots.c): no guest-chosen address is involved. */
struct memslot_ids {
	uint32_t *ids;
	size_t n;
	uint32_t max_probed; /* highest id probed from 0 up */
	uint32_t top_from;   /* ids from here to limit-1 were probed too (where vmsh
				takes its own: shows other sessions' slots) */
	uint32_t limit;      /* KVM_CAP_NR_MEMSLOTS */
	unsigned probes;
};
int kvm_memslot_ids(struct kvm_vm *vm, int as_id, struct memslot_ids *out, struct vmsh_err *err);
/* Did that probe answer for id (listed, or probed and free)? Ids between
 * the low ones and the top ones it probed were not looked at: a killed
 * run's slot may lie there, below a run of free ids of sessions that ended
 * since (kvm_memslot_id_used tells). */
bool memslot_ids_cover(const struct memslot_ids *ids, uint32_t id);
/* Is slot id used in address space as_id? 1 used, 0 free, -1 error (the VM
 * has no slot at all below 8 TiB: a probe that created one was undone). */
int kvm_memslot_id_used(struct kvm_vm *vm, int as_id, uint32_t id, struct vmsh_err *err);

/* The probe's range: [0, KVM_MEM_MAX_NR_PAGES pages) on x86, which overlaps
 * every slot a running guest has. */
#define MEMSLOT_PROBE_SIZE (((1ULL << 31) - 1) * 4096ULL)

/* Pure decision logic of one probe, for unit tests: given the result of
 * KVM_SET_USER_MEMORY_REGION(probe), is the slot id used?  1 used, 0 free,
 * -1 unexpected (the probe must then stop). */
int memslot_probe_verdict(int64_t ioctl_ret);
/* Build the probe region for id (as_id). */
void memslot_probe_region(struct kvm_userspace_memory_region *r, int as_id, uint32_t id);
/* Delete id again: only after a probe of that id returned 0 (it created it). */
void memslot_undo_region(struct kvm_userspace_memory_region *r, int as_id, uint32_t id);

/* Does slot `id` (address space 0) hold exactly [hva, hva+size) with the
 * READONLY bit of flags? Asked without side effects: first whether the id is
 * used at all (the probe above), then a move of that slot to probe_gpa,
 * which must lie in guest RAM (another slot): KVM refuses it with EEXIST
 * (the range overlaps) if the id holds that memory and with EINVAL if it
 * holds other memory. 1 yes, 0 no, -1 error. If probe_gpa was not in guest
 * RAM after all, KVM moves the slot: it is moved back to slot_gpa at once
 * and the answer is -1. size: a power of two, at least a page. */
int kvm_slot_holds(struct kvm_vm *vm, uint32_t id, uint32_t flags, uint64_t hva, uint64_t size, uint64_t slot_gpa,
		   uint64_t probe_gpa, struct vmsh_err *err);
/* Is slot `id` (address space 0, not read-only) made of exactly [hva,
 * hva+size), wherever it lies? Three move probes of the id to a range
 * around probe_gpa, which must lie in guest RAM (the kernel's page-table
 * root): [hva, hva+size-4K) answers EINVAL only if the id is used (a free
 * id's create overlaps RAM: EEXIST); [hva, hva+size) EEXIST if it is that
 * memory (the move overlaps RAM) and EINVAL if not; the first once more,
 * so that an id freed in between (whose EEXIST would read as "yes") cannot
 * pass. 1 yes, 0 no, -1 error (a probe that created a slot is undone). */
int kvm_slot_is_memory(struct kvm_vm *vm, uint32_t id, uint64_t hva, uint64_t size, uint64_t probe_gpa,
		       struct vmsh_err *err);
/* Pure parts, for unit tests: the move probe, and the answer from whether
 * the id is used and the move probe's result (1, 0, -1 unexpected). */
void memslot_holds_region(struct kvm_userspace_memory_region *r, uint32_t id, uint32_t flags, uint64_t hva,
			  uint64_t size, uint64_t probe_gpa);
int memslot_holds_verdict(int used, int64_t move_ret);

#endif
