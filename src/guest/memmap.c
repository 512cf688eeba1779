/* memmap.c - guest-physical to host mapping inference (see memmap.h). */
#include "guest/memmap.h"

#include <errno.h>
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
	if (!strcmp(m->path, "[stack]") || !strcmp(m->path, "[vvar]") || !strcmp(m->path, "[vdso]") ||
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
		if (check(gm, opaque) == 1) {
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

int memmap_refine(struct guest_mem *gm, const struct ram_range *ram, size_t n, struct vmsh_err *err)
{
	if (gm->n != 1 || n == 0)
		return 0;
	struct guest_range boot = gm->r[0];
	struct proc_map *maps;
	size_t nm;
	if (procfs_read_maps(gm->pid, &maps, &nm, err) < 0)
		return -1;
	const struct proc_map *bm = find_map_by_start(maps, nm, boot.hva);
	uint64_t bsize = bm ? bm->end - bm->start : boot.size;

	struct guest_range *out = calloc(n, sizeof(*out));
	if (!out) {
		free(maps);
		return vmsh_error(err, ENOMEM, "guest memory map");
	}
	/* RAM beyond the part of the bootstrap mapping used at identity offsets */
	uint64_t low_used = 0;
	for (size_t i = 0; i < n; i++)
		if (ram[i].gpa + ram[i].size <= bsize && ram[i].gpa + ram[i].size > low_used)
			low_used = ram[i].gpa + ram[i].size;
	for (size_t i = 0; i < n; i++) {
		struct guest_range *r = &out[i];
		r->gpa = ram[i].gpa;
		r->size = ram[i].size;
		r->kind = "System RAM";
		if (ram[i].gpa + ram[i].size <= bsize) {
			r->hva = boot.hva + ram[i].gpa;
			snprintf(r->backing, sizeof(r->backing), "%s", boot.backing);
			r->shared = boot.shared;
			r->verified = true;
			continue;
		}
		/* Above the identity part: the same mapping continuing right after
		 * the low part (qemu splits RAM at 3/4 GiB that way) when the sizes
		 * add up, else a mapping of exactly this size (one mapping per
		 * region, as Firecracker does). Not confirmed by content. */
		if (i == n - 1 && bsize > low_used && bsize - low_used >= ram[i].size &&
		    bsize - ram[i].size >= low_used) {
			r->hva = boot.hva + (bsize - ram[i].size);
			snprintf(r->backing, sizeof(r->backing), "%s", boot.backing);
			r->shared = boot.shared;
			continue;
		}
		for (size_t k = 0; k < nm; k++) {
			if (memmap_is_candidate(&maps[k]) && maps[k].end - maps[k].start == ram[i].size &&
			    maps[k].start != boot.hva) {
				r->hva = maps[k].start;
				fill_backing(r, &maps[k]);
				break;
			}
		}
	}
	guest_mem_clear(gm);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		if (guest_mem_add(gm, &out[i]) < 0)
			rc = vmsh_error(err, ENOMEM, "guest memory map");
	free(out);
	free(maps);
	return rc;
}
