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
#include "common/procfs.h"

struct proc_map;

#define TRACER_SCRATCH_SIZE 8192
#define TRACER_VCPU_THREADS 512

/* A thread of the target held in a ptrace stop, in which syscalls can be
 * injected once inject.c (setup_scratch) gave it a syscall site and a
 * scratch area. */
struct inj_thread {
	pid_t tid;
	int pending_sig;          /* signal held back while stopped, re-raised on release */
	bool in_kvm_run;          /* was stopped out of KVM_RUN ... */
	int kvm_run_fd;           /* ... on this vCPU fd */
	int want_fd;              /* stopped as the thread of this vCPU fd (tracer_stop_vcpus), else -1 */
	struct user_regs_struct saved; /* its own registers, an interrupted syscall set to restart */
	bool saved_valid;
	uint64_t stub;            /* injected syscalls run here (0: not set up) */
	uint64_t site;            /* the stub is written over padding here ... */
	uint8_t site_orig[320];   /* ... which held these bytes */
	uint64_t area;            /* or in a mapping of ours (fallback, main thread only) */
	uint64_t syscall_insn;    /* vDSO `syscall`, used only to make that mapping */
	uint64_t scratch;         /* TRACER_SCRATCH_SIZE bytes for syscall arguments */
	bool scratch_mapped;      /* scratch is a mapping of ours, not the thread's stack */
};

/* A thread's stack mapping, as /proc/PID/maps showed it (inject.c). */
struct tracer_stack {
	pid_t tid;
	uint64_t start, end;
};
#define TRACER_STACKS 16

struct tracer {
	pid_t pid;
	int pidfd;                    /* the process attached first (-1 without pidfd_open): a
	                               * later attach goes to it or nowhere, never to a
	                               * process that got its PID after it exited */
	struct inj_thread main;       /* held for the whole attachment */
	bool attached;
	bool seccomp_suspended;

	struct inj_thread *others;    /* seized during a stop-the-world window */
	size_t n_others;

	struct tracer_stack stacks[TRACER_STACKS]; /* writable mappings holding vCPU threads' stacks,
	                               * kept over re-attachments to the same process:
	                               * reading the maps of a large hypervisor took
	                               * most of a stop window (inject.c) */
	size_t n_stacks;

	/* the threads the last full stop found in KVM_RUN, and on which vCPU
	 * fd: a later window for vCPU state holds only those */
	struct tracer_vcpu_thread { pid_t tid; int fd; } vcpu_threads[TRACER_VCPU_THREADS];
	size_t n_vcpu_threads;
	struct proc_map *window_maps; /* the maps the open window's first stop read, freed after it */
	int mem_fd;                   /* /proc/PID/mem while attached (inject.c), if mem_fd_open */
	bool mem_fd_open;

	uint64_t *sites;              /* padding where stubs may go (inject.c), kept over
	                               * re-attachments to the same process while the
	                               * mappings they lie in stay as they were */
	bool *site_used;
	size_t n_sites;
	bool sites_all;               /* every executable mapping looked at */
	struct proc_map *site_maps;   /* the mappings the sites lie in */
	size_t n_site_maps;
	size_t n_threads;             /* the process's threads when attached */

	sigset_t saved_sigmask;
	uint64_t injected_syscalls;   /* statistics */
	uint64_t stopped_ns;          /* other threads (the vCPUs) held in stop-the-world windows */
	unsigned long stops;          /* ... in that many windows */
	uint64_t stop_t0;             /* start of the open window, 0 if none */
	int window_policy;            /* vmsh's own scheduling policy before the window raised it, -1 if not */
	uint64_t die_at_syscall;      /* tests: SIGKILL ourselves inside this injected syscall
	                               * (1-based; env VMSH_TEST_DIE_AT_SYSCALL) */
};

/* Seize pid, choose and stop the injection thread, set up its injection stub
 * and scratch area (t->main.scratch). On failure nothing of the target is left
 * traced or changed. Blocks vmsh's terminating signals until detach. */
int tracer_attach(struct tracer *t, pid_t pid, struct vmsh_err *err);
/* Attach again (after tracer_detach) to the same process: refused if it has
 * exited, whatever process holds its PID now. */
