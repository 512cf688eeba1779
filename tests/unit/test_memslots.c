/* test_memslots.c - the side-effect-free slot-id probe (src/kvm/memslots.c)
 * against a model of the kernel's KVM_SET_USER_MEMORY_REGION.
 *
 * The model follows __kvm_set_memory_region() in Linux virt/kvm/kvm_main.c
 * (6.x) and kvm_vm_ioctl_set_memory_region(), in the kernel's order:
 *   flags, size/gpa/hva alignment, access_ok(hva, size), as_id/id range,
 *   gpa wrap                                                  -> EINVAL
 *   size 0: id unused -> EINVAL, else                            DELETE
 *   id unused:                                                   CREATE
 *   id used: hva, npages or READONLY differ                   -> EINVAL
 *            gpa differs -> MOVE, flags differ -> FLAGS_ONLY, else 0
 *   CREATE or MOVE overlapping another slot of the as        -> EEXIST
 * CREATE, MOVE, FLAGS_ONLY and DELETE change the VM: a probe must never get
 * there. */
#include "unit.h"

#include <errno.h>

#include "kvm/kvm.h"

#define NR_USER_SLOTS 32764 /* KVM_USER_MEM_SLOTS on x86 */
#define TASK_SIZE_MAX 0x00007ffffffff000ULL
#define MAX_SLOTS 24
#define PAGE 0x1000ULL

enum branch {
	B_EINVAL,
	B_EEXIST,
	B_NOCHANGE, /* returns 0, changes nothing: still not a valid answer */
	B_CREATE,
	B_MOVE,
	B_FLAGS,
	B_DELETE,
};

static const char *const branch_name[] = { "EINVAL", "EEXIST", "no-change", "CREATE", "MOVE", "FLAGS", "DELETE" };

struct mslot {
	uint16_t as_id, id;
	uint64_t base_gfn, npages, hva;
	uint32_t flags;
};

struct vm_model {
	struct mslot s[MAX_SLOTS];
	size_t n;
	unsigned nr_as; /* 2 with SMM */
};

static struct mslot *model_find(struct vm_model *vm, unsigned as_id, unsigned id)
{
	for (size_t i = 0; i < vm->n; i++)
		if (vm->s[i].as_id == as_id && vm->s[i].id == id)
			return &vm->s[i];
	return NULL;
}

static bool model_overlaps(const struct vm_model *vm, unsigned as_id, unsigned id, uint64_t gfn, uint64_t npages)
{
	for (size_t i = 0; i < vm->n; i++) {
		const struct mslot *o = &vm->s[i];
		if (o->as_id != as_id || o->id == id)
			continue;
		if (gfn < o->base_gfn + o->npages && o->base_gfn < gfn + npages)
			return true;
	}
	return false;
}

/* The decision only: the model is never changed. Returns the ioctl result. */
static int64_t model_set_region(struct vm_model *vm, const struct kvm_userspace_memory_region *mem, enum branch *br)
{
	*br = B_EINVAL;
	if (mem->flags & ~(uint32_t)(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY))
		return -EINVAL;
	unsigned as_id = mem->slot >> 16, id = (uint16_t)mem->slot;
	if (id >= NR_USER_SLOTS) /* kvm_vm_ioctl_set_memory_region */
		return -EINVAL;
	if (mem->memory_size & (PAGE - 1))
		return -EINVAL;
	if (mem->guest_phys_addr & (PAGE - 1))
		return -EINVAL;
	if ((mem->userspace_addr & (PAGE - 1)) || mem->userspace_addr + mem->memory_size < mem->userspace_addr ||
	    mem->userspace_addr + mem->memory_size > TASK_SIZE_MAX) /* access_ok */
		return -EINVAL;
	if (as_id >= vm->nr_as)
		return -EINVAL;
	if (mem->guest_phys_addr + mem->memory_size < mem->guest_phys_addr)
		return -EINVAL;
	struct mslot *old = model_find(vm, as_id, id);
	if (!mem->memory_size) {
		if (!old)
			return -EINVAL;
		*br = B_DELETE;
		return 0;
	}
	uint64_t gfn = mem->guest_phys_addr >> 12, npages = mem->memory_size >> 12;
	enum branch change;
	if (!old) {
		change = B_CREATE;
	} else {
		if (mem->userspace_addr != old->hva || npages != old->npages ||
		    ((mem->flags ^ old->flags) & KVM_MEM_READONLY))
			return -EINVAL;
		if (gfn != old->base_gfn)
			change = B_MOVE;
		else if (mem->flags != old->flags)
			change = B_FLAGS;
		else {
			*br = B_NOCHANGE;
			return 0;
		}
	}
	if ((change == B_CREATE || change == B_MOVE) && model_overlaps(vm, as_id, id, gfn, npages)) {
		/* kvm_set_memslot() is not reached: nothing changes */
		*br = B_EEXIST;
		return -EEXIST;
	}
	*br = change;
	return 0;
}

