/* fuzz_virtqueue.c - a split virtqueue (virtqueue.c) and the virtio-blk
 * requests on it (virtio_blk.c) over a guest RAM image the fuzzer writes:
 * descriptor tables, indirect tables, avail and used rings, request headers
 * and segments are all guest data.
 *
 * Invariants: every buffer of a chain vq_pop returns lies inside guest RAM
 * and the chain's totals add up; virtio_blk_handle never reports more bytes written
 * than the chain has device-writable, never touches the disk outside its
 * size (the backend checks, ASan sees the exact-size disk buffer), never
 * changes a read-only disk; and everything ends (pops are bounded).
 *
 * With flag 16 the queue's log is kept (vq_log_start), every second chain
 * popped is held (never returned), and after the pops
 * a later run takes the queue over from it (vq_take_over, as after a vmsh
 * killed outright), the log's held set flipped by a mask first (a log that
 * does not match the rings): every head it names is below the queue size,
 * named once, and its chain lies inside guest RAM.
 *
 * Input: a 16-byte header, then the RAM image from gpa 0.
 *   u8  log2 queue size (mod 9: 1..256)      u8  flags: 1 EVENT_IDX, 2 read-only disk,
 *   u16 desc / 16, u16 avail / 2, u16 used / 4    4 zero-copy (vq_mem.ptr), 8 vectored backend,
 *   u16 unpop mask (pop i is given back once      16 take-over, 32 buffers checked by
 *       if bit i%16 is set)                           vq_mem.contains (no probe reads),
 *                                                  64 vectored ring access (vq_mem.readv/
 *                                                     writev; status byte with the used entry)
 *   u16 disk sectors (mod 257)   u32 held-set mask for the take-over */
#include "fuzz.h"

#include "devices/virtio_blk.h"

#define RAM (128u << 10)

struct disk {
	uint8_t *bytes;
	uint64_t size;
	bool read_only;
};

static void disk_range(struct disk *d, uint64_t off, uint64_t len)
{
	FUZZ_CHECK(off <= d->size && len <= d->size - off, "disk access %#llx+%#llx outside %#llx",
		   (unsigned long long)off, (unsigned long long)len, (unsigned long long)d->size);
}

static int dread(void *o, uint64_t off, void *b, size_t len)
{
	struct disk *d = o;
	disk_range(d, off, len);
	memcpy(b, d->bytes + off, len);
	return 0;
}

static int dwrite(void *o, uint64_t off, const void *b, size_t len)
{
	struct disk *d = o;
	disk_range(d, off, len);
	FUZZ_CHECK(!d->read_only, "write to a read-only disk");
	memcpy(d->bytes + off, b, len);
	return 0;
}

static int dflush(void *o)
{
	return 0;
}

static int dzero(void *o, uint64_t off, uint64_t len)
{
	struct disk *d = o;
	disk_range(d, off, len);
	FUZZ_CHECK(!d->read_only, "discard/write-zeroes on a read-only disk");
	memset(d->bytes + off, 0, len);
	return 0;
}

static int drwv(void *o, bool write, uint64_t off, const struct iovec *iov, int n)
{
	for (int i = 0; i < n; i++) {
		int rc = write ? dwrite(o, off, iov[i].iov_base, iov[i].iov_len)
			       : dread(o, off, iov[i].iov_base, iov[i].iov_len);
		if (rc)
			return rc;
		off += iov[i].iov_len;
	}
	return 0;
}

static bool ram_contains(void *o, uint64_t gpa, uint64_t len)
{
	return fuzz_ram_inside(o, gpa, len);
}

static void check_chain(const struct fuzz_ram *ram, const struct vq_chain *c)
{
	uint64_t r = 0, w = 0;
	FUZZ_CHECK(c->n > 0 && c->n_readable <= c->n, "chain with %zu buffers, %zu readable", c->n, c->n_readable);
	for (size_t i = 0; i < c->n; i++) {
		const struct vq_buf *b = &c->bufs[i];
		FUZZ_CHECK(b->len > 0 && fuzz_ram_inside(ram, b->gpa, b->len), "buffer %zu at %#llx+%u outside RAM", i,
			   (unsigned long long)b->gpa, b->len);
		FUZZ_CHECK(b->device_writes == (i >= c->n_readable), "buffer %zu out of order", i);
		if (b->device_writes)
			w += b->len;
		else
			r += b->len;
	}
	FUZZ_CHECK(r == c->readable_len && w == c->writable_len && r + w <= VQ_MAX_CHAIN_BYTES, "chain totals");
}

