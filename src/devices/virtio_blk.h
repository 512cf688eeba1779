/* virtio_blk.h - virtio-blk requests (virtio 1.x section 5.2), device side:
 * parse a descriptor chain into a block request, check it against the disk,
 * run it on a backend, and write the status byte. Transport-agnostic: the
 * chain comes from virtqueue.h, the bytes go through vq_mem.
 *
 * A request is only ever executed after all of it was checked: header size,
 * buffer directions, lengths in whole sectors, sector ranges inside the disk,
 * writes refused on read-only disks. */
#ifndef VMSH_VIRTIO_BLK_H
#define VMSH_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "devices/virtqueue.h"

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

enum {
	VIRTIO_BLK_T_IN = 0,
	VIRTIO_BLK_T_OUT = 1,
	VIRTIO_BLK_T_FLUSH = 4,
	VIRTIO_BLK_T_GET_ID = 8,
	VIRTIO_BLK_T_DISCARD = 11,
	VIRTIO_BLK_T_WRITE_ZEROES = 13,
};
enum { VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2 };

#define BLK_SECTOR 512
#define BLK_ID_BYTES 20
#define BLK_MAX_SEGMENTS 16 /* discard / write-zeroes ranges per request */

/* Where the disk's bytes live. Each returns 0 or -errno. */
struct blk_backend {
	int (*read)(void *opaque, uint64_t off, void *buf, size_t len);
	int (*write)(void *opaque, uint64_t off, const void *buf, size_t len);
	int (*flush)(void *opaque);
	int (*discard)(void *opaque, uint64_t off, uint64_t len);
	int (*write_zeroes)(void *opaque, uint64_t off, uint64_t len);
	/* optional: one vectored read or write (len = the iovecs' sum) */
	int (*rwv)(void *opaque, bool write, uint64_t off, const struct iovec *iov, int n);
	void *opaque;
};

#define BLK_MAX_QUEUES 4 /* request queues offered at most (VIRTIO_BLK_F_MQ) */
#define BLK_MAX_POLL_US 1000 /* the longest polling window allowed */

/* Adaptive polling of one request queue (blk_dev.c): after the queue runs
 * dry the serving thread looks at the avail ring again for up to window_ns
 * instead of asking to be notified, so a driver that adds its next request
 * in that time makes no notification (a guest exit) and vmsh no wake-up.
 * The window halves after a poll that found nothing and ends below an
 * eighth of the most; it opens again (a quarter) when a notification within
 * the most of the queue running dry brings a request. One wake-up polls
 * for twice the most at most, whatever the guest does. Only the queue's
 * own thread touches its state. */
struct blk_poll {
	uint64_t window_ns;
	uint64_t dry_at_ns;   /* when the queue last ran dry and polling ended, 0: never */
	uint64_t polls, hits; /* polls made, and of them those that found a request */
};

struct blk_disk {
	uint64_t sectors;
	bool read_only;
	uint16_t num_queues; /* request queues offered: 0 or 1 one (no VIRTIO_BLK_F_MQ), at most BLK_MAX_QUEUES */
	char id[BLK_ID_BYTES];
	struct blk_backend be;
	unsigned poll_us;    /* polling window at most (0: never poll; at most BLK_MAX_POLL_US) */
	struct blk_poll poll[BLK_MAX_QUEUES];
	/* test hook: the process dies (SIGKILL) holding the Nth request from
	 * here on, 0: never (VMSH_TEST_DIE_AT_BLK_REQUEST, core/session.c) */
	unsigned test_die_at;
};

/* Request queues the device has (num_queues, bounded). */
unsigned virtio_blk_queues(const struct blk_disk *disk);
/* Feature bits this disk offers (with the transport's own added by it). */
uint64_t virtio_blk_features(const struct blk_disk *disk);
/* Fill the device config space (struct virtio_blk_config); returns its length. */
size_t virtio_blk_config(const struct blk_disk *disk, uint8_t *cfg, size_t cap);

/* Execute one request. Returns the number of bytes written into the chain's
 * device-writable buffers (for the used ring), or -1 if the chain is so
 * malformed that not even a status byte can be written (the caller then
 * marks the queue broken). The status byte says how it went. */
int64_t virtio_blk_handle(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *chain,
		   uint8_t *status_out);
/* What a served request leaves to be written into the guest together
 * with its completion, in this order: the data read for the guest where
 * it went through vmsh's bounce buffer (guest memory that is another
 * process's: one process_vm_writev for the data, the status byte, the used
 * entry and index instead of two), then the status byte. */
#define BLK_REPLY_DATA_PIECES 126 /* the seg_max the device offers */
struct blk_reply {
	uint8_t status;
	size_t n;
	struct vq_iov v[BLK_REPLY_DATA_PIECES + 1];
	uint8_t *bounce; /* holds the data until blk_reply_done */
};
/* The same as virtio_blk_handle without writing the status byte (nor, where
 * it can wait, the data read): rep says what to write where (vq_push_pieces
 * then writes it with the used entry). Call blk_reply_done afterwards,
 * whatever it returned. -1 as above. */
int64_t virtio_blk_serve(const struct blk_disk *disk, const struct vq_mem *mem, const struct vq_chain *chain,
			 struct blk_reply *rep);
void blk_reply_done(struct blk_reply *rep);

#endif
