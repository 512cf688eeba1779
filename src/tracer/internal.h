/* internal.h - what the tracer's files share and nobody else uses. */
#ifndef VMSH_TRACER_INTERNAL_H
#define VMSH_TRACER_INTERNAL_H

#include <sys/ptrace.h>

#include "common/procfs.h"
#include "tracer/tracer.h"

/* older libc headers lack these */
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

/* Wait until tid reaches the ptrace stop asked for (a syscall stop, or an
 * interrupt/event stop). Signals arriving on the way are delivered at once
 * if pending is NULL, else held back in *pending (an injected syscall is
 * under way). Returns the wait status or -1. */
int tracer_wait_stop(pid_t tid, bool want_syscall_stop, int resume_req, int *pending, struct vmsh_err *err);
/* Kernel threads living in the process (KVM workers, io_uring): never traced. */
bool tracer_is_kernel_worker(pid_t pid, pid_t tid);
/* Deliver a held-back signal again, after the thread was let go. */
void tracer_reraise(pid_t pid, pid_t tid, int sig);

/* Bytes of the target through /proc/PID/mem (which may write read-only
 * pages of a traced process): 0 or -1 with errno. */
int tracer_poke(struct tracer *t, uint64_t addr, const void *buf, size_t len);
int tracer_peek(struct tracer *t, uint64_t addr, void *buf, size_t len);
/* Close the /proc/PID/mem fd tracer_poke/peek keep open. */
void inject_close_mem(struct tracer *t);
/* A free place for a stub (STUB_SITE_SIZE bytes of never-run padding), and
 * giving it back. */
int tracer_take_site(struct tracer *t, uint64_t *site);
void tracer_give_site(struct tracer *t, uint64_t site);

/* Set up injection in the stopped injection thread: the stub and the
 * scratch area. On failure nothing is left changed. */
int inject_setup(struct tracer *t, struct vmsh_err *err);
/* Undo inject_setup (the thread must be stopped with its own registers). */
void inject_teardown(struct tracer *t);
/* Drop the places for stubs kept over re-attachments (inject.c). */
void inject_forget_sites(struct tracer *t);
/* The vCPU threads of t->others now stopped (in KVM_RUN) whose stack
 * pointer lies in one of the writable mappings of maps (read just before
 * they were stopped): remembered as their stacks, so that their injected
 * syscalls read the maps no more (inject.c). */
void inject_learn_stacks(struct tracer *t, const struct proc_map *maps, size_t n);
/* Undo what tracer_syscall_in set up for a thread (before it is let go). */
void inject_thread_teardown(struct tracer *t, struct inj_thread *th);

#endif
