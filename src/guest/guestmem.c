/* guestmem.c - guest-physical memory ranges and reads (see guestmem.h). */
#include "guest/guestmem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tracer/tracer.h"

void guest_mem_init(struct guest_mem *gm, pid_t pid)
{
	memset(gm, 0, sizeof(*gm));
	gm->pid = pid;
}

void guest_mem_free(struct guest_mem *gm)
{
	free(gm->r);
	gm->r = NULL;
	gm->n = gm->cap = 0;
}

void guest_mem_clear(struct guest_mem *gm)
{
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
			return r->hva ? r : NULL;
	}
	return NULL;
}

/* Copy between buf and guest memory, range by range. */
static int xfer(struct guest_mem *gm, uint64_t gpa, uint8_t *buf, size_t len, bool write)
{
	while (len) {
		const struct guest_range *r = guest_mem_find(gm, gpa);
		if (!r) {
			errno = EFAULT;
			return -1;
		}
		uint64_t off = gpa - r->gpa;
		size_t chunk = r->size - off < len ? (size_t)(r->size - off) : len;
		ssize_t done = write ? remote_write(gm->pid, r->hva + off, buf, chunk)
				     : remote_read(gm->pid, r->hva + off, buf, chunk);
		if (!write) {
			gm->reads++;
			gm->bytes_read += done > 0 ? (uint64_t)done : 0;
		}
		if (done != (ssize_t)chunk) {
			if (done >= 0)
				errno = EFAULT;
			return -1;
		}
		buf += chunk;
		gpa += chunk;
		len -= chunk;
	}
	return 0;
}

int guest_mem_read(struct guest_mem *gm, uint64_t gpa, void *buf, size_t len)
{
	return xfer(gm, gpa, buf, len, false);
}

int guest_mem_write(struct guest_mem *gm, uint64_t gpa, const void *buf, size_t len)
{
	return xfer(gm, gpa, (uint8_t *)buf, len, true);
}

int guest_mem_read_page(void *gm, uint64_t gpa, uint64_t page[512])
{
	return guest_mem_read(gm, gpa & ~0xfffULL, page, 4096);
}

