/* pagetable.c - x86-64 page-table walker (see pagetable.h). */
#include "guest/pagetable.h"

#include <stdlib.h>
#include <string.h>

int pt_read_table(const struct pt_ctx *ctx, uint64_t gpa, uint64_t page[512])
{
	if (ctx->top && gpa == ctx->top_gpa) {
		memcpy(page, ctx->top, 4096);
		return 0;
	}
	return ctx->read_page(ctx->opaque, gpa, page);
}

int pt_pin_root(struct pt_ctx *ctx)
{
	uint64_t *top = malloc(4096);
	if (!top || ctx->read_page(ctx->opaque, ctx->root, top) < 0) {
		free(top);
		return -1;
	}
	ctx->top = top;
	ctx->top_gpa = ctx->root;
	return 0;
}

struct pt_ctx pt_live(const struct pt_ctx *ctx, uint64_t root)
{
	struct pt_ctx live = *ctx;
	live.root = root;
	live.top = NULL;
	live.top_gpa = 0;
	return live;
}

uint64_t pt_phys_mask(int bits)
{
	if (bits < 32 || bits > 52)
		bits = 52;
	return ((1ULL << bits) - 1) & ~0xfffULL;
}

uint64_t pt_root_from_cr3(uint64_t cr3, uint64_t phys_mask)
{
	return cr3 & phys_mask;
}

uint64_t pt_canonical(uint64_t va, int levels)
{
	int bits = levels == 5 ? 57 : 48;
	uint64_t sign = 1ULL << (bits - 1);
	va &= (1ULL << bits) - 1;
	return (va ^ sign) - sign;
}

static unsigned level_shift(int level) /* level 1 = PTE */
{
	return 12 + 9 * (level - 1);
}

int pt_translate(const struct pt_ctx *ctx, uint64_t va, struct pt_mapping *m)
{
	uint64_t table = ctx->root;
	uint64_t page[512];
	uint64_t nx = 0;
	for (int level = ctx->levels; level >= 1; level--) {
		if (pt_read_table(ctx, table, page) < 0)
			return -1;
		unsigned shift = level_shift(level);
		uint64_t e = page[(va >> shift) & 511];
		if (!(e & PTE_PRESENT))
			return -1;
		nx |= e & PTE_NX;
		bool leaf = level == 1 || ((level == 2 || level == 3) && (e & PTE_PS));
		if (leaf) {
			uint64_t size = 1ULL << shift;
			m->size = size;
			m->va = va & ~(size - 1);
			m->pa = (e & ctx->phys_mask) & ~(size - 1);
			m->flags = (e & 0xfff) | nx;
			return 0;
		}
		if (level > 3 && (e & PTE_PS))
			return -1; /* reserved at PML4/PML5 */
		table = e & ctx->phys_mask;
	}
	return -1;
}

struct walk {
	const struct pt_ctx *ctx;
	uint64_t start, end; /* canonical-free (masked) VA range */
	unsigned tables_left;
	pt_leaf_fn cb;
	void *opaque;
	long leaves;
	bool stop;
};

static void walk_table(struct walk *w, uint64_t table, int level, uint64_t va_base, uint64_t nx)
{
	uint64_t page[512];
	if (w->stop || w->tables_left == 0)
		return;
	w->tables_left--;
	if (pt_read_table(w->ctx, table, page) < 0)
		return;
	unsigned shift = level_shift(level);
	uint64_t span = 1ULL << shift;
	for (unsigned i = 0; i < 512 && !w->stop; i++) {
		uint64_t lo = va_base + (uint64_t)i * span;
		uint64_t hi = lo + span; /* exclusive; may wrap to 0 at the very top */
		if (hi - 1 < w->start || lo >= w->end)
			continue;
		uint64_t e = page[i];
		if (!(e & PTE_PRESENT))
			continue;
		bool leaf = level == 1 || ((level == 2 || level == 3) && (e & PTE_PS));
		if (leaf) {
			struct pt_mapping m = {
				.va = pt_canonical(lo, w->ctx->levels),
				.pa = (e & w->ctx->phys_mask) & ~(span - 1),
				.size = span,
				.flags = (e & 0xfff) | nx | (e & PTE_NX),
			};
			w->leaves++;
			if (w->cb(w->opaque, &m))
				w->stop = true;
			continue;
		}
		if (level > 3 && (e & PTE_PS))
			continue;
		walk_table(w, e & w->ctx->phys_mask, level - 1, lo, nx | (e & PTE_NX));
	}
}

long pt_for_each_leaf(const struct pt_ctx *ctx, uint64_t va_start, uint64_t va_end, unsigned max_tables, pt_leaf_fn cb,
		      void *opaque)
{
	int bits = ctx->levels == 5 ? 57 : 48;
	uint64_t mask = (1ULL << bits) - 1;
	struct walk w = {
		.ctx = ctx,
		.start = va_start & mask,
		.end = ((va_end - 1) & mask) + 1,
		.tables_left = max_tables,
		.cb = cb,
		.opaque = opaque,
	};
	uint64_t probe[512];
	if (pt_read_table(ctx, ctx->root, probe) < 0)
		return -1;
	walk_table(&w, ctx->root, ctx->levels, 0, 0);
	return w.leaves;
}
