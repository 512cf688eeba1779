/* guestmem.c - guest-physical memory ranges and reads (see guestmem.h). */
#include "guest/guestmem.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include "common/procfs.h"
#include "common/remote_mem.h"
#include "tracer/tracer.h"

void guest_mem_init(struct guest_mem *gm, pid_t pid)
{
	memset(gm, 0, sizeof(*gm));
	gm->pid = pid;
}

static void unmap_all(struct guest_mem *gm)
{
	for (size_t i = 0; i < gm->n_maps; i++)
		munmap(gm->maps[i].base, gm->maps[i].len);
	free(gm->maps);
	gm->maps = NULL;
	gm->n_maps = 0;
	for (size_t i = 0; i < gm->n; i++)
		gm->r[i].local = NULL;
}

void guest_mem_free(struct guest_mem *gm)
{
	unmap_all(gm);
	free(gm->r);
	gm->r = NULL;
	gm->n = gm->cap = 0;
}

void guest_mem_clear(struct guest_mem *gm)
{
	unmap_all(gm);
	gm->n = 0;
}

static int cmp_range(const void *a, const void *b)
{
	const struct guest_range *x = a, *y = b;
	return (x->gpa > y->gpa) - (x->gpa < y->gpa);
}

int guest_mem_add(struct guest_mem *gm, const struct guest_range *r)
{
	if (gm->n == gm->cap) {
		size_t nc = gm->cap ? gm->cap * 2 : 16;
		struct guest_range *nr = realloc(gm->r, nc * sizeof(*nr));
		if (!nr)
			return -1;
		gm->r = nr;
		gm->cap = nc;
	}
	gm->r[gm->n++] = *r;
	qsort(gm->r, gm->n, sizeof(*gm->r), cmp_range);
	return 0;
}

const struct guest_range *guest_mem_find(const struct guest_mem *gm, uint64_t gpa)
{
	size_t lo = 0, hi = gm->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct guest_range *r = &gm->r[mid];
		if (gpa < r->gpa)
			hi = mid;
		else if (gpa - r->gpa >= r->size)
			lo = mid + 1;
		else
			return r->hva && (r->verified || gm->probing) ? r : NULL;
	}
	return NULL;
}

bool guest_mem_contains(const struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	if (gpa + len < gpa)
		return false;
	while (len) {
		const struct guest_range *r = guest_mem_find(gm, gpa);
		if (!r || !r->verified)
			return false;
		uint64_t in = r->size - (gpa - r->gpa);
		if (in >= len)
			return true;
		gpa += in;
		len -= in;
	}
	return true;
}


/* The pieces collected for one process_vm_readv/writev. */
struct remote_batch {
	struct iovec loc[GUEST_IOV_BATCH], rem[GUEST_IOV_BATCH];
	size_t n, bytes;
};

static int batch_flush(struct guest_mem *gm, struct remote_batch *b, bool write)
{
	if (!b->n)
		return 0;
	ssize_t done = write ? remote_writev(gm->pid, b->loc, b->rem, b->n) : remote_readv(gm->pid, b->loc, b->rem, b->n);
	__atomic_fetch_add(&gm->remote_calls, 1, __ATOMIC_RELAXED); /* the device thread's and the session's */
	__atomic_fetch_add(&gm->remote_bytes, done > 0 ? (uint64_t)done : 0, __ATOMIC_RELAXED);
	if (!write) {
		__atomic_fetch_add(&gm->reads, 1, __ATOMIC_RELAXED); /* from every serving thread */
		__atomic_fetch_add(&gm->bytes_read, done > 0 ? (uint64_t)done : 0, __ATOMIC_RELAXED);
	}
	bool whole = done == (ssize_t)b->bytes;
	b->n = b->bytes = 0;
	if (!whole) {
		if (done >= 0)
			errno = EFAULT;
		return -1;
	}
	return 0;
}

