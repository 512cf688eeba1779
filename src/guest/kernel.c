/* kernel.c - finding the Linux kernel in guest memory (see kernel.h). */
#include "guest/kernel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/log.h"
#include "common/sparse_map.h"
#include "guest/kallsyms.h"
#include "guest/memmap.h"

#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LMA (1ULL << 10)
#define MAX_TABLES 4096
/* What vmsh copies of the kernel's mapping (a real one: ~30-60 MiB; the
 * banner and symbol table lie in its first part). It bounds vmsh's memory
 * and the reads of guest memory a crafted page table can ask for. */
#define MAX_IMAGE (128ULL << 20)

enum paging_mode paging_mode_of(const struct cpu_paging *c)
{
	if (!(c->cr0 & CR0_PG))
		return PAGING_NONE;
	if (!(c->cr4 & CR4_PAE))
		return PAGING_32;
	if (!(c->efer & EFER_LMA))
		return PAGING_PAE;
	return (c->cr4 & CR4_LA57) ? PAGING_5LEVEL : PAGING_4LEVEL;
}

const char *paging_mode_name(enum paging_mode m)
{
	switch (m) {
	case PAGING_NONE: return "none";
	case PAGING_32: return "32-bit";
	case PAGING_PAE: return "pae";
	case PAGING_4LEVEL: return "4-level";
	case PAGING_5LEVEL: return "5-level";
	}
	return "?";
}

int kernel_paging_ctx(struct guest_mem *gm, const struct cpu_paging *c, struct pt_ctx *pt)
{
	enum paging_mode m = paging_mode_of(c);
	if (m != PAGING_4LEVEL && m != PAGING_5LEVEL)
		return -1;
	memset(pt, 0, sizeof(*pt));
	pt->read_page = guest_mem_read_page;
	pt->opaque = gm;
	pt->levels = m == PAGING_5LEVEL ? 5 : 4;
	pt->phys_mask = pt_phys_mask(52);
	pt->root = pt_root_from_cr3(c->cr3, pt->phys_mask);
	return 0;
}

struct first_leaf {
	struct pt_mapping m;
	bool found;
	unsigned count;
};

static int count_leaf(void *opaque, const struct pt_mapping *m)
{
	struct first_leaf *f = opaque;
	if (!f->found) {
		f->m = *m;
		f->found = true;
	}
	return ++f->count >= 64;
}

static unsigned kernel_leaves(const struct pt_ctx *pt, struct pt_mapping *first)
{
	struct first_leaf f = { 0 };
	uint64_t start = pt_canonical(KERNEL_MAP_START, pt->levels), end = pt_canonical(KERNEL_MAP_END, pt->levels);
	if (pt_for_each_leaf(pt, start, end, 64, count_leaf, &f) < 0)
		return 0;
	if (first && f.found)
		*first = f.m;
	return f.count;
}

/* What a bounded walk of the kernel half of a page table found: every
 * present entry of the tables read (top level down to the 2 MiB level, the
 * 4 KiB tables themselves not read) and how many point outside gm. */
struct pt_refs {
	unsigned tables;
	unsigned tables_out; /* entries naming a table page: always RAM */
	unsigned leaves_out; /* 1 GiB / 2 MiB leaves: RAM, or a device's memory */
	unsigned inside;
	uint64_t above_limit, hole_lo, low_end, high_end; /* see struct memmap_evidence */
	bool first_only;
};
#define CHECK_TABLES 128

static void note_outside(struct pt_refs *r, uint64_t pa, uint64_t len)
{
	const uint64_t four_gib = 1ULL << 32;
	uint64_t size = r->above_limit > four_gib ? r->above_limit - four_gib : 0;
	if (pa < four_gib && pa < size && pa + len > r->low_end)
		r->low_end = pa + len;
	if (pa >= four_gib && pa < r->above_limit && pa + len > r->high_end)
		r->high_end = pa + len;
}

