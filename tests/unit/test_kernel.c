/* test_kernel.c - kernel_find (src/guest/kernel.c) end to end on a synthetic
 * guest: guest-physical memory is a buffer of this process (struct guest_mem
 * with our own pid and the buffer as host address: process_vm_readv on
 * ourselves), holding PTI page tables, a kernel image with a banner and an
 * exported-symbol table, and a data page.
 *
 * Guest-physical layout (8 MiB):
 *   0x200000  kernel image, 128 x 4 KiB ("text+rodata"), at _text = KTEXT
 *   0x280000  4 x 4 KiB "data", right after it in virtual memory too
 *   0x500000  a user page
 *   0x600000  page tables (PTI pair: kernel PGD even, user PGD | 0x1000) */
#include "unit.h"

#include <errno.h>
#include <unistd.h>

#include "guest/kernel.h"

#define MEMSZ (8ULL << 20)
#define KTEXT 0xffffffff81000000ULL
#define KPHYS 0x200000ULL
#define TEXT_PAGES 128
#define DATA_PAGES 4
#define IMAGE_PAGES (TEXT_PAGES + DATA_PAGES)
#define UVA 0x0000555555554000ULL
#define UPHYS 0x500000ULL
#define PT_AREA 0x600000ULL
#define DATA_VA (KTEXT + TEXT_PAGES * 0x1000ULL)
#define IOMEM_RESOURCE_VA (DATA_VA + 0x40)

#define BANNER                                                                                          \
	"Linux version 6.1.0-27-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, " \
	"GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)"

enum user_half {
	USER_ENTRY_ONLY,  /* PCID CPUs: only the entry trampoline in the user PGD */
	USER_CLONES_TEXT, /* no PCID: pti_clone_kernel_text() maps text+rodata too */
};

struct guest {
	uint8_t *ram;
	struct fake_mem pt; /* the page-table area, built in place inside ram */
	struct guest_mem gm;
	uint64_t kroot, uroot;
	struct guest_kernel k;
	bool have_k;
};

static const char *const exported[] = {
	"jiffies", "kfree", "schedule", "init_task", "memcpy", "msleep", "kmalloc_caches", "queue_work_on",
	"synchronize_rcu", "call_rcu", "iomem_resource", "printk_ratelimit", "strlen", "vfree", "vmalloc",
	"mutex_lock", "mutex_unlock", "_printk",
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A prel32+namespace __ksymtab in the image (at +0x10000, strings at
 * +0x20000). Symbol i's value: KTEXT + 0x1000 + i*0x10, except
 * iomem_resource, which lives in the data pages. */
static void write_ksymtab(uint8_t *img)
{
	const char *names[ARRAY_LEN(exported)];
	memcpy(names, exported, sizeof(names));
	qsort(names, ARRAY_LEN(names), sizeof(names[0]), cmp_str);
	size_t str = 0x20000, tab = 0x10000;
	img[str++] = 0;
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		size_t l = strlen(names[i]) + 1;
		memcpy(img + str, names[i], l);
		size_t e = tab + 12 * i;
		uint64_t value = strcmp(names[i], "iomem_resource") ? KTEXT + 0x1000 + i * 0x10 : IOMEM_RESOURCE_VA;
		int32_t vo = (int32_t)((int64_t)value - (int64_t)(KTEXT + e));
		int32_t no = (int32_t)((int64_t)str - (int64_t)(e + 4));
		int32_t so = 0;
		memcpy(img + e, &vo, 4);
		memcpy(img + e + 4, &no, 4);
		memcpy(img + e + 8, &so, 4);
		str += l;
	}
}

static uint64_t sym_value(const char *name)
{
	const char *names[ARRAY_LEN(exported)];
	memcpy(names, exported, sizeof(names));
	qsort(names, ARRAY_LEN(names), sizeof(names[0]), cmp_str);
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (!strcmp(names[i], name))
			return strcmp(name, "iomem_resource") ? KTEXT + 0x1000 + i * 0x10 : IOMEM_RESOURCE_VA;
	fail();
	return 0;
}

/* With PTI the kernel unmaps the freed padding between its text and its
 * read-only data (free_kernel_image_pages): pages [HOLE_FIRST, HOLE_END) of
 * the image, before the banner and the export table. */
