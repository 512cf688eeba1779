/* mmio_trap.h - catching the guest's accesses to a range of guest-physical
 * addresses that exit to the hypervisor, for a while, without the
 * hypervisor's knowledge.
 *
 * While trapping, every thread of the hypervisor (but the injection thread)
 * is followed with systrace.h. When a KVM_RUN returns with an MMIO exit
 * inside the range, the handler sees the access (and fills in a read), and
 * the hypervisor is told KVM_RUN was interrupted (-EINTR): it simply enters
 * again, and KVM completes the access. Used while a guest driver sets up
 * one of vmsh's devices; the rest of the time nothing is traced. */
#ifndef VMSH_MMIO_TRAP_H
#define VMSH_MMIO_TRAP_H

#include <stdbool.h>
#include <stdint.h>

#include "kvm/kvm.h"
#include "tracer/systrace.h"

struct mmio_access {
	uint64_t gpa;
	uint32_t len;       /* 1..8 */
	bool is_write;
	uint8_t data[8];    /* written bytes, or the handler's answer to a read */
};

/* true: the access was the handler's; false: not (the hypervisor's, as
 * if never trapped) */
typedef bool (*mmio_handler)(void *opaque, struct mmio_access *a);

struct mmio_trap {
	pid_t pid;
	uint64_t lo, hi;    /* [lo, hi) */
	mmio_handler handler;
	void *opaque;
	struct systrace st;
	struct { int fd; uint64_t run; } *runs; /* vCPU fd -> its kvm_run mapping */
	size_t n_runs;
	unsigned long handled, other_exits;
};

/* Start trapping [lo, hi) of vm (the tracer may hold its injection thread,
 * which is skipped; vm must know its vCPUs). vcpu_tids: the vCPUs' threads
 * when every one is known (n_tids == vm's vCPUs): only they can return from
 * KVM_RUN, so only they are followed and the hypervisor's other threads
 * (its main loop, I/O) make their syscalls untraced; else (n_tids 0) every
 * thread is followed. */
int mmio_trap_start(struct mmio_trap *mt, const struct kvm_vm *vm, pid_t skip, const pid_t *vcpu_tids,
		    size_t n_tids, uint64_t lo, uint64_t hi, mmio_handler h, void *opaque, struct vmsh_err *err);
/* Handle exits for up to timeout_ms; returns the accesses handled or -1. */
int mmio_trap_poll(struct mmio_trap *mt, unsigned timeout_ms, struct vmsh_err *err);
/* Stop; an access caught on the way out is still handled. */
void mmio_trap_end(struct mmio_trap *mt);

#endif
