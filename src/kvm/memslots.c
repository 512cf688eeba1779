/* memslots.c - which memory slot ids a VM uses, found with KVM_SET_USER_MEMORY_REGION
 * probes that cannot change anything.
 *
 * The kernel checks a request in this order (virt/kvm/kvm_main.c):
 *   1. alignment, address-space and id range, access_ok(userspace_addr)
 *   2. id in use:   userspace_addr/size/readonly differ from the slot -> EINVAL
 *                   (equal values would MOVE the slot or change its flags!)
 *   3. id free:     range overlaps another slot -> EEXIST
 *                   (no overlap would CREATE a slot!)
 * A probe whose range certainly overlaps a slot, with a userspace address no
 * slot can have, therefore answers "used" (EINVAL) or "free" (EEXIST) and
 * never reaches a path that changes anything.
 *
 * The range is the whole guest-physical space KVM takes in one slot
 * ([0, 8 TiB)), not a page the guest names: vmsh once probed at the vCPU's
 * CR3 or CS.base+RIP, and a guest that pointed those at a page outside
 * every slot made a probe with a free id CREATE a slot at host address
 * 0x1000 (killing qemu on the next guest access). Every VM that runs a
 * guest has a slot below 8 TiB; one that has none gets the probe's slot
 * deleted at once (the "impossible" case, reported, not guessed around).
 *
 * Slot ranges are NOT probed with free ids: a range that overlaps nothing
 * would create a slot, and a guest access to it in that window could hit a
 * bogus host address and crash the hypervisor. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kvm/kvm.h"

/* access_ok() accepts it, yet no slot can be backed by it: the first pages
 * of an address space are never mappable (vm.mmap_min_addr). */
#define PROBE_BOGUS_HVA 0x1000ULL

void memslot_probe_region(struct kvm_userspace_memory_region *r, int as_id, uint32_t id)
{
	memset(r, 0, sizeof(*r));
	r->slot = ((uint32_t)as_id << 16) | id;
	r->flags = 0;
	r->guest_phys_addr = 0;
	r->memory_size = MEMSLOT_PROBE_SIZE;
	r->userspace_addr = PROBE_BOGUS_HVA;
}

void memslot_undo_region(struct kvm_userspace_memory_region *r, int as_id, uint32_t id)
{
	memslot_probe_region(r, as_id, id);
	r->memory_size = 0; /* delete: only for the id the probe itself created */
}

int memslot_probe_verdict(int64_t ret)
{
	if (ret == -EINVAL)
		return 1;
	if (ret == -EEXIST)
		return 0;
	return -1;
}

void memslot_holds_region(struct kvm_userspace_memory_region *r, uint32_t id, uint32_t flags, uint64_t hva,
			  uint64_t size, uint64_t probe_gpa)
{
	memset(r, 0, sizeof(*r));
	r->slot = id;
	r->flags = flags & KVM_MEM_READONLY;
	r->guest_phys_addr = probe_gpa & ~(size - 1);
	r->memory_size = size;
	r->userspace_addr = hva;
}

int memslot_holds_verdict(int used, int64_t move_ret)
{
	if (!used)
		return 0; /* (an unused id answers the move with EEXIST too: a create that overlaps) */
	if (move_ret == -EEXIST)
		return 1;
	if (move_ret == -EINVAL)
		return 0;
	return -1;
}

int kvm_slot_holds(struct kvm_vm *vm, uint32_t id, uint32_t flags, uint64_t hva, uint64_t size, uint64_t slot_gpa,
		   uint64_t probe_gpa, struct vmsh_err *err)
{
	if (size < 4096 || (size & (size - 1)))
		return vmsh_error(err, EINVAL, "slot probe of %#llx bytes", (unsigned long long)size);
	int used = kvm_memslot_id_used(vm, 0, id, err);
	if (used <= 0)
		return used;
	struct kvm_userspace_memory_region r;
	memslot_holds_region(&r, id, flags, hva, size, probe_gpa);
	int64_t ret;
	if (kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &ret, err) < 0)
		return -1;
	int v = memslot_holds_verdict(used, ret);
	if (v >= 0)
		return v;
	if (ret == 0 && r.guest_phys_addr != slot_gpa) {
		/* the probe address was in no slot: KVM moved the slot there */
		int64_t back = -1;
		memslot_holds_region(&r, id, flags, hva, size, slot_gpa);
		struct vmsh_err e2 = { 0 };
		bool ok = kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &back, &e2) == 0 &&
			  back == 0;
		return vmsh_error(err, EIO, "memory slot %u was moved by a probe (its address lies in no slot); %s", id,
				  ok ? "moved back" : "moving it back failed");
	}
	return vmsh_error(err, ret < 0 ? (int)-ret : EIO, "memory slot %u answered a move probe with %lld", id,
			  (long long)ret);
}