#define HOLE_FIRST 4
#define HOLE_END 12

/* How the image's pages are mapped: all read-write (no strict RWX), or as
 * Linux maps them: text executable, read-only data (from the export table
 * on: +0x10000) non-executable, data writable. RO_AND_STRAY: the read-only
 * data ends at page 81 and three pages after a gap of 17 executable pages
 * (more than kernel.c's 64 KiB) are read-only too, as the kernel makes
 * single pages elsewhere; RO_LONGER_ELSEWHERE: the banner's and the
 * tables' run (pages 16-48) is shorter than a read-only run after such a
 * gap (pages 66-127). */
enum image_perms { ALL_RW, STRICT_RWX, RO_AND_STRAY, RO_LONGER_ELSEWHERE };

static void build_image(struct guest *g, enum user_half uh, bool pti_hole, enum image_perms perms);

static void build(struct guest *g, enum user_half uh)
{
	build_image(g, uh, false, ALL_RW);
}

static uint64_t page_flags(unsigned i, enum image_perms perms)
{
	if (perms == ALL_RW)
		return UNIT_PTE_P | UNIT_PTE_RW;
	if (i >= TEXT_PAGES)
		return UNIT_PTE_P | UNIT_PTE_RW | UNIT_PTE_NX;
	bool ro;
	switch (perms) {
	case RO_AND_STRAY: ro = (i >= 0x10 && i < 81) || (i >= 98 && i < 101); break;
	case RO_LONGER_ELSEWHERE: ro = (i >= 0x10 && i < 49) || i >= 66; break;
	default: ro = i >= 0x10;
	}
	return ro ? UNIT_PTE_P | UNIT_PTE_NX : UNIT_PTE_P;
}

static void build_image(struct guest *g, enum user_half uh, bool pti_hole, enum image_perms perms)
{
	memset(g, 0, sizeof(*g));
	g->ram = calloc(1, MEMSZ);
	assert_non_null(g->ram);
	/* image contents */
	struct unit_rng r = { 99 };
	unit_rand_fill(&r, g->ram + KPHYS, TEXT_PAGES * 0x1000ULL);
	memset(g->ram + KPHYS + 0x10000, 0, 0x20000); /* tables and strings area */
	memcpy(g->ram + KPHYS + 0x30000, BANNER "\n", sizeof(BANNER));
	write_ksymtab(g->ram + KPHYS);
	memcpy(g->ram + KPHYS + TEXT_PAGES * 0x1000ULL + 0x40, "IOMEMRES", 8);
	memcpy(g->ram + UPHYS, "userpage", 8);

	/* page tables, in the same buffer: a fake_mem view of it */
	g->pt = (struct fake_mem){ .buf = g->ram, .base = 0, .size = MEMSZ, .next = PT_AREA };
	g->kroot = fake_mem_alloc_aligned(&g->pt, 0x2000);
	g->uroot = fake_mem_alloc_page(&g->pt);
	assert_int_equal(g->uroot, g->kroot | 0x1000);
	for (unsigned i = 0; i < IMAGE_PAGES; i++)
		if (!pti_hole || i < HOLE_FIRST || i >= HOLE_END)
			fake_pt_map(&g->pt, g->kroot, 4, KTEXT + i * 0x1000ULL, KPHYS + i * 0x1000ULL, 0x1000,
			    page_flags(i, perms));
	/* entry trampoline: 2 pages of text; or the clone of all of text+rodata */
	unsigned user_first = uh == USER_CLONES_TEXT ? 0 : 1, user_pages = uh == USER_CLONES_TEXT ? TEXT_PAGES : 2;
	for (unsigned i = user_first; i < user_first + user_pages; i++)
		fake_pt_map(&g->pt, g->uroot, 4, KTEXT + i * 0x1000ULL, KPHYS + i * 0x1000ULL, 0x1000, UNIT_PTE_P);
	fake_pt_map(&g->pt, g->kroot, 4, UVA, UPHYS, 0x1000, UNIT_PTE_P | UNIT_PTE_RW | UNIT_PTE_US);
	fake_pt_map(&g->pt, g->uroot, 4, UVA, UPHYS, 0x1000, UNIT_PTE_P | UNIT_PTE_RW | UNIT_PTE_US);

	guest_mem_init(&g->gm, getpid());
	struct guest_range range = { .gpa = 0, .size = MEMSZ, .hva = (uintptr_t)g->ram, .kind = "System RAM",
				     .verified = true };
	assert_int_equal(guest_mem_add(&g->gm, &range), 0);
}

