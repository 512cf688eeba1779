/* hv_shared.c - memory, slots and eventfds shared with the hypervisor (see
 * hv_shared.h). */
#include "kvm/hv_shared.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/remote_mem.h"
#include "kvm/hv_ledger.h"

static int inject(struct kvm_vm *vm, long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
		  uint64_t a5, int64_t *ret, struct vmsh_err *err)
{
	uint64_t args[6] = { a0, a1, a2, a3, a4, a5 };
	return tracer_syscall(vm->tr, nr, args, ret, err);
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

/* The same open file as the hypervisor's fd (pidfd_getfd: also for eventfds,
 * which cannot be reopened through /proc/PID/fd). */
static int open_remote(struct kvm_vm *vm, int64_t fd, struct vmsh_err *err)
{
	int pidfd = (int)syscall(SYS_pidfd_open, vm->pid, 0);
	if (pidfd < 0)
		return vmsh_error(err, errno, "pidfd_open(%d)", vm->pid);
	int l = (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
	int e = errno;
	close(pidfd);
	if (l < 0)
		return vmsh_error(err, e, "take fd %lld of process %d", (long long)fd, vm->pid);
	return l;
}

static void close_remote(struct kvm_vm *vm, int64_t fd)
{
	int64_t ret;
	if (inject(vm, SYS_close, (uint64_t)fd, 0, 0, 0, 0, 0, &ret, NULL) < 0 || ret != 0)
		log_info("closing fd %lld in the hypervisor failed", (long long)fd);
}

int shared_mem_create(struct kvm_vm *vm, size_t size, struct shared_mem *m, struct vmsh_err *err)
{
	return shared_mem_create_named(vm, size, "vmsh", m, err);
}

int shared_mem_create_named(struct kvm_vm *vm, size_t size, const char *name, struct shared_mem *m,
			    struct vmsh_err *err)
{
	memset(m, 0, sizeof(*m));
	m->fd = -1;
	m->size = size;
	int64_t fd, ret;
	size_t name_len = strlen(name) + 1;
	if (name_len > 64 || remote_write(vm->pid, vm->scratch, name, name_len) != (ssize_t)name_len)
		return vmsh_error(err, errno, "stage memfd name");
	if (inject(vm, SYS_memfd_create, vm->scratch, 1 /* MFD_CLOEXEC */, 0, 0, 0, 0, &fd, err) < 0)
		return -1;
	if (fd < 0)
		return vmsh_error(err, (int)-fd, "memfd_create in the hypervisor");
	int rc = -1;
	if (inject(vm, SYS_ftruncate, (uint64_t)fd, size, 0, 0, 0, 0, &ret, err) < 0)
		goto out;
	if (ret < 0) {
		vmsh_error(err, (int)-ret, "size the shared memory");
		goto out;
	}
	if (inject(vm, SYS_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_SHARED, (uint64_t)fd, 0, &ret, err) < 0)
		goto out;
	if (ret < 0 && ret > -4096) {
		vmsh_error(err, (int)-ret, "map the shared memory in the hypervisor");
		goto out;
	}
	m->remote = (uint64_t)ret;
	if ((m->fd = open_remote(vm, fd, err)) < 0)
		goto out;
	m->local = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
	if (m->local == MAP_FAILED) {
		m->local = NULL;
		vmsh_error(err, errno, "map the shared memory");
		goto out;
	}
	rc = 0;
out:
	/* the mappings keep the memory alive: no fd stays planted */
	close_remote(vm, fd);
	if (rc < 0)
		shared_mem_destroy(vm, m);
	return rc;
}

void shared_mem_destroy(struct kvm_vm *vm, struct shared_mem *m)
{
	if (m->remote) {
		int64_t ret;
		if (inject(vm, SYS_munmap, m->remote, m->size, 0, 0, 0, 0, &ret, NULL) < 0 || ret != 0)
			log_info("unmapping shared memory in the hypervisor failed");
		m->remote = 0;
	}
	if (m->local) {
		munmap(m->local, m->size);
		m->local = NULL;
	}
	if (m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
}

static bool id_in(uint32_t id, const uint32_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == id)
			return true;
	return false;
}

/* Ids above what kvm_memslot_ids probed are checked one by one, at most
 * this many (a VMM that took ids near the top is unusual). */
#define TOP_ID_PROBES 64

/* vmsh's slot id: the HIGHEST free one. Hypervisors hand out their own
 * lowest free id (qemu's kvm_get_free_slot, firecracker, cloud-hypervisor)
 * and do not expect a slot they did not create: when qemu later adds a slot
 * (memory hotplug, a ROM or BAR mapping, the VGA window) with an id vmsh
 * holds, KVM answers EINVAL and qemu abort()s. From the top, the next id
 * qemu picks is only ever ours after it created ~32000 slots itself. */
static int top_free_id(struct kvm_vm *vm, const struct memslot_ids *used, const uint32_t *taken, size_t n_taken,
		       uint32_t *out, struct vmsh_err *err)
{
	unsigned probes = 0;
	for (uint32_t id = used->limit; id-- > 0;) {
		if (id_in(id, used->ids, used->n) || id_in(id, taken, n_taken))
			continue;
		if (!memslot_ids_cover(used, id)) {
			if (probes++ == TOP_ID_PROBES)
				break;
			int v = kvm_memslot_id_used(vm, 0, id, err);
			if (v < 0)
				return -1;
			if (v)
				continue;
		}
		*out = id;
		return 0;
	}
	return vmsh_error(err, ENOSPC, "no free memory slot id near the top of the range (%u)", used->limit);
}

int kvm_slot_add(struct kvm_vm *vm, const struct memslot_ids *used, const uint32_t *taken, size_t n_taken,
		 uint64_t gpa, uint64_t step, unsigned tries, uint64_t hva, uint64_t size, uint32_t flags,
		 struct kvm_slot *s, struct vmsh_err *err)
{
	memset(s, 0, sizeof(*s));
	uint32_t id = 0;
	if (top_free_id(vm, used, taken, n_taken, &id, err) < 0)
		return -1;
	for (unsigned t = 0; t < tries; t++, gpa += step) {
		int64_t ret;
		if (kvm_set_memory_region(vm, id, flags, gpa, size, hva, &ret, err) < 0)
			return -1;
		if (ret == -EEXIST)
			continue;
		if (ret < 0)
			return vmsh_error(err, (int)-ret, "add memory slot %u at %#llx", id, (unsigned long long)gpa);
		*s = (struct kvm_slot){ .id = id, .gpa = gpa, .size = size, .hva = hva, .flags = flags, .added = true };
		return 0;
	}
	return vmsh_error(err, ENOSPC, "no free guest-physical range of %#llx bytes", (unsigned long long)size);
}

void kvm_slot_remove(struct kvm_vm *vm, struct kvm_slot *s)
{
	if (!s->added)
		return;
	int64_t ret;
	struct vmsh_err e = { 0 };
	if (kvm_set_memory_region(vm, s->id, s->flags, s->gpa, 0, s->hva, &ret, &e) < 0 || ret != 0)
		log_info("removing memory slot %u failed: %s", s->id, e.msg[0] ? e.msg : strerror((int)-ret));
	s->added = false;
}

int kvm_eventfd_create(struct kvm_vm *vm, struct kvm_eventfd *e, struct vmsh_err *err)
{
	e->local = -1;
	if (inject(vm, SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK, 0, 0, 0, 0, &e->remote, err) < 0)
		return -1;
	if (e->remote < 0)
		return vmsh_error(err, (int)-e->remote, "eventfd in the hypervisor");
	hv_ledger_eventfd(vm, e->remote, true);
	if ((e->local = open_remote(vm, e->remote, err)) < 0) {
		hv_ledger_eventfd(vm, e->remote, false); /* first: its number may be reused once closed */
		close_remote(vm, e->remote);
		e->remote = -1;
		return -1;
	}
	return 0;
}

void kvm_eventfd_close(struct kvm_vm *vm, struct kvm_eventfd *e)
{
	if (e->remote >= 0) {
		hv_ledger_eventfd(vm, e->remote, false); /* first: its number may be reused once closed */
		close_remote(vm, e->remote);
	}
	if (e->local >= 0)
		close(e->local);
	e->remote = e->local = -1;
}

int kvm_ioeventfd(struct kvm_vm *vm, const struct kvm_eventfd *e, uint64_t gpa, uint32_t len, bool match,
		  uint64_t data, bool deassign, struct vmsh_err *err)
{
	struct kvm_ioeventfd io = {
		.datamatch = data,
		.addr = gpa,
		.len = len,
		.fd = (int32_t)e->remote,
		.flags = (match ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) | (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0),
	};
	int64_t ret;
	/* recorded before it is made (undoing one never made changes nothing) */
	if (!deassign)
		hv_ledger_ioeventfd(vm, e->remote, gpa, len, match, data, true);
	int rc = kvm_ioctl(vm, vm->vm_fd, KVM_IOEVENTFD, &io, sizeof(io), &ret, err);
	if (deassign || rc < 0 || ret < 0)
		hv_ledger_ioeventfd(vm, e->remote, gpa, len, match, data, false);
	if (rc < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_IOEVENTFD at %#llx", (unsigned long long)gpa) : 0;
}

int kvm_irqfd(struct kvm_vm *vm, const struct kvm_eventfd *e, uint32_t gsi, bool deassign, struct vmsh_err *err)
{
	struct kvm_irqfd irq = { .fd = (uint32_t)e->remote, .gsi = gsi, .flags = deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0 };
	int64_t ret;
	if (!deassign)
		hv_ledger_irqfd(vm, e->remote, gsi, true);
	int rc = kvm_ioctl(vm, vm->vm_fd, KVM_IRQFD, &irq, sizeof(irq), &ret, err);
	if (deassign || rc < 0 || ret < 0)
		hv_ledger_irqfd(vm, e->remote, gsi, false);
	if (rc < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_IRQFD for GSI %u", gsi) : 0;
}
