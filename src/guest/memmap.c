/* memmap.c - guest-physical to host mapping inference (see memmap.h). */
#include "guest/memmap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/procfs.h"

#define MIN_CANDIDATE (64u << 10)
#define FOUR_GIB (1ULL << 32)

int memmap_is_candidate(const struct proc_map *m)
{
	if (m->perms[0] != 'r' || m->perms[1] != 'w')
		return 0;
	if (m->end - m->start < MIN_CANDIDATE)
		return 0;
	/* [heap]: malloc'd data of the hypervisor, much of it guest-influenced */
	if (!strcmp(m->path, "[stack]") || !strcmp(m->path, "[heap]") || !strcmp(m->path, "[vvar]") || !strcmp(m->path, "[vdso]") ||
	    !strcmp(m->path, "[vsyscall]") || !strncmp(m->path, "[stack:", 7))
		return 0;
	return 1;
}

static int cmp_size_desc(const void *a, const void *b)
{
	const struct proc_map *x = a, *y = b;
	uint64_t sx = x->end - x->start, sy = y->end - y->start;
	return (sx < sy) - (sx > sy);
}

static void fill_backing(struct guest_range *r, const struct proc_map *m)
{
	snprintf(r->backing, sizeof(r->backing), "%s", m->path[0] ? m->path : "[anon]");
	r->shared = m->perms[3] == 's';
}

/* Try one layout of a mapping: guest-physical 0 at its start and, when
 * `low` is less than the mapping, the rest from 4 GiB up (where qemu pc/q35
 * and most VMMs put RAM that does not fit below the 32-bit PCI hole: the
 * rest of the same mapping). With `hi`, RAM from 4 GiB up is that other
 * mapping instead (VMMs that map each memory slot on its own, Firecracker's
 * way: guard pages keep the kernel from merging them). With `hi` == `m`,
 * the same mapping the other way round: its first part is RAM from 4 GiB
 * and the last `low` bytes RAM from 0 (two slots' mappings the kernel
 * merged, the second slot mapped below the first, as mmap places them).
 * 1 if check accepts it. */
static int try_layout(struct guest_mem *gm, const struct proc_map *m, uint64_t low, const struct proc_map *hi,
		      memmap_check_fn check, void *opaque, struct memmap_evidence *ev, struct vmsh_err *err)
{
	uint64_t size = m->end - m->start;
	struct guest_range r[2] = {
		{ .gpa = 0, .size = low < size ? low : size, .hva = m->start, .kind = "provisional" },
		{ .gpa = FOUR_GIB, .size = low < size ? size - low : 0, .hva = m->start + low, .kind = "provisional" },
	};
	if (hi == m) {
		r[0].hva = m->start + (size - r[0].size);
		r[1].size = size - r[0].size;
		r[1].hva = m->start;
	} else if (hi) {
		r[1].size = hi->end - hi->start;
		r[1].hva = hi->start;
	}
	guest_mem_clear(gm);
	for (int i = 0; i < 2; i++) {
		if (!r[i].size)
			continue;
		fill_backing(&r[i], i == 1 && hi ? hi : m);
		if (guest_mem_add(gm, &r[i]) < 0)
			return vmsh_error(err, ENOMEM, "guest memory map");
	}
	gm->probing = true;
	ev->above_limit = FOUR_GIB + (hi ? r[1].size : size);
	ev->hole_lo = r[0].size;
	ev->outside = ev->inside = 0;
	ev->low_end = ev->high_end = 0;
	int ok = check(gm, opaque, ev);
	gm->probing = false;
	if (ok != 1)
		return 0;
	for (size_t i = 0; i < gm->n; i++)
		gm->r[i].verified = true;
	log_debug("guest memory: gpa 0 at %#llx (%s, %llu MiB below 4 GiB, %llu MiB above): %u references outside",
		  (unsigned long long)m->start, r[0].backing, (unsigned long long)(r[0].size >> 20),
		  (unsigned long long)(r[1].size >> 20), ev->outside);
	return 1;
}

/* What the search has seen: the best layout that leaves nothing outside
 * (the one through which the kernel's tables show the most structure: a
 * wrong split reads the part above 4 GiB shifted, where a table can read
 * as zeros and so hide what it would leave out), and the first that passes
 * with references outside, kept in case none is better. */
