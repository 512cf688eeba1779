/* test_memmap.c - the guest-physical -> host-virtual map under a hostile
 * guest (src/guest/iomem.c, memmap.c, guestmem.c).
 *
 * The guest kernel owns its iomem_resource tree: every "System RAM" entry it
 * shows may be forged. The map vmsh builds from it must never hand out a host
 * address outside the hypervisor mapping that was tied to guest RAM by
 * evidence the guest cannot forge (here: the bootstrap mapping). The tests
 * run against this process's own mappings: a "RAM" mapping (the bootstrap
 * one) and decoys of the sizes a hostile guest would claim. */
#include "unit.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/procfs.h"
#include "guest/iomem.h"
#include "guest/memmap.h"

#define MIB (1ULL << 20)
#define RAM_SIZE (16 * MIB)

struct fixture {
	uint8_t *reserve; /* PROT_NONE around RAM so that its VMA stays exactly RAM_SIZE */
	uint8_t *ram;
	uint8_t *decoy; /* an rw mapping that is not guest RAM (a "thread stack") */
	size_t decoy_size;
	struct guest_mem gm;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->reserve = mmap(NULL, RAM_SIZE + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->reserve != MAP_FAILED);
	f->ram = f->reserve + 4096;
	assert_int_equal(mprotect(f->ram, RAM_SIZE, PROT_READ | PROT_WRITE), 0);
	f->decoy_size = 4 * MIB;
	uint8_t *dres = mmap(NULL, f->decoy_size + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(dres != MAP_FAILED);
	f->decoy = dres + 4096;
	assert_int_equal(mprotect(f->decoy, f->decoy_size, PROT_READ | PROT_WRITE), 0);
	guest_mem_init(&f->gm, getpid());
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	guest_mem_free(&f->gm);
	munmap(f->reserve, RAM_SIZE + 2 * 4096);
	munmap(f->decoy - 4096, f->decoy_size + 2 * 4096);
	free(f);
	return 0;
}

/* What memmap_bootstrap leaves: gpa 0 at the start of the RAM mapping,
 * confirmed by content. */
static void boot(struct fixture *f)
{
	guest_mem_clear(&f->gm);
	struct guest_range r = {
		.gpa = 0, .size = RAM_SIZE, .hva = (uintptr_t)f->ram, .kind = "provisional", .verified = true,
	};
	snprintf(r.backing, sizeof(r.backing), "[anon]");
	assert_int_equal(guest_mem_add(&f->gm, &r), 0);
}

/* Every range with a host address lies inside the RAM mapping, without
 * wrapping, and the map is sorted and free of overlaps. */
static void assert_inside_ram(const struct fixture *f)
{
	uint64_t lo = (uintptr_t)f->ram, hi = lo + RAM_SIZE;
	for (size_t i = 0; i < f->gm.n; i++) {
		const struct guest_range *r = &f->gm.r[i];
		assert_true(r->gpa + r->size >= r->gpa || r->gpa + r->size == 0);
		if (i > 0)
			assert_true(f->gm.r[i - 1].gpa + f->gm.r[i - 1].size <= r->gpa);
		if (!r->hva)
			continue;
		if (r->hva < lo || r->hva > hi || r->size > hi - r->hva) {
			print_error("range gpa %#" PRIx64 " size %#" PRIx64 " -> hva %#" PRIx64
				    " outside RAM %#" PRIx64 "-%#" PRIx64 "\n",
				    r->gpa, r->size, r->hva, lo, hi);
			fail();
		}
	}
}

static void refine(struct fixture *f, const struct ram_range *ram, size_t n)
{
	boot(f);
	struct vmsh_err err = { 0 };
	memmap_refine(&f->gm, ram, n, &err); /* may refuse: either way the map must be safe */
	assert_inside_ram(f);
}

/* A claimed range beyond the RAM mapping whose size equals another rw
 * mapping of the hypervisor (old code matched it by size alone). */
static void test_refine_claim_matching_decoy_size(void **state)
{
	struct fixture *f = *state;
	struct ram_range ram[] = {
		{ 0x1000, 0x9f000 },
		{ 0x100000, RAM_SIZE - 0x100000 },
		{ 0x100000000ULL, f->decoy_size }, /* forged */
	};
	refine(f, ram, ARRAY_LEN(ram));
}

/* gpa + size wraps: old code computed "inside" from the wrapped sum. */
static void test_refine_wrapping_range(void **state)
{
	struct fixture *f = *state;
	struct ram_range ram[] = {
		{ 0x1000, 0x9f000 },
		{ 0xfffffffffff00000ULL, 0x200000 },
	};
	refine(f, ram, ARRAY_LEN(ram));
	struct ram_range ram2[] = { { 0xffffffffffff0000ULL, 0x10000 } }; /* ends exactly at 2^64 */
	refine(f, ram2, ARRAY_LEN(ram2));
}

/* Unsorted and overlapping claims, and one covering everything. */
static void test_refine_unsorted_overlapping(void **state)
{
	struct fixture *f = *state;
	struct ram_range a[] = { { 0x800000, 0x100000 }, { 0x1000, 0x9f000 }, { 0x100000, 0x800000 } };
	refine(f, a, ARRAY_LEN(a));
	struct ram_range b[] = { { 0x1000, 0x400000 }, { 0x2000, 0x400000 } };
	refine(f, b, ARRAY_LEN(b));
	struct ram_range c[] = { { 0, ~0ULL & ~0xfffULL } };
	refine(f, c, ARRAY_LEN(c));
	struct ram_range d[] = { { 0x1000, 0x9f000 }, { 0x100000, RAM_SIZE - 0x100000 }, { RAM_SIZE, 8 * MIB } };
	refine(f, d, ARRAY_LEN(d));
}

/* Random hostile lists: whatever the guest claims, no host address leaves
 * the RAM mapping. */
static void test_refine_random_hostile(void **state)
{
	struct fixture *f = *state;
	struct unit_rng rng = { 42 };
	static const uint64_t interesting[] = { 0, 0x1000, 0xa0000, RAM_SIZE, 4 * MIB, 0xc0000000ULL,
						0x100000000ULL, ~0ULL & ~0xfffULL, 1ULL << 63 };
	for (int round = 0; round < 2000; round++) {
		struct ram_range ram[8];
		size_t n = 1 + unit_rand64(&rng) % 8;
		for (size_t i = 0; i < n; i++) {
			uint64_t a = unit_rand64(&rng), b = unit_rand64(&rng);
			ram[i].gpa = (a & 1 ? interesting[(a >> 1) % ARRAY_LEN(interesting)] : (a >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
			ram[i].size = (b & 1 ? interesting[(b >> 1) % ARRAY_LEN(interesting)] : (b >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
			if (b & 2)
				ram[i].size = f->decoy_size;
		}
		refine(f, ram, n);
	}
}

/* The honest layouts still get their host addresses: qemu's identity part
 * and its split above 4 GiB (the rest of the same mapping). */
static void test_refine_honest_layout(void **state)
{
	struct fixture *f = *state;
	struct ram_range ram[] = {
		{ 0x1000, 0x9f000 },
		{ 0x100000, 8 * MIB - 0x100000 },
		{ 0x100000000ULL, 8 * MIB },
	};
	boot(f);
	struct vmsh_err err = { 0 };
	assert_int_equal(memmap_refine(&f->gm, ram, ARRAY_LEN(ram), &err), 0);
	assert_int_equal(f->gm.n, 3);
	assert_int_equal(f->gm.r[0].hva, (uintptr_t)f->ram + 0x1000);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram + 0x100000);
	assert_int_equal(f->gm.r[2].hva, (uintptr_t)f->ram + 8 * MIB);
	for (size_t i = 0; i < 3; i++)
		assert_true(f->gm.r[i].verified);
	assert_inside_ram(f);
	f->ram[8 * MIB] = 0x5a;
	uint8_t b = 0;
	assert_int_equal(guest_mem_read(&f->gm, 0x100000000ULL, &b, 1), 0);
	assert_int_equal(b, 0x5a);
}

/* qemu pc with RAM above 4 GiB and a DIMM (at the device-memory base, past
 * the high part): the part from 4 GiB is the rest of the one mapping, the
 * DIMM is not (it has a mapping of its own). The rule once took the *last*
 * range for that rest: the DIMM got the high part's memory, and the high
 * part none. */
static void test_refine_dimm_after_high_part(void **state)
{
	struct fixture *f = *state;
	struct ram_range ram[] = {
		{ 0x1000, 0x9f000 },
		{ 0x100000, 8 * MIB - 0x100000 },
		{ 0x100000000ULL, 4 * MIB },
		{ 0x140000000ULL, 4 * MIB },
	};
	boot(f);
	struct vmsh_err err = { 0 };
	assert_int_equal(memmap_refine(&f->gm, ram, ARRAY_LEN(ram), &err), 0);
	assert_int_equal(f->gm.n, 4);
	assert_int_equal(f->gm.r[2].gpa, 0x100000000ULL);
	assert_int_equal(f->gm.r[2].hva, (uintptr_t)f->ram + 16 * MIB - 4 * MIB);
	assert_int_equal(f->gm.r[3].gpa, 0x140000000ULL);
	assert_int_equal(f->gm.r[3].hva, 0);
	assert_inside_ram(f);
}

/* A model of KVM for memmap_place_by_slots: the VM's slots (host memory
 * and size); holds() answers like kvm_slot_holds and records what it was
 * asked. */
struct slot_model {
	uint64_t hva[4], size[4];
	int n;
	uint64_t asked[64];
	int n_asked;
	bool fail;
};

static int model_holds(void *opaque, uint64_t hva, uint64_t size, struct vmsh_err *err)
{
	struct slot_model *m = opaque;
	if (m->n_asked < 64)
		m->asked[m->n_asked++] = hva;
	if (m->fail)
		return vmsh_error(err, EIO, "probe failed");
	for (int i = 0; i < m->n; i++)
		if (m->hva[i] == hva && m->size[i] == size)
			return 1;
	return 0;
}

#define DIMM (128 * MIB)
#define DIMM_BASE 0x100000000ULL

static uint8_t *map_dimm(void)
{
	uint8_t *res = mmap(NULL, DIMM + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(res != MAP_FAILED);
	assert_int_equal(mprotect(res + 4096, DIMM, PROT_READ | PROT_WRITE), 0);
	return res + 4096;
}

static int place(struct fixture *f, struct slot_model *m, struct memmap_slot_report *rep)
{
	struct proc_map *maps;
	size_t n;
	struct vmsh_err err = { 0 };
	assert_int_equal(procfs_read_maps(getpid(), &maps, &n, &err), 0);
	int rc = memmap_place_by_slots(&f->gm, maps, n, model_holds, m, rep, &err);
	free(maps);
	return rc;
}

/* DIMMs: RAM the guest lists beyond every bootstrap mapping is placed in
 * the one candidate mapping KVM has as a slot of that size - never in a
 * mapping no slot holds, never in one that already backs known RAM, never
 * when two ranges or two slots of a size leave a doubt. */
static void test_place_dimm_by_slot(void **state)
{
	struct fixture *f = *state;
	uint8_t *d1 = map_dimm(), *d2 = map_dimm();
	struct ram_range ram[] = { { 0x100000, RAM_SIZE - 0x100000 }, { DIMM_BASE, DIMM } };
	struct vmsh_err err = { 0 };
	struct memmap_slot_report rep;

	/* one DIMM, its mapping a slot: placed, readable, marked by_slot */
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, ram, 2, &err), 0);
	assert_int_equal(f->gm.r[1].hva, 0);
	struct slot_model m = { .hva = { (uintptr_t)d1 }, .size = { DIMM }, .n = 1 };
	assert_int_equal(place(f, &m, &rep), 0);
	assert_int_equal(rep.placed, 1);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)d1);
	assert_true(f->gm.r[1].verified && f->gm.r[1].by_slot);
	d1[77] = 0xa7;
	uint8_t b = 0;
	assert_int_equal(guest_mem_read(&f->gm, DIMM_BASE + 77, &b, 1), 0);
	assert_int_equal(b, 0xa7);
	for (int i = 0; i < m.n_asked; i++) /* the RAM mapping was never a candidate */
		assert_true(m.asked[i] < (uintptr_t)f->ram || m.asked[i] >= (uintptr_t)f->ram + RAM_SIZE);

	/* no slot of that memory: nothing (the mappings are rw and the right
	 * size - a hypervisor's own buffers can be too) */
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, ram, 2, &err), 0);
	struct slot_model none = { .n = 0 };
	assert_int_equal(place(f, &none, &rep), 0);
	assert_int_equal(rep.placed, 0);
	assert_int_equal(rep.unmatched, 1);
	assert_int_equal(f->gm.r[1].hva, 0);
	assert_true(none.n_asked >= 2);

	/* two slots of the size: which one is not known */
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, ram, 2, &err), 0);
	struct slot_model two = { .hva = { (uintptr_t)d1, (uintptr_t)d2 }, .size = { DIMM, DIMM }, .n = 2 };
	assert_int_equal(place(f, &two, &rep), 0);
	assert_int_equal(rep.ambiguous, 1);
	assert_int_equal(f->gm.r[1].hva, 0);

	/* two DIMMs of one size: neither, without a single probe */
	struct ram_range ram2[] = { { 0x100000, RAM_SIZE - 0x100000 }, { DIMM_BASE, DIMM }, { DIMM_BASE + DIMM, DIMM } };
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, ram2, 3, &err), 0);
	two.n_asked = 0;
	assert_int_equal(place(f, &two, &rep), 0);
	assert_int_equal(rep.ambiguous, 2);
	assert_int_equal(two.n_asked, 0);
	assert_true(!f->gm.r[1].hva && !f->gm.r[2].hva);

	/* not whole hotplug blocks (a hostile guest naming a 4 MiB "DIMM" the
	 * size of some buffer): never probed */
	struct ram_range small[] = { { 0x100000, RAM_SIZE - 0x100000 }, { DIMM_BASE, 4 * MIB } };
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, small, 2, &err), 0);
	struct slot_model decoy = { .hva = { (uintptr_t)f->decoy }, .size = { 4 * MIB }, .n = 1 };
	assert_int_equal(place(f, &decoy, &rep), 0);
	assert_int_equal(decoy.n_asked, 0);
	assert_int_equal(f->gm.r[1].hva, 0);

	/* a failing probe stops it, nothing placed */
	boot(f);
	assert_int_equal(memmap_refine(&f->gm, ram, 2, &err), 0);
	struct slot_model bad = { .hva = { (uintptr_t)d1 }, .size = { DIMM }, .n = 1, .fail = true };
	assert_int_equal(place(f, &bad, &rep), -1);
	assert_int_equal(f->gm.r[1].hva, 0);

	munmap(d1 - 4096, DIMM + 2 * 4096);
	munmap(d2 - 4096, DIMM + 2 * 4096);
}

