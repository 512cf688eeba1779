/* systrace.c - following syscalls of a process's threads (see systrace.h). */
#include "tracer/systrace.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/procfs.h"
#include "tracer/internal.h"

static struct systrace_thread *find(struct systrace *st, pid_t tid)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->th[i].tid == tid && st->th[i].live)
			return &st->th[i];
	return NULL;
}

static bool listed(const pid_t *only, size_t n_only, pid_t tid)
{
	for (size_t i = 0; i < n_only; i++)
		if (only[i] == tid)
			return true;
	return n_only == 0;
}

int systrace_start(struct systrace *st, pid_t pid, pid_t skip, const pid_t *only, size_t n_only,
		   struct vmsh_err *err)
{
	memset(st, 0, sizeof(*st));
	st->pid = pid;
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	st->sigchld_was_open = !sigismember(&old, SIGCHLD);
	pid_t *tids;
	size_t n;
	if (procfs_list_tasks(pid, &tids, &n, err) < 0) {
		systrace_end(st, NULL, NULL);
		return -1;
	}
	st->th = calloc(n ? n : 1, sizeof(*st->th));
	if (!st->th) {
		free(tids);
		systrace_end(st, NULL, NULL);
		return vmsh_error(err, ENOMEM, "trace threads");
	}
	for (size_t i = 0; i < n; i++) {
		if (tids[i] == skip || !listed(only, n_only, tids[i]) || tracer_is_kernel_worker(pid, tids[i]))
			continue;
		if (ptrace(PTRACE_SEIZE, tids[i], 0, PTRACE_O_TRACESYSGOOD) < 0) {
			if (errno == ESRCH)
				continue;
			vmsh_error(err, errno, "ptrace thread %d", tids[i]);
			free(tids);
			systrace_end(st, NULL, NULL);
			return -1;
		}
		st->th[st->n++] = (struct systrace_thread){ .tid = tids[i], .live = true };
		if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) < 0)
			st->th[st->n - 1].live = false;
	}
	free(tids);
	for (size_t i = 0; i < st->n; i++) {
		struct systrace_thread *th = &st->th[i];
		struct vmsh_err e = { 0 };
		if (!th->live)
			continue;
		if (tracer_wait_stop(th->tid, false, PTRACE_CONT, NULL, &e) < 0) {
			th->live = false;
			continue;
		}
		if (ptrace(PTRACE_SYSCALL, th->tid, 0, 0) < 0)
			th->live = false;
	}
	return 0;
}

/* 1: a syscall-exit stop, 0: handled internally (thread resumed or gone). */
static int classify(struct systrace *st, struct systrace_thread *th, int status)
{
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		th->live = false;
		return 0;
	}
	if (!WIFSTOPPED(status))
		return 0;
	int sig = WSTOPSIG(status), event = status >> 16;
	if (sig == (SIGTRAP | 0x80)) {
		struct __ptrace_syscall_info info;
		long r = ptrace(PTRACE_GET_SYSCALL_INFO, th->tid, sizeof(info), &info);
		if (r > 0 && info.op == PTRACE_SYSCALL_INFO_EXIT) {
			st->exits++;
			th->stopped = true;
			return 1;
		}
		ptrace(PTRACE_SYSCALL, th->tid, 0, 0);
		return 0;
	}
	if (event != 0) {
		/* group-stop or interrupt: keep going */
		ptrace(PTRACE_SYSCALL, th->tid, 0, 0);
		return 0;
	}
	/* signal-delivery-stop: deliver it */
	ptrace(PTRACE_SYSCALL, th->tid, 0, sig);
	return 0;
}