struct search {
	const struct proc_map *best_m, *best_hi;
	uint64_t best_low;
	unsigned best_inside;
	bool best_found;
	const struct proc_map *fb_m, *fb_hi;
	uint64_t fb_low;
	unsigned fb_outside, fb_inside;
	bool fb_found;
	bool fb_scan; /* references say another split may be right */
};

/* Splits of RAM at the 32-bit hole that hypervisors use (qemu q35 2 and
 * 2.75 GiB, pc 3 and 3.5 GiB, kvmtool/crosvm/Firecracker 3.25 GiB), tried
 * first; then every 2 MiB (qemu's max-ram-below-4g). */
static const uint64_t common_splits[] = { 0x80000000, 0xb0000000, 0xc0000000, 0xd0000000, 0xe0000000 };
#define SPLIT_STEP (2ULL << 20)

/* Could the mapping be split at `low` with the anchor page inside? Below
 * 4 GiB it must lie in the low part, above it in the rest. */
static bool split_holds(uint64_t size, uint64_t low, uint64_t anchor_gpa)
{
	if (!low || low >= size || low > FOUR_GIB)
		return false;
	if (anchor_gpa < FOUR_GIB)
		return anchor_gpa < low;
	return anchor_gpa - FOUR_GIB < size - low;
}

/* Try one layout and note what it shows in *s. `full`: walk the tables
 * whole, and let a layout with references outside be the fallback (the
 * fewest outside, then the most inside: a device's memory mapped with
 * large pages is outside every layout, RAM left out only outside wrong
 * ones), noting whether those references could be RAM this mapping holds
 * under another split (below 4 GiB past its low part, or above 4 GiB
 * within the mapping's length: only then is every split worth a look).
 * Otherwise (the every-2-MiB scan) stop at the first reference outside. */
static int try_one(struct guest_mem *gm, const struct proc_map *m, uint64_t low, const struct proc_map *hi, bool full,
		   memmap_check_fn check, void *opaque, struct search *s, struct vmsh_err *err)
{
	struct memmap_evidence ev = { .first_only = !full };
	int rc = try_layout(gm, m, low, hi, check, opaque, &ev, err);
	if (rc <= 0)
		return rc;
	if (ev.outside == 0) {
		if (!s->best_found || ev.inside > s->best_inside) {
			s->best_m = m;
			s->best_hi = hi;
			s->best_low = low;
			s->best_inside = ev.inside;
			s->best_found = true;
		}
		return 0;
	}
	if (!full)
		return 0;
	s->fb_scan = s->fb_scan || ev.low_end > low || ev.high_end > FOUR_GIB;
	if (!s->fb_found || ev.outside < s->fb_outside || (ev.outside == s->fb_outside && ev.inside > s->fb_inside)) {
		s->fb_m = m;
		s->fb_hi = hi;
		s->fb_low = low;
		s->fb_outside = ev.outside;
		s->fb_inside = ev.inside;
		s->fb_found = true;
	}
	return 0;
}

/* One candidate mapping: the whole of it as low RAM and the usual splits
 * at 4 GiB; where none of them leaves nothing out and the references say
 * another split may be right, every 2 MiB (qemu's max-ram-below-4g with
 * the vCPU's root below the split: the root passes several layouts, the
 * kernel's map of RAM tells them apart). The anchor may be on either side
 * of the split (a process's page tables below, the kernel above). */