/* iomem: "System RAM" entries in any order must never merge into a range
 * longer than the entries span, nor wrap. */
static void test_system_ram_unsorted(void **state)
{
	struct iomem_entry e[] = {
		{ .start = 0x100000, .end = 0x1fffffff, .name = "System RAM" },
		{ .start = 0x1000, .end = 0x9fbff, .name = "System RAM" },
		{ .start = 0xfffffffffffff000ULL, .end = 0xffffffffffffffffULL, .name = "System RAM" },
		{ .start = 0x5000, .end = 0x4000, .name = "System RAM" },
	};
	struct ram_range out[8];
	size_t n = iomem_system_ram(e, ARRAY_LEN(e), out, ARRAY_LEN(out));
	for (size_t i = 0; i < n; i++) {
		assert_true(out[i].size > 0);
		assert_true(out[i].gpa + out[i].size > out[i].gpa); /* no wrap */
		assert_true(out[i].size <= 0x20000000); /* nothing longer than any claim */
		if (i)
			assert_true(out[i - 1].gpa + out[i - 1].size <= out[i].gpa);
	}
}

/* A range whose host address is not confirmed must not be used. */
static void test_unverified_range_refused(void **state)
{
	struct fixture *f = *state;
	guest_mem_clear(&f->gm);
	struct guest_range r = { .gpa = 0x100000, .size = 0x1000, .hva = (uintptr_t)f->decoy, .verified = false };
	assert_int_equal(guest_mem_add(&f->gm, &r), 0);
	uint8_t buf[16] = { 0 };
	assert_int_equal(guest_mem_read(&f->gm, 0x100000, buf, sizeof(buf)), -1);
	assert_int_equal(guest_mem_write(&f->gm, 0x100000, buf, sizeof(buf)), -1);
	assert_null(guest_mem_find(&f->gm, 0x100000));
}

