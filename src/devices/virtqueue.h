/* virtqueue.h - a split virtqueue (virtio 1.x, section 2.7) served from the
 * host: taking descriptor chains the driver made available, and returning
 * them as used. The rings live in guest memory, reached through callbacks.
 *
 * Everything in the rings comes from the guest and is hostile until checked:
 * indices are reduced modulo the queue size, chains are bounded by the queue
 * size (loops end), every buffer must lie in guest memory, lengths are capped,
 * and any violation marks the queue broken instead of crashing vmsh. */
#ifndef VMSH_VIRTQUEUE_H
#define VMSH_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest-physical memory access; 0 on success, -1 if [gpa, gpa+len) is not
 * entirely guest RAM. */
struct vq_iov {
	uint64_t gpa;
	void *buf;
	size_t len;
};
struct vq_mem {
	int (*read)(void *opaque, uint64_t gpa, void *buf, size_t len);
	int (*write)(void *opaque, uint64_t gpa, const void *buf, size_t len);
	/* optional: n pieces in one go, in array order (each complete before
	 * the next begins: the driver never sees a used entry after its index).
	 * Without them the pieces go through read/write one by one. */
	int (*readv)(void *opaque, const struct vq_iov *v, size_t n);
	int (*writev)(void *opaque, const struct vq_iov *v, size_t n);
	/* optional: vmsh's own pointer to [gpa, gpa+len) if it maps all of it
	 * (zero-copy I/O), else NULL */
	uint8_t *(*ptr)(void *opaque, uint64_t gpa, size_t len);
	/* optional: does [gpa, gpa+len) lie in guest memory (no access)? Else
	 * a buffer's first and last byte are read to check it (two syscalls
	 * per buffer where guest memory is another process's) */
	bool (*contains)(void *opaque, uint64_t gpa, uint64_t len);
	/* every access is a copy in vmsh's own mapping (no syscall): reading
	 * a table of indirect descriptors costs nothing */
	bool local;
	void *opaque;
};

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VQ_MAX_SIZE 32768
#define VQ_MAX_CHAIN_BYTES (64u << 20) /* one request never moves more */
#define VQ_DESC_CACHE 256 /* queues up to this size: the descriptor table read whole (4 KiB at most) */

struct vq_buf {
	uint64_t gpa;
	uint32_t len;
	bool device_writes; /* VIRTQ_DESC_F_WRITE: the device fills it */
};

struct vq_chain {
	uint16_t head;
	size_t n;              /* buffers, readable ones first */
	size_t n_readable;
	struct vq_buf *bufs;   /* up to the queue size (or indirect table size) */
	uint64_t readable_len, writable_len;
};

/* What a later vmsh run needs to take the queue over if this one dies
 * (kept in the hypervisor's ledger, which the guest cannot reach): where
 * the rings stand on the device's side and which chains the device holds.
 * Only for queues of up to VQ_LOG_MAX entries. Each store is ordered so
 * that a death between two of them leaves a state vq_take_over repairs. */
#define VQ_LOG_MAX 256
struct vq_log {
	uint16_t last_avail, used_idx;
	uint32_t pad;
	uint64_t inflight[VQ_LOG_MAX / 64]; /* heads taken and not returned */
};

struct virtqueue {
	uint16_t size;          /* power of two, <= VQ_MAX_SIZE */
	uint64_t desc, avail, used; /* guest-physical ring addresses */
	bool event_idx;         /* VIRTIO_F_EVENT_IDX negotiated */
	uint16_t last_avail;    /* next available entry to take */
	uint16_t used_idx;      /* next used entry to write */
	bool broken;
	bool can_unpop;         /* the last vq_pop took a chain vq_unpop may give back */
	uint16_t popped;        /* its head */
	char why[128];          /* first violation, for the log */
	struct vq_mem mem;
	struct vq_buf *scratch; /* chain storage */
	size_t scratch_cap;
	/* What the last look at the avail ring saw (one read of the index, one
	 * of the new entries and, for queues of up to VQ_DESC_CACHE entries,
	 * the whole descriptor table): chains are taken from these copies
	 * until they are used up. vmsh's own copies: the guest changing its
	 * rings meanwhile changes nothing here. */
	uint16_t avail_seen;    /* avail.idx then; entries [last_avail, avail_seen) are in heads */
	uint16_t *heads;        /* size entries, at their ring positions */
	void *descs;            /* size descriptors, or NULL (larger queues: read one by one) */
	bool descs_valid;
	/* EVENT_IDX: the avail_event vmsh last wrote, and the used_event the
	 * driver showed in the last look after vmsh's last push (both saved
	 * a syscall per request where guest memory is another process's) */
	uint16_t avail_event;
	bool avail_event_set;
	uint16_t used_event;
	bool used_event_fresh;
	bool event_looked;      /* the ring was looked at after avail_event was written */
	bool expect_work;       /* the next look reads ring and table with the index (vq_expect_work) */
	bool hold_event;        /* pushes do not ask for the next notification (the device polls) */
	struct vq_log *log;     /* NULL: not kept */
};

