/* virtio_blk.c - virtio-blk request handling (see virtio_blk.h). */
#include "devices/virtio_blk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Bounce buffer for guest memory vmsh cannot map: a whole request of up to
 * this much moves in one read/write of the disk and one vectored copy
 * (a 256 KiB request took 4 of each with 64 KiB). glibc raises its mmap
 * threshold to the size of a freed mmapped block, so after the first
 * request of a size the buffer comes from the heap: no page faults per
 * request. */
#define COPY_CHUNK (1u << 20)

struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_segment {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};

unsigned virtio_blk_queues(const struct blk_disk *disk)
{
	unsigned n = disk->num_queues;
	return n < 1 ? 1 : n > BLK_MAX_QUEUES ? BLK_MAX_QUEUES : n;
}

uint64_t virtio_blk_features(const struct blk_disk *disk)
{
	uint64_t f = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) |
		     (1ULL << VIRTIO_BLK_F_TOPOLOGY);
	if (virtio_blk_queues(disk) > 1)
		f |= 1ULL << VIRTIO_BLK_F_MQ;
	if (disk->read_only)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	else
		f |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	return f;
}

size_t virtio_blk_config(const struct blk_disk *disk, uint8_t *cfg, size_t cap)
{
	/* struct virtio_blk_config up to write_zeroes_may_unmap: 60 bytes used */
	uint8_t c[64] = { 0 };
	uint32_t seg_max = 126, blk_size = BLK_SECTOR, max_discard = 1u << 22, one = 1;
	memcpy(c + 0, &disk->sectors, 8);        /* capacity */
	memcpy(c + 12, &seg_max, 4);             /* seg_max */
	memcpy(c + 20, &blk_size, 4);            /* blk_size */
	/* topology: physical block = logical, no alignment offset, minimum
	 * I/O one block, optimal I/O the largest request served in one piece.
	 * Linux reads ahead twice the optimal size: 2 MiB instead of 128 KiB,
	 * so a program started from the disk (its libc, mapped) comes in a
	 * few requests, not one per 128 KiB: each costs a round trip through
	 * vmsh, where the data itself is cheap to move. */
	uint16_t min_io = 1;
	uint32_t opt_io = COPY_CHUNK / BLK_SECTOR;
	memcpy(c + 26, &min_io, 2);              /* min_io_size (blocks) */
	memcpy(c + 28, &opt_io, 4);              /* opt_io_size (blocks) */
	uint16_t nq = virtio_blk_queues(disk);
	memcpy(c + 34, &nq, 2);                  /* num_queues */
	memcpy(c + 36, &max_discard, 4);         /* max_discard_sectors */
	uint32_t max_seg = BLK_MAX_SEGMENTS;
	memcpy(c + 40, &max_seg, 4);             /* max_discard_seg */
	memcpy(c + 44, &one, 4);                 /* discard_sector_alignment */
	memcpy(c + 48, &max_discard, 4);         /* max_write_zeroes_sectors */
	memcpy(c + 52, &max_seg, 4);             /* max_write_zeroes_seg */
	c[56] = 0;                               /* write_zeroes_may_unmap */
	size_t n = cap < 60 ? cap : 60;
	memcpy(cfg, c, n);
	return n;
}

static bool range_ok(const struct blk_disk *disk, uint64_t sector, uint64_t bytes)
{
	uint64_t n = bytes / BLK_SECTOR;
	return bytes % BLK_SECTOR == 0 && sector <= disk->sectors && n <= disk->sectors - sector;
}

/* A read of the disk into guest buffers bufs[first..last) through the
 * bounce buffer, left in rep for the completion's write (the data first).
 * Only where that write is one vectored call and every buffer lies in
 * guest memory (else the data is written now, and a buffer the guest put
 * outside its memory fails the request, not the completion). 1: done that
 * way; 0: not that way; < 0 an error of the disk. */
static int read_deferred(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *c,
			 size_t first, size_t last, uint64_t off, uint64_t total, struct blk_reply *rep)
{
	if (!rep || !mem->writev || !mem->contains || last - first > BLK_REPLY_DATA_PIECES || total > COPY_CHUNK ||
	    total == 0)
		return 0;
	for (size_t b = first; b < last; b++)
		if (!mem->contains(mem->opaque, c->bufs[b].gpa, c->bufs[b].len))
			return 0;
	if (!(rep->bounce = malloc((size_t)total)))
		return -ENOMEM;
	int rc = disk->be.read(disk->be.opaque, off, rep->bounce, (size_t)total);
	if (rc < 0)
		return rc;
	uint8_t *p = rep->bounce;
	for (size_t b = first; b < last; b++) {
		rep->v[rep->n++] = (struct vq_iov){ c->bufs[b].gpa, p, c->bufs[b].len };
		p += c->bufs[b].len;
	}
	return 1;
}

/* Copy between guest buffers bufs[first..last) and the disk at off:
 * straight into guest memory where vmsh maps it (mem->ptr), else through a
 * bounce buffer (a read's data left in rep, where there is one, for the
 * completion's write). */