/* A later run takes the queue over from the log the first one kept. */
static void take_over(const struct fuzz_ram *ram, const struct vq_mem *mem, const struct virtqueue *vq,
		      struct vq_log *log, uint32_t flip)
{
	if (!vq->log)
		return;
	log->inflight[0] ^= flip;
	struct virtqueue vq2;
	if (vq_init(&vq2, mem, vq->size, vq->desc, vq->avail, vq->used, vq->event_idx) == 0) {
		uint16_t held[VQ_LOG_MAX];
		size_t n = 0;
		bool seen[VQ_LOG_MAX] = { false };
		if (vq_take_over(&vq2, log, held, &n) == 0) {
			FUZZ_CHECK(n <= vq2.size, "%zu held heads in a queue of %u", n, vq2.size);
			for (size_t k = 0; k < n; k++) {
				FUZZ_CHECK(held[k] < vq2.size && !seen[held[k]], "held head %u", held[k]);
				seen[held[k]] = true;
				struct vq_chain c;
				if (vq_chain_at(&vq2, held[k], &c) < 0 || vq_push(&vq2, held[k], 0) < 0)
					break;
				check_chain(ram, &c);
			}
			/* bounded here as a device bounds a wake-up: rings that
			 * overlap let each push make more available (a guest that
			 * keeps adding requests), not a vmsh bug */
			struct vq_chain c;
			for (unsigned i = 0; i < 2u * vq2.size + 2 && vq_pop(&vq2, &c) == 1; i++) {
				check_chain(ram, &c);
				if (vq_push(&vq2, c.head, 0) < 0)
					break;
			}
		}
	}
	vq_free(&vq2);
}

static int ram_readv(void *o, const struct vq_iov *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fuzz_ram_read(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	return 0;
}

static int ram_writev(void *o, const struct vq_iov *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fuzz_ram_write(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint16_t qsize = (uint16_t)(1u << (fz_u8(&f) % 9));
	uint8_t flags = fz_u8(&f);
	uint64_t desc = 16ULL * fz_u16(&f), avail = 2ULL * fz_u16(&f), used = 4ULL * fz_u16(&f);
	uint16_t unpop_mask = fz_u16(&f);
	uint64_t sectors = fz_u16(&f) % 257;
	uint32_t held_flip = fz_u32(&f);
	size_t img_len;
	const uint8_t *img = fz_rest(&f, &img_len);

	struct fuzz_ram ram;
	fuzz_ram_reset(&ram, RAM, img, img_len);
	struct vq_mem mem = { .read = fuzz_ram_read, .write = fuzz_ram_write, .opaque = &ram };
	if (flags & 4)
		mem.ptr = fuzz_ram_ptr;
	if (flags & 32)
		mem.contains = ram_contains;
	if (flags & 64) {
		mem.readv = ram_readv;
		mem.writev = ram_writev;
	}

	struct disk d = { .size = sectors * BLK_SECTOR, .read_only = flags & 2 };
	d.bytes = malloc(d.size ? d.size : 1);
	if (!d.bytes)
		abort();
	memset(d.bytes, 0xa5, d.size);
	struct blk_disk disk = {
		.sectors = sectors,
		.read_only = d.read_only,
		.id = "fuzz-disk",
		.be = { .read = dread, .write = dwrite, .flush = dflush, .discard = dzero, .write_zeroes = dzero,
			.opaque = &d },
	};
	if (flags & 8)
		disk.be.rwv = drwv;

	struct virtqueue vq;
	struct vq_log log;
	if (vq_init(&vq, &mem, qsize, desc, avail, used, flags & 1) == 0) {
		if (flags & 16)
			vq_log_start(&vq, &log);
		uint16_t old = vq.used_idx;
		struct vq_chain c;
		int r;
		/* each pop takes an entry (or gives it back once): bounded by the queue size */
		for (unsigned i = 0; (r = vq_pop(&vq, &c)) == 1; i++) {
			FUZZ_CHECK(i < 2u * qsize + 2, "more than %u pops from a queue of %u", i, qsize);
			check_chain(&ram, &c);
			if ((unpop_mask >> (i % 16)) & 1 && (i & 1) == 0) {
				FUZZ_CHECK(vq_unpop(&vq) == 0, "unpop refused");
				continue;
			}
			if ((flags & 16) && (i & 1))
				continue; /* held when the run "dies" */
			uint8_t status;
			struct blk_reply rep = { .n = 0 };
			int64_t written = flags & 64 ? virtio_blk_serve(&disk, &mem, &c, &rep)
						     : virtio_blk_handle(&disk, &mem, &c, &status);
			if (written < 0) {
				blk_reply_done(&rep);
				vq_break(&vq, "request %u has no status byte", c.head);
				break;
			}
			FUZZ_CHECK((uint64_t)written <= c.writable_len, "%lld bytes written into %llu writable",
				   (long long)written, (unsigned long long)c.writable_len);
			int pushed = flags & 64 ? vq_push_pieces(&vq, c.head, (uint32_t)written, rep.v, rep.n)
						: vq_push(&vq, c.head, (uint32_t)written);
			blk_reply_done(&rep);
			if (pushed < 0)
				break;
		}
		FUZZ_CHECK(r != -1 || vq.broken, "vq_pop failed on a queue that is not broken");
		vq_set_avail_event(&vq, vq.last_avail);
		(void)vq_should_notify(&vq, old);
		if (flags & 16)
			take_over(&ram, &mem, &vq, &log, held_flip);
	}
	vq_free(&vq);
	free(d.bytes);
	return 0;
}