static void count_refs(const struct pt_ctx *pt, struct guest_mem *gm, uint64_t table, int level, int first,
		       struct pt_refs *r)
{
	uint64_t e[512];
	if (r->tables >= CHECK_TABLES || (r->first_only && r->tables_out + r->leaves_out) ||
	    pt_read_table(pt, table, e) < 0)
		return;
	r->tables++;
	for (int i = first; i < 512 && !(r->first_only && r->tables_out + r->leaves_out); i++) {
		if (!(e[i] & PTE_PRESENT))
			continue;
		bool leaf = level == 1 || (level <= 3 && (e[i] & PTE_PS));
		uint64_t align = leaf ? (level == 3 ? 1ULL << 30 : level == 2 ? 1ULL << 21 : 4096) : 4096;
		uint64_t pa = e[i] & pt->phys_mask & ~(align - 1);
		/* a leaf in the layout's own hole below 4 GiB or beyond all
		 * the RAM this mapping could hold is a device's memory (a large
		 * ioremap, q35's MMCONFIG) or another mapping's: no evidence */
		if (leaf && ((pa >= r->hole_lo && pa < 1ULL << 32) || pa >= r->above_limit))
			continue;
		/* a large leaf of RAM lies in one range: one that crosses the
		 * end of a range says the range is too short */
		const struct guest_range *in = guest_mem_find(gm, pa);
		if (!in || align - 1 > in->gpa + in->size - 1 - pa) {
			note_outside(r, pa, align);
			if (leaf)
				r->leaves_out++;
			else
				r->tables_out++;
		} else {
			r->inside++;
			if (!leaf && level > 2)
				count_refs(pt, gm, pa, level - 1, 0, r);
		}
	}
}

int kernel_paging_plausible(struct guest_mem *gm, const struct cpu_paging *c, struct memmap_evidence *ev)
{
	struct pt_ctx pt;
	if (kernel_paging_ctx(gm, c, &pt) < 0)
		return 0;
	uint64_t root[512];
	if (guest_mem_read_page(gm, pt.root, root) < 0)
		return 0;
	unsigned present = 0, inside = 0;
	for (int i = 0; i < 512; i++) {
		if (!(root[i] & PTE_PRESENT))
			continue;
		present++;
		if (guest_mem_find(gm, root[i] & pt.phys_mask))
			inside++;
	}
	if (!present || inside * 2 < present)
		return 0;
	struct pt_mapping m;
	bool ok = pt_translate(&pt, c->rip, &m) == 0 && guest_mem_find(gm, m.pa);
	if (!ok) {
		/* the vCPU may be on a PTI user page table: try the kernel half */
		pt.root &= ~0x1000ULL;
		ok = kernel_leaves(&pt, NULL) > 0;
	}
	if (!ok)
		return 0;
	if (ev) {
		/* the kernel half: tables every address space shares, and the
		 * kernel's map of all RAM - of the kernel's table of a PTI pair
		 * (the user one holds only the entry code there) */
		struct pt_ctx kpt = pt;
		kpt.root &= ~0x1000ULL;
		if (kpt.root != pt.root && kernel_leaves(&kpt, NULL) > 0)
			pt = kpt;
		struct pt_refs r = { .above_limit = ev->above_limit, .hole_lo = ev->hole_lo,
				     .first_only = ev->first_only };
		count_refs(&pt, gm, pt.root, pt.levels, 256, &r);
		log_debug("page tables against the map: %u tables read, %u table and %u leaf entries outside",
			  r.tables, r.tables_out, r.leaves_out);
		ev->outside = r.tables_out + r.leaves_out;
		ev->inside = r.inside;
		ev->low_end = r.low_end;
		ev->high_end = r.high_end;
	}
	return 1;
}

int kernel_root_of(const struct guest_kernel *k, uint64_t cr3, uint64_t *root)
{
	uint64_t r = pt_root_from_cr3(cr3, k->pt.phys_mask);
	uint64_t cand[2] = { r, r & ~0x1000ULL };
	for (int c = 0; c < 2; c++) {
		struct pt_ctx pt = pt_live(&k->pt, cand[c]);
		struct pt_mapping m;
		if (pt_translate(&pt, k->text_base, &m) == 0 && m.pa == k->phys_base) {
			*root = cand[c];
			return 0;
		}
	}
	return -1;
}

/* The kernel holds two banners: linux_banner, with the build number after
 * '#' (what /proc/version shows), and a link-time copy without it. Prefer the
 * former; both carry the release. */
