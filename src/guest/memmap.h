/* memmap.h - which host mapping of the hypervisor backs which guest-physical
 * range, inferred from /proc/PID/maps and confirmed by guest content (the
 * guest's page tables must resolve through it), then refined with the
 * guest's own list of RAM ranges. See memslots.c for why slot ranges are not
 * probed with KVM ioctls; only whether a slot is made of given host memory
 * (memmap_place_by_slots). */
#ifndef VMSH_MEMMAP_H
#define VMSH_MEMMAP_H

#include "guest/guestmem.h"

/* What the check found besides its verdict: references the guest's own
 * structures make (page-table pages, the kernel's map of RAM) that lie
 * outside the map tried. A layout that leaves none out is preferred. */
struct memmap_evidence {
	bool first_only;      /* in: stop at the first reference outside */
	uint64_t above_limit; /* in: 4 GiB + the mapping's size: no RAM of it lies beyond */
	uint64_t hole_lo;     /* in: where the layout's low RAM ends: [hole_lo, 4 GiB) is its hole */
	unsigned outside;     /* out: references outside the map */
	unsigned inside;      /* out: references inside it (how much structure it shows) */
	uint64_t low_end;     /* out: end of the highest of them below 4 GiB and the mapping's size, or 0 */
	uint64_t high_end;    /* out: end of the highest of them in [4 GiB, above_limit), or 0 */
};

/* Returns 1 if guest memory, as currently described by gm, looks right
 * (and fills ev), else 0. */
typedef int (*memmap_check_fn)(struct guest_mem *gm, void *opaque, struct memmap_evidence *ev);

/* Try each candidate mapping as "guest-physical 0 at its start", or split
 * at the 4 GiB hole; of the layouts for which check passes and nothing it
 * sees lies outside, keep the one that shows the most references inside. A
 * layout that passes but leaves references out (the whole mapping taken as
 * low RAM while the kernel maps RAM above 4 GiB: the vCPU's root below the
 * split says nothing about it) is kept only if no layout leaves nothing
 * out. anchor_gpa must lie inside the mapping. */
int memmap_bootstrap(struct guest_mem *gm, uint64_t anchor_gpa, memmap_check_fn check, void *opaque,
		     struct vmsh_err *err);

struct ram_range {
	uint64_t gpa, size;
};
/* Replace the provisional range by the guest's RAM ranges, each with its
 * host address (verified if inside the bootstrap mapping). */
int memmap_refine(struct guest_mem *gm, const struct ram_range *ram, size_t n, struct vmsh_err *err);

/* RAM the guest lists that no bootstrap mapping explains - memory
 * hotplugged as DIMMs, each its own mapping somewhere in the hypervisor - is
 * placed where KVM itself has it: holds(opaque, hva, size) asks whether one
 * of the VM's memory slots is exactly [hva, hva+size) (1 yes, 0 no, -1
 * error; a probe that changes nothing, kvm/memslots.c). A range gets the one
 * candidate mapping that is such a slot, or nothing when none or several
 * are, or when another range without host address has its size (KVM tells
 * that a mapping is a slot, not where the slot lies: two equal DIMMs cannot
 * be told apart). Only ranges of whole hotplug blocks (128 MiB) are placed.
 * What a lying guest can gain: one of its own slots' memory at a wrong
 * guest address - never memory of the hypervisor's that no slot holds. */
/* Candidate mappings asked about in all (each question costs two or three
 * injected ioctls per slot id): a guest that lists many ranges of many
 * sizes must not hold the hypervisor for long. Honest layouts need a few. */
#define MEMMAP_SLOT_PROBES 128
struct memmap_slot_report {
	unsigned placed, ambiguous, unmatched, probes;
};
struct proc_map;
typedef int (*memmap_slot_fn)(void *opaque, uint64_t hva, uint64_t size, struct vmsh_err *err);
int memmap_place_by_slots(struct guest_mem *gm, const struct proc_map *maps, size_t n, memmap_slot_fn holds,
			  void *opaque, struct memmap_slot_report *rep, struct vmsh_err *err);

/* Is this /proc/PID/maps entry a candidate for guest RAM? (unit-tested) */
int memmap_is_candidate(const struct proc_map *m);

#endif
