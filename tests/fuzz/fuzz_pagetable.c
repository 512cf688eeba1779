/* fuzz_pagetable.c - the x86-64 page-table walkers (pagetable.c) over guest
 * page tables the fuzzer writes: pt_for_each_leaf over a fuzzed range, and
 * pt_translate checked against it (both must agree on every leaf: same
 * physical address, size and flags), 4 and 5 levels, any CR3; and the
 * page-table writer's search for a free 1 GiB region in them
 * (ptw_find_free_gib, ptwrite.c), whose answer must really be free.
 *
 * Invariants: leaves come in ascending order, inside the requested range,
 * with a page size of 4 KiB, 2 MiB or 1 GiB and an aligned physical address
 * inside the guest's physical address width; the walk reads at most
 * max_tables pages (plus the root probe).
 *
 * Input: u8 flags (1: 5 levels; bits 1-3: MAXPHYADDR 36 + 2n), u32 root page
 * number, u64 va_start, u64 va_end, u16 max tables (mod 4097), then the RAM
 * image from gpa 0. */
#include "fuzz.h"

#include "guest/pagetable.h"
#include "guest/ptwrite.h"

#define RAM (256u << 10)
#define MAX_CHECKED 64

struct counting {
	struct fuzz_ram *ram;
	unsigned pages;
};

static int read_page(void *o, uint64_t gpa, uint64_t page[512])
{
	struct counting *c = o;
	c->pages++;
	return fuzz_ram_read_page(c->ram, gpa, page);
}

struct leaves {
	const struct pt_ctx *ctx;
	uint64_t start, end; /* canonical */
	uint64_t last_va;
	bool any;
	unsigned checked;
};

static int on_leaf(void *o, const struct pt_mapping *m)
{
	struct leaves *l = o;
	FUZZ_CHECK(m->size == 4096 || m->size == (2u << 20) || m->size == (1u << 30), "leaf size %#llx",
		   (unsigned long long)m->size);
	FUZZ_CHECK(!(m->va & (m->size - 1)) && !(m->pa & (m->size - 1)), "unaligned leaf %#llx -> %#llx",
		   (unsigned long long)m->va, (unsigned long long)m->pa);
	FUZZ_CHECK(!(m->pa & ~l->ctx->phys_mask), "pa %#llx beyond the physical width", (unsigned long long)m->pa);
	FUZZ_CHECK(m->va == pt_canonical(m->va, l->ctx->levels), "va %#llx not canonical", (unsigned long long)m->va);
	FUZZ_CHECK(!l->any || m->va > l->last_va, "leaf %#llx after %#llx", (unsigned long long)m->va,
		   (unsigned long long)l->last_va);
	l->any = true;
	l->last_va = m->va;
	if (l->checked++ < MAX_CHECKED) {
		struct pt_mapping t;
		struct pt_ctx ctx = *l->ctx;
		FUZZ_CHECK(pt_translate(&ctx, m->va, &t) == 0, "walk found %#llx, translate did not",
			   (unsigned long long)m->va);
		FUZZ_CHECK(t.va == m->va && t.pa == m->pa && t.size == m->size && t.flags == m->flags,
			   "walk and translate disagree on %#llx: pa %#llx/%#llx size %#llx/%#llx flags %#llx/%#llx",
			   (unsigned long long)m->va, (unsigned long long)m->pa, (unsigned long long)t.pa,
			   (unsigned long long)m->size, (unsigned long long)t.size, (unsigned long long)m->flags,
			   (unsigned long long)t.flags);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t flags = fz_u8(&f);
	uint64_t root = 4096ULL * fz_u32(&f);
	uint64_t va_start = fz_u64(&f), va_end = fz_u64(&f);
	unsigned max_tables = fz_u16(&f) % 4097;
	size_t img_len;
	const uint8_t *img = fz_rest(&f, &img_len);
	struct fuzz_ram ram;
	fuzz_ram_reset(&ram, RAM, img, img_len);

	struct counting cnt = { &ram, 0 };
	struct pt_ctx ctx = {
		.read_page = read_page,
		.opaque = &cnt,
		.levels = flags & 1 ? 5 : 4,
		.phys_mask = pt_phys_mask(36 + 2 * ((flags >> 1) & 7)),
	};
	ctx.root = pt_root_from_cr3(root, ctx.phys_mask);
	FUZZ_CHECK(!(ctx.root & 0xfff), "root %#llx", (unsigned long long)ctx.root);
	struct leaves l = { .ctx = &ctx };
	long n = pt_for_each_leaf(&ctx, va_start, va_end, max_tables, on_leaf, &l);
	FUZZ_CHECK(n >= -1, "%ld leaves", n);
	FUZZ_CHECK(cnt.pages <= max_tables + 1 + MAX_CHECKED * 5u, "%u table reads for a limit of %u", cnt.pages,
		   max_tables);
	/* a few single translations too (of the range's ends) */
	struct pt_mapping m;
	(void)pt_translate(&ctx, va_start, &m);
	(void)pt_translate(&ctx, va_end - 1, &m);

	/* where vmsh would link its own 1 GiB of kernel address space */
	struct ptw_slot slot;
	struct vmsh_err err = { 0 };
	uint64_t lo = pt_canonical(KERNEL_HOLE_START, ctx.levels), hi = pt_canonical(KERNEL_HOLE_END, ctx.levels);
	if (ptw_find_free_gib(&ctx, lo, hi, &slot, &err) == 0) {
		FUZZ_CHECK(slot.va >= lo && slot.va + GIB <= hi && !(slot.va & (GIB - 1)), "region %#llx",
			   (unsigned long long)slot.va);
		uint64_t page[512];
		FUZZ_CHECK(slot.index < 512 && fuzz_ram_read_page(&ram, slot.table_gpa, page) == 0 &&
				   page[slot.index] == 0,
			   "entry %u of %#llx is not free", slot.index, (unsigned long long)slot.table_gpa);
		FUZZ_CHECK(pt_translate(&ctx, slot.va, &m) < 0 && pt_translate(&ctx, slot.va + GIB - 4096, &m) < 0,
			   "free region %#llx is mapped", (unsigned long long)slot.va);
	}
	return 0;
}