int kernel_parse_banner(const uint8_t *buf, size_t len, char *version, size_t vlen, char *banner, size_t blen)
{
	static const char pat[] = "Linux version ";
	const uint8_t *p = buf;
	int found = -1;
	while ((p = memmem(p, len - (p - buf), pat, sizeof(pat) - 1))) {
		const uint8_t *v = p + sizeof(pat) - 1;
		if (v < buf + len && *v >= '0' && *v <= '9') {
			size_t b = 0;
			while (p + b < buf + len && b + 1 < blen && p[b] != '\n' && p[b] != '\0')
				b++;
			const uint8_t *hash = memchr(p, '#', b);
			bool numbered = hash && hash + 1 < p + b && hash[1] >= '0' && hash[1] <= '9';
			if (found < 0 || numbered) {
				size_t i = 0;
				while (v + i < buf + len && i + 1 < vlen && v[i] > ' ' && v[i] < 0x7f)
					i++;
				memcpy(version, v, i);
				version[i] = '\0';
				memcpy(banner, p, b);
				banner[b] = '\0';
				found = 0;
				if (numbered)
					return 0;
			}
		}
		p++;
	}
	return found;
}

/* The image copy: MAX_IMAGE bytes of address space, zero and not resident
 * until written, so that pages vmsh does not read cost it no memory. */
#define IMAGE_MAX_HOLE (4ULL << 20)
/* Read-only data leaves this close together belong to one run (.rodata,
 * the export tables and their strings are one run of pages; the kernel
 * also makes single pages elsewhere read-only). */
#define RUN_MAX_GAP (64ULL << 10)

struct image_leaf {
	uint64_t off, pa, size; /* offset from _text, guest-physical address, bytes */
};

/* One walk over the image's leaves: its size, and the read-only,
 * non-executable ones (where the banner and the export tables are) or, with
 * all, every leaf; with measure, only the size. */
struct image_walk {
	struct guest_kernel *k;
	uint64_t next_va;
	bool all;
	bool measure; /* only image_size: no leaves collected */
	struct image_leaf *leaves;
	size_t n, cap;
	bool oom;
};

static int walk_leaf(void *opaque, const struct pt_mapping *m)
{
	struct image_walk *w = opaque;
	struct guest_kernel *k = w->k;
	/* A gap ends the image, unless it is a small one inside it: with PTI,
	 * the kernel unmaps the freed padding between its text and read-only
	 * data (free_kernel_image_pages), which stays zero in the copy. */
	if (m->va < w->next_va || m->va - w->next_va > IMAGE_MAX_HOLE || m->va - k->text_base + m->size > MAX_IMAGE)
		return 1;
	uint64_t off = m->va - k->text_base;
	w->next_va = m->va + m->size;
	k->image_size = off + m->size;
	if (w->measure || (!w->all && (!(m->flags & PTE_NX) || (m->flags & PTE_RW))))
		return 0;
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 256;
		struct image_leaf *nl = realloc(w->leaves, nc * sizeof(*nl));
		if (!nl) {
			w->oom = true;
			return 1;
		}
		w->leaves = nl;
		w->cap = nc;
	}
	w->leaves[w->n++] = (struct image_leaf){ .off = off, .pa = m->pa, .size = m->size };
	return 0;
}

static int walk_image(struct guest_kernel *k, bool all, bool measure, struct image_walk *w, struct vmsh_err *err)
{
	*w = (struct image_walk){ .k = k, .next_va = k->text_base, .all = all, .measure = measure };
	k->image_size = k->image_unreadable = 0;
	pt_for_each_leaf(&k->pt, k->text_base, pt_canonical(KERNEL_MAP_END, k->pt.levels), MAX_TABLES, walk_leaf, w);
	if (w->oom) {
		free(w->leaves);
		return vmsh_error(err, ENOMEM, "the kernel image's pages");
	}
	if (!k->image_size) {
		free(w->leaves);
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, EIO, "kernel image at %#llx unreadable",
				       (unsigned long long)k->text_base);
	}
	return 0;
}

/* The longest run of leaves [*a, *b) with gaps of at most RUN_MAX_GAP. */
static void longest_run(const struct image_leaf *l, size_t n, size_t *a, size_t *b)
{
	uint64_t best = 0;
	*a = *b = 0;
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && l[j].off - (l[j - 1].off + l[j - 1].size) <= RUN_MAX_GAP; j++)
			;
		uint64_t bytes = l[j - 1].off + l[j - 1].size - l[i].off;
		if (bytes > best) {
			best = bytes;
			*a = i;
			*b = j;
		}
	}
}

/* Copy leaves [a, b) into the image, as few process_vm_readv as the pieces
 * allow (guest_mem_readv batches them); a batch that fails is read leaf by
 * leaf, and what stays unreadable is zero and counted. */
#define READ_BATCH 128

