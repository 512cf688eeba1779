/* kernel.h - finding the Linux kernel in a running guest: its page tables,
 * KASLR base, version banner and exported symbols. */
#ifndef VMSH_KERNEL_H
#define VMSH_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "guest/guestmem.h"
#include "guest/ksymtab.h"
#include "guest/pagetable.h"

/* The vCPU state the search starts from. */
struct cpu_paging {
	uint64_t cr0, cr3, cr4, efer;
	uint64_t rip;
};

enum paging_mode { PAGING_NONE, PAGING_32, PAGING_PAE, PAGING_4LEVEL, PAGING_5LEVEL };
enum paging_mode paging_mode_of(const struct cpu_paging *c);
const char *paging_mode_name(enum paging_mode m);

#define KERNEL_MAP_START 0xffffffff80000000ULL /* __START_KERNEL_map */
#define KERNEL_MAP_END 0xffffffffc0000000ULL   /* MODULES_VADDR */
#define KERNEL_DEFAULT_TEXT 0xffffffff81000000ULL /* _text without KASLR */

struct guest_kernel {
	struct pt_ctx pt;        /* the kernel's page tables (kernel half of a PTI pair) */
	bool pti_user_cr3;       /* the vCPU was on the user half of a PTI pair */
	uint64_t text_base;      /* virtual address of _text */
	uint64_t phys_base;      /* its physical address */
	uint64_t image_size;     /* mapped bytes from _text on */
	uint8_t *image;          /* copy of the mapped kernel image, only while kernel_find parses it */
	uint64_t scan_lo, scan_hi; /* the part of it searched: what was read (kernel.c) */
	uint64_t image_unreadable; /* bytes of it we could not read */
	char version[128];       /* uname -r */
	char banner[512];        /* linux_banner without the newline */
	struct ksymtab ksyms;
};

/* Page-table context for the vCPU (root from CR3). -1 without paging. */
int kernel_paging_ctx(struct guest_mem *gm, const struct cpu_paging *c, struct pt_ctx *pt);
struct memmap_evidence;
/* A cheap check that gm is consistent with the vCPU's page tables: 1 or 0.
 * With ev, also counts the references of the kernel half of the tables
 * (table pages, large leaves) that lie outside gm (memmap.h). */
int kernel_paging_plausible(struct guest_mem *gm, const struct cpu_paging *c, struct memmap_evidence *ev);

int kernel_find(struct guest_mem *gm, const struct cpu_paging *c, struct guest_kernel *k, struct vmsh_err *err);

/* Where one kernel build keeps what vmsh reads, relative to _text (so the
 * same under every KASLR draw): its banner, and the span holding its export
 * tables and their names. core/kcache.h keeps them between runs. */
struct kernel_hint {
	char banner[512];
	uint64_t banner_off;
	uint64_t span_off, span_len;
	enum ksymtab_format format;
	uint64_t n_syms, n_tables;
};
#define KERNEL_HINT_MAX_SPAN (16ULL << 20)
/* kernel_find, but first through each hint: the guest must hold the hint's
 * banner at its offset, and the hinted span must parse into export tables
 * of the hint's layout and sizes; the symbols are then parsed from the
 * guest's memory (a few hundred KiB instead of the whole image). *used: the
 * hint used, -1 if none; after a full search, *learned is the hint for this
 * kernel (learned->banner[0] == 0 if none). used and learned may be NULL. */
int kernel_find_hinted(struct guest_mem *gm, const struct cpu_paging *c, const struct kernel_hint *hints,
		       size_t n_hints, struct guest_kernel *k, int *used, struct kernel_hint *learned,
		       struct vmsh_err *err);
void kernel_free(struct guest_kernel *k);

/* The root of the kernel's half of the page tables in cr3 (with PTI, the
 * even page of the pair), if they map the kernel image where k says it is
 * (_text at phys_base); -1 if they do not (another kernel's, or not page
 * tables at all: a root seen earlier whose page has been reused). */
int kernel_root_of(const struct guest_kernel *k, uint64_t cr3, uint64_t *root);

/* Read guest virtual memory through the kernel's page tables. */
int kernel_read_virt(struct guest_mem *gm, const struct guest_kernel *k, uint64_t va, void *buf, size_t len);

/* Exposed for unit tests: find "Linux version X ..." in buf. */
int kernel_parse_banner(const uint8_t *buf, size_t len, char *version, size_t vlen, char *banner, size_t blen);

#endif