/* The answer of one move probe: -EINVAL, -EEXIST, or -1 after anything
 * else (a 0 that created a slot - the id was free and the range overlapped
 * nothing - is undone at once; one that moved the slot cannot be). */
static int64_t move_probe(struct kvm_vm *vm, uint32_t id, uint64_t hva, uint64_t size, uint64_t probe_gpa,
			  bool id_free_if_zero, struct vmsh_err *err)
{
	struct kvm_userspace_memory_region r;
	memslot_holds_region(&r, id, 0, hva, size, probe_gpa);
	int64_t ret;
	if (kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &ret, err) < 0)
		return -1;
	if (ret == -EINVAL || ret == -EEXIST)
		return ret;
	if (ret == 0 && id_free_if_zero) {
		int64_t back = -1;
		r.memory_size = 0;
		struct vmsh_err e2 = { 0 };
		bool ok = kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &back, &e2) == 0 &&
			  back == 0;
		vmsh_error(err, EIO, "a slot probe at %#llx created slot %u (the address lies in no slot); %s",
			   (unsigned long long)probe_gpa, id, ok ? "removed again" : "removing it failed");
		return -1;
	}
	if (ret == 0)
		vmsh_error(err, EIO, "slot %u accepted a probe at %#llx: the address lies in no other slot, or in "
			   "its own; stopped", id, (unsigned long long)probe_gpa);
	else
		vmsh_error(err, ret < 0 ? (int)-ret : EIO, "slot %u answered a probe with %lld", id, (long long)ret);
	return -1;
}

int kvm_slot_is_memory(struct kvm_vm *vm, uint32_t id, uint64_t hva, uint64_t size, uint64_t probe_gpa,
		       struct vmsh_err *err)
{
	if (size < 2 * 4096 || (size & 0xfff) || (hva & 0xfff))
		return vmsh_error(err, EINVAL, "slot probe of %#llx bytes at %#llx", (unsigned long long)size,
				  (unsigned long long)hva);
	int64_t a = move_probe(vm, id, hva, size - 4096, probe_gpa, true, err);
	if (a == -1 || a == -EEXIST)
		return a == -1 ? -1 : 0; /* free */
	int64_t b = move_probe(vm, id, hva, size, probe_gpa, false, err);
	if (b == -1 || b == -EINVAL)
		return b == -1 ? -1 : 0; /* other memory */
	int64_t c = move_probe(vm, id, hva, size - 4096, probe_gpa, true, err);
	if (c == -1)
		return -1;
	return c == -EINVAL; /* still used: it was no free id's EEXIST */
}

/* One probe of id; a probe that created a slot (no slot anywhere below
 * 8 TiB) is undone at once. 1 used, 0 free, -1 error. */
int kvm_memslot_id_used(struct kvm_vm *vm, int as_id, uint32_t id, struct vmsh_err *err)
{
	struct kvm_userspace_memory_region r;
	int64_t ret;
	memslot_probe_region(&r, as_id, id);
	if (kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &ret, err) < 0)
		return -1;
	int v = memslot_probe_verdict(ret);
	if (v >= 0)
		return v;
	if (ret == 0) {
		int64_t ret2 = -1;
		memslot_undo_region(&r, as_id, id);
		struct vmsh_err e2 = { 0 };
		if (kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &ret2, &e2) < 0 || ret2 != 0)
			return vmsh_error(err, EIO,
					  "a memory slot probe created slot %u (the VM has no memory below 8 TiB) and "
					  "removing it failed: the VM may be damaged", id);
		return vmsh_error(err, ENXIO, "the VM has no memory slot below 8 TiB in address space %d: "
				  "not probing further (the probe's slot was removed again)", as_id);
	}
	return vmsh_error(err, ret < 0 ? (int)-ret : EIO, "memory slot probe of id %u returned %lld; stopped probing",
			  id, (long long)ret);
}