static int try_mapping(struct guest_mem *gm, const struct proc_map *m, uint64_t anchor_gpa, memmap_check_fn check,
		       void *opaque, struct search *s, struct vmsh_err *err)
{
	uint64_t size = m->end - m->start;
	if (size > anchor_gpa && try_one(gm, m, size, NULL, true, check, opaque, s, err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(common_splits) / sizeof(common_splits[0]); i++)
		if (split_holds(size, common_splits[i], anchor_gpa) &&
		    try_one(gm, m, common_splits[i], NULL, true, check, opaque, s, err) < 0)
			return -1;
	if (s->best_found || (s->fb_found && !s->fb_scan))
		return 0;
	/* the scan: whole walks only until something passes at all */
	for (uint64_t low = SPLIT_STEP; low < size && low <= FOUR_GIB; low += SPLIT_STEP)
		if (split_holds(size, low, anchor_gpa) && try_one(gm, m, low, NULL, !s->fb_found, check, opaque, s, err) < 0)
			return -1;
	return 0;
}

/* Two mappings, one for RAM from 0, the other for RAM from 4 GiB: tried
 * when no single mapping explains everything the tables show. Only the
 * largest candidates (guest RAM is the largest rw memory a VMM has; the
 * rest are heaps and thread stacks), the anchor inside one of the two.
 * The second mapping must earn its place: with the vCPU's root inside it,
 * the root's content vouches for it; with the root below 4 GiB it must show
 * more structure than the first mapping alone, whose references it takes
 * in (a table of the kernel's inside it: zeros or any other memory only
 * turn the references that were outside into leaves inside, as a device's
 * memory mapped with large pages does; measured against that mapping
 * alone, not against the fallback, which can be a wrong split reading
 * more tables, shifted). Of those, the one that shows the most. */
#define PAIR_CANDIDATES 16
static int try_pairs(struct guest_mem *gm, const struct proc_map *maps, size_t n, uint64_t anchor_gpa,
		     memmap_check_fn check, void *opaque, struct search *s, struct vmsh_err *err)
{
	const struct proc_map *c[PAIR_CANDIDATES], *lo = NULL, *hi = NULL;
	unsigned most = 0;
	size_t k = 0;
	for (size_t i = 0; i < n && k < PAIR_CANDIDATES; i++)
		if (memmap_is_candidate(&maps[i]))
			c[k++] = &maps[i];
	for (size_t a = 0; a < k; a++) {
		uint64_t lo_size = c[a]->end - c[a]->start;
		if (lo_size > FOUR_GIB || (anchor_gpa < FOUR_GIB && anchor_gpa >= lo_size))
			continue;
		/* what the first mapping alone shows: inside and left out */
		unsigned base = 0;
		if (anchor_gpa < FOUR_GIB) {
			struct memmap_evidence bev = { 0 };
			int brc = try_layout(gm, c[a], lo_size, NULL, check, opaque, &bev, err);
			if (brc < 0)
				return -1;
			if (brc == 1)
				base = bev.inside + bev.outside;
		}
		for (size_t b = 0; b < k; b++) {
			uint64_t hi_size = c[b]->end - c[b]->start;
			if (a == b || (anchor_gpa < FOUR_GIB ? anchor_gpa >= lo_size : anchor_gpa - FOUR_GIB >= hi_size))
				continue;
			struct memmap_evidence ev = { 0 };
			int rc = try_layout(gm, c[a], lo_size, c[b], check, opaque, &ev, err);
			if (rc < 0)
				return -1;
			bool earns = anchor_gpa >= FOUR_GIB || ev.inside > base;
			if (rc == 1 && ev.outside == 0 && earns && (!lo || ev.inside > most)) {
				lo = c[a];
				hi = c[b];
				most = ev.inside;
			}
		}
	}
	if (lo) {
		s->best_m = lo;
		s->best_hi = hi;
		s->best_low = lo->end - lo->start;
		s->best_inside = most;
		s->best_found = true;
	}
	return 0;
}

/* One mapping holding RAM from 4 GiB first and RAM from 0 after it (see
 * try_layout): where the parts meet is tried every 2 MiB, the anchor in
 * one of them; each part's place is pinned by what the tables reference
 * in it (a wrong meeting point reads the part from 0 shifted). Tried last:
 * the layout that leaves nothing outside and shows the most wins. */
static int try_rotated(struct guest_mem *gm, const struct proc_map *maps, size_t n, uint64_t anchor_gpa,
		       memmap_check_fn check, void *opaque, struct search *s, struct vmsh_err *err)
{
	size_t k = 0;
	for (size_t i = 0; i < n && k < PAIR_CANDIDATES; i++) {
		const struct proc_map *m = &maps[i];
		if (!memmap_is_candidate(m))
			continue;
		k++;
		uint64_t size = m->end - m->start;
		uint64_t from = size > FOUR_GIB ? size - FOUR_GIB : SPLIT_STEP; /* the part from 0 fits below 4 GiB */
		for (uint64_t hi_size = from; hi_size < size; hi_size += SPLIT_STEP) {
			uint64_t lo = size - hi_size;
			if (anchor_gpa < FOUR_GIB ? anchor_gpa >= lo : anchor_gpa - FOUR_GIB >= hi_size)
				continue;
			if (try_one(gm, m, lo, m, false, check, opaque, s, err) < 0)
				return -1;
		}
	}
	return 0;
}

int memmap_bootstrap(struct guest_mem *gm, uint64_t anchor_gpa, memmap_check_fn check, void *opaque,
		     struct vmsh_err *err)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(gm->pid, &maps, &n, err) < 0)
		return -1;
	qsort(maps, n, sizeof(*maps), cmp_size_desc);
	int rc = 0;
	struct search s = { 0 };
	for (size_t i = 0; i < n && rc == 0 && !s.best_found && !s.fb_found; i++) {
		if (!memmap_is_candidate(&maps[i]))
			continue;
		rc = try_mapping(gm, &maps[i], anchor_gpa, check, opaque, &s, err);
	}
	if (rc == 0 && !s.best_found)
		rc = try_pairs(gm, maps, n, anchor_gpa, check, opaque, &s, err);
	if (rc == 0 && !s.best_found && !s.fb_found)
		rc = try_rotated(gm, maps, n, anchor_gpa, check, opaque, &s, err);
	if (rc == 0 && (s.best_found || s.fb_found)) {
		/* the best layout; else the first that passed: nothing passed
		 * without leaving something out (a device's memory the kernel
		 * maps, RAM of another mapping such as a hotplugged DIMM) */
		struct memmap_evidence ev = { 0 };
		rc = s.best_found ? try_layout(gm, s.best_m, s.best_low, s.best_hi, check, opaque, &ev, err)
				  : try_layout(gm, s.fb_m, s.fb_low, s.fb_hi, check, opaque, &ev, err);
	}
	free(maps);
	if (rc <= 0) {
		guest_mem_clear(gm);
		if (rc == 0)
			vmsh_error(err, ENOENT,
				   "no mapping of the hypervisor holds guest memory consistent with the vCPU's page tables");
		return -1;
	}
	return 0;
}

