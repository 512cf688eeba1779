/* test_pagetable.c - the x86-64 page-table walker (src/guest/pagetable.c) on
 * synthetic tables in fake guest-physical memory. */
#include "unit.h"

#include "guest/pagetable.h"

#define MEM_BASE 0x100000ULL /* tables live at 1 MiB .. 3 MiB guest-physical */
#define MEM_SIZE (2ULL << 20)

#define KVA 0xffffffff81234000ULL /* a kernel-image address */
#define UVA 0x00007f0012345000ULL /* a user address */
#define FLAGS_RW (UNIT_PTE_P | UNIT_PTE_RW)

struct fixture {
	struct fake_mem mem;
	struct pt_ctx ctx;
};

static void fixture_init(struct fixture *f, int levels)
{
	fake_mem_init(&f->mem, MEM_BASE, MEM_SIZE);
	f->ctx = (struct pt_ctx){
		.read_page = fake_mem_read_page,
		.opaque = &f->mem,
		.root = fake_mem_alloc_page(&f->mem),
		.levels = levels,
		.phys_mask = pt_phys_mask(52),
	};
}

static int setup4(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	fixture_init(f, 4);
	*state = f;
	return 0;
}

static int setup5(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	fixture_init(f, 5);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	fake_mem_free(&f->mem);
	free(f);
	return 0;
}

static void map(struct fixture *f, uint64_t va, uint64_t pa, uint64_t size, uint64_t flags)
{
	fake_pt_map(&f->mem, f->ctx.root, f->ctx.levels, va, pa, size, flags);
}

struct collect {
	struct pt_mapping m[1024];
	unsigned n;
	unsigned stop_after; /* 0 = never */
};

static int collect_cb(void *opaque, const struct pt_mapping *m)
{
	struct collect *c = opaque;
	if (c->n < ARRAY_LEN(c->m))
		c->m[c->n] = *m;
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

/* ---------------- pt_translate ---------------- */

static void test_translate_4k_page_gives_page_start_and_base(void **state)
{
	struct fixture *f = *state;
	map(f, KVA, 0x5678000, 0x1000, FLAGS_RW);
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, KVA + 0x123, &m), 0);
	assert_int_equal(m.va, KVA);
	assert_int_equal(m.pa, 0x5678000);
	assert_int_equal(m.size, 0x1000);
	assert_int_equal(m.flags, FLAGS_RW);
	/* the byte itself: page base plus the offset in the page */
	assert_int_equal(m.pa + (KVA + 0x123 - m.va), 0x5678123);
	/* the neighbouring page is not mapped */
	assert_int_equal(pt_translate(&f->ctx, KVA + 0x1000, &m), -1);
	assert_int_equal(f->mem.unaligned, 0);
}

static void test_translate_2m_page_masks_offset_and_pat_bit(void **state)
{
	struct fixture *f = *state;
	uint64_t va = 0xffffffff81400000ULL; /* 2 MiB aligned */
	map(f, va, 0x40000000, 2ULL << 20, FLAGS_RW);
	/* bit 12 of a large-page entry is PAT, not an address bit */
	uint64_t pdpt = fake_mem_get_entry(&f->mem, f->ctx.root, unit_pt_index(va, 4)) & UNIT_PTE_ADDR;
	uint64_t pd = fake_mem_get_entry(&f->mem, pdpt, unit_pt_index(va, 3)) & UNIT_PTE_ADDR;
	uint64_t e = fake_mem_get_entry(&f->mem, pd, unit_pt_index(va, 2));
	fake_mem_set_entry(&f->mem, pd, unit_pt_index(va, 2), e | 0x1000);

	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, va + 0x12345, &m), 0);
	assert_int_equal(m.va, va);
	assert_int_equal(m.pa, 0x40000000);
	assert_int_equal(m.size, 2ULL << 20);
	assert_int_equal(m.flags, FLAGS_RW | UNIT_PTE_PS);
	assert_int_equal(pt_translate(&f->ctx, va + (2ULL << 20) - 1, &m), 0);
	assert_int_equal(m.pa + ((2ULL << 20) - 1), 0x401fffff);
}