bool memslot_ids_cover(const struct memslot_ids *ids, uint32_t id)
{
	if (id >= ids->limit)
		return true; /* no such id */
	uint32_t top = ids->top_from ? ids->top_from : ids->limit; /* 0: the top not probed */
	return id <= ids->max_probed || id >= top;
}

/* Stop after this many free ids in a row past the last used one: hypervisors
 * allocate ids from 0 upwards (qemu, firecracker, cloud-hypervisor, crosvm). */
#define FREE_RUN_STOP 64

static int add_id(struct memslot_ids *out, size_t *cap, uint32_t id, struct vmsh_err *err)
{
	if (out->n == *cap) {
		uint32_t *n2 = realloc(out->ids, *cap * 2 * sizeof(*n2));
		if (!n2)
			return vmsh_error(err, ENOMEM, "probe memory slots");
		out->ids = n2;
		*cap *= 2;
	}
	out->ids[out->n++] = id;
	return 0;
}

/* ids probed at the top of the range, downwards: until this many free ids
 * in a row (vmsh's sessions take the highest free ones, so theirs lie
 * together at the top; a gap is an ended session's), at most
 * TOP_RANGE_PROBES (hv_shared.c probes further ids one by one if it must) */
#define TOP_FREE_RUN_STOP 8
#define TOP_RANGE_PROBES 64

int kvm_memslot_ids(struct kvm_vm *vm, int as_id, struct memslot_ids *out, struct vmsh_err *err)
{
	memset(out, 0, sizeof(*out));
	int64_t ret;
	if (kvm_ioctl_val(vm, vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS, &ret, err) < 0)
		return -1;
	out->limit = ret > 0 ? (uint32_t)ret : 32;
	size_t cap = 16;
	out->ids = malloc(cap * sizeof(*out->ids));
	if (!out->ids)
		return vmsh_error(err, ENOMEM, "probe memory slots");

	uint32_t free_run = 0;
	for (uint32_t id = 0; id < out->limit && free_run < FREE_RUN_STOP; id++) {
		int v = kvm_memslot_id_used(vm, as_id, id, err);
		if (v < 0)
			goto fail;
		out->probes++;
		out->max_probed = id;
		if (v == 0) {
			free_run++;
			continue;
		}
		free_run = 0;
		if (add_id(out, &cap, id, err) < 0)
			goto fail;
	}
	/* the top of the range, where vmsh (and other sessions of it) take ids:
	 * 8 probes for a VM no session holds now, not 64 (0.2 ms each on the
	 * emulated host) */
	out->top_from = out->limit;
	uint32_t low = out->limit > TOP_RANGE_PROBES ? out->limit - TOP_RANGE_PROBES : 0;
	if (low <= out->max_probed)
		low = out->max_probed + 1;
	size_t first_top = out->n;
	free_run = 0;
	for (uint32_t id = out->limit; id-- > low && free_run < TOP_FREE_RUN_STOP;) {
		int v = kvm_memslot_id_used(vm, as_id, id, err);
		if (v < 0)
			goto fail;
		out->probes++;
		out->top_from = id;
		if (v == 0) {
			free_run++;
			continue;
		}
		free_run = 0;
		if (add_id(out, &cap, id, err) < 0)
			goto fail;
	}
	/* ascending, as the low ids are */
	for (size_t i = first_top, j = out->n; i + 1 < j; i++, j--) {
		uint32_t x = out->ids[i];
		out->ids[i] = out->ids[j - 1];
		out->ids[j - 1] = x;
	}
	log_debug("memslot probe: %zu used ids in %u probes", out->n, out->probes);
	return 0;
fail:
	free(out->ids);
	out->ids = NULL;
	out->n = 0;
	return -1;
}