static struct cpu_paging cpu(uint64_t cr3, uint64_t rip)
{
	return (struct cpu_paging){ .cr0 = 0x80050033ULL, .cr4 = 0x3606f0ULL, .efer = 0xd01ULL, .cr3 = cr3, .rip = rip };
}

static int setup(void **state)
{
	struct guest *g = calloc(1, sizeof(*g));
	if (!g)
		return -1;
	*state = g;
	return 0;
}

static int teardown(void **state)
{
	struct guest *g = *state;
	if (g->have_k)
		kernel_free(&g->k);
	guest_mem_free(&g->gm);
	free(g->ram);
	free(g);
	return 0;
}

/* The banner and every exported symbol with its value, as built. */
static void assert_banner_and_exports(const struct guest_kernel *k)
{
	assert_string_equal(k->banner, BANNER);
	assert_int_equal(k->ksyms.n, ARRAY_LEN(exported));
	for (size_t i = 0; i < ARRAY_LEN(exported); i++) {
		uint64_t v;
		assert_int_equal(ksymtab_lookup(&k->ksyms, exported[i], &v), 0);
		assert_int_equal(v, sym_value(exported[i]));
	}
}

/* What must hold for a correctly found kernel, whichever root was used. */
static void assert_kernel(struct guest *g)
{
	struct guest_kernel *k = &g->k;
	assert_int_equal(k->text_base, KTEXT);
	assert_int_equal(k->phys_base, KPHYS);
	assert_string_equal(k->version, "6.1.0-27-amd64");
	assert_string_equal(k->banner, BANNER);
	assert_int_equal(k->ksyms.format, KSYMTAB_PREL32_NS);
	assert_int_equal(k->ksyms.n, ARRAY_LEN(exported));
	uint64_t v;
	assert_int_equal(ksymtab_lookup(&k->ksyms, "iomem_resource", &v), 0);
	assert_int_equal(v, IOMEM_RESOURCE_VA);
	assert_int_equal(ksymtab_lookup(&k->ksyms, "_printk", &v), 0);
	assert_int_equal(v, sym_value("_printk"));
	assert_int_equal(k->image_unreadable, 0);
	/* the kernel's data is readable through k->pt */
	char buf[9] = { 0 };
	assert_int_equal(kernel_read_virt(&g->gm, k, IOMEM_RESOURCE_VA, buf, 8), 0);
	assert_string_equal(buf, "IOMEMRES");
	assert_int_equal(k->image_size, IMAGE_PAGES * 0x1000ULL);
}

static void test_kernel_found_from_user_half_of_pti_pair(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->uroot | 0x801 | (1ULL << 63), UVA + 0x10);
	assert_int_equal(kernel_paging_plausible(&g->gm, &c, NULL), 1);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	assert_true(g->k.pti_user_cr3);
	assert_int_equal(g->k.pt.root, g->kroot);
	assert_int_equal(g->k.pt.levels, 4);
	assert_kernel(g);
}

static void test_kernel_found_across_the_pti_hole_in_its_image(void **state)
{
	struct guest *g = *state;
	build_image(g, USER_ENTRY_ONLY, true, ALL_RW);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	assert_kernel(g);
}

/* With strict RWX the first pass reads only the read-only data and
 * searches only that (not the zeros left for text and data): the symbols,
 * their values and the hint's offsets from _text are the same. */