static void read_leaves(struct guest_mem *gm, struct guest_kernel *k, const struct image_leaf *l, size_t a, size_t b)
{
	struct guest_iov v[READ_BATCH];
	for (size_t i = a; i < b; i += READ_BATCH) {
		size_t n = b - i < READ_BATCH ? b - i : READ_BATCH;
		for (size_t j = 0; j < n; j++)
			v[j] = (struct guest_iov){ .gpa = l[i + j].pa, .buf = k->image + l[i + j].off, .len = l[i + j].size };
		if (guest_mem_readv(gm, v, n) == 0)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (guest_mem_read(gm, v[j].gpa, v[j].buf, v[j].len) < 0) {
				memset(v[j].buf, 0, v[j].len);
				k->image_unreadable += v[j].len;
			}
		}
	}
}

static int map_image(struct guest_kernel *k)
{
	void *p = sparse_map(MAX_IMAGE);
	if (!p)
		return -1;
	k->image = p;
	return 0;
}

static void drop_image(struct guest_kernel *k)
{
	if (k->image)
		munmap(k->image, MAX_IMAGE);
	k->image = NULL;
}

/* The banner and the symbols in the image's bytes [lo, hi) (what was read
 * of it): 0 found, 1 the banner without symbols, -1 error; where `last` is
 * false, 2 for "not here" (a wider read may find them). */
static int find_in_image(struct guest_kernel *k, uint64_t lo, uint64_t hi, bool last, struct vmsh_err *err)
{
	k->scan_lo = lo;
	k->scan_hi = hi;
	const uint8_t *win = k->image + lo;
	size_t wlen = hi - lo;
	if (kernel_parse_banner(win, wlen, k->version, sizeof(k->version), k->banner, sizeof(k->banner)) < 0) {
		if (!last)
			return 2;
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, ENOENT,
				       "no Linux version banner in the %llu MiB mapped at the kernel image address",
				       (unsigned long long)k->image_size >> 20);
	}
	struct vmsh_err e = { 0 };
	int rc = ksymtab_parse(win, wlen, k->text_base + lo, &k->ksyms, &e);
	if (rc == 0) {
		k->ksyms.span_lo += lo; /* offsets from _text, as hints keep them */
		k->ksyms.span_hi += lo;
	}
	if (rc < 0 && !last)
		return 2;
	if (rc == 0)
		rc = ksymtab_own_names(&k->ksyms, k->image, k->image_size, &e);
	if (rc == 0)
		return 0;
	/* a kernel built without modules exports nothing: its own symbol
	 * table is all there is */
	struct vmsh_err e2 = { 0 };
	ksymtab_free(&k->ksyms);
	if (kallsyms_parse(k->image, k->image_size, k->text_base, k->text_base, &k->ksyms, &e2) == 0) {
		log_verbose("kernel: no export tables (%s); %zu symbols from kallsyms", e.msg, k->ksyms.n);
		return 0;
	}
	vmsh_error(err, e.errnum ? e.errnum : ENOENT,
		   "no symbols: %s (a kernel built without CONFIG_MODULES has no export tables), and %s", e.msg,
		   e2.msg);
	return 1;
}

/* Copy the mapped image from _text on, as much as needed, and find the
 * banner and the export tables in it: first the longest run of read-only
 * data (.rodata through __ksymtab_strings: 9 of Debian 6.1's 54 MiB), then
 * all the read-only data, then everything (a kernel without strict RWX
 * mappings). Only what was read is searched: searching the zeros between
 * (30 MiB of holes around Debian 6.1's read-only data, every page of them
 * a fault) cost more than the read. */
