/* ptwrite.c - our own 1 GiB region in the guest kernel's page tables (see
 * ptwrite.h). */
#include "guest/ptwrite.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* One page per level, read again only when the walk reaches another table:
 * every candidate of the hole shares its upper tables, and this runs while
 * the vCPUs are stopped. */
struct level_cache {
	uint64_t gpa;
	int rc;             /* of reading it; 1: nothing read yet */
	uint64_t page[512];
};

static const uint64_t *read_level(const struct pt_ctx *pt, struct level_cache *c, uint64_t gpa)
{
	if (c->rc == 1 || c->gpa != gpa) {
		c->gpa = gpa;
		c->rc = pt_read_table(pt, gpa, c->page) < 0 ? -1 : 0;
	}
	return c->rc == 0 ? c->page : NULL;
}

int ptw_find_free_gib(const struct pt_ctx *pt, uint64_t lo, uint64_t hi, struct ptw_slot *out, struct vmsh_err *err)
{
	struct level_cache cache[5];
	for (int i = 0; i < 5; i++)
		cache[i].rc = 1;
	/* why each candidate was passed over, for the message when none is left */
	unsigned n_used = 0, n_unread = 0, n_upper = 0;
	uint64_t unread_gpa = 0;
	for (uint64_t va = (lo + GIB - 1) & ~(GIB - 1); va + GIB <= hi && va >= lo; va += GIB) {
		uint64_t table = pt->root;
		const uint64_t *page = NULL;
		/* levels..4 lead to the level-3 table; level 3 holds the 1 GiB entries */
		for (int level = pt->levels; level >= 3; level--) {
			page = read_level(pt, &cache[level - 1], table);
			if (!page) {
				if (!n_unread++)
					unread_gpa = table;
				break;
			}
			if (level == 3)
				break;
			uint64_t e = page[(va >> (12 + 9 * (level - 1))) & 511];
			if (!(e & PTE_PRESENT) || (e & PTE_PS)) {
				n_upper++;
				page = NULL;
				break;
			}
			table = e & pt->phys_mask;
		}
		if (!page)
			continue;
		unsigned idx = (va >> 30) & 511;
		/* present, or not present but used for something (swap-like bits): leave it */
		if (page[idx] != 0) {
			n_used++;
			continue;
		}
		*out = (struct ptw_slot){ .va = va, .table_gpa = table, .index = idx };
		return 0;
	}
	char unread[64] = "";
	if (n_unread)
		snprintf(unread, sizeof(unread), ", the first at guest-physical %#llx", (unsigned long long)unread_gpa);
	return vmsh_error(err, ENOSPC,
			  "no unused 1 GiB region of kernel address space in %#llx-%#llx (%u in use, %u without "
			  "an upper-level table, %u page tables unreadable%s; page-table root %#llx)",
			  (unsigned long long)lo, (unsigned long long)hi, n_used, n_upper, n_unread, unread,
			  (unsigned long long)pt->root);
}

int ptw_build_gib(uint64_t pd[512], uint64_t pd_gpa, uint64_t (*pts)[512], uint64_t pts_gpa, unsigned n_pts,
		 uint64_t va_off, uint64_t pa, uint64_t size, uint64_t flags, uint64_t *pdpt_entry,
		 struct vmsh_err *err)
{
	if ((va_off | pa | size | pd_gpa | pts_gpa) & 0xfff)
		return vmsh_error(err, EINVAL, "page tables: addresses and size must be page aligned");
	if (va_off + size > GIB || size == 0)
		return vmsh_error(err, EINVAL, "page tables: mapping outside the 1 GiB region");
	uint64_t first_pt = va_off >> 21, last_pt = (va_off + size - 1) >> 21;
	if (last_pt - first_pt + 1 > n_pts)
		return vmsh_error(err, ENOSPC, "page tables: %llu page tables needed, %u available",
				  (unsigned long long)(last_pt - first_pt + 1), n_pts);
	for (uint64_t off = 0; off < size; off += 4096) {
		uint64_t va = va_off + off;
		unsigned pdi = va >> 21, pti = (va >> 12) & 511;
		unsigned k = pdi - (unsigned)first_pt;
		pd[pdi] = (pts_gpa + 4096ULL * k) | PTE_PRESENT | PTE_RW; /* upper levels permissive */
		pts[k][pti] = (pa + off) | flags | PTE_PRESENT;
	}
	*pdpt_entry = pd_gpa | PTE_PRESENT | PTE_RW;
	return 0;
}