static void test_only_read_only_data_searched(void **state)
{
	struct guest *g = *state;
	build_image(g, USER_ENTRY_ONLY, false, STRICT_RWX);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	struct kernel_hint h;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, NULL, 0, &g->k, NULL, &h, &err), 0);
	assert_int_equal(g->k.scan_lo, 0x10000);
	assert_int_equal(g->k.scan_hi, TEXT_PAGES * 0x1000ULL);
	assert_banner_and_exports(&g->k);
	assert_int_equal(h.banner_off, 0x30000);
	assert_true(h.span_off >= 0x10000 && h.span_off + h.span_len >= 0x20000 && h.span_len < 0x30000);
	kernel_free(&g->k);
	/* the hint it taught finds the same kernel */
	int used = -1;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, &h, 1, &g->k, &used, NULL, &err), 0);
	assert_int_equal(used, 0);
	assert_int_equal(g->k.ksyms.n, ARRAY_LEN(exported));
	kernel_free(&g->k);
}

/* The search reads and searches the longest run of read-only data, not the
 * holes between it and read-only pages elsewhere (Debian 6.1: 9 MiB of
 * .rodata in a 38 MiB span, every page of the holes a fault to search);
 * where that run holds no banner or tables, all of the read-only data. */
static void check_read_only_runs(struct guest *g, enum image_perms perms, uint64_t lo, uint64_t hi)
{
	build_image(g, USER_ENTRY_ONLY, false, perms);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	if (kernel_find(&g->gm, &c, &g->k, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(g->k.scan_lo, lo);
	assert_int_equal(g->k.scan_hi, hi);
	assert_banner_and_exports(&g->k);
	kernel_free(&g->k);
	guest_mem_free(&g->gm);
	free(g->ram);
	g->ram = NULL;
}

static void test_longest_read_only_run_searched_first(void **state)
{
	struct guest *g = *state;
	check_read_only_runs(g, RO_AND_STRAY, 0x10000, 81 * 0x1000);
	check_read_only_runs(g, RO_LONGER_ELSEWHERE, 0x10000, TEXT_PAGES * 0x1000);
}

/* A full search teaches a hint; with it the next search reads only the
 * banner and the span, and finds the same kernel. */
static void test_hint_learned_and_used(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	struct kernel_hint h;
	int used = 7;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, NULL, 0, &g->k, &used, &h, &err), 0);
	assert_int_equal(used, -1);
	assert_string_equal(h.banner, BANNER);
	assert_int_equal(h.banner_off, 0x30000);
	assert_true(h.span_off <= 0x10000 && h.span_off + h.span_len >= 0x20000 && h.span_len < 0x30000);
	assert_int_equal(h.n_syms, ARRAY_LEN(exported));
	kernel_free(&g->k);

	struct kernel_hint wrong = h;
	memcpy(wrong.banner, "Linux version 6.1.0-99", 22); /* another build's */
	struct kernel_hint hints[2] = { wrong, h };
	struct kernel_hint again;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, hints, 2, &g->k, &used, &again, &err), 0);
	g->have_k = true;
	assert_int_equal(used, 1);
	assert_int_equal(again.banner[0], 0); /* nothing new learned */
	assert_kernel(g);
}

/* A hint that does not match what the guest holds there now is not used:
 * the full search runs and the result is the guest's, not the hint's. */
static void test_hint_not_matching_the_guest_falls_back_to_a_search(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	struct kernel_hint h;
	int used;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, NULL, 0, &g->k, &used, &h, &err), 0);
	kernel_free(&g->k);
	struct kernel_hint bad[4] = { h, h, h, h };
	bad[0].n_syms++;                  /* a table of another size */
	bad[1].span_off += 0x1000;        /* a span without the table's start */
	bad[2].banner_off += 1;           /* the banner elsewhere */
	bad[3].span_len = KERNEL_HINT_MAX_SPAN + 1;
	assert_int_equal(kernel_find_hinted(&g->gm, &c, bad, 4, &g->k, &used, &h, &err), 0);
	g->have_k = true;
	assert_int_equal(used, -1);
	assert_kernel(g);
}

static void test_kernel_found_from_kernel_root(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	assert_int_equal(kernel_paging_plausible(&g->gm, &c, NULL), 1);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	assert_false(g->k.pti_user_cr3);
	assert_int_equal(g->k.pt.root, g->kroot);
	assert_kernel(g);
}