static int parse_image(struct guest_mem *gm, struct guest_kernel *k, struct vmsh_err *err)
{
	struct image_walk w;
	if (walk_image(k, false, false, &w, err) < 0)
		return -1;
	uint64_t mapped = k->image_size;
	size_t a, b;
	longest_run(w.leaves, w.n, &a, &b);
	/* stages: the run, the rest of the read-only data, everything */
	for (int stage = 0; stage < 3; stage++) {
		int rc;
		if (stage < 2) {
			if (stage == 0 ? a == b : (a == 0 && b == w.n))
				continue;
			if (stage == 0) {
				read_leaves(gm, k, w.leaves, a, b);
			} else {
				read_leaves(gm, k, w.leaves, 0, a);
				read_leaves(gm, k, w.leaves, b, w.n);
			}
			size_t i = stage == 0 ? a : 0, j = stage == 0 ? b : w.n;
			uint64_t lo = w.leaves[i].off, hi = w.leaves[j - 1].off + w.leaves[j - 1].size;
			log_debug("kernel image: %#llx, %llu MiB mapped, searched %llu MiB at +%#llx (%zu pieces), "
				  "%llu bytes unreadable",
				  (unsigned long long)k->text_base, (unsigned long long)(mapped >> 20),
				  (unsigned long long)((hi - lo) >> 20), (unsigned long long)lo, j - i,
				  (unsigned long long)k->image_unreadable);
			rc = find_in_image(k, lo, hi, false, err);
		} else {
			free(w.leaves);
			if (walk_image(k, true, false, &w, err) < 0)
				return -1;
			read_leaves(gm, k, w.leaves, 0, w.n);
			log_debug("kernel image: %#llx, all %llu MiB read, %llu bytes unreadable",
				  (unsigned long long)k->text_base, (unsigned long long)(k->image_size >> 20),
				  (unsigned long long)k->image_unreadable);
			rc = find_in_image(k, 0, k->image_size, true, err);
		}
		if (rc != 2) {
			free(w.leaves);
			return rc;
		}
	}
	free(w.leaves);
	return -1; /* not reached: the last stage ends the loop */
}

/* The kernel's page tables and where _text is (KASLR). */
static int locate(struct guest_mem *gm, const struct cpu_paging *c, struct guest_kernel *k, struct vmsh_err *err)
{
	struct pt_ctx pt;
	if (kernel_paging_ctx(gm, c, &pt) < 0)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, ENOENT,
				       "the vCPU does not use 64-bit paging (paging: %s): not a running Linux kernel",
				       paging_mode_name(paging_mode_of(c)));
	/* With PTI the kernel's PGD is the even page of an 8 KiB pair and the
	 * user's the odd one, which maps little of the kernel (all of its text
	 * on CPUs without PCID). Take the even page unless it maps less. */
	struct pt_mapping first, first2;
	unsigned n1 = kernel_leaves(&pt, &first);
	struct pt_ctx pt2 = pt;
	pt2.root &= ~0x1000ULL;
	unsigned n2 = pt2.root != pt.root ? kernel_leaves(&pt2, &first2) : 0;
	log_debug("kernel image leaves: %u through root %#llx, %u through %#llx", n1, (unsigned long long)pt.root, n2,
		  (unsigned long long)pt2.root);
	if (pt2.root != pt.root && n2 >= n1) {
		pt = pt2;
		first = first2;
		k->pti_user_cr3 = true;
		n1 = n2;
	}
	if (!n1)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, ENOENT,
				       "nothing is mapped at the kernel image addresses %#llx-%#llx: not a Linux guest?",
				       (unsigned long long)KERNEL_MAP_START, (unsigned long long)KERNEL_MAP_END);
	/* From here on the kernel half of this root is read from a copy: the
	 * root may be a process's, and the process may exit while vmsh works.
	 * The copy must still map the first leaf where the walk just found it
	 * (the page could have been reused between the two reads). */
	struct pt_mapping m;
	if (pt_pin_root(&pt) < 0)
		return vmsh_error(err, EIO, "read the page-table root at %#llx", (unsigned long long)pt.root);
	if (pt_translate(&pt, first.va, &m) < 0 || m.pa != first.pa) {
		free((void *)pt.top);
		return vmsh_error(err, EAGAIN, "the vCPU's page tables changed while vmsh read them; try again");
	}
	k->pt = pt;
	k->text_base = first.va;
	k->phys_base = first.pa;
	return 0;
}

/* A hint is used only if the guest holds its banner at its offset from
 * _text and the hinted span parses into a table of the same layout and
 * size: the symbols always come from the guest's memory as it is now,
 * read from where the same build kept them, never from the hint itself. */