static void test_translate_1g_page(void **state)
{
	struct fixture *f = *state;
	uint64_t va = 0xffff888000000000ULL; /* direct map, 1 GiB aligned */
	map(f, va + (1ULL << 30), 0x1c0000000ULL, 1ULL << 30, FLAGS_RW | UNIT_PTE_NX);
	struct pt_mapping m;
	uint64_t probe = va + (1ULL << 30) + 0x2345678;
	assert_int_equal(pt_translate(&f->ctx, probe, &m), 0);
	assert_int_equal(m.va, va + (1ULL << 30));
	assert_int_equal(m.pa, 0x1c0000000ULL);
	assert_int_equal(m.size, 1ULL << 30);
	assert_int_equal(m.flags, FLAGS_RW | UNIT_PTE_PS | UNIT_PTE_NX);
	assert_int_equal(m.pa + (probe - m.va), 0x1c2345678ULL);
	/* the first GiB (same PDPT, other entry) is not mapped */
	assert_int_equal(pt_translate(&f->ctx, va + 0x1000, &m), -1);
}

static void test_translate_nx_of_upper_level_is_inherited(void **state)
{
	struct fixture *f = *state;
	fake_pt_map_ex(&f->mem, f->ctx.root, 4, UVA, 0x9000, 0x1000, FLAGS_RW | UNIT_PTE_US, UNIT_PTE_NX);
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, UVA, &m), 0);
	assert_int_equal(m.flags, FLAGS_RW | UNIT_PTE_US | UNIT_PTE_NX);
	assert_int_equal(m.pa, 0x9000);
}

/* A non-present entry at any level ends the walk with -1. */
static void test_translate_fails_on_non_present_entry_at_each_level(void **state)
{
	struct fixture *f = *state;
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, KVA, &m), -1); /* empty PML4 */

	map(f, KVA, 0x5678000, 0x1000, FLAGS_RW);
	uint64_t tables[5];
	tables[4] = f->ctx.root;
	for (int level = 4; level > 1; level--)
		tables[level - 1] = fake_mem_get_entry(&f->mem, tables[level], unit_pt_index(KVA, level)) & UNIT_PTE_ADDR;
	assert_int_equal(pt_translate(&f->ctx, KVA, &m), 0);
	for (int level = 1; level <= 4; level++) {
		unsigned idx = unit_pt_index(KVA, level);
		uint64_t e = fake_mem_get_entry(&f->mem, tables[level], idx);
		/* everything but the present bit still there */
		fake_mem_set_entry(&f->mem, tables[level], idx, e & ~UNIT_PTE_P);
		assert_int_equal(pt_translate(&f->ctx, KVA, &m), -1);
		fake_mem_set_entry(&f->mem, tables[level], idx, e);
		assert_int_equal(pt_translate(&f->ctx, KVA, &m), 0);
	}
}

/* PS is reserved in a PML4 entry: such an entry is not a 512 GiB page. */
static void test_translate_rejects_ps_at_pml4(void **state)
{
	struct fixture *f = *state;
	map(f, KVA, 0x5678000, 0x1000, FLAGS_RW);
	unsigned idx = unit_pt_index(KVA, 4);
	uint64_t e = fake_mem_get_entry(&f->mem, f->ctx.root, idx);
	fake_mem_set_entry(&f->mem, f->ctx.root, idx, e | UNIT_PTE_PS);
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, KVA, &m), -1);

	/* ... and pt_for_each_leaf does not descend into it either */
	struct collect c = { .n = 0 };
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 100, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);
	/* without PS the same entry works */
	fake_mem_set_entry(&f->mem, f->ctx.root, idx, e);
	assert_int_equal(pt_translate(&f->ctx, KVA, &m), 0);
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 100, collect_cb, &c), 1);
}

/* Unreadable tables (entries pointing outside guest memory) fail cleanly. */
static void test_translate_fails_on_table_outside_memory(void **state)
{
	struct fixture *f = *state;
	fake_mem_set_entry(&f->mem, f->ctx.root, unit_pt_index(KVA, 4), 0x7ff00000000ULL | FLAGS_RW);
	struct pt_mapping m;
	unsigned failed = f->mem.failed;
	assert_int_equal(pt_translate(&f->ctx, KVA, &m), -1);
	assert_int_equal(f->mem.failed, failed + 1);

	struct pt_ctx bad = f->ctx;
	bad.root = 0x7ff00000000ULL;
	assert_int_equal(pt_translate(&bad, KVA, &m), -1);
}

