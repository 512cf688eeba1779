/* test_klib_work.c - what vmsh reads back from the kernel library's channel
 * (src/loader/klib_work.c) is guest data: the interrupt line it reports is
 * range-checked before it reaches KVM_IRQFD, "registered anything" is
 * answered from the library's own fields, and the helper's command line
 * never overflows the channel. */
#include "unit.h"

#include <errno.h>
#include <signal.h>

#include "loader/kernel_lib.h"

static void setup_kl(struct kernel_lib *kl)
{
	memset(kl, 0, sizeof(*kl));
	kl->chan = calloc(1, sizeof(*kl->chan));
	assert_non_null(kl->chan);
}

static void test_interrupt_line_from_the_guest_is_range_checked(void **state)
{
	(void)state;
	struct kernel_lib kl;
	setup_kl(&kl);
	struct vmsh_err err = { 0 };
	uint32_t gsi = 99, irq = 99;
	kl.chan->dev_gsi[0] = 23;
	kl.chan->dev_irq[0] = 11;
	kl.chan->dev_gsi[1] = 22;
	kl.chan->dev_irq[1] = 12;
	kl.chan->gsi = 5; /* device 0's line for older readers: not what the host uses */
	assert_int_equal(klib_irq_line(&kl, 0, &gsi, &irq, &err), 0);
	assert_int_equal(gsi, 23);
	assert_int_equal(irq, 11);
	assert_int_equal(klib_irq_line(&kl, 1, &gsi, &irq, &err), 0);
	assert_int_equal(gsi, 22);
	assert_int_equal(irq, 12);
	gsi = irq = 99;
	assert_int_equal(klib_irq_line(&kl, VMSH_MAX_DEVS, &gsi, &irq, &err), -1);
	assert_int_equal(gsi, 99);
	static const long long bad_gsi[] = { -1, 4096, 1LL << 40, INT64_MIN };
	for (size_t dev = 0; dev < VMSH_MAX_DEVS; dev++)
		for (size_t i = 0; i < sizeof(bad_gsi) / sizeof(bad_gsi[0]); i++) {
			kl.chan->dev_gsi[dev] = bad_gsi[i];
			kl.chan->dev_irq[dev] = 5;
			gsi = irq = 99;
			assert_int_equal(klib_irq_line(&kl, dev, &gsi, &irq, &err), -1);
			assert_int_equal(err.errnum, EPROTO);
			assert_int_equal(gsi, 99); /* nothing taken over */
		}
	kl.chan->dev_gsi[1] = 5;
	kl.chan->dev_irq[1] = -7;
	assert_int_equal(klib_irq_line(&kl, 1, &gsi, &irq, &err), -1);
	kl.chan->dev_irq[1] = 1LL << 33;
	assert_int_equal(klib_irq_line(&kl, 1, &gsi, &irq, &err), -1);
	free(kl.chan);
}

static void test_registered_any(void **state)
{
	(void)state;
	struct kernel_lib kl;
	setup_kl(&kl);
	kl.chan->gsi = -1;
	kl.chan->dev_ok[0] = -22;
	kl.chan->dev_ok[1] = 0;
	assert_false(klib_registered_any(&kl));
	kl.chan->dev_ok[1] = 1;
	assert_true(klib_registered_any(&kl));
	kl.chan->dev_ok[1] = 0;
	kl.chan->dev_gsi[1] = 7; /* the second device's line held */
	assert_true(klib_registered_any(&kl));
	kl.chan->dev_gsi[1] = 0;
	kl.chan->gsi = 5; /* a line held: the guest may still raise it */
	assert_true(klib_registered_any(&kl));
	free(kl.chan);
}

static void test_helper_args_never_overflow_the_channel(void **state)
{
	(void)state;
	struct kernel_lib kl;
	setup_kl(&kl);
	struct vmsh_err err = { 0 };
	assert_int_equal(klib_set_helper_args(&kl, "a\0bc\0", 5, 2, &err), 0);
	assert_memory_equal(kl.chan->helper_argv, "a\0bc\0", 5);
	assert_int_equal(kl.chan->helper_argc, 2);
	size_t big = sizeof(kl.chan->helper_argv) + 1;
	char *args = calloc(1, big);
	assert_int_equal(klib_set_helper_args(&kl, args, big, 1, &err), -1);
	assert_int_equal(err.errnum, E2BIG);
	assert_int_equal(kl.chan->helper_argc, 2); /* unchanged */
	/* a shorter line after a longer one leaves nothing of the longer */
	assert_int_equal(klib_set_helper_args(&kl, "x\0", 2, 1, &err), 0);
	assert_int_equal(kl.chan->helper_argv[2], '\0');
	free(args);
	free(kl.chan);
}

/* A terminating signal pending while vmsh removes its devices (a second
 * SIGTERM: a shell's to the process group plus the one a parent forwards)
 * made the removal's wait give up with EINTR, which left the devices and
 * the library in the guest (seen in CI). The removal's wait is not
 * interruptible; the set-up's is. */
static void test_pending_signal_interrupts_the_setup_wait_only(void **state)
{
	(void)state;
	struct kernel_lib kl;
	setup_kl(&kl);
	kl.chan->state = VMSH_LIB_ENTERED;
	kl.chan->phase = VMSH_PHASE_RUNNING;
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	raise(SIGTERM);
	struct vmsh_err err = { 0 };
	assert_int_equal(klib_wait_phase(&kl, VMSH_PHASE_WAIT_HOST, 50, true, &err), -1);
	assert_int_equal(err.errnum, EINTR);
	/* the removal waits its time out instead, then says so */
	assert_int_equal(klib_wait_phase(&kl, VMSH_PHASE_WAIT_HOST, 50, false, &err), -1);
	assert_int_equal(err.errnum, ETIMEDOUT);
	/* and sees the phase when the library reaches it */
	kl.chan->phase = VMSH_PHASE_WAIT_HOST;
	assert_int_equal(klib_wait_phase(&kl, VMSH_PHASE_WAIT_HOST, 50, false, &err), 0);
	struct timespec none = { 0, 0 };
	sigtimedwait(&term, NULL, &none);
	sigprocmask(SIG_SETMASK, &old, NULL);
	free(kl.chan);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_interrupt_line_from_the_guest_is_range_checked),
		cmocka_unit_test(test_registered_any),
		cmocka_unit_test(test_helper_args_never_overflow_the_channel),
		cmocka_unit_test(test_pending_signal_interrupts_the_setup_wait_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
