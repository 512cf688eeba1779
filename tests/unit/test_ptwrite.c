/* test_ptwrite.c - taking an unused 1 GiB region of a (synthetic) guest
 * kernel's page tables and building our own tables for it: the result must
 * translate with the same walker vmsh uses on live guests. */
#include "unit.h"

#include "guest/kernel.h"
#include "guest/pagetable.h"
#include "guest/ptwrite.h"

#define KTEXT 0xffffffff81000000ULL

struct fixture {
	struct fake_mem m;
	struct pt_ctx pt;
};

static void setup_kernel(struct fixture *f, int levels)
{
	fake_mem_init(&f->m, 0, 64 << 20);
	uint64_t root = fake_mem_alloc_page(&f->m);
	f->pt = (struct pt_ctx){ .read_page = fake_mem_read_page, .opaque = &f->m, .root = root, .levels = levels,
				 .phys_mask = pt_phys_mask(52) };
	/* kernel text (PML4 511, PDPT 510) and something at the start of the hole's PDPT */
	fake_pt_map(&f->m, root, levels, KTEXT, 0x1000000, 1 << 21, UNIT_PTE_P | UNIT_PTE_RW);
	fake_pt_map(&f->m, root, levels, pt_canonical(KERNEL_HOLE_START, levels), 0x200000, 1 << 21, UNIT_PTE_P);
}

static void test_finds_first_unused_gib_in_the_hole(void **state)
{
	(void)state;
	struct fixture f;
	setup_kernel(&f, 4);
	struct ptw_slot s;
	struct vmsh_err err = { 0 };
	f.m.reads = 0;
	assert_int_equal(ptw_find_free_gib(&f.pt, KERNEL_HOLE_START, KERNEL_HOLE_END, &s, &err), 0);
	/* each table once (this runs with the vCPUs stopped) */
	assert_int_equal(f.m.reads, 2);
	/* PDPT entry 0 is used by the mapping made above: the next one */
	assert_int_equal(s.va, KERNEL_HOLE_START + GIB);
	assert_int_equal(s.index, 1);
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f.pt, KTEXT, &m), 0);
	fake_mem_free(&f.m);
}

static void test_region_without_upper_table_is_not_taken(void **state)
{
	(void)state;
	struct fixture f;
	fake_mem_init(&f.m, 0, 16 << 20);
	uint64_t root = fake_mem_alloc_page(&f.m);
	f.pt = (struct pt_ctx){ .read_page = fake_mem_read_page, .opaque = &f.m, .root = root, .levels = 4,
				.phys_mask = pt_phys_mask(52) };
	struct ptw_slot s;
	struct vmsh_err err = { 0 };
	/* PML4 511 not present: adding one would not reach other address spaces */
	assert_int_equal(ptw_find_free_gib(&f.pt, KERNEL_HOLE_START, KERNEL_HOLE_END, &s, &err), -1);
	assert_non_null(strstr(err.msg, "no unused"));
	/* and says why: all 444 candidates lack the upper-level table */
	assert_non_null(strstr(err.msg, "0 in use, 444 without an upper-level table, 0 page tables unreadable"));
	fake_mem_free(&f.m);
}

static void test_unreadable_page_table_is_named(void **state)
{
	(void)state;
	struct fixture f;
	fake_mem_init(&f.m, 0, 16 << 20);
	/* a root outside the guest's memory: nothing can be read */
	f.pt = (struct pt_ctx){ .read_page = fake_mem_read_page, .opaque = &f.m, .root = 0x40000000, .levels = 4,
				.phys_mask = pt_phys_mask(52) };
	struct ptw_slot s;
	struct vmsh_err err = { 0 };
	assert_int_equal(ptw_find_free_gib(&f.pt, KERNEL_HOLE_START, KERNEL_HOLE_END, &s, &err), -1);
	assert_non_null(strstr(err.msg, "444 page tables unreadable, the first at guest-physical 0x40000000"));
	assert_int_equal(f.m.failed, 1);
	fake_mem_free(&f.m);
}

/* The root vmsh saw first may be a process's that has exited, its page
 * reused: walking it found no region (the matrix failure on a Debian guest)
 * or, worse, a "table" that is not one. Only a root that maps the kernel
 * image where vmsh found it is used. */
