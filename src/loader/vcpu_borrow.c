/* vcpu_borrow.c - see vcpu_borrow.h. */
#include "loader/vcpu_borrow.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define RFLAGS_IF (1ULL << 9)
#define RFLAGS_FIXED 0x2ULL
#define EFER_LMA (1ULL << 10)
#define CR0_PG (1ULL << 31)
#define KERNEL_HALF 0xffff800000000000ULL

__attribute__((format(printf, 5, 6))) static enum borrow_kind no(bool *transient, bool t, char *why, size_t len,
								 const char *fmt, ...)
{
	va_list ap;
	*transient = t;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return BORROW_NONE;
}

enum borrow_kind borrow_classify(const struct borrow_view *v, bool *transient, char *why, size_t len)
{
	const struct kvm_sregs *s = &v->sregs;
	const struct kvm_vcpu_events *ev = &v->ev;
	bool halted = v->mp_state == KVM_MP_STATE_HALTED;
	unsigned cpl = s->ss.dpl & 3;
	bool irqs_on = v->regs.rflags & RFLAGS_IF;
	if (v->mp_state != KVM_MP_STATE_RUNNABLE && !halted)
		return no(transient, false, why, len, "not running (offline: KVM mp state %u)", v->mp_state);
	if (!v->in_kvm_run)
		return no(transient, true, why, len, "in the hypervisor, which is handling an exit of it");
	if (ev->smi.smm)
		return no(transient, true, why, len, "in system management mode");
	if (ev->exception.injected || ev->exception.pending || ev->nmi.injected || ev->nmi.pending ||
	    ev->interrupt.injected)
		return no(transient, true, why, len, "taking an exception or interrupt");
	if (ev->nmi.masked)
		return no(transient, true, why, len, "handling an NMI");
	if (ev->interrupt.shadow)
		return no(transient, true, why, len, "in an interrupt shadow");
	if (!(s->efer & EFER_LMA) || !(s->cr0 & CR0_PG) || (!s->cs.l && cpl == 0))
		return no(transient, false, why, len, "not in 64-bit mode");
	if (halted && !irqs_on)
		return no(transient, false, why, len, "halted with interrupts off (stopped for good, or a crash)");
	if (!irqs_on)
		return no(transient, true, why, len, "%s with interrupts off", cpl == 3 ? "in user mode" : "in the kernel");
	if (cpl == 3) {
		if (v->kernel_gs < KERNEL_HALF)
			return no(transient, true, why, len, "in user mode, kernel GS base %#llx is no kernel address",
				  (unsigned long long)v->kernel_gs);
		if (!v->cr3_maps_lib && !v->pti_cr3_maps_lib)
			return no(transient, true, why, len, "in user mode on page tables (cr3 %#llx) that do not map the library",
				  (unsigned long long)s->cr3);
		return BORROW_USER;
	}
	if (cpl != 0)
		return no(transient, false, why, len, "in privilege level %u", cpl);
	if (s->gs.base < KERNEL_HALF)
		return no(transient, true, why, len, "in the kernel with a user GS base %#llx", (unsigned long long)s->gs.base);
	if (!v->cr3_maps_lib)
		return no(transient, true, why, len, "in the kernel on page tables (cr3 %#llx) that do not map the library",
			  (unsigned long long)s->cr3);
	return halted ? BORROW_HALTED : BORROW_KERNEL;
}

static struct kvm_segment kernel_cs(void)
{
	return (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = BORROW_KERNEL_CS, .type = 11,
				     .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
}

static struct kvm_segment kernel_ss(void)
{
	return (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = BORROW_KERNEL_DS, .type = 3,
				     .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
}

void borrow_plan(const struct borrow_view *v, enum borrow_kind kind, uint64_t entry, uint64_t stack_top,
		 unsigned deadline_ms, struct borrow_plan *out)
{
	const struct kvm_regs *r = &v->regs;
	memset(out, 0, sizeof(*out));
	struct vmsh_borrow *b = &out->saved;
	b->state = VMSH_BORROW_RUNNING;
	b->deadline_ms = deadline_ms;
	b->frame[0] = r->rip;
	b->frame[1] = v->sregs.cs.selector;
	b->frame[2] = r->rflags;
	b->frame[3] = r->rsp;
	b->frame[4] = v->sregs.ss.selector;
	const uint64_t gpr[15] = { r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rbp, r->r8,
				   r->r9,  r->r10, r->r11, r->r12, r->r13, r->r14, r->r15 };
	memcpy(b->gpr, gpr, sizeof(gpr));

	out->regs = *r;
	out->regs.rip = entry;
	out->regs.rsp = stack_top & ~15ULL;
	out->regs.rflags = RFLAGS_FIXED; /* interrupts off, AC and DF clear */
	out->sregs = v->sregs;
	if (kind != BORROW_USER) {
		b->ret_mode = VMSH_RET_KERNEL;
		return;
	}
	/* what an interrupt from user mode would do: kernel segments, the
	 * kernel's GS base (swapgs), the kernel half of the page tables (PTI) */
	out->sregs_changed = true;
	out->sregs.cs = kernel_cs();
	out->sregs.ss = kernel_ss();
	out->sregs.gs.base = v->kernel_gs;
	b->user_gs = v->sregs.gs.base;
	if (v->cr3_maps_lib) {
		b->ret_mode = VMSH_RET_USER;
	} else {
		/* the stub could not switch back to a user root that does not map
		 * it: only vmsh can put this vCPU back */
		out->sregs.cr3 = v->sregs.cr3 & ~BORROW_PTI_CR3_BITS;
		b->ret_mode = VMSH_RET_HOST;
	}
	memset(out->sregs.interrupt_bitmap, 0, sizeof(out->sregs.interrupt_bitmap));
}