/* A random VM: up to MAX_SLOTS slots with distinct ids below 300 (some
 * sparse, as after hot-unplug), non-overlapping gpa ranges, page-aligned
 * hvas where mmap puts them, random flags; an SMM address space sometimes. */
static void random_vm(struct unit_rng *r, struct vm_model *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->nr_as = 1 + (unsigned)unit_rand_below(r, 2);
	size_t want = 1 + unit_rand_below(r, MAX_SLOTS);
	uint64_t gfn = unit_rand_below(r, 16);
	unsigned id = (unsigned)unit_rand_below(r, 3);
	for (size_t i = 0; i < want; i++) {
		struct mslot *s = &vm->s[vm->n];
		s->as_id = (vm->nr_as == 2 && unit_rand_below(r, 6) == 0) ? 1 : 0;
		s->id = (uint16_t)id;
		s->npages = 1 + unit_rand_below(r, unit_rand_below(r, 3) ? 64 : 1 << 18);
		s->base_gfn = gfn;
		s->hva = 0x7f0000000000ULL + unit_rand_below(r, 1ULL << 28) * PAGE;
		s->flags = (uint32_t)unit_rand_below(r, 4); /* LOG_DIRTY_PAGES | READONLY */
		vm->n++;
		gfn += s->npages + unit_rand_below(r, 3) * unit_rand_below(r, 1 << 20); /* gaps or adjacent */
		id += 1 + (unit_rand_below(r, 4) ? 0 : (unsigned)unit_rand_below(r, 40));
		if (id >= 300)
			break;
	}
}

static bool used(const struct vm_model *vm, unsigned as_id, unsigned id)
{
	for (size_t i = 0; i < vm->n; i++)
		if (vm->s[i].as_id == as_id && vm->s[i].id == id)
			return true;
	return false;
}

static void test_probe_never_changes_and_answers_used_exactly(void **state)
{
	(void)state;
	struct unit_rng r = { 20240611 };
	unsigned layouts = 0, probes = 0, n_used = 0, n_free = 0;
	for (int round = 0; round < 400; round++) {
		struct vm_model vm;
		random_vm(&r, &vm);
		/* a VM with some slot in as 0 (every VM that runs a guest) */
		size_t nc = 0;
		for (size_t i = 0; i < vm.n; i++)
			nc += vm.s[i].as_id == 0;
		if (!nc)
			continue;
		layouts++;
		for (unsigned id = 0; id < 400; id++) {
			struct kvm_userspace_memory_region probe;
			memslot_probe_region(&probe, 0, id);
			/* the probe must look like what the comment says */
			assert_int_equal(probe.slot, id);
			assert_int_equal(probe.flags, 0);
			assert_int_equal(probe.memory_size, MEMSLOT_PROBE_SIZE);
			assert_int_equal(probe.guest_phys_addr, 0);
			enum branch br;
			int64_t ret = model_set_region(&vm, &probe, &br);
			probes++;
			if (br != B_EINVAL && br != B_EEXIST)
				fail_msg("layout %d id %u: probe took the %s branch", round, id, branch_name[br]);
			int v = memslot_probe_verdict(ret);
			bool u = used(&vm, 0, id);
			if (v != (u ? 1 : 0))
				fail_msg("layout %d id %u: verdict %d, slot %s", round, id, v, u ? "used" : "free");
			u ? n_used++ : n_free++;
		}
	}
	assert_true(layouts > 300);
	assert_true(n_used > 1000 && n_free > 1000);
	assert_int_equal(probes, n_used + n_free);
}