int systrace_wait_exit(struct systrace *st, unsigned timeout_ms, pid_t *tid, struct user_regs_struct *regs,
		       struct vmsh_err *err)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	for (;;) {
		bool any = false;
		for (size_t i = 0; i < st->n; i++) {
			struct systrace_thread *th = &st->th[i];
			if (!th->live)
				continue;
			any = true;
			if (th->stopped)
				continue;
			int status;
			pid_t r = waitpid(th->tid, &status, __WALL | WNOHANG);
			if (r < 0 && errno == ECHILD) {
				th->live = false;
				continue;
			}
			if (r <= 0)
				continue;
			if (classify(st, th, status) == 1) {
				if (ptrace(PTRACE_GETREGS, th->tid, 0, regs) < 0) {
					th->stopped = false;
					ptrace(PTRACE_SYSCALL, th->tid, 0, 0);
					continue;
				}
				*tid = th->tid;
				return 1;
			}
		}
		if (!any)
			return vmsh_error(err, ESRCH, "no traced thread of process %d is left", st->pid);
		if (now_ns() >= deadline)
			return 0;
		/* tracee stops raise SIGCHLD (blocked since systrace_start):
		 * wait for one, or a short step (one may have been taken before
		 * the waitpid above) */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGCHLD);
		struct timespec ts = { 0, 2000000 };
		if (sigtimedwait(&set, NULL, &ts) < 0 && errno == EAGAIN)
			st->naps++;
	}
}

int systrace_resume(struct systrace *st, pid_t tid, const struct user_regs_struct *regs)
{
	struct systrace_thread *th = find(st, tid);
	if (!th || !th->stopped)
		return -1;
	if (regs && ptrace(PTRACE_SETREGS, tid, 0, regs) < 0)
		log_info("thread %d: setting registers: %s", tid, strerror(errno));
	th->stopped = false;
	if (ptrace(PTRACE_SYSCALL, tid, 0, 0) < 0) {
		th->live = false;
		return -1;
	}
	return 0;
}

static void end_thread(struct systrace_thread *th,
		       void (*on_exit)(void *opaque, pid_t tid, struct user_regs_struct *regs), void *opaque)
{
	if (th->stopped) {
		ptrace(PTRACE_DETACH, th->tid, 0, 0);
		th->live = false;
		return;
	}
	if (ptrace(PTRACE_INTERRUPT, th->tid, 0, 0) < 0) {
		th->live = false;
		return;
	}
	for (int guard = 0; guard < 1000 && th->live; guard++) {
		int status;
		pid_t r = waitpid(th->tid, &status, __WALL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			break;
		if (!WIFSTOPPED(status))
			continue;
		int sig = WSTOPSIG(status), event = status >> 16;
		int deliver = 0;
		if (sig == (SIGTRAP | 0x80)) {
			struct __ptrace_syscall_info info;
			if (on_exit && ptrace(PTRACE_GET_SYSCALL_INFO, th->tid, sizeof(info), &info) > 0 &&
			    info.op == PTRACE_SYSCALL_INFO_EXIT) {
				struct user_regs_struct regs, before;
				if (ptrace(PTRACE_GETREGS, th->tid, 0, &regs) == 0) {
					before = regs;
					on_exit(opaque, th->tid, &regs);
					if (memcmp(&regs, &before, sizeof(regs)))
						ptrace(PTRACE_SETREGS, th->tid, 0, &regs);
				}
			}
		} else if (event == 0) {
			deliver = sig;
		}
		/* detaching also drops the interrupt if it is still pending */
		ptrace(PTRACE_DETACH, th->tid, 0, deliver);
		break;
	}
	th->live = false;
}

void systrace_end(struct systrace *st, void (*on_exit)(void *opaque, pid_t tid, struct user_regs_struct *regs),
		  void *opaque)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->th[i].live)
			end_thread(&st->th[i], on_exit, opaque);
	free(st->th);
	st->th = NULL;
	st->n = 0;
	if (st->sigchld_was_open) {
		sigset_t chld;
		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		struct timespec none = { 0, 0 };
		while (sigtimedwait(&chld, NULL, &none) > 0)
			; /* ours, not for a handler the caller may install later */
		pthread_sigmask(SIG_UNBLOCK, &chld, NULL);
		st->sigchld_was_open = false;
	}
}
