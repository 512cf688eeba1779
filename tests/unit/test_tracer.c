/* test_tracer.c - tracer_fixup_restart (src/tracer/tracer.c): registers of a
 * thread stopped in an interrupted syscall become registers that restart it,
 * as the kernel's signal path (arch/x86/kernel/signal.c, no handler) would.
 * And the places for injection stubs (src/tracer/inject.c): looked for as
 * they are needed, not in every mapping on every attachment. And which
 * threads a stop window holds. */
#include "unit.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/procfs.h"
#include "tracer/internal.h"
#include "tracer/stub.h"
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

static bool in_exec_mapping(const struct proc_map *m, size_t n, uint64_t at)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].perms[2] == 'x' && m[i].start <= at && at + STUB_SITE_SIZE <= m[i].end)
			return true;
	return false;
}

/* A child that only sleeps, attached to as a hypervisor would be. */
static pid_t attach_to_sleeper(struct tracer *t)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		for (;;)
			pause();
	struct vmsh_err err = { 0 };
	assert_int_equal(tracer_attach(t, pid, &err), 0);
	return pid;
}

static void end_sleeper(struct tracer *t, pid_t pid)
{
	tracer_close(t);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* An attachment looks at executable mappings only until it has a few
 * places (each mapping is an open and two reads of /proc/PID/map_files:
 * all ~50 of a hypervisor's took 45-120 ms per attachment on the emulated
 * host, four times per `vmsh attach`); taking more looks further, until
 * every place is found, each once. */
static void test_stub_places_are_looked_for_as_needed(void **state)
{
	(void)state;
	struct tracer t;
	pid_t pid = attach_to_sleeper(&t);
	const size_t per_mapping = 4096 / STUB_SITE_SIZE + 1;
	size_t first = t.n_sites; /* the injection stub has one of them */
	uint64_t got[256];
	size_t n = 0;
	while (n < 256 && tracer_take_site(&t, &got[n]) == 0)
		n++;
	assert_true(t.sites_all);
	assert_int_equal(n + 1, t.n_sites); /* every place found was handed out once */
	struct proc_map *maps;
	size_t nm;
	assert_int_equal(procfs_read_maps(pid, &maps, &nm, NULL), 0);
	for (size_t i = 0; i < n; i++) {
		assert_true(in_exec_mapping(maps, nm, got[i]));
		for (size_t k = 0; k < i; k++)
			assert_true(got[k] != got[i]);
	}
	free(maps);
	for (size_t i = 0; i < n; i++)
		tracer_give_site(&t, got[i]);
	end_sleeper(&t, pid);
	/* this binary has more places than a first look needs (the test means
	 * nothing otherwise), and the first look stopped early */
	assert_true(t.n_sites == 0); /* freed when closed */
	assert_true(n + 1 > 16 + per_mapping);
	assert_true(first <= 16 + per_mapping);
}

/* The places stay over re-attachments to the same process while the
 * mappings they lie in are as they were (looking for them opens each
 * file's /proc/PID/map_files entry: 4-17 ms of every re-attachment on the
 * emulated host, three per `vmsh attach`); a remembered mapping that is
 * not in the maps any more (unmapped, or another file there) has them
 * looked for again. */
static void test_stub_places_kept_while_their_mappings_stay(void **state)
{
	(void)state;
	struct tracer t;
	struct vmsh_err err = { 0 };
	pid_t pid = attach_to_sleeper(&t);
	size_t n = t.n_sites;
	assert_true(n > 0 && t.n_site_maps > 0);
	uint64_t *sites = t.sites, first[256];
	memcpy(first, t.sites, n * sizeof(*first));
	tracer_detach(&t);
	assert_int_equal(tracer_reattach(&t, &err), 0);
	assert_ptr_equal(t.sites, sites); /* kept, not looked for again */
	assert_int_equal(t.n_sites, n);
	assert_memory_equal(t.sites, first, n * sizeof(*first));
	/* one of them "gone": another file in its place, or the same inode
	 * number on another device */
	uint64_t inode = t.site_maps[0].inode, dev = t.site_maps[0].dev;
	tracer_detach(&t);
	t.site_maps[0].inode = inode + 1;
	assert_int_equal(tracer_reattach(&t, &err), 0);
	assert_int_equal(t.site_maps[0].inode, inode); /* read from the maps again */
	tracer_detach(&t);
	t.site_maps[0].dev = dev + 1;
	assert_int_equal(tracer_reattach(&t, &err), 0);
	assert_int_equal(t.site_maps[0].dev, dev);
	assert_true(t.n_sites > 0);
	end_sleeper(&t, pid);
	assert_null(t.sites);
	assert_null(t.site_maps);
}

/* While a stop window holds the target's threads, vmsh's thread runs
 * SCHED_FIFO (a thread it lets go must not take the CPU from it before it
 * has let the others go), and its own policy is back once the window
 * ends. Without the privilege (no CAP_SYS_NICE) the policy stays. */
static void test_stop_windows_run_real_time_and_end_as_they_began(void **state)
{
	(void)state;
	struct sched_param probe = { .sched_priority = 1 };
	bool may = sched_setscheduler(0, SCHED_FIFO, &probe) == 0;
	struct sched_param zero = { .sched_priority = 0 };
	assert_int_equal(sched_setscheduler(0, SCHED_OTHER, &zero), 0);
	struct tracer t;
	struct vmsh_err err = { 0 };
	pid_t pid = attach_to_sleeper(&t);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
		assert_int_equal(tracer_stop_others(&t, &err), 0);
		int in_window = sched_getscheduler(0);
		tracer_resume_others(&t);
		assert_int_equal(in_window, may ? (SCHED_FIFO | SCHED_RESET_ON_FORK) : SCHED_OTHER);
		assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
	}
	/* a window its caller keeps long (a dump with the VM stopped) goes
	 * back to the ordinary policy at once */
	assert_int_equal(tracer_stop_others(&t, &err), 0);
	tracer_window_is_long(&t);
	int long_window = sched_getscheduler(0);
	tracer_resume_others(&t);
	assert_int_equal(long_window, SCHED_OTHER);
	assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
	end_sleeper(&t, pid);
	assert_int_equal(t.stops, 3);
}