/* Slots in the SMM address space (as 1) do not make ids of as 0 used, and an
 * as-1 probe on a VM with SMM works the same. */
static void test_probe_per_address_space(void **state)
{
	(void)state;
	struct vm_model vm = { .nr_as = 2 };
	vm.s[vm.n++] = (struct mslot){ .as_id = 0, .id = 0, .base_gfn = 0, .npages = 0xa0, .hva = 0x7f1000000000ULL };
	vm.s[vm.n++] = (struct mslot){ .as_id = 0, .id = 1, .base_gfn = 0x100, .npages = 0x7ff00, .hva = 0x7f2000000000ULL };
	vm.s[vm.n++] = (struct mslot){ .as_id = 1, .id = 2, .base_gfn = 0xa0, .npages = 0x20, .hva = 0x7f3000000000ULL };
	vm.s[vm.n++] = (struct mslot){ .as_id = 1, .id = 3, .base_gfn = 0, .npages = 0x80000, .hva = 0x7f1000000000ULL };
	struct kvm_userspace_memory_region probe;
	enum branch br;
	for (unsigned id = 0; id < 8; id++) {
		memslot_probe_region(&probe, 0, id);
		assert_int_equal(memslot_probe_verdict(model_set_region(&vm, &probe, &br)), id <= 1);
		memslot_probe_region(&probe, 1, id);
		assert_int_equal(probe.slot, (1u << 16) | id);
		assert_int_equal(memslot_probe_verdict(model_set_region(&vm, &probe, &br)), id == 2 || id == 3);
		assert_true(br == B_EINVAL || br == B_EEXIST);
	}
}

/* What makes the probe safe is its userspace address 0x1000, which no slot
 * can have (vm.mmap_min_addr >= 4096), with a size no slot has. The model
 * shows the one layout where it would not be safe: a slot at hva 0x1000 of
 * the probe's size would be left unchanged at gpa 0 (ret 0), and MOVED to
 * gpa 0 from elsewhere unless that overlaps another slot. */
static void test_probe_relies_on_unmappable_hva(void **state)
{
	(void)state;
	struct kvm_userspace_memory_region probe;
	memslot_probe_region(&probe, 0, 5);
	assert_int_equal(probe.userspace_addr, 0x1000);
	struct vm_model vm = { .nr_as = 1 };
	const uint64_t np = MEMSLOT_PROBE_SIZE >> 12;
	vm.s[vm.n++] = (struct mslot){ .id = 0, .base_gfn = 0, .npages = 0x10000, .hva = 0x7f0000000000ULL };
	vm.s[vm.n++] = (struct mslot){ .id = 5, .base_gfn = 0x20000, .npages = np, .hva = 0x1000 };
	enum branch br;
	/* moving it onto slot 0 ends in EEXIST, no change */
	assert_int_equal(model_set_region(&vm, &probe, &br), -EEXIST);
	assert_int_equal(br, B_EEXIST);
	assert_int_equal(memslot_probe_verdict(-EEXIST), 0); /* ... and id 5 is called free */
	/* at the probe's own gpa: "nothing to change", ret 0 */
	vm.s[1].base_gfn = 0;
	assert_int_equal(model_set_region(&vm, &probe, &br), 0);
	assert_int_equal(br, B_NOCHANGE);
	assert_int_equal(memslot_probe_verdict(0), -1);
	/* alone elsewhere the kernel would really move it */
	vm.s[0] = vm.s[1];
	vm.s[0].base_gfn = 0x20000;
	vm.n = 1;
	model_set_region(&vm, &probe, &br);
	assert_int_equal(br, B_MOVE);
}

/* The model itself against the kernel's order, so the property test above
 * cannot pass on a model that never reaches the dangerous branches. */
