/* tracer.c - ptrace attach, stop-the-world windows and clean detach (see
 * tracer.h; running syscalls in the target is inject.c). */
#include "tracer/tracer.h"

#include "common/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/procfs.h"
#include "tracer/internal.h"


/* kernel-internal restart codes, visible to a tracer in rax */
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516

static const int blocked_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGPIPE };

void tracer_fixup_restart(struct user_regs_struct *regs)
{
	if ((long)regs->orig_rax < 0)
		return;
	switch ((long)regs->rax) {
	case -ERESTARTSYS:
	case -ERESTARTNOINTR:
	case -ERESTARTNOHAND:
		regs->rax = regs->orig_rax;
		regs->rip -= 2;
		break;
	case -ERESTART_RESTARTBLOCK:
		regs->rax = SYS_restart_syscall;
		regs->rip -= 2;
		break;
	default:
		break;
	}
}

bool tracer_is_kernel_worker(pid_t pid, pid_t tid)
{
	unsigned long flags;
	if (procfs_task_flags(pid, tid, &flags) < 0)
		return false;
	return flags & (PF_KTHREAD_FLAG | PF_USER_WORKER_FLAG | PF_IO_WORKER_FLAG);
}

static int seize(struct tracer *t, pid_t tid, struct vmsh_err *err)
{
	long opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_SUSPEND_SECCOMP;
	if (ptrace(PTRACE_SEIZE, tid, 0, opts) == 0) {
		t->seccomp_suspended = true;
		return 0;
	}
	/* PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and a kernel with
	 * CONFIG_CHECKPOINT_RESTORE; without it a confined hypervisor might kill
	 * itself on an injected syscall, so say so. */
	if (errno == EPERM || errno == EINVAL) {
		if (ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD) == 0) {
			t->seccomp_suspended = false;
			return 0;
		}
	}
	if (errno == EPERM)
		return vmsh_error_kind(err, VMSH_E_PERM, errno,
				       "ptrace thread %d (check kernel.yama.ptrace_scope)", tid);
	if (errno == ESRCH)
		return vmsh_error_kind(err, VMSH_E_NOPROC, errno, "ptrace thread %d", tid);
	return vmsh_error(err, errno, "ptrace seize thread %d", tid);
}

/* Wait until tid enters the ptrace-stop we asked for. Signal-delivery stops on
 * the way are held back (recorded in *pending) and the thread is resumed with
 * `resume_req` so it reaches the stop we want. Returns the wait status. */
int tracer_wait_stop(pid_t tid, bool want_syscall_stop, int resume_req, int *pending, struct vmsh_err *err)
{
	for (int guard = 0; guard < 1000; guard++) {
		int status;
		pid_t r = waitpid(tid, &status, __WALL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return vmsh_error(err, errno, "waitpid thread %d", tid);
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH, "thread %d exited while traced", tid);
		if (!WIFSTOPPED(status))
			continue;
		int sig = WSTOPSIG(status);
		int event = status >> 16;
		if (want_syscall_stop && sig == (SIGTRAP | 0x80))
			return status;
		if (!want_syscall_stop && event == PTRACE_EVENT_STOP)
			return status;
		if (event == PTRACE_EVENT_STOP) {
			/* group-stop or a stale interrupt: keep going */
			ptrace(resume_req, tid, 0, 0);
			continue;
		}
		if (event == 0 && sig != (SIGTRAP | 0x80)) {
			/* signal-delivery-stop: without `pending`, the thread runs its
			 * own registers: deliver the signal now. With it, the thread
			 * is about to run an injected syscall: hold the signal back. */
			if (!pending) {
				ptrace(resume_req, tid, 0, sig);
				continue;
			}
			if (!*pending)
				*pending = sig;
			else if (*pending != sig)
				log_debug("thread %d: dropping duplicate signal %d while traced", tid, sig);
		}
		ptrace(resume_req, tid, 0, 0);
	}
	return vmsh_error(err, EIO, "thread %d never reached its ptrace stop", tid);
}

void tracer_reraise(pid_t pid, pid_t tid, int sig)
{
	if (sig > 0 && syscall(SYS_tgkill, pid, tid, sig) < 0)
		log_debug("re-raising signal %d on thread %d: %s", sig, tid, strerror(errno));
}