/* Set up after the driver wrote the ring addresses and enabled the queue.
 * Fails (and marks broken) on a bad size or misaligned/unreachable rings. */
int vq_init(struct virtqueue *vq, const struct vq_mem *mem, uint16_t size, uint64_t desc, uint64_t avail,
	    uint64_t used, bool event_idx);
void vq_free(struct virtqueue *vq);
/* Keep the queue's state in *log from now on (queues of up to VQ_LOG_MAX). */
void vq_log_start(struct virtqueue *vq, struct vq_log *log);
/* Take over a queue a dead vmsh served (vq_init'ed with the same rings)
 * from its log, and keep the log from here. Chains it had returned to the
 * guest but not yet crossed out are not held any more; a chain it took
 * without noting so is taken. inflight (VQ_LOG_MAX entries) receives the
 * heads it held (the caller completes them), *n their count. -1: broken. */
int vq_take_over(struct virtqueue *vq, struct vq_log *log, uint16_t *inflight, size_t *n);
/* The chain starting at head (for a held chain vq_take_over named). */
int vq_chain_at(struct virtqueue *vq, uint16_t head, struct vq_chain *chain);

/* The driver notified the queue: the next look at the ring (when vmsh's
 * copies are used up) reads the index, the whole ring and the descriptor
 * table in one go instead of the index first. */
void vq_expect_work(struct virtqueue *vq);
/* Take the next available chain: 1 and *chain filled (valid until the next
 * vq_pop), 0 if none is available, -1 if the queue is (now) broken. */
int vq_pop(struct virtqueue *vq, struct vq_chain *chain);
/* Give back the chain the last vq_pop returned, unused: the next vq_pop
 * takes it again (walking and checking vmsh's copy of it anew). For a device that cannot
 * take a chain yet, since there is no peek. Only once per vq_pop and before
 * its vq_push; -1 if there is nothing to give back or the queue is broken. */
int vq_unpop(struct virtqueue *vq);
/* Mark the queue broken for a violation the device found in a chain (wrong
 * buffer directions, too small for what the protocol needs); returns -1.
 * The first reason is kept in vq->why. */
int vq_break(struct virtqueue *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Return a chain as used, with `written` bytes written into its device-
 * writable buffers. -1 if the queue is broken. */
int vq_push(struct virtqueue *vq, uint16_t head, uint32_t written);
/* The same, with `len` bytes of `src` written to guest address `gpa` first
 * (a request's status byte), all in one vectored write where the memory
 * offers one: the piece, the used entry, then the used index. */
int vq_push_after(struct virtqueue *vq, uint16_t head, uint32_t written, uint64_t gpa, const void *src, size_t len);
/* The same with n_pre pieces written first, in their order (a request's
 * data, then its status byte); up to VQ_PUSH_MAX_PIECES of them go in the
 * same vectored write as the completion. */
#define VQ_PUSH_MAX_PIECES 128
int vq_push_pieces(struct virtqueue *vq, uint16_t head, uint32_t written, const struct vq_iov *pre, size_t n_pre);
/* After pushes: should the driver be interrupted? (EVENT_IDX aware; old is
 * used_idx before the pushes). */
bool vq_should_notify(struct virtqueue *vq, uint16_t old_used_idx);
/* With EVENT_IDX: ask for a notification when entry `idx` is made available.
 * Not written again when vmsh's last write there asked for the same (only
 * the device writes the used ring: a guest that overwrites avail_event
 * starves only itself of notifications). */
int vq_set_avail_event(struct virtqueue *vq, uint16_t idx);
/* Asked to be notified of the next entry (avail_event is last_avail) and
 * looked at the ring after asking: nothing can have slipped by unnoticed,
 * a device need not look again before it sleeps. */
bool vq_event_armed(const struct virtqueue *vq);

/* Copy len bytes from the chain's buffers [first, last), starting at byte
 * `at` of them, to dst; or from src into them. -1 if guest memory refused
 * or the buffers end first. The caller picks buffers of the right
 * direction (readable: [0, n_readable), writable: [n_readable, n)). */
int vq_chain_read(const struct vq_mem *mem, const struct vq_chain *c, size_t first, size_t last, uint64_t at,
		  void *dst, size_t len);
int vq_chain_write(const struct vq_mem *mem, const struct vq_chain *c, size_t first, size_t last, uint64_t at,
		   const void *src, size_t len);

#endif