/* Reading across a page boundary and into unmapped memory. */
static void test_kernel_read_virt(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->kroot, KTEXT);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	uint8_t buf[0x2000];
	assert_int_equal(kernel_read_virt(&g->gm, &g->k, KTEXT + 0x800, buf, sizeof(buf)), 0);
	assert_memory_equal(buf, g->ram + KPHYS + 0x800, sizeof(buf));
	assert_int_equal(kernel_read_virt(&g->gm, &g->k, KTEXT + IMAGE_PAGES * 0x1000ULL - 4, buf, 8), -1);
	assert_int_equal(kernel_read_virt(&g->gm, &g->k, KTEXT, buf, 0), 0);
}

/* The root vmsh saw is a process's page table: the process exits while
 * vmsh reads the kernel (seconds without a cache) and its top-level page is
 * freed and reused. The kernel half vmsh read at the start stays usable:
 * every address space shares the kernel's lower tables, and the RAM map,
 * the library's region and the coredump read through it afterwards (seen
 * as "iomem_resource ... does not look like a resource tree" on a guest
 * with most RAM above 4 GiB). A root pinned that way is never taken for
 * live: kernel_root_of reads the page as it is now. */
static void test_kernel_reads_survive_the_root_page_being_reused(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	struct cpu_paging c = cpu(g->kroot | 0x1, KTEXT + 0x1234);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	memset(g->ram + g->kroot, 0, 0x1000); /* freed and zeroed for its next owner */
	char buf[9] = { 0 };
	assert_int_equal(kernel_read_virt(&g->gm, &g->k, IOMEM_RESOURCE_VA, buf, 8), 0);
	assert_string_equal(buf, "IOMEMRES");
	uint64_t root;
	assert_int_equal(kernel_root_of(&g->k, g->kroot, &root), -1);
}

/* Without PCID, pti_clone_kernel_text() maps text and rodata into the user
 * PGD as well: both halves then have at least the 64 leaves kernel_leaves()
 * counts up to. The kernel half, which also maps data and bss, must win. */
static void test_kernel_half_wins_when_user_half_clones_text(void **state)
{
	struct guest *g = *state;
	build(g, USER_CLONES_TEXT);
	struct cpu_paging c = cpu(g->uroot | (1ULL << 63), UVA);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), 0);
	g->have_k = true;
	assert_true(g->k.pti_user_cr3);
	assert_int_equal(g->k.pt.root, g->kroot);
	assert_kernel(g); /* with the bug: image_size stops at rodata, data unreadable */
}

static void test_no_kernel_mapping_is_nokernel(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	/* a PGD that maps only the user page */
	uint64_t lone = fake_mem_alloc_aligned(&g->pt, 0x2000);
	fake_pt_map(&g->pt, lone, 4, UVA, UPHYS, 0x1000, UNIT_PTE_P | UNIT_PTE_US);
	struct cpu_paging c = cpu(lone, UVA);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
	assert_non_null(strstr(err.msg, "nothing is mapped at the kernel image addresses"));

	/* not in long mode */
	c.efer = 0;
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
	assert_non_null(strstr(err.msg, "pae"));
	assert_int_equal(kernel_paging_plausible(&g->gm, &c, NULL), 0);
}

static void test_no_banner_is_nokernel(void **state)
{
	struct guest *g = *state;
	build(g, USER_ENTRY_ONLY);
	memset(g->ram + KPHYS + 0x30000, 0, sizeof(BANNER));
	struct cpu_paging c = cpu(g->kroot, KTEXT);
	struct vmsh_err err = { 0 };
	assert_int_equal(kernel_find(&g->gm, &c, &g->k, &err), -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
	assert_non_null(strstr(err.msg, "no Linux version banner"));
	assert_null(g->k.image);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kernel_found_from_user_half_of_pti_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_found_across_the_pti_hole_in_its_image, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hint_learned_and_used, setup, teardown),
		cmocka_unit_test_setup_teardown(test_only_read_only_data_searched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_longest_read_only_run_searched_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hint_not_matching_the_guest_falls_back_to_a_search, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_found_from_kernel_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_read_virt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_half_wins_when_user_half_clones_text, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_reads_survive_the_root_page_being_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_kernel_mapping_is_nokernel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_banner_is_nokernel, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
