/* blk_uring.h - the disk behind vmsh's virtio-blk: a regular file or a block
 * device. It fills a struct blk_disk whose callbacks (struct blk_backend)
 * are synchronous - one request at a time, each waited for, with positioned
 * syscalls (preadv/pwritev, fsync) - and offers a batched interface through
 * io_uring besides (queue many reads/writes, submit them in one go, reap
 * them as they finish).
 *
 * Every callback checks its range against the disk and refuses writes on a
 * read-only disk on its own, whatever its caller checked. flush is a real
 * fsync; discard punches a hole into a file
 * (fallocate PUNCH_HOLE|KEEP_SIZE) or discards on a block device
 * (BLKDISCARD); write_zeroes uses fallocate ZERO_RANGE on a file (writing
 * zeros where the file system cannot) or BLKZEROOUT on a block device.
 *
 * The synchronous callbacks may run in several threads at once (one per
 * request queue: positioned syscalls, the error counts atomic); the batched
 * interface belongs to one thread. The image is opened without
 * O_DIRECT (the callers' buffers are not sector aligned), so the host page
 * cache sits between the guest and the image; flush makes it durable. */
#ifndef VMSH_BLK_URING_H
#define VMSH_BLK_URING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/virtio_blk.h"

#define BLK_URING_DEPTH 128 /* batched requests queued or in flight at once */

enum blk_uring_op { BLK_URING_READ, BLK_URING_WRITE, BLK_URING_FSYNC };

/* One batched request, owned by the caller until it is reaped. */
struct blk_uring_req {
	enum blk_uring_op op;
	uint64_t off;     /* bytes into the disk */
	void *buf;        /* READ fills it, WRITE sends it */
	size_t len;
	void *tag;        /* the caller's */
	/* filled in by blk_uring */
	size_t done;      /* bytes moved so far */
	int res;          /* when reaped: 0, or -errno */
	unsigned retries; /* -EAGAIN/-EINTR in a row */
};

typedef void (*blk_uring_done_fn)(struct blk_uring_req *req, void *opaque);

struct blk_uring {
	int fd;
	bool is_blockdev;
	bool read_only;
	uint64_t size;          /* bytes, a multiple of BLK_SECTOR */
	uint64_t base;          /* where in the file the disk starts (a window: read-only) */
	struct io_uring batch;  /* the batched interface's ring */
	bool batch_ok;          /* its ring set up */
	bool dead;              /* a submission failed half-way: no more I/O */
	unsigned in_flight;     /* batched requests queued or submitted, not reaped */
	unsigned long io_errors;  /* operations the backing file failed (the guest got an I/O error) */
	uint64_t errnos_seen[2];  /* errno < 128 already reported: each kind is logged once */
};

/* Open path (O_RDWR, or O_RDONLY when read_only) and fill *disk_out:
 * sectors, read_only, and the callbacks in be (their opaque is u). disk_out->id
 * is left zeroed for the caller. Fails with a message naming path: missing or
 * unwritable file, neither a regular file nor a block device, a size that is
 * not a whole number of 512-byte sectors, io_uring unavailable. */
int blk_uring_open(struct blk_uring *u, const char *path, bool read_only, struct blk_disk *disk_out,
		   struct vmsh_err *err);
/* The same, read-only, for the size bytes of path from byte base on (a
 * file system image inside another file, e.g. vmsh's own executable):
 * fails unless they lie inside the file and size is whole sectors. */
int blk_uring_open_window(struct blk_uring *u, const char *path, uint64_t base, uint64_t size,
			  struct blk_disk *disk_out, struct vmsh_err *err);
/* Close the image. Batched requests still in flight are waited for first
 * (their buffers stay in use until then); they are not reported. */
void blk_uring_close(struct blk_uring *u);

/* The batched interface. blk_uring_queue checks req and takes it (not yet
 * given to the kernel): 0; -EBUSY when BLK_URING_DEPTH requests are queued or
 * in flight (reap first); -EINVAL for a range outside the disk; -EROFS for a
 * write to a read-only disk; -EIO once the ring is dead. */
int blk_uring_queue(struct blk_uring *u, struct blk_uring_req *req);
/* Give everything queued to the kernel; the number given, or -errno. */
int blk_uring_submit(struct blk_uring *u);
/* Calls done(req, opaque) for each request that finished: all its bytes
 * moved (short transfers are continued, so req->done == req->len) and
 * res 0, or res -errno. With wait, blocks until at least one finished when
 * any is in flight. Returns how many finished, or -errno. */
int blk_uring_reap(struct blk_uring *u, bool wait, blk_uring_done_fn done, void *opaque);
/* Readable (poll/epoll) when batched completions wait to be reaped. */
int blk_uring_poll_fd(const struct blk_uring *u);

#endif