/* guest_mem_contains: what the virtqueues check buffers against (no
 * access) - verified ranges only, across adjacent ranges, never wrapping. */
static void test_contains(void **state)
{
	struct fixture *f = *state;
	guest_mem_clear(&f->gm);
	struct guest_range a = { .gpa = 0x100000, .size = 0x1000, .hva = (uintptr_t)f->decoy, .verified = true };
	struct guest_range b = { .gpa = 0x101000, .size = 0x1000, .hva = (uintptr_t)f->decoy, .verified = true };
	struct guest_range c = { .gpa = 0x200000, .size = 0x1000, .hva = (uintptr_t)f->decoy, .verified = false };
	assert_int_equal(guest_mem_add(&f->gm, &a), 0);
	assert_int_equal(guest_mem_add(&f->gm, &b), 0);
	assert_int_equal(guest_mem_add(&f->gm, &c), 0);
	assert_true(guest_mem_contains(&f->gm, 0x100000, 0x1000));
	assert_true(guest_mem_contains(&f->gm, 0x100800, 0x1000)); /* across a and b */
	assert_true(guest_mem_contains(&f->gm, 0x101fff, 1));
	assert_false(guest_mem_contains(&f->gm, 0x101fff, 2));    /* past b */
	assert_false(guest_mem_contains(&f->gm, 0xfffff, 2));      /* before a */
	assert_false(guest_mem_contains(&f->gm, 0x200000, 1));     /* unverified */
	assert_false(guest_mem_contains(&f->gm, 0x100000, UINT64_MAX)); /* wraps */
	assert_false(guest_mem_contains(&f->gm, UINT64_MAX, 2));
}

