/* vcpu_borrow.h - which vCPU may lend itself to the kernel library, and the
 * state it runs the library's entry stub in (guest-lib/entry.S).
 *
 * The stub runs with interrupts off and touches nothing the interrupted code
 * could hold: it queues an irq_work (lock-free, NMI-safe) and waits to be
 * put back. So a vCPU may be borrowed exactly where the CPU itself could
 * deliver an interrupt: interrupts on (RFLAGS.IF), no interrupt shadow, no
 * event half-delivered, no NMI being handled, not in SMM, and its thread
 * stopped inside KVM_RUN (so no I/O exit is waiting for the hypervisor to
 * complete it). That covers a vCPU halted in the idle loop, one running
 * user code (which holds no kernel lock at all) and one in kernel code with
 * interrupts on (which holds no lock an interrupt handler may take). Its
 * registers, segments, GS base and page-table root are saved by vmsh and
 * restored exactly, so the interrupted code cannot tell, except that the
 * irq_work's interrupt arrives: the same thing as any device interrupt.
 *
 * Pure functions on what vmsh read of the vCPU (unit tested); applying them
 * is kernel_lib.c's. */
#ifndef VMSH_VCPU_BORROW_H
#define VMSH_VCPU_BORROW_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmsh/channel.h"

/* Linux x86-64's fixed GDT layout: __KERNEL_CS, __KERNEL_DS */
#define BORROW_KERNEL_CS 0x10
#define BORROW_KERNEL_DS 0x18
/* the page-table-isolation bits of a user CR3 (the user PGD half, user PCID) */
#define BORROW_PTI_CR3_BITS 0x1800ULL

struct borrow_view {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_vcpu_events ev;
	uint32_t mp_state;
	bool in_kvm_run;        /* its thread was stopped inside KVM_RUN */
	uint64_t kernel_gs;     /* MSR_KERNEL_GS_BASE (read for user mode only) */
	bool cr3_maps_lib;      /* sregs.cr3's root maps the library */
	bool pti_cr3_maps_lib;  /* cr3 without BORROW_PTI_CR3_BITS does */
};

enum borrow_kind {
	BORROW_NONE = 0,
	BORROW_KERNEL = 1, /* running kernel code, interrupts on */
	BORROW_USER = 2,   /* running user code */
	BORROW_HALTED = 3, /* halted (idle), interrupts on: the least disturbance */
};

/* May this vCPU be borrowed? If not, why (a phrase: "halted with interrupts
 * off"); *transient says whether waiting may help. */
enum borrow_kind borrow_classify(const struct borrow_view *v, bool *transient, char *why, size_t len);

struct borrow_plan {
	struct kvm_regs regs;    /* to set */
	struct kvm_sregs sregs;  /* to set if sregs_changed */
	bool sregs_changed;
	struct vmsh_borrow saved; /* the library's copy (ret_mode, frame, gpr, user_gs) */
};

/* The state in which the vCPU enters the stub at entry with stack_top as
 * its stack (kind from borrow_classify). deadline_ms: how long the stub spins
 * before it returns on its own where it can (0: at once). */
void borrow_plan(const struct borrow_view *v, enum borrow_kind kind, uint64_t entry, uint64_t stack_top,
		 unsigned deadline_ms, struct borrow_plan *out);

#endif
