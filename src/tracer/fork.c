/* fork.c - a frozen copy of the hypervisor: a fork run inside it whose
 * child never runs (see tracer.h, tracer_fork_frozen).
 *
 * The clone runs in the injection thread from a stub of its own
 * (stub_build_fork): the child returns from the syscall into code that only
 * calls exit_group(0). It is created traced by vmsh (PTRACE_O_TRACECLONE,
 * options the injection thread has only for this one syscall) and stopped
 * before its first instruction; vmsh reads its memory, then kills it. It has
 * no exit signal (clone flags 0), so the hypervisor is never signalled
 * about it; the zombie it leaves is reaped by a wait4 injected into the
 * hypervisor, for exactly that pid. Should vmsh die meanwhile, the kernel
 * lets the child go: it exits at once and stays a zombie of the hypervisor
 * (a PID, no memory) until the hypervisor exits. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/procfs.h"
#include "tracer/internal.h"
#include "tracer/stub.h"


static long base_options(const struct tracer *t)
{
	return PTRACE_O_TRACESYSGOOD | (t->seccomp_suspended ? PTRACE_O_SUSPEND_SECCOMP : 0);
}

/* Has the process a seccomp filter ("Seccomp: 2" in its status)? */
static bool seccomp_filtered(pid_t pid)
{
	char path[64], *buf = NULL;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (procfs_read_file(path, &buf, NULL, NULL) < 0)
		return true; /* unknown: assume the worst */
	const char *p = strstr(buf, "\nSeccomp:");
	bool filtered = !p || strtol(p + 9, NULL, 10) != 0;
	free(buf);
	return filtered;
}

/* After the syscall-enter stop of the clone: collect the clone event (the
 * child's pid in vmsh's namespace) on the way to the syscall-exit stop. */
static int run_clone(struct inj_thread *th, pid_t *child, struct vmsh_err *err)
{
	if (ptrace(PTRACE_SYSCALL, th->tid, 0, 0) < 0)
		return vmsh_error(err, errno, "run the injected clone in thread %d", th->tid);
	for (int guard = 0; guard < 1000; guard++) {
		int status;
		if (waitpid(th->tid, &status, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			return vmsh_error(err, errno, "waitpid thread %d", th->tid);
		}
		if (!WIFSTOPPED(status))
			return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH, "thread %d exited in an injected clone", th->tid);
		int sig = WSTOPSIG(status), event = status >> 16;
		if (sig == (SIGTRAP | 0x80))
			return 0; /* syscall-exit stop */
		if (event == PTRACE_EVENT_CLONE || event == PTRACE_EVENT_FORK) {
			unsigned long msg = 0;
			if (ptrace(PTRACE_GETEVENTMSG, th->tid, 0, &msg) == 0)
				*child = (pid_t)msg;
		} else if (event == 0 && !th->pending_sig) {
			th->pending_sig = sig; /* held back, re-raised once the thread is its own again */
		}
		ptrace(PTRACE_SYSCALL, th->tid, 0, 0);
	}
	return vmsh_error(err, EIO, "thread %d never left the injected clone", th->tid);
}

/* The child's first stop (auto-attached: it stops before running). */
static int wait_child_stop(pid_t child, struct vmsh_err *err)
{
	for (;;) {
		int status;
		if (waitpid(child, &status, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			return vmsh_error(err, errno, "waitpid the hypervisor's copy %d", child);
		}
		if (!WIFSTOPPED(status))
			return vmsh_error(err, ECHILD, "the hypervisor's copy %d ended at once (status %#x)", child,
					  status);
		/* the copy has the hypervisor's signal handlers: with every signal
		 * blocked, one sent to its process group or cgroup (Ctrl-C, a
		 * service stop) can never run hypervisor code in it should vmsh die
		 * and the kernel let it go - it only exits */
		uint64_t all = ~0ULL;
		if (ptrace(PTRACE_SETSIGMASK, child, sizeof(all), &all) < 0)
			return vmsh_error(err, errno, "block the signals of the hypervisor's copy %d", child);
		return 0;
	}
}

static void end_child(pid_t child)
{
	kill(child, SIGKILL);
	for (;;) {
		int status;
		if (waitpid(child, &status, __WALL) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status))
			return;
	}
}

int tracer_fork_check(const struct tracer *t, struct vmsh_err *err)
{
	if (!t->seccomp_suspended && seccomp_filtered(t->pid))
		return vmsh_error(err, EPERM,
				  "process %d has a seccomp filter vmsh cannot suspend (needs CAP_SYS_ADMIN): it might "
				  "be killed for a fork", t->pid);
	return 0;
}

#define ERESTARTNOINTR 513

/* One clone from the fork stub at site: *child (vmsh's pid of the copy,
 * 0 if none came) and *ret (the syscall's result: the copy's pid as the
 * hypervisor knows it, or -errno). */