static int transfer(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *c, size_t first,
		    size_t last, uint64_t off, bool to_guest, struct blk_reply *rep)
{
	uint8_t *tmp = NULL;
	int rc = 0;
	/* every buffer mapped: one vectored call */
	if (mem->ptr && disk->be.rwv && last - first <= VQ_MAX_SIZE) {
		struct iovec iov[256], *v = last - first <= 256 ? iov : malloc((last - first) * sizeof(*v));
		size_t k = 0;
		for (size_t b = first; v && b < last; b++, k++) {
			v[k].iov_base = mem->ptr(mem->opaque, c->bufs[b].gpa, c->bufs[b].len);
			v[k].iov_len = c->bufs[b].len;
			if (!v[k].iov_base)
				break;
		}
		if (v && k == last - first && k > 0)
			rc = disk->be.rwv(disk->be.opaque, !to_guest, off, v, (int)k);
		if (v != iov)
			free(v);
		if (v && k == last - first && k > 0)
			return rc;
	}
	/* else through a bounce buffer, a chunk at a time */
	uint64_t total = 0;
	for (size_t b = first; b < last; b++)
		total += c->bufs[b].len;
	if (to_guest && (rc = read_deferred(disk, mem, c, first, last, off, total, rep)) != 0)
		return rc < 0 ? rc : 0;
	size_t chunk = total < COPY_CHUNK ? (size_t)total : COPY_CHUNK;
	for (uint64_t done = 0; done < total && rc == 0;) {
		size_t n = total - done < chunk ? (size_t)(total - done) : chunk;
		if (!tmp && !(tmp = malloc(chunk)))
			return -ENOMEM;
		if (to_guest) {
			rc = disk->be.read(disk->be.opaque, off + done, tmp, n);
			if (rc == 0 && vq_chain_write(mem, c, first, last, done, tmp, n) < 0)
				rc = -EFAULT;
		} else {
			rc = vq_chain_read(mem, c, first, last, done, tmp, n) < 0 ? -EFAULT : 0;
			if (rc == 0)
				rc = disk->be.write(disk->be.opaque, off + done, tmp, n);
		}
		done += n;
	}
	free(tmp);
	return rc;
}

