/* unit.h - shared helpers for the cmocka unit tests (tests/unit/test_*.c).
 *
 *   - cmocka and the libc headers every test needs
 *   - struct fake_mem: synthetic guest-physical memory (a malloc'd buffer)
 *     with a pt_read_page_fn that fails outside it, plus a page allocator and
 *     entry setters for building page tables
 *   - a deterministic PRNG (splitmix64) for randomised tests */
#ifndef VMSH_UNIT_H
#define VMSH_UNIT_H

/* cmocka needs these before its own header */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- deterministic pseudo-random numbers ---- */

struct unit_rng {
	uint64_t s;
};

static inline uint64_t unit_rand64(struct unit_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* uniform in [0, n), n > 0 */
static inline uint64_t unit_rand_below(struct unit_rng *r, uint64_t n)
{
	return unit_rand64(r) % n;
}

static inline void unit_rand_fill(struct unit_rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t v = unit_rand64(r);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	if (len) {
		uint64_t v = unit_rand64(r);
		memcpy(p, &v, len);
	}
}

/* ---- synthetic guest-physical memory ---- */

#define UNIT_PAGE 4096ULL

struct fake_mem {
	uint8_t *buf;
	uint64_t base;     /* guest-physical address of buf[0], page aligned */
	uint64_t size;     /* bytes */
	uint64_t next;     /* bump allocator: next free offset */
	unsigned reads;    /* successful page reads */
	unsigned failed;   /* page reads outside memory */
	unsigned unaligned; /* page reads of a gpa that is not page aligned */
};

static inline void fake_mem_init(struct fake_mem *m, uint64_t base, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->buf = calloc(1, size);
	assert_non_null(m->buf);
	m->base = base;
	m->size = size;
}

static inline void fake_mem_free(struct fake_mem *m)
{
	free(m->buf);
	m->buf = NULL;
}

static inline bool fake_mem_contains(const struct fake_mem *m, uint64_t gpa, uint64_t len)
{
	return gpa >= m->base && gpa - m->base <= m->size && len <= m->size - (gpa - m->base);
}

/* pt_read_page_fn: 0 and the page, or -1 outside the buffer. */
static inline int fake_mem_read_page(void *opaque, uint64_t gpa, uint64_t page[512])
{
	struct fake_mem *m = opaque;
	if (gpa & (UNIT_PAGE - 1))
		m->unaligned++;
	if (!fake_mem_contains(m, gpa, UNIT_PAGE)) {
		m->failed++;
		return -1;
	}
	memcpy(page, m->buf + (gpa - m->base), UNIT_PAGE);
	m->reads++;
	return 0;
}

/* A zeroed page (aligned to `align`, a power of two >= 4096); its gpa. */
static inline uint64_t fake_mem_alloc_aligned(struct fake_mem *m, uint64_t align)
{
	uint64_t gpa = (m->base + m->next + align - 1) & ~(align - 1);
	assert_true(fake_mem_contains(m, gpa, UNIT_PAGE));
	memset(m->buf + (gpa - m->base), 0, UNIT_PAGE);
	m->next = gpa - m->base + UNIT_PAGE;
	return gpa;
}

static inline uint64_t fake_mem_alloc_page(struct fake_mem *m)
{
	return fake_mem_alloc_aligned(m, UNIT_PAGE);
}

static inline void *fake_mem_ptr(struct fake_mem *m, uint64_t gpa, uint64_t len)
{
	assert_true(fake_mem_contains(m, gpa, len));
	return m->buf + (gpa - m->base);
}

/* Entry idx of the table page at gpa. */
static inline void fake_mem_set_entry(struct fake_mem *m, uint64_t table_gpa, unsigned idx, uint64_t val)
{
	assert_true(idx < 512);
	memcpy(fake_mem_ptr(m, table_gpa + 8ULL * idx, 8), &val, 8);
}

static inline uint64_t fake_mem_get_entry(struct fake_mem *m, uint64_t table_gpa, unsigned idx)
{
	uint64_t v;
	memcpy(&v, fake_mem_ptr(m, table_gpa + 8ULL * idx, 8), 8);
	return v;
}

/* Page-table index of va at level (1 = PTE ... 5 = PML5). */
static inline unsigned unit_pt_index(uint64_t va, int level)
{
	return (unsigned)((va >> (12 + 9 * (level - 1))) & 511);
}

/* ---- building x86-64 page tables in fake_mem ---- */

#define UNIT_PTE_P 0x1ULL
#define UNIT_PTE_RW 0x2ULL
#define UNIT_PTE_US 0x4ULL
#define UNIT_PTE_PS 0x80ULL
#define UNIT_PTE_NX (1ULL << 63)
#define UNIT_PTE_ADDR 0x000ffffffffff000ULL

/* Map [va, va+size) to pa with a leaf of `size` (4 KiB, 2 MiB or 1 GiB) in
 * the levels-level tree at root, allocating missing tables (entries P|RW|US
 * plus table_extra). leaf_flags must include UNIT_PTE_P to be present; PS is
 * added for large pages. */
static inline void fake_pt_map_ex(struct fake_mem *m, uint64_t root, int levels, uint64_t va, uint64_t pa,
				  uint64_t size, uint64_t leaf_flags, uint64_t table_extra)
{
	int leaf_level = size == (1ULL << 30) ? 3 : size == (1ULL << 21) ? 2 : 1;
	assert_true(size == (1ULL << (12 + 9 * (leaf_level - 1))));
	assert_int_equal(pa & (size - 1), 0);
	uint64_t table = root;
	for (int level = levels; level > leaf_level; level--) {
		unsigned idx = unit_pt_index(va, level);
		uint64_t e = fake_mem_get_entry(m, table, idx);
		if (!(e & UNIT_PTE_P)) {
			uint64_t t = fake_mem_alloc_page(m);
			e = t | UNIT_PTE_P | UNIT_PTE_RW | UNIT_PTE_US | table_extra;
			fake_mem_set_entry(m, table, idx, e);
		}
		table = e & UNIT_PTE_ADDR;
	}
	fake_mem_set_entry(m, table, unit_pt_index(va, leaf_level),
			   pa | leaf_flags | (leaf_level > 1 ? UNIT_PTE_PS : 0));
}

static inline void fake_pt_map(struct fake_mem *m, uint64_t root, int levels, uint64_t va, uint64_t pa, uint64_t size,
			       uint64_t leaf_flags)
{
	fake_pt_map_ex(m, root, levels, va, pa, size, leaf_flags, 0);
}

#endif