static void test_model_reaches_every_branch(void **state)
{
	(void)state;
	struct vm_model vm = { .nr_as = 1 };
	vm.s[vm.n++] = (struct mslot){ .id = 0, .base_gfn = 0, .npages = 0x100, .hva = 0x7f0000000000ULL };
	vm.s[vm.n++] = (struct mslot){ .id = 1, .base_gfn = 0x1000, .npages = 0x100, .hva = 0x7f1000000000ULL };
	enum branch br;
	struct kvm_userspace_memory_region m = { .slot = 2, .guest_phys_addr = 0x200000, .memory_size = 0x1000,
						 .userspace_addr = 0x7f2000000000ULL };
	assert_int_equal(model_set_region(&vm, &m, &br), 0);
	assert_int_equal(br, B_CREATE);
	m.guest_phys_addr = 0x1000; /* inside slot 0 */
	assert_int_equal(model_set_region(&vm, &m, &br), -EEXIST);
	m = (struct kvm_userspace_memory_region){ .slot = 1, .guest_phys_addr = 0x2000000, .memory_size = 0x100000,
						  .userspace_addr = 0x7f1000000000ULL };
	assert_int_equal(model_set_region(&vm, &m, &br), 0);
	assert_int_equal(br, B_MOVE);
	m.guest_phys_addr = 0x1000000;
	m.flags = KVM_MEM_LOG_DIRTY_PAGES;
	assert_int_equal(model_set_region(&vm, &m, &br), 0);
	assert_int_equal(br, B_FLAGS);
	m.flags = KVM_MEM_READONLY;
	assert_int_equal(model_set_region(&vm, &m, &br), -EINVAL);
	m.flags = 0;
	assert_int_equal(model_set_region(&vm, &m, &br), 0);
	assert_int_equal(br, B_NOCHANGE);
	m.memory_size = 0;
	assert_int_equal(model_set_region(&vm, &m, &br), 0);
	assert_int_equal(br, B_DELETE);
	m.slot = 7;
	assert_int_equal(model_set_region(&vm, &m, &br), -EINVAL);
	m = (struct kvm_userspace_memory_region){ .slot = 3, .guest_phys_addr = 0x1001, .memory_size = 0x1000,
						  .userspace_addr = 0x7f2000000000ULL };
	assert_int_equal(model_set_region(&vm, &m, &br), -EINVAL);
}

/* The guest chose the address vmsh used to probe with (its CR3, its
 * CS.base+RIP): a page outside every slot took KVM's CREATE path and left a
 * slot at host address 0x1000. The probe now names no guest address: on any
 * VM with a slot below 8 TiB, even with holes and slots far apart, every id
 * answers EINVAL/EEXIST only. */
static void test_probe_outside_every_slot_cannot_create(void **state)
{
	(void)state;
	struct unit_rng r = { 77 };
	for (int round = 0; round < 200; round++) {
		struct vm_model vm;
		random_vm(&r, &vm);
		vm.nr_as = 1;
		for (size_t i = 0; i < vm.n; i++)
			vm.s[i].as_id = 0;
		/* one slot far up (a hotplugged DIMM at 1 TiB) */
		if (vm.n < MAX_SLOTS && round % 2)
			vm.s[vm.n++] = (struct mslot){ .id = 299, .base_gfn = 1ULL << 28, .npages = 0x40000,
						       .hva = 0x7e0000000000ULL };
		for (unsigned id = 0; id < 320; id++) {
			struct kvm_userspace_memory_region probe;
			memslot_probe_region(&probe, 0, id);
			enum branch br;
			int64_t ret = model_set_region(&vm, &probe, &br);
			if (br != B_EINVAL && br != B_EEXIST)
				fail_msg("round %d id %u: probe took the %s branch", round, id, branch_name[br]);
			assert_int_equal(memslot_probe_verdict(ret), used(&vm, 0, id) ? 1 : 0);
		}
	}
}

/* The impossible case: no slot below 8 TiB (only one far above). The probe
 * creates; the verdict says "unexpected"; the undo deletes exactly the id
 * just created and nothing else. */
static void test_probe_on_vm_without_low_slots_is_undone(void **state)
{
	(void)state;
	struct vm_model vm = { .nr_as = 1 };
	vm.s[vm.n++] = (struct mslot){ .id = 0, .base_gfn = 1ULL << 32, .npages = 0x100, .hva = 0x7f0000000000ULL };
	struct kvm_userspace_memory_region probe, undo;
	memslot_probe_region(&probe, 0, 3);
	enum branch br;
	int64_t ret = model_set_region(&vm, &probe, &br);
	assert_int_equal(br, B_CREATE);
	assert_int_equal(memslot_probe_verdict(ret), -1);
	/* what KVM holds now */
	vm.s[vm.n++] = (struct mslot){ .id = 3, .base_gfn = 0, .npages = probe.memory_size >> 12,
				       .hva = probe.userspace_addr };
	memslot_undo_region(&undo, 0, 3);
	assert_int_equal(undo.slot, 3);
	assert_int_equal(model_set_region(&vm, &undo, &br), 0);
	assert_int_equal(br, B_DELETE);
	/* the same undo on an id that was not created is refused (EINVAL) */
	memslot_undo_region(&undo, 0, 4);
	assert_int_equal(model_set_region(&vm, &undo, &br), -EINVAL);
}

