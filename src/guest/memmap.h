/* memmap.h - which host mapping of the hypervisor backs which guest-physical
 * range, inferred from /proc/PID/maps and confirmed by guest content (the
 * guest's page tables must resolve through it), then refined with the
 * guest's own list of RAM ranges. See memslots.c for why slot ranges are not
 * probed with KVM ioctls. */
#ifndef VMSH_MEMMAP_H
#define VMSH_MEMMAP_H

#include "guest/guestmem.h"

/* Returns 1 if guest memory, as currently described by gm, looks right. */
typedef int (*memmap_check_fn)(struct guest_mem *gm, void *opaque);

/* Try each candidate mapping as "guest-physical 0 at its start"; keep the
 * first one for which check passes (a provisional range as long as the
 * mapping). anchor_gpa must lie inside it. */
int memmap_bootstrap(struct guest_mem *gm, uint64_t anchor_gpa, memmap_check_fn check, void *opaque,
		     struct vmsh_err *err);

struct ram_range {
	uint64_t gpa, size;
};
/* Replace the provisional range by the guest's RAM ranges, each with its
 * host address (verified if inside the bootstrap mapping). */
int memmap_refine(struct guest_mem *gm, const struct ram_range *ram, size_t n, struct vmsh_err *err);

/* Is this /proc/PID/maps entry a candidate for guest RAM? (unit-tested) */
struct proc_map;
int memmap_is_candidate(const struct proc_map *m);

#endif