static void block_signals(struct tracer *t)
{
	sigset_t set;
	sigemptyset(&set);
	for (size_t i = 0; i < ARRAY_SIZE(blocked_signals); i++)
		sigaddset(&set, blocked_signals[i]);
	sigprocmask(SIG_BLOCK, &set, &t->saved_sigmask);
}

/* Stop one thread with PTRACE_INTERRUPT (it must be seized). */
static int interrupt_thread(pid_t tid, int *pending, struct vmsh_err *err)
{
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0)
		return vmsh_error(err, errno, "interrupt thread %d", tid);
	return tracer_wait_stop(tid, false, PTRACE_CONT, pending, err) < 0 ? -1 : 0;
}

static bool regs_in_kvm_run(const struct user_regs_struct *r)
{
	return (long)r->orig_rax == SYS_ioctl && r->rsi == KVM_RUN;
}

bool tracer_target_gone(const struct tracer *t)
{
	/* a pidfd polls readable once its process has exited */
	struct pollfd p = { t->pidfd, POLLIN, 0 };
	return t->pidfd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

static int attach_threads(struct tracer *t, pid_t pid, int pidfd, struct vmsh_err *err);

int tracer_attach(struct tracer *t, pid_t pid, struct vmsh_err *err)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0 && errno == ESRCH)
		return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH, "process %d", pid);
	if (pidfd < 0)
		log_verbose("pidfd_open(%d): %s: PID reuse cannot be detected", pid, strerror(errno));
	memset(t, 0, sizeof(*t)); /* a first attachment: no statistics yet */
	int rc = attach_threads(t, pid, pidfd, err);
	if (rc < 0) {
		inject_forget_sites(t);
		if (pidfd >= 0)
			close(pidfd);
		t->pidfd = -1;
	}
	return rc;
}

int tracer_reattach(struct tracer *t, struct vmsh_err *err)
{
	if (t->attached)
		return 0;
	if (tracer_target_gone(t))
		return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH,
				       "process %d has exited (its PID may belong to another process now): not attaching "
				       "to it again", t->pid);
	return attach_threads(t, t->pid, t->pidfd, err);
}

void tracer_close(struct tracer *t)
{
	tracer_detach(t);
	inject_forget_sites(t);
	if (t->pidfd >= 0)
		close(t->pidfd);
	t->pidfd = -1;
}