static uint8_t do_segments(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *c,
			   size_t first, size_t last, uint32_t type, const uint8_t *pre)
{
	uint64_t total = 0;
	for (size_t b = first; b < last; b++)
		total += c->bufs[b].len;
	if (total == 0 || total % sizeof(struct blk_segment) || total / sizeof(struct blk_segment) > BLK_MAX_SEGMENTS)
		return VIRTIO_BLK_S_IOERR;
	struct blk_segment seg[BLK_MAX_SEGMENTS];
	if (pre)
		memcpy(seg, pre, (size_t)total);
	else if (vq_chain_read(mem, c, first, last, 0, seg, (size_t)total) < 0)
		return VIRTIO_BLK_S_IOERR;
	size_t n = total / sizeof(struct blk_segment);
	for (size_t i = 0; i < n; i++) /* all checked before any is done */
		if (!range_ok(disk, seg[i].sector, (uint64_t)seg[i].num_sectors * BLK_SECTOR) ||
		    (seg[i].flags & ~1u) || (type == VIRTIO_BLK_T_DISCARD && seg[i].flags))
			return VIRTIO_BLK_S_UNSUPP;
	for (size_t i = 0; i < n; i++) {
		uint64_t off = seg[i].sector * BLK_SECTOR, len = (uint64_t)seg[i].num_sectors * BLK_SECTOR;
		int rc = type == VIRTIO_BLK_T_DISCARD ? (disk->be.discard ? disk->be.discard(disk->be.opaque, off, len) : -EOPNOTSUPP)
						      : disk->be.write_zeroes(disk->be.opaque, off, len);
		if (rc < 0)
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

/* The header into *h, and where guest memory is another process's, the
 * readable buffers after it (the data of a write, the segments of a
 * discard) in the same process_vm_readv, into rep->bounce. 1: both read;
 * 0: the header only (the rest, if any, is read when it is used); -1 the
 * header could not be read. */
static int read_with_payload(const struct vq_mem *mem, const struct vq_chain *c, struct blk_req_hdr *h,
			     struct blk_reply *rep)
{
	size_t n = c->n_readable;
	uint64_t payload = c->readable_len - sizeof(*h);
	bool whole = n >= 2 && n <= BLK_REPLY_DATA_PIECES + 1 && mem->readv && mem->contains && payload <= COPY_CHUNK &&
		     !(mem->ptr && mem->ptr(mem->opaque, c->bufs[1].gpa, c->bufs[1].len));
	for (size_t b = 1; whole && b < n; b++)
		whole = mem->contains(mem->opaque, c->bufs[b].gpa, c->bufs[b].len);
	if (whole && (rep->bounce = malloc((size_t)payload))) {
		struct vq_iov v[BLK_REPLY_DATA_PIECES + 1];
		v[0] = (struct vq_iov){ c->bufs[0].gpa, h, sizeof(*h) };
		uint8_t *p = rep->bounce;
		for (size_t b = 1; b < n; b++) {
			v[b] = (struct vq_iov){ c->bufs[b].gpa, p, c->bufs[b].len };
			p += c->bufs[b].len;
		}
		if (mem->readv(mem->opaque, v, n) == 0)
			return 1;
		free(rep->bounce);
		rep->bounce = NULL;
	}
	return mem->read(mem->opaque, c->bufs[0].gpa, h, sizeof(*h)) < 0 ? -1 : 0;
}

void blk_reply_done(struct blk_reply *rep)
{
	free(rep->bounce);
	rep->bounce = NULL;
	rep->n = 0;
}

int64_t virtio_blk_serve(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *c,
			 struct blk_reply *rep)
{
	rep->n = 0;
	rep->bounce = NULL;
	/* the status byte is the last byte of the last buffer, device-writable */
	if (c->n < 2 || !c->bufs[c->n - 1].device_writes)
		return -1;
	const struct vq_buf *last = &c->bufs[c->n - 1];
	uint64_t st_gpa = last->gpa + last->len - 1;
	uint8_t status = VIRTIO_BLK_S_IOERR;
	int64_t written = 1;

	struct blk_req_hdr h;
	if (c->bufs[0].device_writes || c->bufs[0].len != sizeof(h))
		goto out;
	/* what the request carries after the header, read with it (or NULL) */
	const uint8_t *pre = NULL;
	int got = read_with_payload(mem, c, &h, rep);
	if (got < 0)
		goto out;
	if (got > 0)
		pre = rep->bounce;
	/* data: the buffers between the header and the status buffer (a status
	 * buffer longer than one byte carries data in front: not supported) */
	size_t first = 1, end = c->n - 1;
	if (last->len != 1)
		goto out;
	uint64_t data_len = 0;
	for (size_t b = first; b < end; b++)
		data_len += c->bufs[b].len;
	bool data_to_guest = end > first && c->bufs[first].device_writes;
	for (size_t b = first; b < end; b++)
		if (c->bufs[b].device_writes != data_to_guest)
			goto out;

	switch (h.type) {
	case VIRTIO_BLK_T_IN:
		if (!data_to_guest && end > first)
			goto out;
		if (!range_ok(disk, h.sector, data_len))
			goto out;
		if (transfer(disk, mem, c, first, end, h.sector * BLK_SECTOR, true, rep) == 0) {
			status = VIRTIO_BLK_S_OK;
			written += (int64_t)data_len;
		}
		break;
	case VIRTIO_BLK_T_OUT:
		if (data_to_guest)
			goto out;
		if (disk->read_only) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		if (!range_ok(disk, h.sector, data_len))
			goto out;
		if (pre ? disk->be.write(disk->be.opaque, h.sector * BLK_SECTOR, pre, (size_t)data_len) == 0
			: transfer(disk, mem, c, first, end, h.sector * BLK_SECTOR, false, NULL) == 0)
			status = VIRTIO_BLK_S_OK;
		break;
	case VIRTIO_BLK_T_FLUSH:
		status = disk->be.flush(disk->be.opaque) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
		break;
	case VIRTIO_BLK_T_GET_ID: {
		if (!data_to_guest || data_len < 1)
			goto out;
		uint32_t n = data_len < BLK_ID_BYTES ? (uint32_t)data_len : BLK_ID_BYTES;
		if (vq_chain_write(mem, c, first, end, 0, disk->id, n) < 0)
			goto out;
		status = VIRTIO_BLK_S_OK;
		written += n;
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (disk->read_only) {
			status = VIRTIO_BLK_S_IOERR;
			break;
		}
		if (data_to_guest)
			goto out;
		status = do_segments(disk, mem, c, first, end, h.type, pre);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		break;
	}
out:
	if (status != VIRTIO_BLK_S_OK)
		blk_reply_done(rep); /* no data goes with a failure */
	rep->status = status;
	rep->v[rep->n++] = (struct vq_iov){ st_gpa, &rep->status, 1 };
	return written;
}

int64_t virtio_blk_handle(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *c,
			  uint8_t *status_out)
{
	struct blk_reply rep;
	int64_t written = virtio_blk_serve(disk, mem, c, &rep);
	int rc = written < 0 ? -1 : 0;
	if (rc == 0 && mem->writev)
		rc = mem->writev(mem->opaque, rep.v, rep.n);
	for (size_t i = 0; rc == 0 && !mem->writev && i < rep.n; i++)
		rc = mem->write(mem->opaque, rep.v[i].gpa, rep.v[i].buf, rep.v[i].len);
	if (rc == 0 && status_out)
		*status_out = rep.status;
	blk_reply_done(&rep);
	return rc < 0 ? -1 : written;
}