/* 5 levels: a 57-bit canonical address (bits 63..57 copy bit 56). */
static void test_translate_5level_57bit_address(void **state)
{
	struct fixture *f = *state;
	uint64_t va = 0xff123456789ab000ULL;
	assert_int_equal(unit_pt_index(va, 5), 0x112);
	map(f, va, 0x3456000, 0x1000, FLAGS_RW);
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, va + 0xcde, &m), 0);
	assert_int_equal(m.va, va);
	assert_int_equal(m.pa, 0x3456000);
	assert_int_equal(m.size, 0x1000);
	/* a 4-level view of the same root indexes a different top entry */
	struct pt_ctx four = f->ctx;
	four.levels = 4;
	assert_int_equal(pt_translate(&four, va, &m), -1);
	/* PS in a PML5 entry is reserved too */
	unsigned idx = unit_pt_index(va, 5);
	uint64_t e = fake_mem_get_entry(&f->mem, f->ctx.root, idx);
	fake_mem_set_entry(&f->mem, f->ctx.root, idx, e | UNIT_PTE_PS);
	assert_int_equal(pt_translate(&f->ctx, va, &m), -1);
}

/* ---------------- address helpers ---------------- */

static void test_canonical_sign_extends_bit_47_or_56(void **state)
{
	(void)state;
	assert_int_equal(pt_canonical(0x0000800000000000ULL, 4), 0xffff800000000000ULL);
	assert_int_equal(pt_canonical(0x00007fffffffffffULL, 4), 0x00007fffffffffffULL);
	assert_int_equal(pt_canonical(0x0000ffffffffffffULL, 4), 0xffffffffffffffffULL);
	assert_int_equal(pt_canonical(0xffffffff81000000ULL, 4), 0xffffffff81000000ULL);
	/* bits above 47 are replaced, not kept */
	assert_int_equal(pt_canonical(0x1234800000001000ULL, 4), 0xffff800000001000ULL);
	assert_int_equal(pt_canonical(0xffff000000001000ULL, 4), 0x0000000000001000ULL);
	/* 5 levels: bit 56 */
	assert_int_equal(pt_canonical(0x0000800000000000ULL, 5), 0x0000800000000000ULL);
	assert_int_equal(pt_canonical(0x0100000000000000ULL, 5), 0xff00000000000000ULL);
	assert_int_equal(pt_canonical(0x01123456789ab000ULL, 5), 0xff123456789ab000ULL);
	assert_int_equal(pt_canonical(0x00ffffffffffffffULL, 5), 0x00ffffffffffffffULL);
	assert_int_equal(pt_canonical(0, 5), 0);
	assert_int_equal(pt_canonical(0, 4), 0);
}

static void test_root_from_cr3_drops_pcid_and_bit63(void **state)
{
	(void)state;
	uint64_t mask = pt_phys_mask(52);
	assert_int_equal(mask, 0x000ffffffffff000ULL);
	/* PCID 0x7ff in bits 0-11, no-flush bit 63 */
	assert_int_equal(pt_root_from_cr3((1ULL << 63) | 0x12345000ULL | 0x7ff, mask), 0x12345000ULL);
	assert_int_equal(pt_root_from_cr3(0x12345018ULL, mask), 0x12345000ULL); /* PWT|PCD */
	assert_int_equal(pt_root_from_cr3(0xabcdef000ULL, mask), 0xabcdef000ULL);
	/* MAXPHYADDR 39: bits 39+ are not address bits */
	assert_int_equal(pt_phys_mask(39), 0x0000007ffffff000ULL);
	assert_int_equal(pt_root_from_cr3((1ULL << 63) | (1ULL << 40) | 0x7fff0000fULL, pt_phys_mask(39)),
			 0x7fff00000ULL);
	/* nonsense widths fall back to the architectural maximum */
	assert_int_equal(pt_phys_mask(0), mask);
	assert_int_equal(pt_phys_mask(64), mask);
	assert_int_equal(pt_phys_mask(46), 0x00003ffffffff000ULL);
}