static int attach_threads(struct tracer *t, pid_t pid, int pidfd, struct vmsh_err *err)
{
	/* the statistics add up over re-attachments (tracer_reattach) */
	uint64_t stopped = t->stopped_ns, injected = t->injected_syscalls;
	unsigned long stops = t->stops;
	/* so do the stacks seen: the same process (pidfd), and a thread's stack
	 * stays where it is while the thread lives */
	struct tracer_stack stacks[TRACER_STACKS];
	size_t n_stacks = pidfd >= 0 && pid == t->pid ? t->n_stacks : 0;
	memcpy(stacks, t->stacks, sizeof(stacks));
	/* and the vCPU threads: a thread runs the same vCPU while it lives
	 * (one that is gone makes the next vCPU window a full stop) */
	struct tracer_vcpu_thread vcpu_threads[TRACER_VCPU_THREADS];
	size_t n_vcpu_threads = pidfd >= 0 && pid == t->pid ? t->n_vcpu_threads : 0;
	memcpy(vcpu_threads, t->vcpu_threads, sizeof(vcpu_threads));
	/* and the places for stubs, checked against the maps before use */
	if (pidfd < 0 || pid != t->pid)
		inject_forget_sites(t);
	struct tracer sites = *t;
	memset(t, 0, sizeof(*t));
	t->sites = sites.sites;
	t->site_used = sites.site_used;
	t->n_sites = sites.n_sites;
	t->sites_all = sites.sites_all;
	t->site_maps = sites.site_maps;
	t->n_site_maps = sites.n_site_maps;
	memcpy(t->stacks, stacks, sizeof(stacks));
	memcpy(t->vcpu_threads, vcpu_threads, sizeof(vcpu_threads));
	t->n_vcpu_threads = n_vcpu_threads;
	t->n_stacks = n_stacks;
	t->stopped_ns = stopped;
	t->stops = stops;
	t->injected_syscalls = injected;
	t->pid = pid;
	t->pidfd = pidfd;
	t->window_policy = -1; /* no window open */
	const char *die = getenv("VMSH_TEST_DIE_AT_SYSCALL");
	t->die_at_syscall = die ? strtoull(die, NULL, 10) : 0;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH, "process %d", pid);

	pid_t *tids;
	size_t n;
	if (procfs_list_tasks(pid, &tids, &n, err) < 0)
		return -1;
	t->n_threads = n;
	block_signals(t);

	/* Prefer the thread-group leader; skip threads caught inside KVM_RUN
	 * (vCPU threads) so the guest keeps running while we work. */
	int rc = -1;
	pid_t fallback = 0;
	for (int pass = 0; pass < 2 && rc < 0; pass++) {
		for (size_t i = 0; i < n && rc < 0; i++) {
			pid_t tid = tids[i];
			if (tracer_is_kernel_worker(pid, tid))
				continue;
			if (pass == 1 && tid != fallback)
				continue;
			if (seize(t, tid, err) < 0) {
				if (err && err->kind == VMSH_E_PERM)
					goto out;
				continue;
			}
			if (interrupt_thread(tid, NULL, err) < 0) {
				ptrace(PTRACE_DETACH, tid, 0, 0);
				continue;
			}
			struct user_regs_struct regs;
			if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0) {
				vmsh_error(err, errno, "read registers of thread %d", tid);
				ptrace(PTRACE_DETACH, tid, 0, 0);
				continue;
			}
			if (pass == 0 && regs_in_kvm_run(&regs)) {
				if (!fallback)
					fallback = tid;
				ptrace(PTRACE_DETACH, tid, 0, 0);
				continue;
			}
			tracer_fixup_restart(&regs);
			t->main.saved = regs;
			t->main.saved_valid = true;
			t->main.tid = tid;
			t->attached = true;
			rc = 0;
		}
	}
	if (rc < 0 && err && !err->msg[0])
		vmsh_error(err, ESRCH, "no thread of process %d could be stopped", pid);
out:
	free(tids);
	if (rc < 0) {
		sigprocmask(SIG_SETMASK, &t->saved_sigmask, NULL);
		return vmsh_err_prefix(err, "attach to process %d", pid);
	}
	if (tracer_target_gone(t)) {
		/* it exited before we seized: whatever we hold is not it */
		tracer_detach(t);
		return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH,
				       "process %d has exited (its PID may belong to another process now): not attached",
				       pid);
	}
	if (inject_setup(t, err) < 0) {
		vmsh_err_prefix(err, "attach to process %d", pid);
		tracer_detach(t);
		return -1;
	}
	if (!t->seccomp_suspended)
		log_verbose("seccomp filters of process %d could not be suspended (needs CAP_SYS_ADMIN)", pid);
	log_debug("attached to %d, injecting in thread %d through the stub at %#llx", pid, t->main.tid,
		  (unsigned long long)t->main.stub);
	return 0;
}

/* While the vCPUs are held, vmsh's thread runs real-time (the lowest
 * SCHED_FIFO priority) where it may: a vCPU thread it lets go - or sends
 * into the library - would otherwise take the CPU from it in the middle of
 * letting the others go (seen on the one-CPU emulated host: 5-8 ms of a
 * window went to the first vCPU released running its guest while the
 * second stayed stopped). Everything vmsh does in a window is short and
 * bounded (a caller whose window is not says so: tracer_window_is_long);
 * waiting for a thread's stop it sleeps. Without the privilege
 * (or already real-time) nothing changes; the policy goes back when the
 * window ends. */
static void window_priority_raise(struct tracer *t)
{
	t->window_policy = -1;
	int policy = sched_getscheduler(0);
	if (policy != SCHED_OTHER && policy != SCHED_BATCH && policy != SCHED_IDLE)
		return;
	struct sched_param p = { .sched_priority = 1 };
	if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &p) == 0)
		t->window_policy = policy;
}

static void window_priority_restore(struct tracer *t)
{
	if (t->window_policy < 0)
		return;
	struct sched_param p = { .sched_priority = 0 };
	if (sched_setscheduler(0, t->window_policy, &p) < 0)
		log_info("vmsh's scheduling policy back from real-time: %s", strerror(errno));
	t->window_policy = -1;
}