/* What kvm_memslot_ids answers for: the low ids up to the last probed, and
 * the top ones it probed downwards until a run of free ids; an id between
 * (a killed run's slot below sessions that ended since) is not answered for
 * and must be probed on its own (kernel_lib.c's reaper does). */
static void test_probed_ids_cover_the_low_and_the_top_only(void **state)
{
	(void)state;
	uint32_t used_ids[] = { 0, 1, 2, 32763 };
	struct memslot_ids ids = { .ids = used_ids, .n = 4, .max_probed = 66, .top_from = 32755, .limit = 32764 };
	assert_true(memslot_ids_cover(&ids, 0));
	assert_true(memslot_ids_cover(&ids, 66));
	assert_false(memslot_ids_cover(&ids, 67));
	assert_false(memslot_ids_cover(&ids, 32740));
	assert_false(memslot_ids_cover(&ids, 32754));
	assert_true(memslot_ids_cover(&ids, 32755));
	assert_true(memslot_ids_cover(&ids, 32763));
	assert_true(memslot_ids_cover(&ids, 40000)); /* beyond the limit: no such id */
	/* nothing probed at the top: top_from is the limit */
	ids.top_from = ids.limit;
	assert_false(memslot_ids_cover(&ids, 32763));
	ids.top_from = 0; /* the same, as a zeroed record says it */
	assert_false(memslot_ids_cover(&ids, 32763));
}

static void test_verdict_mapping(void **state)
{
	(void)state;
	assert_int_equal(memslot_probe_verdict(-EINVAL), 1);
	assert_int_equal(memslot_probe_verdict(-EEXIST), 0);
	assert_int_equal(memslot_probe_verdict(0), -1); /* something may have changed */
	assert_int_equal(memslot_probe_verdict(1), -1);
	assert_int_equal(memslot_probe_verdict(-EFAULT), -1);
	assert_int_equal(memslot_probe_verdict(-EPERM), -1);
	assert_int_equal(memslot_probe_verdict(-ENOMEM), -1);
	assert_int_equal(memslot_probe_verdict(-EIO), -1);
	assert_int_equal(memslot_probe_verdict(-ENOTTY), -1);
	assert_int_equal(memslot_probe_verdict(EINVAL), -1);
	assert_int_equal(memslot_probe_verdict(EEXIST), -1);
	assert_int_equal(memslot_probe_verdict(INT64_MIN), -1);
}

static void test_probe_region_layout(void **state)
{
	(void)state;
	struct kvm_userspace_memory_region r;
	memset(&r, 0xa5, sizeof(r));
	memslot_probe_region(&r, 1, 0x1234);
	assert_int_equal(r.slot, 0x11234);
	assert_int_equal(r.flags, 0);
	assert_int_equal(r.guest_phys_addr, 0);
	assert_int_equal(r.memory_size, 0x7fffffff000ULL); /* 8 TiB - 4 KiB */
	assert_int_equal(r.userspace_addr, 0x1000);
}

/* The probe address of a move probe: a page inside a random as-0 slot other
 * than ours (false: the draw hit ours or SMM memory, skip the round). */
static bool probe_in_other_slot(struct unit_rng *r, const struct vm_model *vm, const struct mslot *ours,
				uint64_t *probe_gpa)
{
	size_t ram = unit_rand_below(r, vm->n);
	if (vm->s[ram].as_id != 0 || &vm->s[ram] == ours)
		return false;
	*probe_gpa = (vm->s[ram].base_gfn + unit_rand_below(r, vm->s[ram].npages)) * PAGE;
	return true;
}