/* ---------------- PTI pairs ---------------- */

/* With PTI the kernel PGD is the even page of an 8 KiB pair and the user PGD
 * (what CR3 holds in user mode) is kernel | 0x1000; only the kernel one maps
 * the kernel image. */
static void test_pti_pair_only_even_page_maps_kernel(void **state)
{
	struct fixture *f = *state;
	uint64_t kroot = fake_mem_alloc_aligned(&f->mem, 0x2000);
	uint64_t uroot = fake_mem_alloc_page(&f->mem);
	assert_int_equal(uroot, kroot | 0x1000);
	/* kernel: 4 pages of the image (2 MiB + 3 x 4 KiB) and the user page */
	fake_pt_map(&f->mem, kroot, 4, 0xffffffff81000000ULL, 0x1000000, 2ULL << 20, FLAGS_RW);
	for (int i = 0; i < 3; i++)
		fake_pt_map(&f->mem, kroot, 4, 0xffffffff81200000ULL + 0x1000ULL * i, 0x1200000 + 0x1000ULL * i, 0x1000,
			    FLAGS_RW);
	fake_pt_map(&f->mem, kroot, 4, UVA, 0x777000, 0x1000, FLAGS_RW | UNIT_PTE_US);
	/* user: the same user page and an entry trampoline outside the image region */
	fake_pt_map(&f->mem, uroot, 4, UVA, 0x777000, 0x1000, FLAGS_RW | UNIT_PTE_US);
	fake_pt_map(&f->mem, uroot, 4, 0xfffffe0000000000ULL, 0x888000, 0x1000, UNIT_PTE_P);

	uint64_t cr3_user = uroot | 0x5 | (1ULL << 63); /* PCID 5, no flush */
	struct pt_ctx user = f->ctx, kern = f->ctx;
	user.root = pt_root_from_cr3(cr3_user, f->ctx.phys_mask);
	assert_int_equal(user.root, uroot);
	kern.root = user.root & ~0x1000ULL;
	assert_int_equal(kern.root, kroot);

	struct pt_mapping m;
	assert_int_equal(pt_translate(&user, 0xffffffff81000000ULL, &m), -1);
	assert_int_equal(pt_translate(&kern, 0xffffffff81000000ULL, &m), 0);
	assert_int_equal(m.pa, 0x1000000);
	assert_int_equal(pt_translate(&user, UVA, &m), 0);
	assert_int_equal(m.pa, 0x777000);

	struct collect cu = { .n = 0 }, ck = { .n = 0 };
	assert_int_equal(pt_for_each_leaf(&user, 0xffffffff80000000ULL, 0xffffffffc0000000ULL, 64, collect_cb, &cu), 0);
	assert_int_equal(pt_for_each_leaf(&kern, 0xffffffff80000000ULL, 0xffffffffc0000000ULL, 64, collect_cb, &ck), 4);
	assert_int_equal(ck.m[0].va, 0xffffffff81000000ULL);
	assert_int_equal(ck.m[0].size, 2ULL << 20);
	assert_int_equal(ck.m[3].va, 0xffffffff81202000ULL);
	assert_int_equal(ck.m[3].pa, 0x1202000);
}

/* ---------------- pt_for_each_leaf ---------------- */

struct expect_leaf {
	uint64_t va, pa, size;
};

/* Leaves of several sizes in both halves, inserted out of order. */
static const struct expect_leaf mixed[] = {
	{ 0x0000000000400000ULL, 0x00a00000ULL, 0x1000 },
	{ 0x0000000000401000ULL, 0x00a01000ULL, 0x1000 },
	{ 0x0000000040000000ULL, 0x80000000ULL, 1ULL << 30 },
	{ 0x00007f0000200000ULL, 0x00c00000ULL, 2ULL << 20 },
	{ 0x00007ffffffff000ULL, 0x00b00000ULL, 0x1000 },
	{ 0xffff888000000000ULL, 0x00000000ULL, 1ULL << 30 },
	{ 0xffff888040000000ULL, 0x40000000ULL, 1ULL << 30 },
	{ 0xffffffff81000000ULL, 0x01000000ULL, 2ULL << 20 },
	{ 0xffffffff81200000ULL, 0x01200000ULL, 0x1000 },
	{ 0xffffffffff5fe000ULL, 0x00d00000ULL, 0x1000 },
	{ 0xfffffffffffff000ULL, 0x00e00000ULL, 0x1000 },
};