void tracer_window_is_long(struct tracer *t)
{
	window_priority_restore(t);
}

/* Is tid a thread of process pid? */
static bool thread_of(pid_t pid, pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)pid, (int)tid);
	return access(path, F_OK) == 0;
}

/* Stop the threads tids: with fds NULL every other thread of the process,
 * as listed; otherwise each must be there and in KVM_RUN on fds[i] (else
 * -1, with those stopped held for the caller to let go). Takes tids. */
static int stop_threads(struct tracer *t, pid_t *tids, const int *fds, size_t n, struct vmsh_err *err)
{
	bool all = !fds;
	/* the first window of a process: the threads' stacks, from the maps
	 * read before anyone is stopped (a large hypervisor's take
	 * milliseconds to read, every thread then waiting) */
	struct proc_map *maps = NULL;
	size_t n_maps = 0;
	bool lost = false;
	if (!t->n_stacks) {
		struct vmsh_err e = { 0 };
		if (procfs_read_maps(t->pid, &maps, &n_maps, &e) < 0)
			maps = NULL; /* read in the window then */
	}
	if (!t->stop_t0) {
		window_priority_raise(t);
		t->stop_t0 = now_ns(); /* counted until tracer_resume_others */
	}
	free(t->others);
	t->others = calloc(n, sizeof(*t->others));
	t->n_others = 0;
	if (!t->others) {
		free(tids);
		free(maps);
		t->stop_t0 = 0;
		window_priority_restore(t);
		return vmsh_error(err, ENOMEM, "stop threads");
	}
	/* seize and interrupt all first, then collect the stops: the window in
	 * which the first thread waits for the last one stays short */
	for (size_t i = 0; i < n; i++) {
		if (tids[i] == t->main.tid || tracer_is_kernel_worker(t->pid, tids[i]))
			continue;
		struct vmsh_err e2 = { 0 };
		if (!all && !thread_of(t->pid, tids[i])) { /* remembered: an id of another process's now? */
			lost = true;
			continue;
		}
		if (seize(t, tids[i], &e2) < 0) {
			lost |= !all;
			continue; /* thread exited meanwhile */
		}
		if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) < 0) {
			ptrace(PTRACE_DETACH, tids[i], 0, 0);
			lost |= !all;
			continue;
		}
		t->others[t->n_others++] = (struct inj_thread){ .tid = tids[i], .kvm_run_fd = -1,
								.want_fd = all ? -1 : fds[i] };
	}
	free(tids);
	for (size_t i = 0; i < t->n_others; i++) {
		struct inj_thread *th = &t->others[i];
		struct vmsh_err e2 = { 0 };
		if (tracer_wait_stop(th->tid, false, PTRACE_CONT, NULL, &e2) < 0) {
			/* exited (or never stopped: let it go if it still can be) */
			ptrace(PTRACE_DETACH, th->tid, 0, 0);
			th->tid = 0;
			lost |= !all;
			continue;
		}
		struct user_regs_struct regs;
		if (ptrace(PTRACE_GETREGS, th->tid, 0, &regs) == 0) {
			if (regs_in_kvm_run(&regs)) {
				th->in_kvm_run = true;
				th->kvm_run_fd = (int)regs.rdi;
			}
			tracer_fixup_restart(&regs);
			th->saved = regs;
			th->saved_valid = true;
		}
		/* not on its vCPU (it may be serving an exit; or the thread id
		 * is another thread's now): a full stop finds out */
		lost |= !all && (!th->in_kvm_run || th->kvm_run_fd != th->want_fd);
	}
	if (maps)
		inject_learn_stacks(t, maps, n_maps);
	t->window_maps = maps; /* freed once the window is over (a large free is an munmap) */
	if (lost) /* one asked for is gone: the caller lets the others go again */
		return vmsh_error(err, ESRCH, "a thread to stop is gone");
	if (all) {
		t->n_vcpu_threads = 0;
		for (size_t i = 0; i < t->n_others && t->n_vcpu_threads < TRACER_VCPU_THREADS; i++)
			if (t->others[i].tid && t->others[i].in_kvm_run)
				t->vcpu_threads[t->n_vcpu_threads++] =
					(struct tracer_vcpu_thread){ t->others[i].tid, t->others[i].kvm_run_fd };
	}
	return 0;
}

