/* vq_guestmem.c - struct vq_mem on guest memory (see vq_guestmem.h). */
#include "devices/vq_guestmem.h"

static int gread(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	return guest_mem_read(opaque, gpa, buf, len);
}

static int gwrite(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	return guest_mem_write(opaque, gpa, buf, len);
}

/* The pieces as guest-memory ones, as many at a time as one
 * process_vm_readv/writev takes (a request's 64 data pages and its
 * completion: one call, not one per 8 pieces). */
static int gxferv(void *opaque, const struct vq_iov *v, size_t n, bool write)
{
	struct guest_iov g[GUEST_IOV_BATCH];
	for (size_t done = 0; done < n;) {
		size_t k = n - done < GUEST_IOV_BATCH ? n - done : GUEST_IOV_BATCH;
		for (size_t i = 0; i < k; i++)
			g[i] = (struct guest_iov){ v[done + i].gpa, v[done + i].buf, v[done + i].len };
		if ((write ? guest_mem_writev(opaque, g, k) : guest_mem_readv(opaque, g, k)) < 0)
			return -1;
		done += k;
	}
	return 0;
}

static int greadv(void *opaque, const struct vq_iov *v, size_t n)
{
	return gxferv(opaque, v, n, false);
}

static int gwritev(void *opaque, const struct vq_iov *v, size_t n)
{
	return gxferv(opaque, v, n, true);
}

static uint8_t *gptr(void *opaque, uint64_t gpa, size_t len)
{
	return guest_mem_ptr(opaque, gpa, len);
}

static bool gcontains(void *opaque, uint64_t gpa, uint64_t len)
{
	return guest_mem_contains(opaque, gpa, len);
}

void vq_mem_of_guest(struct vq_mem *mem, struct guest_mem *gm)
{
	*mem = (struct vq_mem){ .read = gread, .write = gwrite, .readv = greadv, .writev = gwritev, .ptr = gptr,
				.contains = gcontains, .local = guest_mem_all_local(gm), .opaque = gm };
}