static void map_mixed(struct fixture *f)
{
	/* insert in a scrambled order: ascending output must come from the walk */
	static const unsigned order[] = { 7, 2, 10, 0, 5, 9, 3, 8, 1, 6, 4 };
	assert_int_equal(ARRAY_LEN(order), ARRAY_LEN(mixed));
	for (size_t i = 0; i < ARRAY_LEN(order); i++) {
		const struct expect_leaf *l = &mixed[order[i]];
		map(f, l->va, l->pa, l->size, FLAGS_RW);
	}
}

static void test_for_each_leaf_visits_all_in_ascending_order(void **state)
{
	struct fixture *f = *state;
	map_mixed(f);
	struct collect c = { .n = 0 };
	long n = pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 1000, collect_cb, &c);
	assert_int_equal(n, ARRAY_LEN(mixed));
	assert_int_equal(c.n, ARRAY_LEN(mixed));
	for (size_t i = 0; i < ARRAY_LEN(mixed); i++) {
		assert_int_equal(c.m[i].va, mixed[i].va);
		assert_int_equal(c.m[i].pa, mixed[i].pa);
		assert_int_equal(c.m[i].size, mixed[i].size);
		assert_int_equal(c.m[i].flags & (UNIT_PTE_P | UNIT_PTE_RW), FLAGS_RW);
		if (i)
			assert_true(c.m[i - 1].va < c.m[i].va);
	}
}

static void test_for_each_leaf_only_within_range(void **state)
{
	struct fixture *f = *state;
	map_mixed(f);
	struct collect c = { .n = 0 };
	/* [ 4 KiB page at 0x401000 , the 1 GiB page at 0x40000000 ) */
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0x401000, 0x40000000, 1000, collect_cb, &c), 1);
	assert_int_equal(c.m[0].va, 0x401000);

	/* a range starting inside a large page includes that page, and an end
	 * one byte into a page includes it */
	c.n = 0;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0x00007f0000300000ULL, 0x00007ffffffff001ULL, 1000, collect_cb, &c),
			 2);
	assert_int_equal(c.m[0].va, 0x00007f0000200000ULL);
	assert_int_equal(c.m[1].va, 0x00007ffffffff000ULL);

	/* the kernel image region only */
	c.n = 0;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0xffffffff80000000ULL, 0xffffffffc0000000ULL, 1000, collect_cb, &c),
			 2);
	assert_int_equal(c.m[0].va, 0xffffffff81000000ULL);
	assert_int_equal(c.m[1].va, 0xffffffff81200000ULL);
	assert_int_equal(c.m[1].pa, 0x01200000ULL);

	/* an empty range, and a range over nothing mapped */
	c.n = 0;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0x402000, 0x402000, 1000, collect_cb, &c), 0);
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0x1000000, 0x40000000, 1000, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);

	/* the topmost page of the address space */
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0xffffffffff600000ULL, UINT64_MAX, 1000, collect_cb, &c), 1);
	assert_int_equal(c.m[0].va, 0xfffffffffffff000ULL);
}

static void test_for_each_leaf_stops_when_callback_returns_nonzero(void **state)
{
	struct fixture *f = *state;
	map_mixed(f);
	struct collect c = { .n = 0, .stop_after = 3 };
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 1000, collect_cb, &c), 3);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.m[2].va, mixed[2].va);
	c.n = 0;
	c.stop_after = 1;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0xffff800000000000ULL, UINT64_MAX, 1000, collect_cb, &c), 1);
	assert_int_equal(c.m[0].va, 0xffff888000000000ULL);
}

/* Hostile guest: every PML4 entry points to the PML4 itself. The walk
 * recurses into the same page at every level; max_tables bounds it. */
