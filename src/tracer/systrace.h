/* systrace.h - following the syscalls of some threads of a process for a
 * while (PTRACE_SYSCALL), to see and adjust what a syscall returned before
 * the thread does.
 *
 * vmsh uses it only while a guest driver sets a device up: the hypervisor's
 * vCPU threads report every return from KVM_RUN, and a caller may change a
 * thread's registers (its syscall's result) before it continues. Signals
 * reach the threads as usual. Threads are never stopped for longer than the
 * caller takes to look at one syscall. */
#ifndef VMSH_SYSTRACE_H
#define VMSH_SYSTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/user.h>

#include "common/err.h"

struct systrace_thread {
	pid_t tid;
	bool live;    /* traced and not exited */
	bool stopped; /* in a syscall-exit stop handed to the caller */
};

struct systrace {
	pid_t pid;
	struct systrace_thread *th;
	size_t n;
	unsigned long exits; /* syscall-exit stops seen */
	unsigned long naps;  /* waits that ran their whole step without a stop
	                      * being reported (SIGCHLD, which systrace blocks
	                      * while it follows threads, so that the stops wake
	                      * it) */
	bool sigchld_was_open; /* SIGCHLD unblocked before systrace_start */
};

/* Seize every thread of pid except `skip` and kernel workers - or, if
 * n_only > 0, only those of the threads only[] that still exist - and
 * follow their syscalls. On failure nothing stays traced. Blocks SIGCHLD
 * in the calling thread until systrace_end: unblocked (and not handled),
 * the kernel drops the SIGCHLD of every tracee stop, and each wait would
 * sleep its whole step. Call both from the same thread. */
int systrace_start(struct systrace *st, pid_t pid, pid_t skip, const pid_t *only, size_t n_only,
		   struct vmsh_err *err);
/* Wait up to timeout_ms for a thread to return from a syscall: 1 and *tid,
 * *regs filled (the thread stays stopped until systrace_resume), 0 on
 * timeout, -1 if no thread is left. */
int systrace_wait_exit(struct systrace *st, unsigned timeout_ms, pid_t *tid, struct user_regs_struct *regs,
		       struct vmsh_err *err);
/* Let a stopped thread continue, with new registers if regs is not NULL. */
int systrace_resume(struct systrace *st, pid_t tid, const struct user_regs_struct *regs);
/* Stop following: every thread is let go. A syscall return caught while
 * stopping is first given to on_exit (which may change *regs). */
void systrace_end(struct systrace *st, void (*on_exit)(void *opaque, pid_t tid, struct user_regs_struct *regs),
		  void *opaque);

#endif
