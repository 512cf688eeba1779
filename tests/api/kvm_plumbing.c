/* kvm_plumbing.c - put vmsh's device plumbing into a running VMM (testvmm)
 * and take it out again, for tests/api/test_plumbing.py:
 *
 *   kvm_plumbing PID GPA MS
 *
 * adds a read-only memory slot of one page at GPA (content 0xa5...) backed by
 * memory shared with vmsh, and an ioeventfd on writes to GPA; then detaches
 * completely (the hypervisor runs untraced) for MS milliseconds, counts the
 * guest's writes the eventfd caught, attaches again and removes everything.
 * Prints "slot ID", "detached", "count N" (caught while untraced), "total N"
 * (until the ioeventfd was removed), "removed".
 *
 *   kvm_plumbing PID reuse
 *
 * attaches and lets go ("released"), waits for a line on stdin, then attaches
 * again the way a session's teardown does: "reattached" or "refused: why"
 * (the VMM may have exited and its PID been given to another process). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "kvm/kvm.h"
#include "kvm/mmio_trap.h"
#include "kvm/hv_shared.h"

static int die(const struct vmsh_err *e)
{
	fprintf(stderr, "kvm_plumbing: %s\n", e->msg);
	return 1;
}

static int attach(pid_t pid, struct tracer *tr, struct kvm_vm *vm, struct kvm_fds *f, struct vmsh_err *err)
{
	if (kvm_fds_scan(pid, f, err) < 0 || tracer_attach(tr, pid, err) < 0)
		return -1;
	return kvm_vm_open(vm, tr, f->vm_fds[0], f, err);
}

static void release(struct tracer *tr, struct kvm_vm *vm, struct kvm_fds *f)
{
	kvm_vm_close(vm);
	tracer_close(tr);
	kvm_fds_free(f);
}

static bool count_write(void *opaque, struct mmio_access *a)
{
	if (a->is_write)
		(*(unsigned long *)opaque)++;
	else
		memset(a->data, 0xa5, sizeof(a->data));
	return true;
}

/* The set-up path: a read-only slot, the VMM untraced but for its KVM_RUN
 * returns, every write into the slot seen by us and hidden from the VMM. */
static int trap(struct tracer *tr, struct kvm_vm *vm, struct kvm_fds *f, struct memslot_ids *ids, uint64_t gpa,
		unsigned ms)
{
	struct vmsh_err err = { 0 };
	struct shared_mem m;
	struct kvm_slot slot;
	if (shared_mem_create(vm, 4096, &m, &err) < 0)
		return die(&err);
	memset(m.local, 0xa5, 4096);
	if (kvm_slot_add(vm, ids, NULL, 0, gpa, 4096, 1, m.remote, 4096, KVM_MEM_READONLY, &slot, &err) < 0)
		return die(&err);
	printf("slot %u\n", slot.id);
	kvm_vm_release(vm);
	struct mmio_trap mt;
	unsigned long writes = 0;
	if (mmio_trap_start(&mt, vm, 0, NULL, 0, gpa, gpa + 4096, count_write, &writes, &err) < 0)
		return die(&err);
	printf("trapping\n");
	fflush(stdout);
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ULL;
	while (now_ns() < end)
		if (mmio_trap_poll(&mt, 20, &err) < 0)
			return die(&err);
	mmio_trap_end(&mt);
	printf("untraced\n");
	printf("trapped %lu %lu\n", writes, mt.handled);
	fflush(stdout);
	sleep_ms(300); /* the test looks at the VMM now */
	if (kvm_vm_reacquire(vm, &err) < 0)
		return die(&err);
	kvm_slot_remove(vm, &slot);
	shared_mem_destroy(vm, &m);
	release(tr, vm, f);
	free(ids->ids);
	printf("removed\n");
	return 0;
}

static int reuse(pid_t pid)
{
	struct vmsh_err err = { 0 };
	struct tracer tr;
	struct kvm_vm vm;
	struct kvm_fds f;
	if (attach(pid, &tr, &vm, &f, &err) < 0)
		return die(&err);
	kvm_vm_release(&vm);
	printf("released\n");
	fflush(stdout);
	char line[16];
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	if (kvm_vm_reacquire(&vm, &err) < 0) {
		printf("refused: %s\n", err.msg);
	} else {
		printf("reattached\n");
		fflush(stdout);
		kvm_vm_release(&vm);
	}
	kvm_vm_close(&vm);
	tracer_close(&tr);
	kvm_fds_free(&f);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[2], "reuse"))
		return reuse(atoi(argv[1]));
	if (argc != 4 && !(argc == 5 && !strcmp(argv[4], "trap"))) {
		fprintf(stderr, "usage: kvm_plumbing PID GPA MS [trap]\n");
		return 2;
	}
	pid_t pid = atoi(argv[1]);
	uint64_t gpa = strtoull(argv[2], NULL, 0);
	unsigned ms = (unsigned)atoi(argv[3]);
	struct vmsh_err err = { 0 };
	struct tracer tr;
	struct kvm_vm vm;
	struct kvm_fds f;
	if (attach(pid, &tr, &vm, &f, &err) < 0)
		return die(&err);

	/* the vCPU's state can be read (the slot-id probe needs no guest address) */
	struct vcpu_state st;
	if (tracer_stop_others(&tr, &err) < 0)
		return die(&err);
	int rc = kvm_vcpu_get_state(&vm, &vm.vcpus[0], &st, &err);
	tracer_resume_others(&tr);
	if (rc < 0)
		return die(&err);
	struct memslot_ids ids;
	if (kvm_memslot_ids(&vm, 0, &ids, &err) < 0)
		return die(&err);

	if (argc == 5)
		return trap(&tr, &vm, &f, &ids, gpa, ms);

	struct shared_mem m;
	struct kvm_slot slot;
	struct kvm_eventfd e = { -1, -1 };
	if (shared_mem_create(&vm, 4096, &m, &err) < 0)
		return die(&err);
	memset(m.local, 0xa5, 4096);
	if (kvm_slot_add(&vm, &ids, NULL, 0, gpa, 4096, 1, m.remote, 4096, KVM_MEM_READONLY, &slot, &err) < 0 ||
	    kvm_eventfd_create(&vm, &e, &err) < 0 || kvm_ioeventfd(&vm, &e, gpa, 0, false, 0, false, &err) < 0)
		return die(&err);
	printf("slot %u\n", slot.id);
	release(&tr, &vm, &f);
	printf("detached\n");
	fflush(stdout);
	sleep_ms(ms);
	uint64_t count = 0;
	if (read(e.local, &count, sizeof(count)) != sizeof(count) && errno != EAGAIN)
		perror("read eventfd");
	printf("count %llu\n", (unsigned long long)count);
	fflush(stdout);

	if (attach(pid, &tr, &vm, &f, &err) < 0)
		return die(&err);
	if (kvm_ioeventfd(&vm, &e, gpa, 0, false, 0, true, &err) < 0)
		return die(&err);
	/* writes caught between the first read and the deassign */
	uint64_t late = 0;
	if (read(e.local, &late, sizeof(late)) != sizeof(late) && errno != EAGAIN)
		perror("read eventfd");
	printf("total %llu\n", (unsigned long long)(count + late));
	kvm_eventfd_close(&vm, &e);
	kvm_slot_remove(&vm, &slot);
	shared_mem_destroy(&vm, &m);
	release(&tr, &vm, &f);
	free(ids.ids);
	printf("removed\n");
	return 0;
}