static void test_for_each_leaf_bounded_on_self_referencing_table(void **state)
{
	struct fixture *f = *state;
	for (unsigned i = 0; i < 512; i++)
		fake_mem_set_entry(&f->mem, f->ctx.root, i, f->ctx.root | FLAGS_RW);
	struct collect c = { .n = 0 };
	unsigned reads0 = f->mem.reads;
	long n = pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 50, collect_cb, &c);
	unsigned reads = f->mem.reads - reads0;
	/* one read to probe the root, then at most 50 tables */
	assert_true(reads <= 51);
	assert_true(reads >= 4); /* it did descend */
	assert_true(n > 0);
	assert_int_equal((unsigned long)n, c.n);
	/* every table read at the last level yields at most 512 leaves */
	assert_true((unsigned long)n <= 512UL * 50);
	for (unsigned i = 1; i < c.n && i < ARRAY_LEN(c.m); i++)
		assert_true(c.m[i - 1].va < c.m[i].va);
	/* the leaves are the root page seen as data */
	assert_int_equal(c.m[0].va, 0);
	assert_int_equal(c.m[0].pa, f->ctx.root);
	assert_int_equal(c.m[0].size, 0x1000);

	/* translate follows the loop exactly `levels` times */
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f->ctx, 0xffffffff81234567ULL, &m), 0);
	assert_int_equal(m.pa, f->ctx.root);

	/* max_tables = 0: nothing walked, nothing visited */
	c.n = 0;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 0, collect_cb, &c), 0);
	assert_int_equal(c.n, 0);
}

/* A single loop entry (PML4[0] -> PML4) next to real mappings. */
static void test_for_each_leaf_single_loop_entry_terminates(void **state)
{
	struct fixture *f = *state;
	map(f, KVA, 0x5678000, 0x1000, FLAGS_RW);
	fake_mem_set_entry(&f->mem, f->ctx.root, 0, f->ctx.root | FLAGS_RW);
	struct collect c = { .n = 0 };
	long n = pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 4096, collect_cb, &c);
	/* The loop makes the PML4 reappear as PDPT, PD and PT, and the real
	 * PDPT and PD reappear one level lower: every present entry read as a
	 * PT entry is a 4 KiB leaf. Five in all, in ascending order. */
	uint64_t pdpt = fake_mem_get_entry(&f->mem, f->ctx.root, 511) & UNIT_PTE_ADDR;
	uint64_t pd = fake_mem_get_entry(&f->mem, pdpt, 510) & UNIT_PTE_ADDR;
	uint64_t pt = fake_mem_get_entry(&f->mem, pd, unit_pt_index(KVA, 2)) & UNIT_PTE_ADDR;
	const struct expect_leaf want[] = {
		{ 0, f->ctx.root, 0x1000 },
		{ 511ULL << 12, pdpt, 0x1000 },
		{ (511ULL << 21) + (510ULL << 12), pd, 0x1000 },
		{ (511ULL << 30) + (510ULL << 21) + ((uint64_t)unit_pt_index(KVA, 2) << 12), pt, 0x1000 },
		{ KVA, 0x5678000, 0x1000 },
	};
	assert_int_equal(n, ARRAY_LEN(want));
	for (size_t i = 0; i < ARRAY_LEN(want); i++) {
		assert_int_equal(c.m[i].va, want[i].va);
		assert_int_equal(c.m[i].pa, want[i].pa);
		assert_int_equal(c.m[i].size, want[i].size);
	}
}

static void test_for_each_leaf_unreadable_root_returns_minus_one(void **state)
{
	struct fixture *f = *state;
	struct pt_ctx bad = f->ctx;
	bad.root = 0x40000000ULL; /* outside fake memory */
	struct collect c = { .n = 0 };
	assert_int_equal(pt_for_each_leaf(&bad, 0, UINT64_MAX, 100, collect_cb, &c), -1);
	assert_int_equal(c.n, 0);
	/* a readable but empty root is 0 leaves, not an error */
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 100, collect_cb, &c), 0);
}

