/* ptwrite.h - adding a mapping of our own to the guest kernel's page tables.
 *
 * vmsh takes a whole unused 1 GiB region of the kernel half whose upper
 * table is shared by every address space (e.g. in the documented unused hole
 * 0xffffff8000000000-0xffffffeeffffffff under PML4 entry 511), builds the
 * page directory and page tables for it in memory of its own, and links them
 * in with ONE 8-byte write into the guest's table. Removal is that one entry
 * cleared again. Nothing else of the guest's tables is ever written. */
#ifndef VMSH_PTWRITE_H
#define VMSH_PTWRITE_H

#include <stdint.h>

#include "common/err.h"
#include "guest/pagetable.h"

#define GIB (1ULL << 30)
/* the hole of x86-64's kernel virtual memory map that no kernel uses */
#define KERNEL_HOLE_START 0xffffff8000000000ULL
#define KERNEL_HOLE_END 0xffffffef00000000ULL

/* Where the 1 GiB region's PDPT entry lives, and what it held. */
struct ptw_slot {
	uint64_t va;        /* start of the 1 GiB region */
	uint64_t table_gpa; /* the guest's PDPT page */
	unsigned index;     /* entry in it */
};

/* First 1 GiB-aligned region in [lo, hi) whose PDPT entry is not present,
 * under upper-level entries that are. */
int ptw_find_free_gib(const struct pt_ctx *pt, uint64_t lo, uint64_t hi, struct ptw_slot *out, struct vmsh_err *err);

/* Build, in `pd` (a zeroed 4 KiB page that will be at guest-physical
 * pd_gpa) and `pts` (n_pts zeroed pages at pts_gpa, contiguous), the tables
 * mapping va_off..va_off+size within the region to pa..pa+size with 4 KiB
 * pages and `flags` (PTE_* bits incl. NX). Returns the PDPT entry value that
 * links them in. Pure: writes only the given buffers. */
int ptw_build_gib(uint64_t pd[512], uint64_t pd_gpa, uint64_t (*pts)[512], uint64_t pts_gpa, unsigned n_pts,
		 uint64_t va_off, uint64_t pa, uint64_t size, uint64_t flags, uint64_t *pdpt_entry,
		 struct vmsh_err *err);

#endif