/* Vectored access: pieces across ranges and from a mapped (local) range,
 * in order; one unknown or (for writes) unverified piece refuses, and
 * wrapping pieces are refused. Over process_vm_readv/writev on this
 * process's own memory. */
static void test_vectored_access(void **state)
{
	struct fixture *f = *state;
	guest_mem_clear(&f->gm);
	uint8_t *local = f->ram + 8 * MIB; /* stands in for a shared mapping of vmsh's own */
	struct guest_range a = { .gpa = 0x100000, .size = 0x1000, .hva = (uintptr_t)f->decoy, .verified = true };
	struct guest_range b = { .gpa = 0x101000, .size = 0x1000, .hva = (uintptr_t)f->decoy + 0x10000, .verified = true };
	struct guest_range c = { .gpa = 0x200000, .size = 0x1000, .hva = (uintptr_t)f->decoy + 0x20000, .verified = false };
	struct guest_range d = { .gpa = 0x300000, .size = 0x1000, .hva = (uintptr_t)local, .verified = true, .local = local };
	assert_int_equal(guest_mem_add(&f->gm, &a), 0);
	assert_int_equal(guest_mem_add(&f->gm, &b), 0);
	assert_int_equal(guest_mem_add(&f->gm, &c), 0);
	assert_int_equal(guest_mem_add(&f->gm, &d), 0);
	uint8_t x[32], y[4] = { 1, 2, 3, 4 }, z = 9;
	for (int i = 0; i < 32; i++)
		x[i] = (uint8_t)(0x40 + i);
	/* 32 bytes across a and b, 4 into the local range, 1 at the start of a */
	struct guest_iov w[] = { { 0x100ff0, x, 32 }, { 0x300010, y, 4 }, { 0x100000, &z, 1 } };
	assert_int_equal(guest_mem_writev(&f->gm, w, 3), 0);
	assert_memory_equal(f->decoy + 0xff0, x, 16);
	assert_memory_equal(f->decoy + 0x10000, x + 16, 16);
	assert_memory_equal(local + 0x10, y, 4);
	assert_int_equal(f->decoy[0], 9);
	uint8_t rx[32] = { 0 }, ry[4] = { 0 };
	struct guest_iov r[] = { { 0x100ff0, rx, 32 }, { 0x300010, ry, 4 } };
	assert_int_equal(guest_mem_readv(&f->gm, r, 2), 0);
	assert_memory_equal(rx, x, 32);
	assert_memory_equal(ry, y, 4);
	/* an unverified range is read only while probing, never written */
	struct guest_iov u[] = { { 0x100000, &z, 1 }, { 0x200000, &z, 1 } };
	assert_int_equal(guest_mem_writev(&f->gm, u, 2), -1);
	struct guest_iov gap[] = { { 0x102000, rx, 1 } }; /* in no range */
	assert_int_equal(guest_mem_readv(&f->gm, gap, 1), -1);
	struct guest_iov wrap[] = { { UINT64_MAX - 1, rx, 4 } };
	assert_int_equal(guest_mem_readv(&f->gm, wrap, 1), -1);
	/* more pieces than one call takes: in order, all there */
	struct guest_iov many[GUEST_IOV_BATCH * 2 + 3];
	uint8_t vals[GUEST_IOV_BATCH * 2 + 3];
	for (size_t i = 0; i < GUEST_IOV_BATCH * 2 + 3; i++) {
		vals[i] = (uint8_t)i;
		many[i] = (struct guest_iov){ 0x100000 + i, &vals[i], 1 };
	}
	assert_int_equal(guest_mem_writev(&f->gm, many, GUEST_IOV_BATCH * 2 + 3), 0);
	for (size_t i = 0; i < GUEST_IOV_BATCH * 2 + 3; i++)
		assert_int_equal(f->decoy[i], (uint8_t)i);
}

