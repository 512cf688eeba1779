/* test_vcpu_borrow.c - which vCPU vmsh may lend to its kernel library and
 * the state it enters the stub in (src/loader/vcpu_borrow.c). */
#include "unit.h"

#include "loader/vcpu_borrow.h"

#define IF (1ULL << 9)
#define KGS 0xffff88801f000000ULL
#define UGS 0x00007f1234560000ULL
#define ENTRY 0xffffff8000001000ULL
#define STACK 0xffffff8000009008ULL

static struct kvm_segment seg(uint16_t sel, uint8_t dpl, uint8_t l)
{
	return (struct kvm_segment){ .selector = sel, .dpl = dpl, .l = l, .present = 1, .s = 1 };
}

static struct borrow_view kernel_view(uint32_t mp)
{
	struct borrow_view v;
	memset(&v, 0, sizeof(v));
	v.mp_state = mp;
	v.in_kvm_run = true;
	v.regs.rip = 0xffffffff81a0c0deULL;
	v.regs.rsp = 0xffffc90000013e80ULL;
	v.regs.rflags = IF | 0x2 | 0x46;
	v.regs.rax = 1;
	v.regs.r15 = 15;
	v.sregs.cs = seg(0x10, 0, 1);
	v.sregs.ss = seg(0x18, 0, 0);
	v.sregs.gs.base = KGS;
	v.sregs.cr0 = 0x80050033;
	v.sregs.cr3 = 0x24b8000;
	v.sregs.efer = 0xd01;
	v.cr3_maps_lib = true;
	return v;
}

static struct borrow_view user_view(bool pti)
{
	struct borrow_view v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.regs.rip = 0x401432;
	v.regs.rsp = 0x7ffd2e11fa90ULL;
	v.sregs.cs = seg(0x33, 3, 1);
	v.sregs.ss = seg(0x2b, 3, 0);
	v.sregs.gs.base = UGS;
	v.kernel_gs = KGS;
	if (pti) {
		v.sregs.cr3 = 0x24b9000 | 0x800; /* the user PGD, user PCID */
		v.cr3_maps_lib = false;
		v.pti_cr3_maps_lib = true;
	}
	return v;
}

static enum borrow_kind classify(const struct borrow_view *v, bool *transient)
{
	char why[160];
	why[0] = '\0';
	enum borrow_kind k = borrow_classify(v, transient, why, sizeof(why));
	assert_true(k != BORROW_NONE || why[0]);
	return k;
}

static void test_a_halted_vcpu_is_borrowed_in_kernel_mode_on_the_library_stack(void **state)
{
	(void)state;
	struct borrow_view v = kernel_view(KVM_MP_STATE_HALTED);
	bool t;
	assert_int_equal(classify(&v, &t), BORROW_HALTED);
	struct borrow_plan p;
	borrow_plan(&v, BORROW_HALTED, ENTRY, STACK, 1000, &p);
	assert_int_equal(p.regs.rip, ENTRY);
	assert_int_equal(p.regs.rsp, STACK & ~15ULL);
	assert_int_equal(p.regs.rflags, 0x2); /* interrupts off */
	assert_int_equal(p.regs.r15, 15);
	assert_false(p.sregs_changed);
	assert_int_equal(p.saved.ret_mode, VMSH_RET_KERNEL);
	assert_int_equal(p.saved.state, VMSH_BORROW_RUNNING);
	assert_int_equal(p.saved.deadline_ms, 1000);
	assert_int_equal(p.saved.frame[0], v.regs.rip);
	assert_int_equal(p.saved.frame[1], 0x10);
	assert_int_equal(p.saved.frame[2], v.regs.rflags);
	assert_int_equal(p.saved.frame[3], v.regs.rsp);
	assert_int_equal(p.saved.frame[4], 0x18);
	assert_int_equal(p.saved.gpr[0], 1);
	assert_int_equal(p.saved.gpr[14], 15);
}

