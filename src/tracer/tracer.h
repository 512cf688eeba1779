/* tracer.h - ptrace control of a hypervisor process: seize, stop, run
 * syscalls inside it, and let go again with every register restored.
 *
 * One thread of the target (the "injection thread", never a vCPU thread when
 * that can be avoided) is held stopped for the whole attachment; injected
 * syscalls run there while the vCPU threads keep running the guest.  The
 * other threads are seized only for short "stop the world" windows
 * (tracer_stop_others / tracer_resume_others), e.g. to read vCPU registers,
 * which KVM only allows while the vCPU's own thread is out of KVM_RUN. */
#ifndef VMSH_TRACER_H
#define VMSH_TRACER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include "common/err.h"

#define TRACER_SCRATCH_SIZE 8192

struct tracee_thread {
	pid_t tid;
	int pending_sig;       /* signal held back while stopped, re-raised on release */
	bool in_kvm_run;       /* was stopped out of KVM_RUN ... */
	int kvm_run_fd;        /* ... on this vCPU fd */
};

struct tracer {
	pid_t pid;
	pid_t inj_tid;
	int inj_pending_sig;
	struct user_regs_struct saved_regs; /* injection thread, restart-fixed */
	uint64_t stub;                      /* injected syscalls run here (inject.c) */
	uint64_t site;                      /* stub written into padding here ... */
	uint8_t site_orig[320];             /* ... over these bytes */
	uint64_t area;                      /* or into this mapping of ours (fallback) */
	uint64_t syscall_insn;              /* vDSO `syscall`, until the stub exists */
	uint64_t scratch;                   /* TRACER_SCRATCH_SIZE bytes for syscall arguments */
	bool scratch_mapped;                /* scratch is a mapping of ours, not the stack */
	bool attached;
	bool seccomp_suspended;

	struct tracee_thread *others; /* seized during a stop-the-world window */
	size_t n_others;

	sigset_t saved_sigmask;
	uint64_t injected_syscalls;   /* statistics */
	uint64_t die_at_syscall;      /* tests: SIGKILL ourselves inside this injected syscall
	                               * (1-based; env VMSH_TEST_DIE_AT_SYSCALL) */
};

/* Seize pid, choose and stop the injection thread, set up the injection stub
 * and a scratch area (t->scratch). On failure nothing of the target is left
 * traced or changed. Blocks vmsh's terminating signals until detach. */
int tracer_attach(struct tracer *t, pid_t pid, struct vmsh_err *err);

/* Run syscall nr with args inside the target; *ret gets the raw return value
 * (negative errno on failure). Returns -1 only if injection itself failed. */
int tracer_syscall(struct tracer *t, long nr, const uint64_t args[6], int64_t *ret, struct vmsh_err *err);

/* Stop every other thread of the target (except kernel workers). */
int tracer_stop_others(struct tracer *t, struct vmsh_err *err);
/* Let them run again, untraced. */
void tracer_resume_others(struct tracer *t);

/* Restore the injection thread and detach everything. Safe to call twice. */
void tracer_detach(struct tracer *t);

/* Read/write the target's memory (no stop needed). Returns bytes or -1. */
ssize_t remote_read(pid_t pid, uint64_t addr, void *buf, size_t len);
ssize_t remote_write(pid_t pid, uint64_t addr, const void *buf, size_t len);

/* Exposed for unit tests: turn registers of a thread stopped inside an
 * interrupted syscall into registers that restart it on resume, as the
 * kernel's own signal path would have done. */
void tracer_fixup_restart(struct user_regs_struct *regs);

#endif