static int xferv(struct guest_mem *gm, const struct guest_iov *v, size_t n, bool write)
{
	struct remote_batch b = { .n = 0 };
	for (size_t i = 0; i < n; i++) {
		uint64_t gpa = v[i].gpa;
		uint8_t *buf = v[i].buf;
		size_t len = v[i].len;
		if (gpa + len < gpa) {
			errno = EFAULT;
			return -1;
		}
		while (len) {
			const struct guest_range *r = guest_mem_find(gm, gpa);
			if (!r || (write && !r->verified)) {
				errno = EFAULT;
				return -1;
			}
			uint64_t off = gpa - r->gpa;
			size_t chunk = r->size - off < len ? (size_t)(r->size - off) : len;
			if (r->local) {
				/* in order: what is collected goes first */
				if (batch_flush(gm, &b, write) < 0)
					return -1;
				if (write)
					memcpy(r->local + off, buf, chunk);
				else
					memcpy(buf, r->local + off, chunk);
				__atomic_thread_fence(__ATOMIC_SEQ_CST);
			} else {
				if (b.n == GUEST_IOV_BATCH && batch_flush(gm, &b, write) < 0)
					return -1;
				b.loc[b.n] = (struct iovec){ .iov_base = buf, .iov_len = chunk };
				b.rem[b.n] = (struct iovec){ .iov_base = (void *)(uintptr_t)(r->hva + off), .iov_len = chunk };
				b.n++;
				b.bytes += chunk;
			}
			buf += chunk;
			gpa += chunk;
			len -= chunk;
		}
	}
	return batch_flush(gm, &b, write);
}

int guest_mem_readv(struct guest_mem *gm, const struct guest_iov *v, size_t n)
{
	return xferv(gm, v, n, false);
}

int guest_mem_writev(struct guest_mem *gm, const struct guest_iov *v, size_t n)
{
	return xferv(gm, v, n, true);
}

int guest_mem_read(struct guest_mem *gm, uint64_t gpa, void *buf, size_t len)
{
	return xferv(gm, &(struct guest_iov){ gpa, buf, len }, 1, false);
}

int guest_mem_write(struct guest_mem *gm, uint64_t gpa, const void *buf, size_t len)
{
	return xferv(gm, &(struct guest_iov){ gpa, (void *)buf, len }, 1, true);
}

int guest_mem_read_page(void *gm, uint64_t gpa, uint64_t page[512])
{
	return guest_mem_read(gm, gpa & ~0xfffULL, page, 4096);
}


static void *map_backing(struct guest_mem *gm, const struct proc_map *m)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", gm->pid, (unsigned long long)m->start,
		 (unsigned long long)m->end);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	void *p = mmap(NULL, m->end - m->start, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)m->offset);
	close(fd);
	if (p == MAP_FAILED)
		return NULL;
	void *nm = realloc(gm->maps, (gm->n_maps + 1) * sizeof(*gm->maps));
	if (!nm) {
		munmap(p, m->end - m->start);
		return NULL;
	}
	gm->maps = nm;
	gm->maps[gm->n_maps].base = p;
	gm->maps[gm->n_maps].len = m->end - m->start;
	gm->n_maps++;
	return p;
}

size_t guest_mem_map_shared(struct guest_mem *gm)
{
	struct proc_map *maps;
	size_t n, mapped = 0;
	if (procfs_read_maps(gm->pid, &maps, &n, NULL) < 0)
		return 0;
	for (size_t i = 0; i < gm->n; i++) {
		struct guest_range *r = &gm->r[i];
		if (!r->hva || r->local || !r->verified)
			continue;
		for (size_t k = 0; k < n; k++) {
			const struct proc_map *m = &maps[k];
			if (r->hva < m->start || r->hva + r->size > m->end)
				continue;
			if (m->perms[3] != 's' || !m->path[0] || m->path[0] == '[')
				break;
			uint8_t *base = map_backing(gm, m);
			if (base) {
				r->local = base + (r->hva - m->start);
				mapped++;
			}
			break;
		}
	}
	free(maps);
	return mapped;
}

bool guest_mem_all_local(const struct guest_mem *gm)
{
	size_t verified = 0;
	for (size_t i = 0; i < gm->n; i++) {
		if (!gm->r[i].verified)
			continue;
		if (!gm->r[i].local)
			return false;
		verified++;
	}
	return verified > 0;
}

uint8_t *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, size_t len)
{
	const struct guest_range *r = guest_mem_find(gm, gpa);
	if (!r || !r->local || len > r->size - (gpa - r->gpa))
		return NULL;
	return r->local + (gpa - r->gpa);
}