int tracer_stop_others(struct tracer *t, struct vmsh_err *err)
{
	pid_t *tids;
	size_t n;
	if (procfs_list_tasks(t->pid, &tids, &n, err) < 0)
		return -1;
	return stop_threads(t, tids, NULL, n, err);
}

void tracer_guess_vcpu_threads(struct tracer *t)
{
	pid_t *tids;
	size_t n;
	if (t->n_vcpu_threads || procfs_list_tasks(t->pid, &tids, &n, NULL) < 0)
		return;
	for (size_t i = 0; i < n && t->n_vcpu_threads < TRACER_VCPU_THREADS; i++) {
		char path[64], line[256];
		snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)t->pid, (int)tids[i]);
		_cleanup_close_ int fd = tids[i] == t->main.tid ? -1 : open(path, O_RDONLY | O_CLOEXEC);
		ssize_t got = fd >= 0 ? read(fd, line, sizeof(line) - 1) : -1;
		if (got <= 0)
			continue;
		line[got] = '\0';
		long nr;
		unsigned long long a0, a1;
		if (sscanf(line, "%ld %llx %llx", &nr, &a0, &a1) == 3 && nr == SYS_ioctl && a1 == KVM_RUN && a0 < INT_MAX)
			t->vcpu_threads[t->n_vcpu_threads++] = (struct tracer_vcpu_thread){ tids[i], (int)a0 };
	}
	free(tids);
}

int tracer_stop_vcpus(struct tracer *t, const int *fds, size_t n, struct vmsh_err *err)
{
	pid_t *tids = n && n <= t->n_vcpu_threads ? calloc(n, sizeof(*tids)) : NULL;
	for (size_t i = 0; tids && i < n; i++) {
		for (size_t k = 0; k < t->n_vcpu_threads && !tids[i]; k++)
			if (t->vcpu_threads[k].fd == fds[i])
				tids[i] = t->vcpu_threads[k].tid;
		if (!tids[i]) {
			free(tids);
			tids = NULL;
		}
	}
	if (tids) {
		struct vmsh_err e = { 0 };
		if (stop_threads(t, tids, fds, n, &e) == 0)
			return 0;
		tracer_resume_others(t);
		log_verbose("a vCPU's thread is gone or not in KVM_RUN: stopping every thread");
	}
	return tracer_stop_others(t, err);
}

struct inj_thread *tracer_vcpu_thread(struct tracer *t, int fd)
{
	for (size_t i = 0; i < t->n_others; i++)
		if (t->others[i].tid && t->others[i].in_kvm_run && t->others[i].kvm_run_fd == fd)
			return &t->others[i];
	return NULL;
}

void tracer_resume_others(struct tracer *t)
{
	size_t n_th = t->n_others;
	for (size_t i = 0; i < t->n_others; i++) {
		struct inj_thread *th = &t->others[i];
		if (!th->tid)
			continue;
		inject_thread_teardown(t, th); /* its registers are back after every injected syscall */
		ptrace(PTRACE_DETACH, th->tid, 0, 0);
		tracer_reraise(t->pid, th->tid, th->pending_sig);
	}
	t->n_others = 0;
	if (t->stop_t0) {
		log_debug("stop window %lu: %.1f ms, %zu threads held", t->stops + 1, (now_ns() - t->stop_t0) / 1e6, n_th);
		t->stopped_ns += now_ns() - t->stop_t0;
		t->stops++;
		t->stop_t0 = 0;
		window_priority_restore(t);
	}
	free(t->window_maps);
	t->window_maps = NULL;
}

void tracer_detach(struct tracer *t)
{
	if (!t->attached)
		return;
	tracer_resume_others(t);
	free(t->others);
	t->others = NULL;
	inject_teardown(t);
	inject_close_mem(t);
	if (ptrace(PTRACE_SETREGS, t->main.tid, 0, &t->main.saved) < 0)
		log_info("restoring registers of thread %d: %s", t->main.tid, strerror(errno));
	ptrace(PTRACE_DETACH, t->main.tid, 0, 0);
	tracer_reraise(t->pid, t->main.tid, t->main.pending_sig);
	t->attached = false;
	sigprocmask(SIG_SETMASK, &t->saved_sigmask, NULL);
}
