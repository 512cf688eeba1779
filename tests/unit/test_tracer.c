/* test_tracer.c - tracer_fixup_restart (src/tracer/tracer.c): registers of a
 * thread stopped in an interrupted syscall become registers that restart it,
 * as the kernel's signal path (arch/x86/kernel/signal.c, no handler) would. */
#include "unit.h"

#include <sys/syscall.h>
#include <sys/user.h>

#include "tracer/tracer.h"

/* include/linux/errno.h: kernel-internal, never seen by user space */
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ENOIOCTLCMD 515
#define ERESTART_RESTARTBLOCK 516

#define RIP 0x7f0000001234ULL /* right after a `syscall` (0f 05) */

static struct user_regs_struct regs_in_syscall(long nr, long rax)
{
	struct user_regs_struct r;
	memset(&r, 0, sizeof(r));
	r.orig_rax = (unsigned long long)nr;
	r.rax = (unsigned long long)rax;
	r.rip = RIP;
	r.rdi = 3;
	r.rsi = 0x7ffd0000;
	r.rdx = 4096;
	r.r10 = 0x55;
	r.rsp = 0x7ffd1000;
	r.eflags = 0x246;
	return r;
}

/* Everything but rax and rip is left alone. */
static void assert_rest_untouched(const struct user_regs_struct *got, const struct user_regs_struct *before)
{
	struct user_regs_struct a = *got, b = *before;
	a.rax = b.rax = 0;
	a.rip = b.rip = 0;
	assert_memory_equal(&a, &b, sizeof(a));
}

static void check_restart(long nr, long err)
{
	struct user_regs_struct r = regs_in_syscall(nr, -err), before = r;
	tracer_fixup_restart(&r);
	assert_int_equal(r.rax, (unsigned long long)nr);
	assert_int_equal(r.rip, RIP - 2);
	assert_int_equal(r.orig_rax, (unsigned long long)nr);
	assert_rest_untouched(&r, &before);
}

static void test_erestartsys_restarts_same_syscall(void **state)
{
	(void)state;
	check_restart(SYS_read, ERESTARTSYS);
	check_restart(SYS_ioctl, ERESTARTSYS); /* KVM_RUN interrupted */
	check_restart(0, ERESTARTSYS);         /* nr 0 (read) is a syscall too */
}

static void test_erestartnointr_restarts_same_syscall(void **state)
{
	(void)state;
	check_restart(SYS_futex, ERESTARTNOINTR);
}

static void test_erestartnohand_restarts_same_syscall(void **state)
{
	(void)state;
	check_restart(SYS_ppoll, ERESTARTNOHAND);
}

static void test_erestart_restartblock_becomes_restart_syscall(void **state)
{
	(void)state;
	assert_int_equal(SYS_restart_syscall, 219);
	struct user_regs_struct r = regs_in_syscall(SYS_nanosleep, -ERESTART_RESTARTBLOCK), before = r;
	tracer_fixup_restart(&r);
	assert_int_equal(r.rax, 219);
	assert_int_equal(r.rip, RIP - 2);
	assert_int_equal(r.orig_rax, SYS_nanosleep);
	assert_rest_untouched(&r, &before);
}

static void assert_unchanged(long nr, long rax)
{
	struct user_regs_struct r = regs_in_syscall(nr, rax), before = r;
	tracer_fixup_restart(&r);
	assert_memory_equal(&r, &before, sizeof(r));
}

static void test_eintr_and_other_results_unchanged(void **state)
{
	(void)state;
	assert_unchanged(SYS_read, -4);            /* -EINTR: reported to the program */
	assert_unchanged(SYS_read, -ENOIOCTLCMD);  /* 515: between the restart codes */
	assert_unchanged(SYS_read, -517);
	assert_unchanged(SYS_read, -511);
	assert_unchanged(SYS_read, 0);
	assert_unchanged(SYS_read, 512);           /* a positive result, not an error */
	assert_unchanged(SYS_read, -22);
}

static void test_not_in_syscall_unchanged(void **state)
{
	(void)state;
	/* orig_rax = -1: stopped outside a syscall, rax is just a register */
	assert_unchanged(-1, -ERESTARTSYS);
	assert_unchanged(-1, -ERESTARTNOINTR);
	assert_unchanged(-1, -ERESTARTNOHAND);
	assert_unchanged(-1, -ERESTART_RESTARTBLOCK);
	assert_unchanged(-1, -4);
	assert_unchanged(-2, -ERESTARTSYS);
}

static void test_fixup_is_idempotent(void **state)
{
	(void)state;
	struct user_regs_struct r = regs_in_syscall(SYS_read, -ERESTARTSYS);
	tracer_fixup_restart(&r);
	struct user_regs_struct once = r;
	tracer_fixup_restart(&r); /* rax is now the syscall number: nothing to do */
	assert_memory_equal(&r, &once, sizeof(r));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_erestartsys_restarts_same_syscall),
		cmocka_unit_test(test_erestartnointr_restarts_same_syscall),
		cmocka_unit_test(test_erestartnohand_restarts_same_syscall),
		cmocka_unit_test(test_erestart_restartblock_becomes_restart_syscall),
		cmocka_unit_test(test_eintr_and_other_results_unchanged),
		cmocka_unit_test(test_not_in_syscall_unchanged),
		cmocka_unit_test(test_fixup_is_idempotent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