static void test_for_each_leaf_skips_tables_outside_memory(void **state)
{
	struct fixture *f = *state;
	map_mixed(f);
	/* PML4[1] and a PDPT entry of the direct map point outside guest memory */
	fake_mem_set_entry(&f->mem, f->ctx.root, 1, 0x7ff00000000ULL | FLAGS_RW);
	uint64_t pdpt = fake_mem_get_entry(&f->mem, f->ctx.root, unit_pt_index(0xffff888000000000ULL, 4)) & UNIT_PTE_ADDR;
	fake_mem_set_entry(&f->mem, pdpt, 5, 0xfffffffff000ULL | FLAGS_RW);
	/* and an entry with every address bit set (PS clear: PS at PML4 level
	 * would make the walker skip it without reading) */
	fake_mem_set_entry(&f->mem, f->ctx.root, 2, UINT64_MAX & ~UNIT_PTE_PS);
	unsigned failed0 = f->mem.failed;
	struct collect c = { .n = 0 };
	long n = pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 1000, collect_cb, &c);
	assert_int_equal(n, ARRAY_LEN(mixed));
	for (size_t i = 0; i < ARRAY_LEN(mixed); i++)
		assert_int_equal(c.m[i].va, mixed[i].va);
	assert_int_equal(f->mem.failed - failed0, 3);
	assert_int_equal(f->mem.unaligned, 0);
}

static void test_for_each_leaf_5level_reports_canonical_57bit_va(void **state)
{
	struct fixture *f = *state;
	uint64_t hi = 0xff12345678000000ULL, lo = 0x00fffffffffff000ULL, k = 0xffffffff81000000ULL;
	map(f, hi, 0x200000, 2ULL << 20, FLAGS_RW);
	map(f, lo, 0x5000, 0x1000, FLAGS_RW);
	map(f, k, 0x1000000, 0x1000, FLAGS_RW);
	struct collect c = { .n = 0 };
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0, UINT64_MAX, 1000, collect_cb, &c), 3);
	assert_int_equal(c.m[0].va, lo);
	assert_int_equal(c.m[1].va, hi);
	assert_int_equal(c.m[1].size, 2ULL << 20);
	assert_int_equal(c.m[2].va, k);
	c.n = 0;
	assert_int_equal(pt_for_each_leaf(&f->ctx, 0xff00000000000000ULL, 0xffffffff80000000ULL, 1000, collect_cb, &c),
			 1);
	assert_int_equal(c.m[0].va, hi);
	assert_int_equal(c.m[0].pa, 0x200000);
}

/* An entry vmsh wrote still counts as its own after the CPU set the
 * accessed bit walking it; another target, or not present, does not. */
static void test_same_target_ignores_accessed_bit(void **state)
{
	(void)state;
	uint64_t mask = pt_phys_mask(40), want = 0xfcc0004000ULL | PTE_PRESENT | PTE_RW;
	assert_true(pte_same_target(want, want, mask));
	assert_true(pte_same_target(want | 0x20, want, mask)); /* accessed */
	assert_false(pte_same_target(want & ~PTE_PRESENT, want, mask));
	assert_false(pte_same_target(0, want, mask));
	assert_false(pte_same_target((want ^ 0x1000), want, mask)); /* another table */
	assert_false(pte_same_target(want ^ (1ULL << 39), want, mask));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_translate_4k_page_gives_page_start_and_base, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_2m_page_masks_offset_and_pat_bit, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_1g_page, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_nx_of_upper_level_is_inherited, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_fails_on_non_present_entry_at_each_level, setup4,
						teardown),
		cmocka_unit_test_setup_teardown(test_translate_rejects_ps_at_pml4, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_fails_on_table_outside_memory, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_translate_5level_57bit_address, setup5, teardown),
		cmocka_unit_test(test_canonical_sign_extends_bit_47_or_56),
		cmocka_unit_test(test_same_target_ignores_accessed_bit),
		cmocka_unit_test(test_root_from_cr3_drops_pcid_and_bit63),
		cmocka_unit_test_setup_teardown(test_pti_pair_only_even_page_maps_kernel, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_visits_all_in_ascending_order, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_only_within_range, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_stops_when_callback_returns_nonzero, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_bounded_on_self_referencing_table, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_single_loop_entry_terminates, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_unreadable_root_returns_minus_one, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_skips_tables_outside_memory, setup4, teardown),
		cmocka_unit_test_setup_teardown(test_for_each_leaf_5level_reports_canonical_57bit_va, setup5, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