/* The "does slot id hold exactly this memory" probe (kvm_slot_holds): for
 * random VMs, a probe address inside some other slot, and a candidate that
 * is a slot of the VM (same memory or not) or an unused id: the move probe
 * never changes the VM, and with the id-used probe before it the answer is
 * exactly "the id holds that hva, size and READONLY bit". */
static void test_slot_holds_probe(void **state)
{
	(void)state;
	struct unit_rng r = { 20261203 };
	unsigned yes = 0, no = 0;
	for (int round = 0; round < 2000; round++) {
		struct vm_model vm;
		random_vm(&r, &vm);
		/* ours: a 2-page or 2 MiB slot of the VM's, at a free place */
		uint64_t pages = unit_rand_below(&r, 2) ? 2 : 512;
		if (vm.n >= MAX_SLOTS)
			continue;
		struct mslot *ours = &vm.s[vm.n];
		*ours = (struct mslot){ .as_id = 0, .id = (uint16_t)(32000 + unit_rand_below(&r, 700)),
					.npages = pages, .base_gfn = 1ULL << 36, .hva = 0x7e0000000000ULL,
					.flags = unit_rand_below(&r, 2) ? KVM_MEM_READONLY : 0 };
		bool present = unit_rand_below(&r, 4) != 0;
		if (present)
			vm.n++;
		uint64_t probe_gpa;
		if (!probe_in_other_slot(&r, &vm, ours, &probe_gpa))
			continue;
		/* what we ask about: our exact memory, or a different hva, size or flag */
		uint64_t hva = ours->hva, size = pages * PAGE;
		uint32_t flags = ours->flags;
		switch (unit_rand_below(&r, 4)) {
		case 1: hva += PAGE * 2048; break;
		case 2: size = size == 2 * PAGE ? 512 * PAGE : 2 * PAGE; break;
		case 3: flags ^= KVM_MEM_READONLY; break;
		}
		bool truth = present && hva == ours->hva && size == pages * PAGE &&
			     !((flags ^ ours->flags) & KVM_MEM_READONLY);
		/* step 1, the id-used probe */
		struct kvm_userspace_memory_region probe;
		memslot_probe_region(&probe, 0, ours->id);
		enum branch br;
		int used = memslot_probe_verdict(model_set_region(&vm, &probe, &br));
		assert_true(br == B_EINVAL || br == B_EEXIST);
		assert_int_equal(used, present);
		/* step 2, the move */
		memslot_holds_region(&probe, ours->id, flags, hva, size, probe_gpa);
		int64_t ret = model_set_region(&vm, &probe, &br);
		if (br != B_EINVAL && br != B_EEXIST)
			fail_msg("round %d: the holds probe took the %s branch", round, branch_name[br]);
		int v = memslot_holds_verdict(used, ret);
		assert_int_equal(v, truth);
		truth ? yes++ : no++;
	}
	assert_true(yes > 200 && no > 200);
}

/* The impossible case of the holds probe: a probe address in no slot makes
 * KVM move the slot there; kvm_slot_holds moves it back with the same
 * region at the slot's own address, which the model must take as a move
 * back (not refuse it, not create anything). */
static void test_slot_holds_probe_outside_ram_is_moved_back(void **state)
{
	(void)state;
	struct unit_rng r = { 7 };
	for (int round = 0; round < 500; round++) {
		struct vm_model vm;
		random_vm(&r, &vm);
		if (vm.n >= MAX_SLOTS)
			continue;
		struct mslot *ours = &vm.s[vm.n++];
		uint64_t gfn0 = 1ULL << 36;
		*ours = (struct mslot){ .as_id = 0, .id = 32000, .npages = 2, .base_gfn = gfn0,
					.hva = 0x7e0000000000ULL, .flags = KVM_MEM_READONLY };
		uint64_t far = (1ULL << 37) + unit_rand_below(&r, 1 << 20) * 2 * PAGE; /* in no slot */
		struct kvm_userspace_memory_region probe;
		memslot_holds_region(&probe, ours->id, ours->flags, ours->hva, 2 * PAGE, far);
		enum branch br;
		assert_int_equal(model_set_region(&vm, &probe, &br), 0);
		assert_int_equal(br, B_MOVE); /* what the guard in kvm_slot_holds is for */
		ours->base_gfn = probe.guest_phys_addr / PAGE;
		memslot_holds_region(&probe, ours->id, ours->flags, ours->hva, 2 * PAGE, gfn0 * PAGE);
		assert_int_equal(model_set_region(&vm, &probe, &br), 0);
		assert_int_equal(br, B_MOVE);
		assert_true(probe.guest_phys_addr == gfn0 * PAGE);
	}
}