int tracer_reattach(struct tracer *t, struct vmsh_err *err);
/* Has the process attached first exited? (false without a pidfd) */
bool tracer_target_gone(const struct tracer *t);
/* tracer_detach, and forget the process (closes the pidfd). */
void tracer_close(struct tracer *t);

/* Run syscall nr with args inside the target's main injection thread; *ret
 * gets the raw return value (negative errno on failure). Returns -1 only if
 * injection itself failed. */
int tracer_syscall(struct tracer *t, long nr, const uint64_t args[6], int64_t *ret, struct vmsh_err *err);
/* The same in another thread, stopped by tracer_stop_others (set up on first
 * use). Used for a vCPU's own ioctls: were vmsh to die in the middle, no
 * other thread would be left waiting for that vCPU's mutex. */
int tracer_syscall_in(struct tracer *t, struct inj_thread *th, long nr, const uint64_t args[6], int64_t *ret,
		      struct vmsh_err *err);
/* Give a stopped thread its stub and scratch (th->scratch) now. */
int tracer_prepare_thread(struct tracer *t, struct inj_thread *th, struct vmsh_err *err);
/* The stopped thread that was in KVM_RUN on vCPU fd, or NULL. */
struct inj_thread *tracer_vcpu_thread(struct tracer *t, int fd);

/* Stop every other thread of the target (except kernel workers). */
int tracer_stop_others(struct tracer *t, struct vmsh_err *err);
/* Stop only the threads of the vCPUs whose fds are given, as the last full
 * stop found them in KVM_RUN: what reading or setting vCPU state needs,
 * with fewer threads to stop and let go again (a hypervisor's I/O workers
 * can be many). A full stop (tracer_stop_others) if any of them is not
 * known, is gone, or is not in KVM_RUN on its fd when stopped. Ended by
 * tracer_resume_others. */
int tracer_stop_vcpus(struct tracer *t, const int *fds, size_t n, struct vmsh_err *err);
/* Before the first window: the threads asleep in ioctl(fd, KVM_RUN) now
 * (/proc/PID/task/TID/syscall; a halted vCPU sleeps there, a running one
 * shows only "running") as the vCPU threads, for tracer_stop_vcpus to check.
 * Nothing if some are known already. */
void tracer_guess_vcpu_threads(struct tracer *t);
/* Let them run again, untraced. */
/* The rest of the open window is long (a whole memory dump with the VM
 * stopped): vmsh's thread goes back to its own scheduling policy now, not
 * at the window's end (a window runs real-time: tracer.c). */
void tracer_window_is_long(struct tracer *t);
void tracer_resume_others(struct tracer *t);

/* A copy of the hypervisor's memory as it is at this instant: a fork run in
 * the injection thread (fork.c). The child is stopped before it runs a
 * single instruction and is traced by vmsh; its private memory is a
 * copy-on-write image of the hypervisor's (MAP_SHARED memory is the same
 * memory, and MADV_DONTFORK mappings are absent from it). */
struct tracer_fork {
	pid_t pid;    /* the copy, in vmsh's PID namespace; 0: none */
	pid_t ns_pid; /* the same process as the hypervisor knows it */
	bool ended;   /* killed, a zombie the hypervisor has to reap */
};
int tracer_fork_frozen(struct tracer *t, struct tracer_fork *c, struct vmsh_err *err);
/* Refused up front (before anything is changed): a seccomp filter vmsh
 * could not suspend might kill the hypervisor for the fork. */
int tracer_fork_check(const struct tracer *t, struct vmsh_err *err);
/* Kill the copy (any time) and, with t attached, make the hypervisor reap
 * it. Call again once attached if it said it needs to be. */
int tracer_fork_release(struct tracer *t, struct tracer_fork *c, struct vmsh_err *err);

/* Restore the injection thread and detach everything. Safe to call twice. */
void tracer_detach(struct tracer *t);

/* Exposed for unit tests: turn registers of a thread stopped inside an
 * interrupted syscall into registers that restart it on resume, as the
 * kernel's own signal path would have done. */
void tracer_fixup_restart(struct user_regs_struct *regs);

#endif