/* Two spinning threads of a child, each counting in shared memory and
 * telling its thread id. */
struct spinners {
	volatile unsigned long count[2];
	volatile pid_t tid[2];
};

struct spin_arg {
	struct spinners *sp;
	int i;
};

static void *spin_thread(void *p)
{
	struct spin_arg *a = p;
	a->sp->tid[a->i] = (pid_t)syscall(SYS_gettid);
	for (;;)
		a->sp->count[a->i]++;
	return NULL;
}

static pid_t attach_to_spinners(struct tracer *t, struct spinners *sp)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static struct spin_arg a[2];
		pthread_t th;
		for (int i = 0; i < 2; i++) {
			a[i] = (struct spin_arg){ sp, i };
			if (pthread_create(&th, NULL, spin_thread, &a[i]) != 0)
				_exit(1);
		}
		for (;;)
			pause();
	}
	while (!sp->tid[0] || !sp->tid[1])
		usleep(1000);
	struct vmsh_err err = { 0 };
	assert_int_equal(tracer_attach(t, pid, &err), 0);
	return pid;
}

static bool holds(const struct tracer *t, pid_t tid)
{
	for (size_t i = 0; i < t->n_others; i++)
		if (t->others[i].tid == tid)
			return true;
	return false;
}

/* A window for vCPU state holds only the vCPU threads the last full stop
 * found in KVM_RUN on those vCPUs' fds (which the VM tests see: every
 * window after the first holds as many threads as the guest has vCPUs).
 * Anything less certain makes it a full stop: a vCPU fd without a known
 * thread, a known thread that is gone, or one that is not in KVM_RUN on
 * its fd when stopped (its id may be another thread's now). Here no thread
 * runs a vCPU, so each is told by hand. */
static void test_vcpu_windows_stop_everyone_unless_sure(void **state)
{
	(void)state;
	struct spinners *sp = mmap(NULL, sizeof(*sp), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sp != MAP_FAILED);
	memset(sp, 0, sizeof(*sp));
	struct tracer t;
	struct vmsh_err err = { 0 };
	pid_t pid = attach_to_spinners(&t, sp);
	/* a full stop holds both (and finds no vCPU thread: none is in KVM_RUN) */
	assert_int_equal(tracer_stop_others(&t, &err), 0);
	assert_true(holds(&t, sp->tid[0]) && holds(&t, sp->tid[1]));
	tracer_resume_others(&t);
	assert_int_equal(t.n_vcpu_threads, 0);
	/* an fd no thread is known for */
	assert_int_equal(tracer_stop_vcpus(&t, (const int[]){ 100 }, 1, &err), 0);
	assert_true(holds(&t, sp->tid[0]) && holds(&t, sp->tid[1]));
	tracer_resume_others(&t);
	/* thread 0 said to run "vCPU fd 100", but not in KVM_RUN when stopped */
	t.vcpu_threads[0] = (struct tracer_vcpu_thread){ sp->tid[0], 100 };
	t.n_vcpu_threads = 1;
	unsigned long stops = t.stops;
	assert_int_equal(tracer_stop_vcpus(&t, (const int[]){ 100 }, 1, &err), 0);
	assert_true(holds(&t, sp->tid[0]) && holds(&t, sp->tid[1]));
	unsigned long c0 = sp->count[0], c1 = sp->count[1];
	usleep(20000);
	bool still = sp->count[0] == c0 && sp->count[1] == c1;
	tracer_resume_others(&t);
	assert_true(still);
	assert_int_equal(t.stops, stops + 2); /* the try counts as a window too */
	/* a known thread that is gone */
	t.vcpu_threads[0] = (struct tracer_vcpu_thread){ pid + 100000, 100 };
	t.n_vcpu_threads = 1;
	assert_int_equal(tracer_stop_vcpus(&t, (const int[]){ 100 }, 1, &err), 0);
	assert_true(holds(&t, sp->tid[0]) && holds(&t, sp->tid[1]));
	tracer_resume_others(&t);
	end_sleeper(&t, pid);
	munmap(sp, sizeof(*sp));
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
		cmocka_unit_test(test_stub_places_are_looked_for_as_needed),
		cmocka_unit_test(test_stub_places_kept_while_their_mappings_stay),
		cmocka_unit_test(test_stop_windows_run_real_time_and_end_as_they_began),
		cmocka_unit_test(test_vcpu_windows_stop_everyone_unless_sure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