/* kvm_slot_is_memory's three move probes (the DIMM placement): for random
 * VMs, a probe address in some other as-0 slot, any size (not only powers
 * of two) and a candidate that is a slot's exact memory, other memory, or
 * an unused id: no probe changes the VM, and "EINVAL, EEXIST, EINVAL" is
 * exactly "the id is made of that memory". An id freed between the probes
 * (its create answers EEXIST) never reads as yes. */
static void test_slot_is_memory_probes(void **state)
{
	(void)state;
	struct unit_rng r = { 20261204 };
	unsigned yes = 0, no = 0, raced = 0;
	for (int round = 0; round < 3000; round++) {
		struct vm_model vm;
		random_vm(&r, &vm);
		if (vm.n >= MAX_SLOTS)
			continue;
		uint64_t pages = 2 + unit_rand_below(&r, 1 << 16);
		struct mslot *ours = &vm.s[vm.n];
		*ours = (struct mslot){ .as_id = 0, .id = (uint16_t)(400 + unit_rand_below(&r, 100)), .npages = pages,
					.base_gfn = (1ULL << 36) + unit_rand_below(&r, 1 << 20),
					.hva = 0x7e0000000000ULL, .flags = (uint32_t)unit_rand_below(&r, 2) };
		bool present = unit_rand_below(&r, 4) != 0;
		if (present)
			vm.n++;
		uint64_t probe_gpa;
		if (!probe_in_other_slot(&r, &vm, ours, &probe_gpa))
			continue;
		uint64_t hva = ours->hva, size = pages * PAGE;
		switch (unit_rand_below(&r, 3)) {
		case 1: hva += PAGE * (1 + unit_rand_below(&r, 4096)); break;
		case 2: size += PAGE * (1 + unit_rand_below(&r, 8)); break;
		}
		bool truth = present && hva == ours->hva && size == pages * PAGE && !(ours->flags & KVM_MEM_READONLY);
		/* a: the id used? b: this memory? c: still used? */
		struct kvm_userspace_memory_region probe;
		enum branch br;
		int64_t res[3];
		bool race = present && unit_rand_below(&r, 10) == 0;
		for (int k = 0; k < 3; k++) {
			if (race && k == 1)
				vm.n--; /* the hypervisor deletes the slot between the probes */
			memslot_holds_region(&probe, ours->id, 0, hva, k == 1 ? size : size - PAGE, probe_gpa);
			assert_true(probe.guest_phys_addr <= probe_gpa &&
				    probe_gpa < probe.guest_phys_addr + probe.memory_size);
			res[k] = model_set_region(&vm, &probe, &br);
			if (br != B_EINVAL && br != B_EEXIST)
				fail_msg("round %d probe %d: the %s branch", round, k, branch_name[br]);
		}
		bool answer = res[0] == -EINVAL && res[1] == -EEXIST && res[2] == -EINVAL;
		if (race) {
			assert_false(answer);
			raced++;
			continue;
		}
		assert_int_equal(answer, truth);
		truth ? yes++ : no++;
	}
	assert_true(yes > 200 && no > 200 && raced > 20);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_reaches_every_branch),
		cmocka_unit_test(test_slot_is_memory_probes),
		cmocka_unit_test(test_probed_ids_cover_the_low_and_the_top_only),
		cmocka_unit_test(test_probe_never_changes_and_answers_used_exactly),
		cmocka_unit_test(test_probe_per_address_space),
		cmocka_unit_test(test_probe_relies_on_unmappable_hva),
		cmocka_unit_test(test_probe_outside_every_slot_cannot_create),
		cmocka_unit_test(test_probe_on_vm_without_low_slots_is_undone),
		cmocka_unit_test(test_verdict_mapping),
		cmocka_unit_test(test_probe_region_layout),
		cmocka_unit_test(test_slot_holds_probe),
		cmocka_unit_test(test_slot_holds_probe_outside_ram_is_moved_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