static int try_hint(struct guest_mem *gm, struct guest_kernel *k, const struct kernel_hint *h)
{
	size_t bl = strnlen(h->banner, sizeof(h->banner));
	if (!bl || bl >= sizeof(h->banner) || !h->span_len || h->span_len > KERNEL_HINT_MAX_SPAN ||
	    h->banner_off >= MAX_IMAGE || h->span_off >= MAX_IMAGE)
		return -1;
	char b[sizeof(h->banner)];
	if (kernel_read_virt(gm, k, k->text_base + h->banner_off, b, bl) < 0 || memcmp(b, h->banner, bl) ||
	    kernel_parse_banner((const uint8_t *)b, bl, k->version, sizeof(k->version), k->banner, sizeof(k->banner)) < 0)
		return -1;
	uint8_t *buf = malloc(h->span_len);
	if (!buf)
		return -1;
	struct ksymtab ks;
	struct vmsh_err e = { 0 };
	int rc = -1;
	if (kernel_read_virt(gm, k, k->text_base + h->span_off, buf, h->span_len) == 0 &&
	    ksymtab_parse(buf, h->span_len, k->text_base + h->span_off, &ks, &e) == 0) {
		if (ks.format == h->format && ks.n == h->n_syms && ks.n_tables == h->n_tables &&
		    ksymtab_own_names(&ks, buf, h->span_len, &e) == 0) {
			k->ksyms = ks;
			rc = 0;
		} else {
			ksymtab_free(&ks);
		}
	}
	free(buf);
	if (rc < 0)
		k->version[0] = k->banner[0] = '\0';
	return rc;
}

/* What a full search found, as a hint for the next one. */
static void learn(const struct guest_kernel *k, struct kernel_hint *h)
{
	memset(h, 0, sizeof(*h));
	if (k->ksyms.format == KSYMTAB_KALLSYMS)
		return; /* hints name export tables (try_hint parses only those) */
	size_t bl = strlen(k->banner);
	const uint8_t *at = bl && k->scan_hi > k->scan_lo && k->scan_hi <= k->image_size
				    ? memmem(k->image + k->scan_lo, k->scan_hi - k->scan_lo, k->banner, bl)
				    : NULL;
	if (!at || k->ksyms.span_hi <= k->ksyms.span_lo || k->ksyms.span_hi - k->ksyms.span_lo > KERNEL_HINT_MAX_SPAN)
		return;
	memcpy(h->banner, k->banner, bl + 1);
	h->banner_off = (uint64_t)(at - k->image);
	h->span_off = k->ksyms.span_lo;
	h->span_len = k->ksyms.span_hi - k->ksyms.span_lo;
	h->format = k->ksyms.format;
	h->n_syms = k->ksyms.n;
	h->n_tables = k->ksyms.n_tables;
}

int kernel_find(struct guest_mem *gm, const struct cpu_paging *c, struct guest_kernel *k, struct vmsh_err *err)
{
	return kernel_find_hinted(gm, c, NULL, 0, k, NULL, NULL, err);
}

int kernel_find_hinted(struct guest_mem *gm, const struct cpu_paging *c, const struct kernel_hint *hints,
		       size_t n_hints, struct guest_kernel *k, int *used, struct kernel_hint *learned,
		       struct vmsh_err *err)
{
	memset(k, 0, sizeof(*k));
	if (used)
		*used = -1;
	if (learned)
		learned->banner[0] = '\0';
	if (locate(gm, c, k, err) < 0)
		return -1;
	for (size_t i = 0; i < n_hints; i++) {
		if (try_hint(gm, k, &hints[i]) < 0)
			continue;
		struct image_walk w;
		struct vmsh_err e = { 0 };
		if (walk_image(k, false, true, &w, &e) == 0) /* only image_size */
			free(w.leaves);
		if (used)
			*used = (int)i;
		return 0;
	}
	if (map_image(k) < 0) {
		int e = errno;
		kernel_free(k);
		return vmsh_error(err, e, "address space for the kernel image copy");
	}
	int rc = parse_image(gm, k, err);
	if (rc == 0 && learned)
		learn(k, learned);
	/* the symbols are all vmsh needs of the image: the copy goes */
	drop_image(k);
	if (rc < 0) {
		kernel_free(k);
		return -1;
	}
	if (rc > 0) /* keep what we found; the caller reports the missing table */
		return vmsh_err_prefix(err, "Linux %s", k->version);
	return 0;
}

void kernel_free(struct guest_kernel *k)
{
	free((void *)k->pt.top);
	k->pt.top = NULL;
	ksymtab_free(&k->ksyms);
	drop_image(k);
	k->image_size = 0;
}

int kernel_read_virt(struct guest_mem *gm, const struct guest_kernel *k, uint64_t va, void *buf, size_t len)
{
	uint8_t *out = buf;
	while (len) {
		struct pt_mapping m;
		if (pt_translate(&k->pt, va, &m) < 0)
			return -1;
		uint64_t off = va - m.va;
		size_t chunk = m.size - off < len ? (size_t)(m.size - off) : len;
		if (guest_mem_read(gm, m.pa + off, out, chunk) < 0)
			return -1;
		out += chunk;
		va += chunk;
		len -= chunk;
	}
	return 0;
}
