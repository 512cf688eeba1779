/* test_systrace.c - following a process's syscalls (src/tracer/systrace.c)
 * on a child of ours that makes syscalls in a loop: every stop is reported,
 * a changed result reaches the child, and a stop wakes the waiter at once
 * (its SIGCHLD is not dropped). */
#include "unit.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tracer/systrace.h"

#define WAITS 200

/* The child: getppid() forever; exits 3 once a getppid() returns 4242
 * (the tracer's doing), so the test sees its change arrive. */
static pid_t start_child(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		for (;;)
			if (syscall(SYS_getppid) == 4242)
				_exit(3);
	}
	assert_true(pid > 0);
	return pid;
}

static bool sigchld_blocked(void)
{
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	return sigismember(&cur, SIGCHLD);
}

/* The child, killed and reaped whatever the test did. */
static int child_teardown(void **state)
{
	pid_t *child = *state;
	if (*child > 0) {
		kill(*child, SIGKILL);
		waitpid(*child, NULL, __WALL);
	}
	free(child);
	return 0;
}

static int child_setup(void **state)
{
	pid_t *child = malloc(sizeof(*child));
	assert_non_null(child);
	*child = 0;
	*state = child;
	return 0;
}

static void test_stops_wake_the_waiter(void **state)
{
	pid_t *slot = *state;
	assert_false(sigchld_blocked());
	pid_t child = *slot = start_child();
	struct systrace st;
	struct vmsh_err err = { 0 };
	assert_int_equal(systrace_start(&st, child, 0, NULL, 0, &err), 0);
	int getppids = 0;
	for (int i = 0; i < WAITS; i++) {
		pid_t tid;
		struct user_regs_struct regs;
		assert_int_equal(systrace_wait_exit(&st, 5000, &tid, &regs, &err), 1);
		assert_int_equal(tid, child);
		/* a fresh child may still finish libc's own set-up calls */
		getppids += (long)regs.orig_rax == SYS_getppid;
		assert_int_equal(systrace_resume(&st, tid, NULL), 0);
	}
	assert_true(getppids > WAITS / 2);
	/* a busy child stops again within microseconds: only a machine that
	 * did not run it for a whole 2 ms step may make the waiter nap (with
	 * SIGCHLD unblocked, every wait napped: the stops' signals were
	 * dropped) */
	assert_true(st.naps < WAITS / 4);
	assert_int_equal(st.exits, WAITS);
	assert_true(sigchld_blocked());
	/* a result changed at the exit stop is what the child sees */
	pid_t tid;
	struct user_regs_struct regs;
	do
		assert_int_equal(systrace_wait_exit(&st, 5000, &tid, &regs, &err), 1);
	while ((long)regs.orig_rax != SYS_getppid && systrace_resume(&st, tid, NULL) == 0);
	regs.rax = 4242;
	assert_int_equal(systrace_resume(&st, tid, &regs), 0);
	systrace_end(&st, NULL, NULL);
	assert_false(sigchld_blocked());
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	*slot = 0;
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 3);
}

static void test_sigchld_stays_blocked_if_it_was(void **state)
{
	pid_t *slot = *state;
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	pid_t child = *slot = start_child();
	struct systrace st;
	struct vmsh_err err = { 0 };
	assert_int_equal(systrace_start(&st, child, 0, NULL, 0, &err), 0);
	systrace_end(&st, NULL, NULL);
	assert_true(sigchld_blocked());
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stops_wake_the_waiter, child_setup, child_teardown),
		cmocka_unit_test_setup_teardown(test_sigchld_stays_blocked_if_it_was, child_setup, child_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