/* The mapping that holds hva (a part of the bootstrap's map may start
 * inside one: try_layout's rotated layout). */
static const struct proc_map *find_map_holding(const struct proc_map *maps, size_t n, uint64_t hva)
{
	for (size_t i = 0; i < n; i++)
		if (maps[i].start <= hva && hva < maps[i].end)
			return &maps[i];
	return NULL;
}

/* A list vmsh can reason about: page-aligned, non-empty, not wrapping,
 * sorted and disjoint. Anything else is forged (the kernel never builds it). */
static bool ram_list_sane(const struct ram_range *ram, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!ram[i].size || (ram[i].gpa | ram[i].size) & 0xfffULL || ram[i].size - 1 > UINT64_MAX - ram[i].gpa)
			return false;
		if (i > 0 && ram[i].gpa - ram[i - 1].gpa < ram[i - 1].size)
			return false; /* below or inside the previous one */
		if (i > 0 && ram[i].gpa < ram[i - 1].gpa)
			return false;
	}
	return true;
}

/* [gpa, gpa+size) lies inside [0, limit) (no overflow possible). */
static bool below(uint64_t gpa, uint64_t size, uint64_t limit)
{
	return gpa < limit && size <= limit - gpa;
}

/* Host addresses for the guest's RAM ranges. The only host memory vmsh
 * trusts to be guest RAM is the bootstrap mapping: it comes from the
 * hypervisor's own /proc/PID/maps and holds the vCPU's page tables at
 * identity offsets. The guest's list only *selects* parts of it; a range
 * that would need any other mapping gets no host address (less memory,
 * never a guess: matching "a mapping of the same size" once let a guest
 * point vmsh at a hypervisor thread stack). */