/* ---- RAM split at 4 GiB, the kernel's page tables above it ---- */

#define SPLIT (6 * MIB) /* not one of the common splits: found by the 2 MiB search */
#define FOUR_GIB (1ULL << 32)

/* Two guest pages with known content: the anchor (the vCPU's page-table
 * root) and another (the kernel's text, say) */
struct probe {
	uint64_t gpa[2];
	uint8_t want[2][16];
	uint64_t ref[2]; /* pages the guest's tables point at (0: none) */
	bool not_whole;  /* the whole mapping as low RAM fails the check */
	/* the table holding those references, at a gpa above 4 GiB (0: none):
	 * a layout that reads it shifted sees zeros there, not the refs */
	uint64_t table;
	uint8_t table_want[16];
};

/* Stands in for the page-table check: guest memory is right if both pages
 * hold what was planted there; ref outside the map is reported. */
static int probe_check(struct guest_mem *gm, void *opaque, struct memmap_evidence *ev)
{
	const struct probe *p = opaque;
	for (int i = 0; i < 2; i++) {
		uint8_t got[16];
		if (guest_mem_read(gm, p->gpa[i], got, sizeof(got)) < 0 || memcmp(got, p->want[i], sizeof(got)))
			return 0;
	}
	if (p->not_whole && gm->n == 1 && gm->r[0].size == RAM_SIZE)
		return 0;
	ev->outside = ev->inside = 0;
	ev->low_end = ev->high_end = 0;
	if (p->table) {
		uint8_t got[16];
		if (!guest_mem_find(gm, p->table)) {
			ev->outside++;
			return 1;
		}
		ev->inside++;
		if (guest_mem_read(gm, p->table, got, sizeof(got)) < 0 || memcmp(got, p->table_want, sizeof(got)))
			return 1; /* zeros: no references seen */
	}
	for (int i = 0; i < 2; i++) {
		uint64_t ref = p->ref[i];
		if (!ref)
			continue;
		if (guest_mem_find(gm, ref)) {
			ev->inside++;
			continue;
		}
		ev->outside++;
		if (ref < FOUR_GIB && ref < ev->above_limit - FOUR_GIB)
			ev->low_end = ref + 4096 > ev->low_end ? ref + 4096 : ev->low_end;
		if (ref >= FOUR_GIB && ref < ev->above_limit)
			ev->high_end = ref + 4096 > ev->high_end ? ref + 4096 : ev->high_end;
	}
	return 1;
}

/* Plant the probe's bytes where a guest split at SPLIT has them. */
static void plant(struct fixture *f, struct probe *p, uint64_t seed)
{
	struct unit_rng rng = { seed };
	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < sizeof(p->want[i]); j++)
			p->want[i][j] = (uint8_t)unit_rand64(&rng);
		uint64_t off = p->gpa[i] < FOUR_GIB ? p->gpa[i] : SPLIT + (p->gpa[i] - FOUR_GIB);
		memcpy(f->ram + off, p->want[i], sizeof(p->want[i]));
	}
}

static void assert_split_found(const struct fixture *f)
{
	assert_int_equal(f->gm.n, 2);
	assert_int_equal(f->gm.r[0].gpa, 0);
	assert_int_equal(f->gm.r[0].size, SPLIT);
	assert_int_equal(f->gm.r[0].hva, (uintptr_t)f->ram);
	assert_int_equal(f->gm.r[1].gpa, FOUR_GIB);
	assert_int_equal(f->gm.r[1].size, RAM_SIZE - SPLIT);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram + SPLIT);
	assert_true(f->gm.r[0].verified && f->gm.r[1].verified);
}

/* RAM split around the 4 GiB hole with the kernel above it (a big guest:
 * the kernel's physical address is random): the mapping is found, and
 * where its low part ends, whether the vCPU's root is above 4 GiB (the
 * kernel's) or below (a process's). */
static void test_bootstrap_split_at_4gib(void **state)
{
	struct fixture *f = *state;
	struct probe high_root = { .gpa = { FOUR_GIB + 3 * MIB + 0x120, MIB + 0x40 } };
	plant(f, &high_root, 7);
	struct vmsh_err err = { 0 };
	assert_int_equal(memmap_bootstrap(&f->gm, high_root.gpa[0], probe_check, &high_root, &err), 0);
	assert_split_found(f);

	struct probe low_root = { .gpa = { 2 * MIB + 0x80, FOUR_GIB + 5 * MIB } };
	plant(f, &low_root, 8);
	assert_int_equal(memmap_bootstrap(&f->gm, low_root.gpa[0], probe_check, &low_root, &err), 0);
	assert_split_found(f);

	/* planted nowhere: refused with the usual message, the map empty */
	memset(f->ram + SPLIT + 3 * MIB + 0x120, 0, 16);
	assert_int_equal(memmap_bootstrap(&f->gm, high_root.gpa[0], probe_check, &high_root, &err), -1);
	assert_int_equal(f->gm.n, 0);
	assert_non_null(strstr(err.msg, "consistent with the vCPU's page tables"));
}