static void test_only_a_root_mapping_the_kernel_is_used(void **state)
{
	(void)state;
	struct fixture f;
	fake_mem_init(&f.m, 0, 64 << 20);
	/* a PTI pair: the kernel's half (even page) and the user's (odd, empty) */
	uint64_t kroot = fake_mem_alloc_aligned(&f.m, 8192);
	uint64_t uroot = fake_mem_alloc_page(&f.m);
	assert_int_equal(uroot, kroot + 4096);
	f.pt = (struct pt_ctx){ .read_page = fake_mem_read_page, .opaque = &f.m, .root = kroot, .levels = 4,
				.phys_mask = pt_phys_mask(52) };
	fake_pt_map(&f.m, kroot, 4, KTEXT, 0x1000000, 1 << 21, UNIT_PTE_P | UNIT_PTE_RW);
	struct guest_kernel k = { .pt = f.pt, .text_base = KTEXT, .phys_base = 0x1000000 };
	uint64_t root = 0;
	assert_int_equal(kernel_root_of(&k, kroot | 0x3, &root), 0); /* PCID bits */
	assert_int_equal(root, kroot);
	assert_int_equal(kernel_root_of(&k, uroot | (1ULL << 63), &root), 0);
	assert_int_equal(root, kroot);

	/* a freed page-table root, now zeros: refused; walked, it is the
	 * matrix failure (no region anywhere) */
	uint64_t stale = fake_mem_alloc_aligned(&f.m, 8192);
	assert_int_equal(kernel_root_of(&k, stale, &root), -1);
	struct pt_ctx old = f.pt;
	old.root = stale;
	struct ptw_slot s;
	struct vmsh_err err = { 0 };
	assert_int_equal(ptw_find_free_gib(&old, KERNEL_HOLE_START, KERNEL_HOLE_END, &s, &err), -1);
	assert_non_null(strstr(err.msg, "444 without an upper-level table"));
	/* reused as another kernel's tables (or data that looks like some):
	 * the image is not where vmsh found it, refused too */
	fake_pt_map(&f.m, stale, 4, KTEXT, 0x3000000, 1 << 21, UNIT_PTE_P | UNIT_PTE_RW);
	assert_int_equal(kernel_root_of(&k, stale, &root), -1);
	fake_mem_free(&f.m);
}

static void build_and_check(int levels)
{
	struct fixture f;
	setup_kernel(&f, levels);
	struct ptw_slot s;
	struct vmsh_err err = { 0 };
	assert_int_equal(ptw_find_free_gib(&f.pt, pt_canonical(KERNEL_HOLE_START, levels),
					  pt_canonical(KERNEL_HOLE_END, levels), &s, &err), 0);
	/* our tables live in "our slot": pages of the fake memory */
	uint64_t pd_gpa = fake_mem_alloc_page(&f.m);
	uint64_t pts_gpa = fake_mem_alloc_page(&f.m);
	fake_mem_alloc_page(&f.m); /* second page table, contiguous */
	uint64_t *pd = fake_mem_ptr(&f.m, pd_gpa, 4096);
	uint64_t(*pts)[512] = fake_mem_ptr(&f.m, pts_gpa, 8192);
	uint64_t entry;
	uint64_t lib_pa = 0x3000000, size = 3 << 20; /* 3 MiB: spans two page tables */
	assert_int_equal(ptw_build_gib(pd, pd_gpa, pts, pts_gpa, 2, 0x100000, lib_pa, size, PTE_RW | PTE_NX, &entry, &err),
			 0);
	/* before linking: nothing there */
	struct pt_mapping m;
	assert_int_equal(pt_translate(&f.pt, s.va + 0x100000, &m), -1);
	fake_mem_set_entry(&f.m, s.table_gpa, s.index, entry);
	for (uint64_t off = 0; off < size; off += 4096) {
		assert_int_equal(pt_translate(&f.pt, s.va + 0x100000 + off, &m), 0);
		assert_int_equal(m.pa, lib_pa + off);
		assert_int_equal(m.size, 4096);
		assert_true(m.flags & PTE_NX);
		assert_true(m.flags & PTE_RW);
	}
	assert_int_equal(pt_translate(&f.pt, s.va + 0x100000 + size, &m), -1);
	assert_int_equal(pt_translate(&f.pt, s.va + 0xff000, &m), -1);
	/* the kernel's own mappings are untouched */
	assert_int_equal(pt_translate(&f.pt, KTEXT, &m), 0);
	assert_int_equal(m.pa, 0x1000000);
	/* removal is the one entry cleared */
	fake_mem_set_entry(&f.m, s.table_gpa, s.index, 0);
	assert_int_equal(pt_translate(&f.pt, s.va + 0x100000, &m), -1);
	fake_mem_free(&f.m);
}

static void test_built_tables_translate_4_level(void **state)
{
	(void)state;
	build_and_check(4);
}

static void test_built_tables_translate_5_level(void **state)
{
	(void)state;
	build_and_check(5);
}

static void test_bad_arguments_are_refused(void **state)
{
	(void)state;
	static uint64_t pd[512], pts[2][512];
	uint64_t e;
	struct vmsh_err err = { 0 };
	assert_int_equal(ptw_build_gib(pd, 0x1000, pts, 0x2000, 2, 0x800, 0x3000, 4096, 0, &e, &err), -1);
	assert_int_equal(ptw_build_gib(pd, 0x1000, pts, 0x2000, 2, GIB - 4096, 0x3000, 8192, 0, &e, &err), -1);
	assert_int_equal(ptw_build_gib(pd, 0x1000, pts, 0x2000, 1, 0x1ff000, 0x3000, 8192, 0, &e, &err), -1);
	assert_non_null(strstr(err.msg, "page tables needed"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finds_first_unused_gib_in_the_hole),
		cmocka_unit_test(test_region_without_upper_table_is_not_taken),
		cmocka_unit_test(test_unreadable_page_table_is_named),
		cmocka_unit_test(test_only_a_root_mapping_the_kernel_is_used),
		cmocka_unit_test(test_built_tables_translate_4_level),
		cmocka_unit_test(test_built_tables_translate_5_level),
		cmocka_unit_test(test_bad_arguments_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