static int inject_clone(struct tracer *t, struct inj_thread *th, uint64_t site, pid_t *child, long long *ret,
			struct vmsh_err *err)
{
	struct user_regs_struct regs = th->saved;
	regs.rip = site;
	regs.rax = SYS_clone;
	regs.orig_rax = (unsigned long long)-1;
	/* a new process with no exit signal, sharing the fd table: the copy
	 * holds no reference of its own to any of the hypervisor's files (a
	 * socket the hypervisor closes still reaches EOF, a lock is still
	 * dropped), and its end closes nothing */
	regs.rdi = CLONE_FILES;
	regs.rsi = regs.rdx = regs.r10 = regs.r8 = 0;
	if (ptrace(PTRACE_SETREGS, th->tid, 0, &regs) < 0)
		return vmsh_error(err, errno, "set registers of thread %d", th->tid);
	if (ptrace(PTRACE_SYSCALL, th->tid, 0, 0) < 0 ||
	    tracer_wait_stop(th->tid, true, PTRACE_SYSCALL, &th->pending_sig, err) < 0 ||
	    run_clone(th, child, err) < 0 || ptrace(PTRACE_GETREGS, th->tid, 0, &regs) < 0) {
		if (err && !err->msg[0])
			vmsh_error(err, errno, "inject clone into thread %d", th->tid);
		return -1;
	}
	t->injected_syscalls++;
	*ret = (long long)regs.rax;
	return 0;
}

int tracer_fork_frozen(struct tracer *t, struct tracer_fork *c, struct vmsh_err *err)
{
	struct inj_thread *th = &t->main;
	memset(c, 0, sizeof(*c));
	if (!t->attached || !th->saved_valid)
		return vmsh_error(err, EINVAL, "fork the hypervisor: not attached");
	if (tracer_fork_check(t, err) < 0)
		return -1;
	uint8_t stub[STUB_SITE_SIZE], orig[STUB_SITE_SIZE];
	uint64_t site;
	stub_build_fork(&th->saved, stub);
	if (tracer_take_site(t, &site) < 0)
		return vmsh_error(err, ENOSPC, "no room for a fork stub in process %d", t->pid);
	if (tracer_peek(t, site, orig, sizeof(orig)) < 0 || tracer_poke(t, site, stub, sizeof(stub)) < 0) {
		tracer_give_site(t, site);
		return vmsh_error(err, errno, "write a fork stub into process %d", t->pid);
	}
	int rc = -1;
	pid_t child = 0;
	long long ret = -ERESTARTNOINTR;
	if (ptrace(PTRACE_SETOPTIONS, th->tid, 0, base_options(t) | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK) < 0) {
		vmsh_error(err, errno, "trace forks of thread %d", th->tid);
		goto out_site;
	}
	/* a fork that meets a pending signal says "restart" (and forked nothing) */
	for (int tries = 0; tries < 3 && ret == -ERESTARTNOINTR && !child; tries++)
		if (inject_clone(t, th, site, &child, &ret, err) < 0)
			goto out_regs;
	if (child)
		c->pid = child; /* from here, whatever fails, the copy is ended below */
	if (ret < 0) {
		vmsh_error(err, ret == -ERESTARTNOINTR ? EINTR : (int)-ret, "fork inside process %d", t->pid);
		goto out_regs;
	}
	if (!child) {
		vmsh_error(err, ECHILD, "fork inside process %d: no clone event", t->pid);
		goto out_regs;
	}
	c->ns_pid = (pid_t)ret;
	rc = wait_child_stop(child, err);
out_regs:
	if (ptrace(PTRACE_SETREGS, th->tid, 0, &th->saved) < 0)
		log_info("restoring registers of thread %d: %s", th->tid, strerror(errno));
	ptrace(PTRACE_SETOPTIONS, th->tid, 0, base_options(t));
out_site:
	if (tracer_poke(t, site, orig, sizeof(orig)) < 0)
		log_info("restoring %d bytes at %#llx in process %d failed: %s", STUB_SITE_SIZE,
			 (unsigned long long)site, t->pid, strerror(errno));
	tracer_give_site(t, site);
	if (th->pending_sig) {
		tracer_reraise(t->pid, th->tid, th->pending_sig);
		th->pending_sig = 0;
	}
	if (rc < 0 && c->pid) {
		/* the copy exists but is of no use: end it (reaped by tracer_fork_release) */
		end_child(c->pid);
		c->pid = 0;
		c->ended = true;
	}
	return rc;
}

int tracer_fork_release(struct tracer *t, struct tracer_fork *c, struct vmsh_err *err)
{
	if (c->pid) {
		end_child(c->pid);
		c->pid = 0;
		c->ended = true;
	}
	if (!c->ended || c->ns_pid <= 0)
		return 0;
	if (!t->attached)
		return vmsh_error(err, EINVAL, "reap the hypervisor's copy %d: not attached", c->ns_pid);
	/* the zombie is the hypervisor's child now: it reaps it (that pid only,
	 * which no other child of it can have) */
	for (int tries = 0; tries < 100; tries++) {
		uint64_t args[6] = { (uint64_t)c->ns_pid, 0, __WALL | WNOHANG, 0, 0, 0 };
		int64_t ret;
		if (tracer_syscall(t, SYS_wait4, args, &ret, err) < 0)
			return -1;
		if (ret == c->ns_pid || ret == -ECHILD) {
			c->ended = false;
			c->ns_pid = 0;
			return 0;
		}
		if (ret < 0 && ret != -EINTR)
			return vmsh_error(err, (int)-ret, "reap the hypervisor's copy %d", c->ns_pid);
		usleep(1000);
	}
	return vmsh_error(err, EBUSY, "the hypervisor's copy %d is not a zombie yet", c->ns_pid);
}