/* RAM split with the vCPU's root and the kernel below the split (qemu's
 * max-ram-below-4g, the kernel's own root): layouts other than the right
 * one pass the root check too, but leave out RAM the kernel uses - at the
 * top of the part above 4 GiB, or of the part below. The split that
 * evidence points at wins. (The old code took the first passing layout; the
 * guest's iomem tree, allocated at the top of RAM, could then not be read
 * and `vmsh serve` refused: the above-4g CI failure.) */
static void test_bootstrap_split_with_root_below(void **state)
{
	struct fixture *f = *state;
	const uint64_t top_low = SPLIT - 4096, top_high = FOUR_GIB + (RAM_SIZE - SPLIT) - 4096;
	struct probe p = { .gpa = { 2 * MIB + 0x80, 3 * MIB + 0x40 }, .ref = { top_low, top_high } };
	plant(f, &p, 9);
	struct vmsh_err err = { 0 };
	/* the whole mapping as low RAM passes, RAM above 4 GiB left out */
	assert_int_equal(memmap_bootstrap(&f->gm, p.gpa[0], probe_check, &p, &err), 0);
	assert_split_found(f);

	/* the whole mapping fails (the kernel's root sees most of its tables
	 * outside): the first split of the scan (4 MiB) passes, RAM below the
	 * real split left out */
	p.not_whole = true;
	assert_int_equal(memmap_bootstrap(&f->gm, p.gpa[0], probe_check, &p, &err), 0);
	assert_split_found(f);
	p.not_whole = false;

	/* the references sit in a table above 4 GiB: a split too low (4 MiB,
	 * the first the scan tries) reads that table shifted, as zeros, and
	 * leaves nothing outside either; the right one shows more (the old
	 * code took the first layout that left nothing out: a 4.5 GiB guest's
	 * map was 2 GiB low instead of 3, and `vmsh serve` refused) */
	p.not_whole = true;
	p.table = FOUR_GIB + (RAM_SIZE - SPLIT) / 2;
	memset(p.table_want, 0x5a, sizeof(p.table_want));
	memcpy(f->ram + SPLIT + (p.table - FOUR_GIB), p.table_want, sizeof(p.table_want));
	assert_int_equal(memmap_bootstrap(&f->gm, p.gpa[0], probe_check, &p, &err), 0);
	assert_split_found(f);
	p.not_whole = false;
	p.table = 0;

	/* references nothing of this mapping can hold (a device's memory far
	 * above RAM): the whole mapping stays low RAM, as the root says */
	p.ref[0] = 0;
	p.ref[1] = FOUR_GIB + 64 * MIB;
	assert_int_equal(memmap_bootstrap(&f->gm, p.gpa[0], probe_check, &p, &err), 0);
	assert_int_equal(f->gm.n, 1);
	assert_int_equal(f->gm.r[0].gpa, 0);
	assert_int_equal(f->gm.r[0].size, RAM_SIZE);
	assert_true(f->gm.r[0].verified);

	/* nothing outside: the whole mapping at once */
	p.ref[1] = 0;
	assert_int_equal(memmap_bootstrap(&f->gm, p.gpa[0], probe_check, &p, &err), 0);
	assert_int_equal(f->gm.n, 1);
	assert_int_equal(f->gm.r[0].size, RAM_SIZE);
}

/* What a bootstrap leaves: RAM from 0 (lo_size bytes at lo) and from
 * 4 GiB (hi_size bytes at hi), both verified. */
static void boot_two(struct fixture *f, uint8_t *lo, uint64_t lo_size, uint8_t *hi, uint64_t hi_size)
{
	guest_mem_clear(&f->gm);
	struct guest_range r[2] = {
		{ .gpa = 0, .size = lo_size, .hva = (uintptr_t)lo, .kind = "provisional", .verified = true },
		{ .gpa = FOUR_GIB, .size = hi_size, .hva = (uintptr_t)hi, .kind = "provisional", .verified = true },
	};
	for (int i = 0; i < 2; i++) {
		snprintf(r[i].backing, sizeof(r[i].backing), "[anon]");
		assert_int_equal(guest_mem_add(&f->gm, &r[i]), 0);
	}
}

/* What the split bootstrap leaves (see above). */
static void boot_split(struct fixture *f)
{
	boot_two(f, f->ram, SPLIT, f->ram + SPLIT, RAM_SIZE - SPLIT);
}

/* The guest's list refines a split map: each range at its place in the one
 * mapping; a claim beyond the high part gets no host address. */