static void test_a_user_mode_vcpu_enters_as_an_interrupt_would(void **state)
{
	(void)state;
	struct borrow_view v = user_view(false);
	bool t;
	assert_int_equal(classify(&v, &t), BORROW_USER);
	struct borrow_plan p;
	borrow_plan(&v, BORROW_USER, ENTRY, STACK, 1000, &p);
	assert_true(p.sregs_changed);
	assert_int_equal(p.sregs.cs.selector, BORROW_KERNEL_CS);
	assert_int_equal(p.sregs.cs.dpl, 0);
	assert_int_equal(p.sregs.cs.l, 1);
	assert_int_equal(p.sregs.ss.selector, BORROW_KERNEL_DS);
	assert_int_equal(p.sregs.ss.dpl, 0);
	assert_int_equal(p.sregs.gs.base, KGS);      /* swapgs */
	assert_int_equal(p.sregs.cr3, v.sregs.cr3);  /* no PTI: the same root */
	assert_int_equal(p.saved.user_gs, UGS);
	assert_int_equal(p.saved.ret_mode, VMSH_RET_USER);
	assert_int_equal(p.saved.frame[1], 0x33);
	assert_int_equal(p.saved.frame[4], 0x2b);
	assert_int_equal(p.regs.rflags, 0x2);
}

static void test_with_pti_the_kernel_half_is_used_and_only_vmsh_can_put_it_back(void **state)
{
	(void)state;
	struct borrow_view v = user_view(true);
	bool t;
	assert_int_equal(classify(&v, &t), BORROW_USER);
	struct borrow_plan p;
	borrow_plan(&v, BORROW_USER, ENTRY, STACK, 1000, &p);
	assert_int_equal(p.sregs.cr3, 0x24b8000);
	assert_int_equal(p.saved.ret_mode, VMSH_RET_HOST);
}

static void test_kernel_code_with_interrupts_on_may_be_borrowed(void **state)
{
	(void)state;
	struct borrow_view v = kernel_view(KVM_MP_STATE_RUNNABLE);
	bool t;
	assert_int_equal(classify(&v, &t), BORROW_KERNEL);
	/* the order try_enter prefers them in */
	assert_true(BORROW_HALTED > BORROW_USER && BORROW_USER > BORROW_KERNEL && BORROW_KERNEL > BORROW_NONE);
}

static void refused(struct borrow_view v, bool want_transient)
{
	bool t = !want_transient;
	assert_int_equal(classify(&v, &t), BORROW_NONE);
	assert_int_equal(t, want_transient);
}

static void test_contexts_where_no_interrupt_could_come_are_refused(void **state)
{
	(void)state;
	struct borrow_view v = kernel_view(KVM_MP_STATE_HALTED);
	v.regs.rflags &= ~IF;
	refused(v, false); /* halted with interrupts off: for good */
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.regs.rflags &= ~IF;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.in_kvm_run = false; /* an exit the hypervisor has yet to complete */
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.exception.injected = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.interrupt.injected = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.nmi.pending = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.nmi.masked = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.interrupt.shadow = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.ev.smi.smm = 1;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_INIT_RECEIVED);
	refused(v, false);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.sregs.gs.base = UGS; /* kernel entry code before swapgs */
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.cr3_maps_lib = false;
	refused(v, true);
	v = kernel_view(KVM_MP_STATE_RUNNABLE);
	v.sregs.efer = 0; /* not long mode */
	refused(v, false);
	v = user_view(false);
	v.kernel_gs = UGS;
	refused(v, true);
	v = user_view(true);
	v.pti_cr3_maps_lib = false;
	refused(v, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_halted_vcpu_is_borrowed_in_kernel_mode_on_the_library_stack),
		cmocka_unit_test(test_a_user_mode_vcpu_enters_as_an_interrupt_would),
		cmocka_unit_test(test_with_pti_the_kernel_half_is_used_and_only_vmsh_can_put_it_back),
		cmocka_unit_test(test_kernel_code_with_interrupts_on_may_be_borrowed),
		cmocka_unit_test(test_contexts_where_no_interrupt_could_come_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
