/* mmio_trap.c - MMIO exits of KVM_RUN caught by following the hypervisor's
 * syscalls (see mmio_trap.h). */
#include "kvm/mmio_trap.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "common/procfs.h"
#include "common/remote_mem.h"

/* the part of struct kvm_run we read: exit_reason, and the mmio member */
#define RUN_EXIT_REASON offsetof(struct kvm_run, exit_reason)
#define RUN_MMIO offsetof(struct kvm_run, mmio)

static int find_runs(struct mmio_trap *mt, const struct kvm_vm *vm, struct vmsh_err *err)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(vm->pid, &maps, &n, err) < 0)
		return -1;
	mt->runs = calloc(vm->n_vcpus ? vm->n_vcpus : 1, sizeof(*mt->runs));
	if (!mt->runs) {
		free(maps);
		return vmsh_error(err, ENOMEM, "trap MMIO");
	}
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		char name[64];
		snprintf(name, sizeof(name), "anon_inode:kvm-vcpu:%d", vm->vcpus[i].index);
		for (size_t k = 0; k < n; k++) {
			if (strcmp(maps[k].path, name) == 0 && maps[k].offset == 0) {
				mt->runs[mt->n_runs].fd = vm->vcpus[i].fd;
				mt->runs[mt->n_runs].run = maps[k].start;
				mt->n_runs++;
				break;
			}
		}
	}
	free(maps);
	if (mt->n_runs == 0)
		return vmsh_error(err, ENOENT, "no kvm_run mapping of the vCPUs found in process %d", vm->pid);
	return 0;
}

int mmio_trap_start(struct mmio_trap *mt, const struct kvm_vm *vm, pid_t skip, const pid_t *vcpu_tids,
		    size_t n_tids, uint64_t lo, uint64_t hi, mmio_handler h, void *opaque, struct vmsh_err *err)
{
	memset(mt, 0, sizeof(*mt));
	mt->pid = vm->pid;
	mt->lo = lo;
	mt->hi = hi;
	mt->handler = h;
	mt->opaque = opaque;
	if (find_runs(mt, vm, err) < 0)
		return -1;
	if (n_tids != vm->n_vcpus)
		n_tids = 0; /* not all known: follow every thread */
	if (systrace_start(&mt->st, vm->pid, skip, vcpu_tids, n_tids, err) < 0) {
		free(mt->runs);
		mt->runs = NULL;
		return -1;
	}
	return 0;
}

static uint64_t run_of(const struct mmio_trap *mt, int fd)
{
	for (size_t i = 0; i < mt->n_runs; i++)
		if (mt->runs[i].fd == fd)
			return mt->runs[i].run;
	return 0;
}

/* A syscall return: ours if it is KVM_RUN returning 0 with an MMIO exit in
 * the range. Then handle it and make the syscall look interrupted. */
static bool handle_exit(struct mmio_trap *mt, pid_t tid, struct user_regs_struct *regs)
{
	if ((long)regs->orig_rax != SYS_ioctl || regs->rsi != KVM_RUN || regs->rax != 0)
		return false;
	uint64_t run = run_of(mt, (int)regs->rdi);
	if (!run)
		return false;
	uint32_t reason;
	struct {
		uint64_t phys_addr;
		uint8_t data[8];
		uint32_t len;
		uint8_t is_write;
	} mmio;
	_Static_assert(sizeof(mmio) <= sizeof(((struct kvm_run *)0)->mmio) + 8, "mmio layout");
	if (remote_read(mt->pid, run + RUN_EXIT_REASON, &reason, 4) != 4 || reason != KVM_EXIT_MMIO ||
	    remote_read(mt->pid, run + RUN_MMIO, &mmio, 24) != 24) {
		mt->other_exits++;
		return false;
	}
	if (mmio.phys_addr < mt->lo || mmio.phys_addr >= mt->hi || mmio.len == 0 || mmio.len > 8) {
		mt->other_exits++;
		return false;
	}
	struct mmio_access a = { .gpa = mmio.phys_addr, .len = mmio.len, .is_write = mmio.is_write != 0 };
	memcpy(a.data, mmio.data, 8);
	if (!mt->handler(mt->opaque, &a)) {
		mt->other_exits++;
		return false;
	}
	if (!a.is_write && remote_write(mt->pid, run + RUN_MMIO + 8, a.data, 8) != 8)
		log_info("thread %d: answering an MMIO read failed", tid);
	/* KVM finishes the access when the hypervisor enters again; the
	 * hypervisor only sees an interrupted KVM_RUN */
	regs->rax = (uint64_t)-EINTR;
	mt->handled++;
	return true;
}

int mmio_trap_poll(struct mmio_trap *mt, unsigned timeout_ms, struct vmsh_err *err)
{
	int handled = 0;
	for (;;) {
		pid_t tid;
		struct user_regs_struct regs;
		int r = systrace_wait_exit(&mt->st, timeout_ms, &tid, &regs, err);
		if (r < 0)
			return -1;
		if (r == 0)
			return handled;
		bool mine = handle_exit(mt, tid, &regs);
		handled += mine;
		systrace_resume(&mt->st, tid, mine ? &regs : NULL);
		timeout_ms = 0; /* drain what is there, then return */
	}
}

static void on_exit_stop(void *opaque, pid_t tid, struct user_regs_struct *regs)
{
	handle_exit(opaque, tid, regs);
}

void mmio_trap_end(struct mmio_trap *mt)
{
	systrace_end(&mt->st, on_exit_stop, mt);
	free(mt->runs);
	mt->runs = NULL;
}
