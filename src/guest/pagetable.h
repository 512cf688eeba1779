/* pagetable.h - walking x86-64 guest page tables (4- and 5-level, 1 GiB and
 * 2 MiB pages), reading table pages through a callback, so the walker works
 * the same on live guest memory and on synthetic tables in unit tests.
 * Entries come from the guest: every value is checked, every loop bounded. */
#ifndef VMSH_PAGETABLE_H
#define VMSH_PAGETABLE_H

#include <stdbool.h>
#include <stdint.h>

/* Reads 4096 bytes of guest-physical memory at gpa (page aligned). Returns 0
 * on success, -1 if the page is not guest memory. */
typedef int (*pt_read_page_fn)(void *opaque, uint64_t gpa, uint64_t page[512]);

struct pt_ctx {
	pt_read_page_fn read_page;
	void *opaque;
	uint64_t root;      /* CR3 with the flag bits masked off */
	int levels;         /* 4 or 5 */
	uint64_t phys_mask; /* address bits of an entry, from the guest's MAXPHYADDR */
	/* Optional: a copy of the top-level table at top_gpa, used instead of
	 * reading that page again (pt_pin_root). NULL: always read live. */
	const uint64_t *top;
	uint64_t top_gpa;
};

/* A table page: the pinned copy when it is the one asked for, else read. */
int pt_read_table(const struct pt_ctx *ctx, uint64_t gpa, uint64_t page[512]);
/* Copy ctx's root table into vmsh's memory (malloc'd; the caller frees
 * ctx->top) and read through the copy from now on. The kernel half of a
 * process's top-level table points at tables every address space shares,
 * so the copy keeps translating kernel addresses after the process exits
 * and its page is reused. 0, or -1 if the root cannot be read. */
int pt_pin_root(struct pt_ctx *ctx);
/* The same context reading root live, without the pinned copy. */
struct pt_ctx pt_live(const struct pt_ctx *ctx, uint64_t root);

#define PTE_PRESENT 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_USER 0x4ULL
#define PTE_PS 0x80ULL
#define PTE_NX (1ULL << 63)

/* Does a table entry read back from the guest still point where `want` did?
 * Present, same address: the CPU sets the accessed bit in the entry as it
 * walks it, so the whole value changes under use. */
static inline bool pte_same_target(uint64_t cur, uint64_t want, uint64_t phys_mask)
{
	return (cur & PTE_PRESENT) && ((cur ^ want) & phys_mask & ~0xfffULL) == 0;
}

/* Page-table root from CR3: drop PCID/flag bits and bit 63 (no-flush). */
uint64_t pt_root_from_cr3(uint64_t cr3, uint64_t phys_mask);
/* Mask of physical-address bits in an entry for a MAXPHYADDR of `bits`. */
uint64_t pt_phys_mask(int bits);
/* Canonical sign extension of a virtual address for 4/5 levels. */
uint64_t pt_canonical(uint64_t va, int levels);

struct pt_mapping {
	uint64_t va;     /* first virtual address of the leaf page */
	uint64_t pa;     /* its physical address */
	uint64_t size;   /* 4 KiB, 2 MiB or 1 GiB */
	uint64_t flags;  /* the leaf entry's flag bits (with NX) */
};

/* Translate one virtual address. Returns 0 and fills *m (m->va = page start)
 * or -1 if not mapped / malformed. */
int pt_translate(const struct pt_ctx *ctx, uint64_t va, struct pt_mapping *m);

/* Call cb for every leaf mapping that intersects [va_start, va_end), in
 * ascending order. cb returns non-zero to stop. At most max_tables table
 * pages are read (hostile guests). Returns the number of leaves visited, or
 * -1 if the root could not be read. */
typedef int (*pt_leaf_fn)(void *opaque, const struct pt_mapping *m);
long pt_for_each_leaf(const struct pt_ctx *ctx, uint64_t va_start, uint64_t va_end, unsigned max_tables, pt_leaf_fn cb,
		      void *opaque);

#endif