static void test_refine_split_layout(void **state)
{
	struct fixture *f = *state;
	struct ram_range ram[] = {
		{ 0x1000, 0x9f000 },
		{ 0x100000, SPLIT - 0x100000 },
		{ FOUR_GIB, RAM_SIZE - SPLIT },
	};
	boot_split(f);
	struct vmsh_err err = { 0 };
	assert_int_equal(memmap_refine(&f->gm, ram, ARRAY_LEN(ram), &err), 0);
	assert_int_equal(f->gm.n, 3);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram + 0x100000);
	assert_int_equal(f->gm.r[2].hva, (uintptr_t)f->ram + SPLIT);
	assert_inside_ram(f);
	struct ram_range forged[] = {
		{ 0x100000, SPLIT + MIB }, /* reaches into the high part's memory */
		{ FOUR_GIB, RAM_SIZE - SPLIT + 2 * MIB },
	};
	boot_split(f);
	assert_int_equal(memmap_refine(&f->gm, forged, ARRAY_LEN(forged), &err), 0);
	for (size_t i = 0; i < f->gm.n; i++)
		assert_int_equal(f->gm.r[i].hva, 0);
	struct unit_rng rng = { 43 };
	for (int round = 0; round < 2000; round++) {
		struct ram_range r[8];
		size_t n = 1 + unit_rand64(&rng) % 8;
		for (size_t i = 0; i < n; i++) {
			uint64_t a = unit_rand64(&rng), b = unit_rand64(&rng);
			r[i].gpa = ((a & 1 ? FOUR_GIB : 0) + (a >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
			r[i].size = ((b >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
		}
		boot_split(f);
		memmap_refine(&f->gm, r, n, &err);
		assert_inside_ram(f);
	}
}

/* ---- two mappings: RAM from 0 in one, from 4 GiB in another ---- */

#define HI_SIZE (32 * MIB) /* larger than RAM_SIZE: beyond any split of the first mapping */

/* A second RAM mapping between guard pages (a VMM that maps each memory
 * slot on its own, as Firecracker does). */
static uint8_t *map_high(void)
{
	uint8_t *res = mmap(NULL, HI_SIZE + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(res != MAP_FAILED);
	assert_int_equal(mprotect(res + 4096, HI_SIZE, PROT_READ | PROT_WRITE), 0);
	return res + 4096;
}

static void plant_pair(struct fixture *f, uint8_t *hi, struct probe *p, uint64_t seed)
{
	struct unit_rng rng = { seed };
	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < sizeof(p->want[i]); j++)
			p->want[i][j] = (uint8_t)unit_rand64(&rng);
		uint8_t *at = p->gpa[i] < FOUR_GIB ? f->ram + p->gpa[i] : hi + (p->gpa[i] - FOUR_GIB);
		memcpy(at, p->want[i], sizeof(p->want[i]));
	}
}

static void assert_pair_found(const struct fixture *f, const uint8_t *hi)
{
	assert_int_equal(f->gm.n, 2);
	assert_int_equal(f->gm.r[0].gpa, 0);
	assert_int_equal(f->gm.r[0].size, RAM_SIZE);
	assert_int_equal(f->gm.r[0].hva, (uintptr_t)f->ram);
	assert_int_equal(f->gm.r[1].gpa, FOUR_GIB);
	assert_int_equal(f->gm.r[1].size, HI_SIZE);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)hi);
	assert_true(f->gm.r[0].verified && f->gm.r[1].verified);
}

/* The kernel above 4 GiB (its physical address is random), so the vCPU's
 * root there: found in the second mapping (before: "no mapping of the
 * hypervisor holds guest memory consistent with the vCPU's page tables",
 * the minivmm failure). With the root below 4 GiB and a table the kernel
 * uses above it, the first mapping alone passes but leaves that out: the
 * pair wins. */
