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

int memmap_bootstrap(struct guest_mem *gm, uint64_t anchor_gpa, memmap_check_fn check, void *opaque,
		     struct vmsh_err *err)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(gm->pid, &maps, &n, err) < 0)
		return -1;
	qsort(maps, n, sizeof(*maps), cmp_size_desc);
	int rc = -1;
	for (size_t i = 0; i < n && rc < 0; i++) {
		if (!memmap_is_candidate(&maps[i]) || maps[i].end - maps[i].start <= anchor_gpa)
			continue;
		struct guest_range r = {
			.gpa = 0,
			.size = maps[i].end - maps[i].start,
			.hva = maps[i].start,
			.kind = "provisional",
		};
		fill_backing(&r, &maps[i]);
		guest_mem_clear(gm);
		if (guest_mem_add(gm, &r) < 0) {
			vmsh_error(err, ENOMEM, "guest memory map");
			break;
		}
		gm->probing = true;
		int ok = check(gm, opaque);
		gm->probing = false;
		if (ok == 1) {
			gm->r[0].verified = true;
			log_debug("guest memory: gpa 0 at %#llx (%s, %llu MiB)", (unsigned long long)r.hva, r.backing,
				  (unsigned long long)(r.size >> 20));
			rc = 0;
		}
	}
	free(maps);
	if (rc < 0) {
		guest_mem_clear(gm);
		if (!err->msg[0])
			vmsh_error(err, ENOENT,
				   "no mapping of the hypervisor holds guest memory consistent with the vCPU's page tables");
	}
	return rc;
}

static const struct proc_map *find_map_by_start(const struct proc_map *maps, size_t n, uint64_t start)
{
	for (size_t i = 0; i < n; i++)
		if (maps[i].start == start)
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
static void plan(const struct guest_range *boot, uint64_t bsize, const struct ram_range *ram, size_t n,
		 struct guest_range *out)
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
		if (below(ram[i].gpa, ram[i].size, bsize))
			off = ram[i].gpa;
		else if (i == n - 1 && ram[i].gpa >= bsize && below(low_used, ram[i].size, bsize))
			/* qemu splits RAM at 3/4 GiB: the part above 4 GiB is the
			 * rest of the same mapping, right after the low part */
			off = bsize - ram[i].size;
		else
			continue; /* no evidence: no host address */
		r->hva = boot->hva + off;
		snprintf(r->backing, sizeof(r->backing), "%s", boot->backing);
		r->shared = boot->shared;
		r->verified = boot->verified;
	}
}

int memmap_refine(struct guest_mem *gm, const struct ram_range *ram, size_t n, struct vmsh_err *err)
{
	if (gm->n != 1 || n == 0 || !gm->r[0].verified)
		return 0;
	if (!ram_list_sane(ram, n))
		return vmsh_error(err, EINVAL, "the guest's RAM list is unsorted, overlapping or wrapping: "
				  "keeping the map confirmed by its page tables");
	struct guest_range boot = gm->r[0];
	struct proc_map *maps;
	size_t nm;
	if (procfs_read_maps(gm->pid, &maps, &nm, err) < 0)
		return -1;
	/* the mapping as it is now, never more than what was confirmed */
	const struct proc_map *bm = find_map_by_start(maps, nm, boot.hva);
	uint64_t bsize = bm && bm->end - bm->start < boot.size ? bm->end - bm->start : boot.size;
	free(maps);
	if (!bm)
		return vmsh_error(err, ENOENT, "the hypervisor's guest RAM mapping at %#llx is gone",
				  (unsigned long long)boot.hva);

	struct guest_range *out = calloc(n, sizeof(*out));
	if (!out)
		return vmsh_error(err, ENOMEM, "guest memory map");
	plan(&boot, bsize, ram, n, out);
	guest_mem_clear(gm);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		if (guest_mem_add(gm, &out[i]) < 0)
			rc = vmsh_error(err, ENOMEM, "guest memory map");
	free(out);
	return rc;
}