static void plan(const struct guest_range *boot, uint64_t bsize, uint64_t split, const struct ram_range *ram,
		 size_t n, struct guest_range *out)
{
	/* RAM beyond the part of the bootstrap mapping used at identity offsets */
	uint64_t low_used = 0;
	for (size_t i = 0; i < n; i++)
		if (below(ram[i].gpa, ram[i].size, bsize))
			low_used = ram[i].gpa + ram[i].size; /* sorted: the last one wins */
	for (size_t i = 0; i < n; i++) {
		struct guest_range *r = &out[i];
		r->gpa = ram[i].gpa;
		r->size = ram[i].size;
		r->kind = "System RAM";
		uint64_t off;
		if (split) {
			/* bootstrapped split at 4 GiB: [0, split) and the rest from 4 GiB */
			if (below(ram[i].gpa, ram[i].size, split))
				off = ram[i].gpa;
			else if (ram[i].gpa >= FOUR_GIB && split <= bsize &&
				 below(ram[i].gpa - FOUR_GIB, ram[i].size, bsize - split))
				off = split + (ram[i].gpa - FOUR_GIB);
			else
				continue;
		} else if (below(ram[i].gpa, ram[i].size, bsize))
			off = ram[i].gpa;
		else if (ram[i].gpa == FOUR_GIB && ram[i].gpa >= bsize && below(low_used, ram[i].size, bsize))
			/* qemu splits RAM at 3/4 GiB: the part from 4 GiB is the
			 * rest of the same mapping, right after the low part
			 * (not any later range: DIMMs come after it, each a
			 * mapping of its own) */
			off = bsize - ram[i].size;
		else
			continue; /* no evidence: no host address */
		r->hva = boot->hva + off;
		snprintf(r->backing, sizeof(r->backing), "%s", boot->backing);
		r->shared = boot->shared;
		r->verified = boot->verified;
	}
}

/* The two-mapping layout (try_pairs): a range inside the first mapping's
 * part below 4 GiB or inside the second's from 4 GiB gets its place there;
 * anything else no host address. */
static void plan_pair(const struct guest_range boot[2], const uint64_t bsize[2], const struct ram_range *ram,
		      size_t n, struct guest_range *out)
{
	for (size_t i = 0; i < n; i++) {
		struct guest_range *r = &out[i];
		const struct guest_range *b = NULL;
		r->gpa = ram[i].gpa;
		r->size = ram[i].size;
		r->kind = "System RAM";
		if (below(ram[i].gpa, ram[i].size, bsize[0]))
			b = &boot[0];
		else if (ram[i].gpa >= FOUR_GIB && below(ram[i].gpa - FOUR_GIB, ram[i].size, bsize[1]))
			b = &boot[1];
		if (!b)
			continue;
		r->hva = b->hva + (ram[i].gpa - b->gpa);
		snprintf(r->backing, sizeof(r->backing), "%s", b->backing);
		r->shared = b->shared;
		r->verified = b->verified;
	}
}

/* Each bootstrap mapping's size as it is now, never more than what was
 * confirmed; -1 if one is gone. */
static int current_sizes(const struct guest_mem *gm, int nb, uint64_t confirmed[2], struct vmsh_err *err)
{
	struct proc_map *maps;
	size_t nm;
	if (procfs_read_maps(gm->pid, &maps, &nm, err) < 0)
		return -1;
	int rc = 0;
	for (int i = 0; i < nb && rc == 0; i++) {
		const struct proc_map *bm = find_map_holding(maps, nm, gm->r[i].hva);
		if (!bm)
			rc = vmsh_error(err, ENOENT, "the hypervisor's guest RAM mapping at %#llx is gone",
					(unsigned long long)gm->r[i].hva);
		else if (bm->end - gm->r[i].hva < confirmed[i])
			confirmed[i] = bm->end - gm->r[i].hva;
	}
	free(maps);
	return rc;
}

