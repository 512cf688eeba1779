/* memslots.c - which memory slot ids a VM uses, found with KVM_SET_USER_MEMORY_REGION
 * probes that cannot change anything.
 *
 * The kernel checks a request in this order (virt/kvm/kvm_main.c):
 *   1. alignment, address-space and id range, access_ok(userspace_addr)
 *   2. id in use:   userspace_addr/size/readonly differ from the slot -> EINVAL
 *                   (equal values would MOVE the slot or change its flags!)
 *   3. id free:     range overlaps another slot -> EEXIST
 *                   (no overlap would CREATE a slot!)
 * A probe with a range inside guest memory that is known to be occupied (a
 * page the vCPU is using, e.g. its page-table root) and a userspace address
 * no slot can have therefore answers "used" (EINVAL) or "free" (EEXIST) and never
 * reaches a path that changes anything.
 *
 * Slot ranges are NOT probed with free ids: a range that overlaps nothing
 * would create a slot, and a guest access to it in that window could hit a
 * bogus host address and crash the hypervisor. Ranges come from the guest's
 * own view instead (guest/memmap.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kvm/kvm.h"

/* access_ok() accepts it, yet no slot can be backed by it: the first pages
 * of an address space are never mappable (vm.mmap_min_addr). */
#define PROBE_BOGUS_HVA 0x1000ULL

void memslot_probe_region(struct kvm_userspace_memory_region *r, int as_id, uint32_t id, uint64_t known_gpa)
{
	memset(r, 0, sizeof(*r));
	r->slot = ((uint32_t)as_id << 16) | id;
	r->flags = 0;
	r->guest_phys_addr = known_gpa & ~0xfffULL;
	r->memory_size = 0x1000;
	r->userspace_addr = PROBE_BOGUS_HVA;
}

int memslot_probe_verdict(int64_t ret)
{
	if (ret == -EINVAL)
		return 1;
	if (ret == -EEXIST)
		return 0;
	return -1;
}

/* Stop after this many free ids in a row past the last used one: hypervisors
 * allocate ids from 0 upwards (qemu, firecracker, cloud-hypervisor, crosvm). */
#define FREE_RUN_STOP 64

int kvm_memslot_ids(struct kvm_vm *vm, int as_id, uint64_t known_gpa, struct memslot_ids *out, struct vmsh_err *err)
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
		struct kvm_userspace_memory_region r;
		memslot_probe_region(&r, as_id, id, known_gpa);
		if (kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), &ret, err) < 0)
			goto fail;
		out->probes++;
		out->max_probed = id;
		int v = memslot_probe_verdict(ret);
		if (v < 0) {
			/* 0 would mean we changed something: cannot happen with a bogus
			 * address, but stop at once rather than probe further */
			vmsh_error(err, ret < 0 ? (int)-ret : EIO,
				   "memory slot probe of id %u at gpa %#llx returned %lld; stopped probing", id,
				   (unsigned long long)known_gpa, (long long)ret);
			goto fail;
		}
		if (v == 0) {
			free_run++;
			continue;
		}
		free_run = 0;
		if (out->n == cap) {
			uint32_t *n2 = realloc(out->ids, cap * 2 * sizeof(*n2));
			if (!n2) {
				vmsh_error(err, ENOMEM, "probe memory slots");
				goto fail;
			}
			out->ids = n2;
			cap *= 2;
		}
		out->ids[out->n++] = id;
	}
	log_debug("memslot probe: %zu used ids in %u probes", out->n, out->probes);
	return 0;
fail:
	free(out->ids);
	out->ids = NULL;
	out->n = 0;
	return -1;
}