static void test_bootstrap_two_mappings(void **state)
{
	struct fixture *f = *state;
	uint8_t *hi = map_high();
	struct vmsh_err err = { 0 };

	struct probe high_root = { .gpa = { FOUR_GIB + MIB + 0x100, 2 * MIB + 0x40 } };
	plant_pair(f, hi, &high_root, 21);
	assert_int_equal(memmap_bootstrap(&f->gm, high_root.gpa[0], probe_check, &high_root, &err), 0);
	assert_pair_found(f, hi);

	/* the root below 4 GiB, a table of the kernel's in the second mapping */
	struct probe low_root = { .gpa = { 3 * MIB + 0x80, 2 * MIB }, .ref = { FOUR_GIB + 20 * MIB, 0 },
				  .table = FOUR_GIB + 18 * MIB };
	memset(low_root.table_want, 0x5a, sizeof(low_root.table_want));
	memcpy(hi + 18 * MIB, low_root.table_want, sizeof(low_root.table_want));
	plant_pair(f, hi, &low_root, 22);
	assert_int_equal(memmap_bootstrap(&f->gm, low_root.gpa[0], probe_check, &low_root, &err), 0);
	assert_pair_found(f, hi);

	/* no table there, only references to it: no other mapping can show
	 * it is RAM (zeros anywhere would pass as well), so the first mapping
	 * alone, the part above 4 GiB without host addresses */
	memset(hi + 18 * MIB, 0, sizeof(low_root.table_want));
	low_root.table = 0;
	assert_int_equal(memmap_bootstrap(&f->gm, low_root.gpa[0], probe_check, &low_root, &err), 0);
	assert_int_equal(f->gm.n, 1);
	assert_int_equal(f->gm.r[0].hva, (uintptr_t)f->ram);
	assert_int_equal(f->gm.r[0].size, RAM_SIZE);

	/* the guest's RAM list refines it: each range in its own mapping,
	 * claims beyond either mapping get no host address */
	struct ram_range ram[] = { { 0x1000, 0x9f000 }, { 0x100000, RAM_SIZE - 0x100000 }, { FOUR_GIB, HI_SIZE } };
	assert_int_equal(memmap_bootstrap(&f->gm, high_root.gpa[0], probe_check, &high_root, &err), 0);
	assert_int_equal(memmap_refine(&f->gm, ram, ARRAY_LEN(ram), &err), 0);
	assert_int_equal(f->gm.n, 3);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram + 0x100000);
	assert_int_equal(f->gm.r[2].hva, (uintptr_t)hi);
	assert_true(f->gm.r[2].verified);
	struct unit_rng rng = { 44 };
	for (int round = 0; round < 2000; round++) {
		struct ram_range r[8];
		size_t n = 1 + unit_rand64(&rng) % 8;
		for (size_t i = 0; i < n; i++) {
			uint64_t a = unit_rand64(&rng), b = unit_rand64(&rng);
			r[i].gpa = ((a & 1 ? FOUR_GIB : 0) + (a >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
			r[i].size = ((b >> 8) % (2 * RAM_SIZE)) & ~0xfffULL;
		}
		boot_two(f, f->ram, RAM_SIZE, hi, HI_SIZE);
		memmap_refine(&f->gm, r, n, &err);
		for (size_t i = 0; i < f->gm.n; i++) {
			const struct guest_range *g = &f->gm.r[i];
			if (!g->hva)
				continue;
			bool in_lo = g->hva >= (uintptr_t)f->ram && g->hva + g->size <= (uintptr_t)f->ram + RAM_SIZE;
			bool in_hi = g->hva >= (uintptr_t)hi && g->hva + g->size <= (uintptr_t)hi + HI_SIZE;
			assert_true(in_lo || in_hi);
		}
	}
	munmap(hi - 4096, HI_SIZE + 2 * 4096);
}

/* ---- one mapping, RAM from 4 GiB first: two slots the kernel merged ---- */

#define ROT_HI (6 * MIB) /* RAM from 4 GiB: the first 6 MiB of the mapping; RAM from 0 the other 10 */

static void plant_rotated(struct fixture *f, struct probe *p, uint64_t seed)
{
	struct unit_rng rng = { seed };
	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < sizeof(p->want[i]); j++)
			p->want[i][j] = (uint8_t)unit_rand64(&rng);
		uint64_t off = p->gpa[i] < FOUR_GIB ? ROT_HI + p->gpa[i] : p->gpa[i] - FOUR_GIB;
		memcpy(f->ram + off, p->want[i], sizeof(p->want[i]));
	}
}

static void assert_rotated_found(const struct fixture *f)
{
	assert_int_equal(f->gm.n, 2);
	assert_int_equal(f->gm.r[0].gpa, 0);
	assert_int_equal(f->gm.r[0].size, RAM_SIZE - ROT_HI);
	assert_int_equal(f->gm.r[0].hva, (uintptr_t)f->ram + ROT_HI);
	assert_int_equal(f->gm.r[1].gpa, FOUR_GIB);
	assert_int_equal(f->gm.r[1].size, ROT_HI);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram);
}

/* Two anonymous slot mappings with nothing between them are one VMA, the
 * second slot first (mmap places a later mapping below): found with the
 * vCPU's root in either part (before: "no mapping ... consistent"), and
 * the guest's RAM list refined inside the one mapping. */
static void test_bootstrap_rotated(void **state)
{
	struct fixture *f = *state;
	struct vmsh_err err = { 0 };
	struct probe high_root = { .gpa = { FOUR_GIB + MIB + 0x100, 3 * MIB + 0x40 } };
	plant_rotated(f, &high_root, 31);
	assert_int_equal(memmap_bootstrap(&f->gm, high_root.gpa[0], probe_check, &high_root, &err), 0);
	assert_rotated_found(f);

	struct probe low_root = { .gpa = { 2 * MIB + 0x80, FOUR_GIB + 5 * MIB } };
	plant_rotated(f, &low_root, 32);
	assert_int_equal(memmap_bootstrap(&f->gm, low_root.gpa[0], probe_check, &low_root, &err), 0);
	assert_rotated_found(f);

	struct ram_range ram[] = { { 0x1000, 0x9f000 }, { 0x100000, RAM_SIZE - ROT_HI - 0x100000 },
				   { FOUR_GIB, ROT_HI }, { FOUR_GIB + ROT_HI, MIB } /* beyond: none */ };
	assert_int_equal(memmap_refine(&f->gm, ram, ARRAY_LEN(ram), &err), 0);
	assert_int_equal(f->gm.n, 4);
	assert_int_equal(f->gm.r[1].hva, (uintptr_t)f->ram + ROT_HI + 0x100000);
	assert_int_equal(f->gm.r[2].hva, (uintptr_t)f->ram);
	assert_int_equal(f->gm.r[3].hva, 0);
	assert_inside_ram(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refine_claim_matching_decoy_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_wrapping_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_unsorted_overlapping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_random_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_honest_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_dimm_after_high_part, setup, teardown),
		cmocka_unit_test_setup_teardown(test_place_dimm_by_slot, setup, teardown),
		cmocka_unit_test(test_system_ram_unsorted),
		cmocka_unit_test_setup_teardown(test_contains, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vectored_access, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unverified_range_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap_split_at_4gib, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap_split_with_root_below, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refine_split_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap_two_mappings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bootstrap_rotated, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