int memmap_refine(struct guest_mem *gm, const struct ram_range *ram, size_t n, struct vmsh_err *err)
{
	/* the bootstrap's map: one range, or split at 4 GiB in one mapping or
	 * across two (try_layout) */
	bool high = gm->n == 2 && gm->r[1].gpa == FOUR_GIB && gm->r[1].verified;
	bool split = high && gm->r[1].hva == gm->r[0].hva + gm->r[0].size;
	bool pair = high && !split;
	if ((gm->n != 1 && !high) || n == 0 || !gm->r[0].verified)
		return 0;
	if (!ram_list_sane(ram, n))
		return vmsh_error(err, EINVAL, "the guest's RAM list is unsorted, overlapping or wrapping: "
				  "keeping the map confirmed by its page tables");
	struct guest_range boot[2] = { gm->r[0], gm->n == 2 ? gm->r[1] : gm->r[0] };
	uint64_t bsize[2] = { gm->r[0].size + (split ? gm->r[1].size : 0), gm->n == 2 ? gm->r[1].size : 0 };
	if (current_sizes(gm, pair ? 2 : 1, bsize, err) < 0)
		return -1;

	struct guest_range *out = calloc(n, sizeof(*out));
	if (!out)
		return vmsh_error(err, ENOMEM, "guest memory map");
	if (pair)
		plan_pair(boot, bsize, ram, n, out);
	else
		plan(&boot[0], bsize[0], split ? boot[0].size : 0, ram, n, out);
	guest_mem_clear(gm);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		if (guest_mem_add(gm, &out[i]) < 0)
			rc = vmsh_error(err, ENOMEM, "guest memory map");
	free(out);
	return rc;
}

/* Hotplug granularity on x86-64 (a memory block, SECTION_SIZE_BITS 27): RAM
 * a guest adds at run time (DIMMs, virtio-mem) comes in multiples of it,
 * unlike the device memory that also sits in slots of its own (VGA RAM is
 * 16 MiB). */
#define HOTPLUG_BLOCK (128ULL << 20)

/* RAM of the guest's list still without a host address. */
static bool unplaced_ram(const struct guest_range *r)
{
	return !r->hva && r->kind && !strcmp(r->kind, "System RAM");
}

/* Does [start, end) overlap a host range some guest range already has? */
static bool hva_taken(const struct guest_mem *gm, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < gm->n; i++) {
		const struct guest_range *r = &gm->r[i];
		if (r->hva && r->hva < end && start < r->hva + r->size)
			return true;
	}
	return false;
}

/* The candidate mappings of which exactly one slot of `size` is made:
 * fills match[] (at most max), returns how many or -1. */
static int slot_matches(const struct guest_mem *gm, const struct proc_map *maps, size_t n, uint64_t size,
			memmap_slot_fn holds, void *opaque, const struct proc_map **match, int max,
			struct memmap_slot_report *rep, struct vmsh_err *err)
{
	int k = 0;
	for (size_t i = 0; i < n; i++) {
		const struct proc_map *m = &maps[i];
		if (!memmap_is_candidate(m) || m->end - m->start < size || hva_taken(gm, m->start, m->end))
			continue;
		if (rep->probes >= MEMMAP_SLOT_PROBES)
			return vmsh_error(err, E2BIG, "%u slot probes without an answer: stopped", rep->probes);
		rep->probes++;
		int v = holds(opaque, m->start, size, err);
		if (v < 0)
			return -1;
		if (v && k < max)
			match[k] = m;
		k += v;
	}
	return k;
}

int memmap_place_by_slots(struct guest_mem *gm, const struct proc_map *maps, size_t n, memmap_slot_fn holds,
			  void *opaque, struct memmap_slot_report *rep, struct vmsh_err *err)
{
	memset(rep, 0, sizeof(*rep));
	for (size_t i = 0; i < gm->n; i++) {
		struct guest_range *r = &gm->r[i];
		if (!unplaced_ram(r))
			continue;
		if (!r->size || r->size % HOTPLUG_BLOCK) {
			rep->unmatched++;
			continue;
		}
		/* another range without host address of the same size: which
		 * slot is whose cannot be told (KVM answers "this memory is a
		 * slot", not where the slot lies), so neither gets one */
		bool twin = false;
		for (size_t j = 0; j < gm->n && !twin; j++)
			twin = j != i && unplaced_ram(&gm->r[j]) && gm->r[j].size == r->size;
		if (twin) {
			rep->ambiguous++;
			continue;
		}
		const struct proc_map *match[2];
		int k = slot_matches(gm, maps, n, r->size, holds, opaque, match, 2, rep, err);
		if (k < 0)
			return -1;
		if (k != 1) {
			k ? rep->ambiguous++ : rep->unmatched++;
			continue;
		}
		r->hva = match[0]->start;
		fill_backing(r, match[0]);
		r->verified = true;
		r->by_slot = true;
		rep->placed++;
	}
	return 0;
}
