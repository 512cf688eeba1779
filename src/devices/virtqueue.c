/* virtqueue.c - split virtqueue, host side (see virtqueue.h). Layout
 * (virtio 1.x 2.7): descriptor table of 16-byte entries {addr, len, flags,
 * next}; avail ring {flags, idx, ring[size], used_event}; used ring {flags,
 * idx, ring[size] of {id, len}, avail_event}. Little-endian, x86 host. */
#include "devices/virtqueue.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static int vbroken(struct virtqueue *vq, const char *fmt, va_list ap)
{
	if (!vq->broken)
		vsnprintf(vq->why, sizeof(vq->why), fmt, ap);
	vq->broken = true;
	vq->can_unpop = false;
	return -1;
}

static int broken(struct virtqueue *vq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int broken(struct virtqueue *vq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vbroken(vq, fmt, ap);
	va_end(ap);
	return -1;
}

int vq_break(struct virtqueue *vq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vbroken(vq, fmt, ap);
	va_end(ap);
	return -1;
}

static int rd(struct virtqueue *vq, uint64_t gpa, void *buf, size_t len)
{
	if (vq->mem.read(vq->mem.opaque, gpa, buf, len) < 0)
		return broken(vq, "ring read outside guest memory at %#llx", (unsigned long long)gpa);
	return 0;
}

static int wr(struct virtqueue *vq, uint64_t gpa, const void *buf, size_t len)
{
	if (vq->mem.write(vq->mem.opaque, gpa, buf, len) < 0)
		return broken(vq, "ring write outside guest memory at %#llx", (unsigned long long)gpa);
	return 0;
}

/* Pieces in array order: one vectored call where the memory has one, else
 * one by one with a fence between (a later piece never overtakes). */
static int rdv(struct virtqueue *vq, const struct vq_iov *v, size_t n)
{
	if (vq->mem.readv) {
		if (vq->mem.readv(vq->mem.opaque, v, n) < 0)
			return broken(vq, "ring read outside guest memory (at %#llx or one of %zu more pieces)",
				      (unsigned long long)v[0].gpa, n - 1);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (rd(vq, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
	}
	return 0;
}

static int wrv(struct virtqueue *vq, const struct vq_iov *v, size_t n)
{
	if (vq->mem.writev) {
		if (vq->mem.writev(vq->mem.opaque, v, n) < 0)
			return broken(vq, "write outside guest memory (at %#llx or one of %zu more pieces: a request's "
				      "data or status byte, the used ring)", (unsigned long long)v[0].gpa, n - 1);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (i)
			__atomic_thread_fence(__ATOMIC_RELEASE);
		if (wr(vq, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	}
	return 0;
}

int vq_init(struct virtqueue *vq, const struct vq_mem *mem, uint16_t size, uint64_t desc, uint64_t avail,
	    uint64_t used, bool event_idx)
{
	memset(vq, 0, sizeof(*vq));
	vq->mem = *mem;
	vq->size = size;
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	vq->event_idx = event_idx;
	if (size == 0 || (size & (size - 1)) || size > VQ_MAX_SIZE)
		return broken(vq, "queue size %u is not a power of two up to %u", size, VQ_MAX_SIZE);
	if ((desc & 15) || (avail & 1) || (used & 3))
		return broken(vq, "misaligned rings");
	/* every ring must be readable (used: writable) in full */
	uint8_t probe;
	if (rd(vq, desc + 16ULL * size - 1, &probe, 1) < 0 || rd(vq, desc, &probe, 1) < 0 ||
	    rd(vq, avail, &probe, 1) < 0 || rd(vq, avail + 6 + 2ULL * size - 1, &probe, 1) < 0 ||
	    rd(vq, used, &probe, 1) < 0 || rd(vq, used + 6 + 8ULL * size - 1, &probe, 1) < 0)
		return -1;
	vq->scratch_cap = size;
	vq->scratch = calloc(vq->scratch_cap, sizeof(*vq->scratch));
	vq->heads = calloc(size, sizeof(*vq->heads));
	if (size <= VQ_DESC_CACHE)
		vq->descs = calloc(size, sizeof(struct vring_desc));
	if (!vq->scratch || !vq->heads || (size <= VQ_DESC_CACHE && !vq->descs)) {
		vq_free(vq);
		return broken(vq, "out of memory");
	}
	return 0;
}

void vq_free(struct virtqueue *vq)
{
	free(vq->scratch);
	free(vq->heads);
	free(vq->descs);
	vq->scratch = NULL;
	vq->heads = NULL;
	vq->descs = NULL;
	vq->descs_valid = false;
}

static bool buf_inside(struct virtqueue *vq, uint64_t gpa, uint32_t len)
{
	if (gpa + len < gpa)
		return false;
	if (vq->mem.contains)
		return vq->mem.contains(vq->mem.opaque, gpa, len);
	uint8_t probe;
	return vq->mem.read(vq->mem.opaque, gpa, &probe, 1) == 0 &&
	       vq->mem.read(vq->mem.opaque, gpa + len - 1, &probe, 1) == 0;
}

static int add_buf(struct virtqueue *vq, struct vq_chain *c, const struct vring_desc *d, size_t max)
{
	if (c->n >= max)
		return broken(vq, "descriptor chain longer than %zu (loop?)", max);
	if (d->len == 0)
		return broken(vq, "zero-length descriptor");
	if (!buf_inside(vq, d->addr, d->len))
		return broken(vq, "buffer %#llx+%u outside guest memory", (unsigned long long)d->addr, d->len);
	bool w = d->flags & VIRTQ_DESC_F_WRITE;
	if (!w && c->n > c->n_readable)
		return broken(vq, "readable buffer after a writable one");
	if (w)
		c->writable_len += d->len;
	else {
		c->readable_len += d->len;
		c->n_readable++;
	}
	if (c->readable_len + c->writable_len > VQ_MAX_CHAIN_BYTES)
		return broken(vq, "descriptor chain larger than %u bytes", VQ_MAX_CHAIN_BYTES);
	c->bufs[c->n++] = (struct vq_buf){ .gpa = d->addr, .len = d->len, .device_writes = w };
	return 0;
}

static int walk_indirect(struct virtqueue *vq, struct vq_chain *c, const struct vring_desc *ind)
{
	if (ind->len % 16 || ind->len == 0)
		return broken(vq, "indirect table length %u", ind->len);
	size_t n = ind->len / 16;
	if (n > VQ_MAX_SIZE)
		return broken(vq, "indirect table of %zu entries", n);
	if (n > vq->scratch_cap) {
		struct vq_buf *nb = realloc(vq->scratch, n * sizeof(*nb));
		if (!nb)
			return broken(vq, "out of memory");
		vq->scratch = nb;
		vq->scratch_cap = n;
		c->bufs = nb;
	}
	/* the whole table in one read (it is the guest's: walked as hostile) */
	struct vring_desc local[128], *tab = n <= 128 ? local : malloc(n * sizeof(*tab));
	if (!tab)
		return broken(vq, "out of memory");
	int rc = rd(vq, ind->addr, tab, n * sizeof(*tab));
	uint16_t i = 0;
	for (size_t steps = 0; rc == 0; steps++) {
		struct vring_desc d = tab[i];
		if (steps >= n) {
			rc = broken(vq, "indirect chain loops");
			break;
		}
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			rc = broken(vq, "nested indirect table");
			break;
		}
		if ((rc = add_buf(vq, c, &d, n)) < 0)
			break;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= n) {
			rc = broken(vq, "indirect next %u out of %zu", d.next, n);
			break;
		}
		i = d.next;
	}
	if (tab != local)
		free(tab);
	return rc < 0 ? -1 : 0;
}

static void log_set(struct vq_log *l, uint16_t head, bool on)
{
	if (head >= VQ_LOG_MAX)
		return; /* never: logged queues are that small, heads below their size */
	uint64_t bit = 1ULL << (head % 64), *w = &l->inflight[head / 64];
	__atomic_store_n(w, on ? *w | bit : *w & ~bit, __ATOMIC_RELEASE);
}

static bool log_has(const struct vq_log *l, uint16_t head)
{
	return head < VQ_LOG_MAX && (l->inflight[head / 64] >> (head % 64)) & 1;
}

/* Descriptor i: from the copy the last look at the rings took (chains it
 * saw made available), else read now. */
static int desc_at(struct virtqueue *vq, uint16_t i, struct vring_desc *d, bool copy)
{
	if (copy && vq->descs_valid) {
		*d = ((const struct vring_desc *)vq->descs)[i];
		return 0;
	}
	return rd(vq, vq->desc + 16ULL * i, d, sizeof(*d));
}

static int chain_walk(struct virtqueue *vq, uint16_t head, struct vq_chain *chain, bool copy)
{
	if (vq->broken)
		return -1;
	if (head >= vq->size)
		return broken(vq, "available head %u out of %u", head, vq->size);
	memset(chain, 0, sizeof(*chain));
	chain->head = head;
	chain->bufs = vq->scratch;
	uint16_t i = head;
	for (size_t steps = 0;; steps++) {
		struct vring_desc d;
		if (steps >= vq->size)
			return broken(vq, "descriptor chain loops");
		if (desc_at(vq, i, &d, copy) < 0)
			return -1;
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (chain->n || (d.flags & VIRTQ_DESC_F_NEXT))
				return broken(vq, "indirect descriptor inside a chain");
			if (walk_indirect(vq, chain, &d) < 0)
				return -1;
			break;
		}
		if (add_buf(vq, chain, &d, vq->size) < 0)
			return -1;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= vq->size)
			return broken(vq, "next %u out of %u", d.next, vq->size);
		i = d.next;
	}
	chain->bufs = vq->scratch;
	return 0;
}

int vq_chain_at(struct virtqueue *vq, uint16_t head, struct vq_chain *chain)
{
	return chain_walk(vq, head, chain, false);
}

/* Look at the avail ring again: its index, then in one read the entries
 * added since and (small queues) the descriptor table - both after the
 * index, so every chain the index announces is complete in the copies.
 * With vq->expect_work (the driver just notified): the index, the whole
 * ring and the table in one read (pieces are read in array order, the
 * index first: the same guarantee), a syscall less where work is likely. */
static int refresh(struct virtqueue *vq)
{
	/* after vmsh's last stores (the used index, avail_event): the driver's
	 * side of the notification protocol pairs with this full barrier */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* The index twice in one read: a 2-byte copy may be made a byte at a
	 * time (process_vm_readv, memcpy), and a driver's store landing between
	 * the bytes tears it into a value never written (0x00ff -> 0x0100 read
	 * as 0x01ff: 255 chains long returned taken again). Two equal reads are
	 * a value the driver wrote. */
	uint16_t avail_idx, again, used_event;
	bool whole = vq->expect_work && vq->descs;
	vq->expect_work = false;
	struct vq_iov look[5] = { { vq->avail + 2, &avail_idx, 2 }, { vq->avail + 2, &again, 2 } };
	size_t n_look = 2;
	if (vq->event_idx)
		look[n_look++] = (struct vq_iov){ vq->avail + 4 + 2ULL * vq->size, &used_event, 2 };
	if (whole) {
		look[n_look++] = (struct vq_iov){ vq->avail + 4, vq->heads, 2ULL * vq->size };
		look[n_look++] = (struct vq_iov){ vq->desc, vq->descs, 16ULL * vq->size };
	}
	vq->descs_valid = false;
	for (unsigned tries = 0;; tries++) {
		if (rdv(vq, look, n_look) < 0)
			return -1;
		if (avail_idx == again)
			break;
		if (tries == 3) { /* it keeps moving: one entry is surely there */
			avail_idx = (uint16_t)(vq->last_avail + 1);
			break;
		}
	}
	if (vq->event_idx) { /* read after every push so far: good for vq_should_notify */
		vq->used_event = used_event;
		vq->used_event_fresh = true;
		vq->event_looked = vq->avail_event_set;
	}
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending > vq->size)
		return broken(vq, "driver made %u buffers available in a queue of %u", pending, vq->size);
	if (pending == 0 || whole) {
		vq->descs_valid = whole;
		vq->avail_seen = avail_idx;
		return 0;
	}
	__atomic_thread_fence(__ATOMIC_ACQUIRE); /* ring entries after the index */
	struct vq_iov v[3];
	size_t n = 0;
	uint16_t from = vq->last_avail % vq->size;
	uint16_t first = pending < vq->size - from ? pending : (uint16_t)(vq->size - from);
	v[n++] = (struct vq_iov){ vq->avail + 4 + 2ULL * from, &vq->heads[from], 2ULL * first };
	if (first < pending) /* wrapped: the rest from the start of the ring */
		v[n++] = (struct vq_iov){ vq->avail + 4, &vq->heads[0], 2ULL * (pending - first) };
	if (vq->descs)
		v[n++] = (struct vq_iov){ vq->desc, vq->descs, 16ULL * vq->size };
	if (rdv(vq, v, n) < 0)
		return -1;
	vq->descs_valid = vq->descs != NULL;
	vq->avail_seen = avail_idx;
	return 0;
}

void vq_expect_work(struct virtqueue *vq)
{
	vq->expect_work = true;
}

int vq_pop(struct virtqueue *vq, struct vq_chain *chain)
{
	vq->can_unpop = false;
	if (vq->broken)
		return -1;
	/* the copies are used up (or do not match where the queue stands):
	 * look again */
	uint16_t seen = (uint16_t)(vq->avail_seen - vq->last_avail);
	if ((seen == 0 || seen > vq->size) && refresh(vq) < 0)
		return -1;
	if (vq->last_avail == vq->avail_seen)
		return 0;
	uint16_t head = vq->heads[vq->last_avail % vq->size];
	if (chain_walk(vq, head, chain, true) < 0)
		return -1;
	vq->last_avail++;
	if (vq->log) { /* held first, then taken: see vq_take_over */
		log_set(vq->log, head, true);
		__atomic_store_n(&vq->log->last_avail, vq->last_avail, __ATOMIC_RELEASE);
	}
	vq->popped = head;
	vq->can_unpop = true;
	return 1;
}

int vq_unpop(struct virtqueue *vq)
{
	if (vq->broken || !vq->can_unpop)
		return -1;
	vq->can_unpop = false;
	vq->last_avail--;
	if (vq->log) {
		__atomic_store_n(&vq->log->last_avail, vq->last_avail, __ATOMIC_RELEASE);
		log_set(vq->log, vq->popped, false);
	}
	return 0;
}

int vq_push_pieces(struct virtqueue *vq, uint16_t head, uint32_t written, const struct vq_iov *pre, size_t n_pre)
{
	vq->can_unpop = false;
	if (vq->broken)
		return -1;
	/* more pieces than one write here takes: those first, on their own */
	if (n_pre > VQ_PUSH_MAX_PIECES) {
		if (wrv(vq, pre, n_pre) < 0)
			return -1;
		n_pre = 0;
	}
	struct {
		uint32_t id, len;
	} e = { head, written };
	uint16_t idx = (uint16_t)(vq->used_idx + 1);
	/* in this order: the pieces (a request's data and status byte), the
	 * entry, the index; and with every chain seen taken, the request to
	 * be notified of the next (what the device does once the queue is
	 * empty anyway) */
	struct vq_iov v[VQ_PUSH_MAX_PIECES + 3];
	size_t n = 0;
	for (; n < n_pre; n++)
		v[n] = pre[n];
	v[n++] = (struct vq_iov){ vq->used + 4 + 8ULL * (vq->used_idx % vq->size), &e, sizeof(e) };
	v[n++] = (struct vq_iov){ vq->used + 2, &idx, 2 };
	uint16_t want = vq->last_avail;
	bool event = vq->event_idx && !vq->hold_event && vq->last_avail == vq->avail_seen &&
		     !(vq->avail_event_set && vq->avail_event == want);
	if (event)
		v[n++] = (struct vq_iov){ vq->used + 4 + 8ULL * vq->size, &want, 2 };
	vq->used_event_fresh = false;
	if (wrv(vq, v, n) < 0)
		return -1;
	if (event) {
		vq->avail_event = want;
		vq->avail_event_set = true;
		vq->event_looked = false;
	}
	vq->used_idx = idx;
	if (vq->log) { /* returned first, then crossed out: see vq_take_over */
		log_set(vq->log, head, false);
		__atomic_store_n(&vq->log->used_idx, vq->used_idx, __ATOMIC_RELEASE);
	}
	return 0;
}

int vq_push_after(struct virtqueue *vq, uint16_t head, uint32_t written, uint64_t gpa, const void *src, size_t len)
{
	struct vq_iov piece = { gpa, (void *)src, len };
	return vq_push_pieces(vq, head, written, &piece, len ? 1 : 0);
}

int vq_push(struct virtqueue *vq, uint16_t head, uint32_t written)
{
	return vq_push_after(vq, head, written, 0, NULL, 0);
}

void vq_log_start(struct virtqueue *vq, struct vq_log *log)
{
	vq->log = NULL;
	if (vq->size > VQ_LOG_MAX || !log)
		return;
	memset(log, 0, sizeof(*log));
	log->last_avail = vq->last_avail;
	log->used_idx = vq->used_idx;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	vq->log = log;
}

int vq_take_over(struct virtqueue *vq, struct vq_log *log, uint16_t *inflight, size_t *n)
{
	*n = 0;
	if (vq->broken)
		return -1;
	if (vq->size > VQ_LOG_MAX)
		return broken(vq, "queue of %u entries was not kept", vq->size);
	struct vq_log l = *log;
	vq->last_avail = l.last_avail;
	vq->used_idx = l.used_idx;
	/* returned to the guest (its used index shows it) but not crossed out
	 * when the other run died: not held any more */
	uint16_t used;
	if (rd(vq, vq->used + 2, &used, 2) < 0)
		return -1;
	uint16_t ahead = (uint16_t)(used - l.used_idx);
	if (ahead > 1)
		return broken(vq, "used index %u is %u ahead of the %u noted", used, ahead, l.used_idx);
	if (ahead) {
		uint32_t id;
		if (rd(vq, vq->used + 4 + 8ULL * (l.used_idx % vq->size), &id, 4) < 0)
			return -1;
		if (id < VQ_LOG_MAX)
			l.inflight[id / 64] &= ~(1ULL << (id % 64));
		vq->used_idx = used;
	}
	/* held but not noted as taken (died between the two stores): the
	 * next available entry is that chain */
	uint16_t avail_idx, head;
	if (rd(vq, vq->avail + 2, &avail_idx, 2) < 0)
		return -1;
	if (avail_idx != vq->last_avail &&
	    rd(vq, vq->avail + 4 + 2ULL * (vq->last_avail % vq->size), &head, 2) == 0 && log_has(&l, head))
		vq->last_avail++;
	if (vq->broken)
		return -1;
	vq->avail_seen = vq->last_avail; /* nothing seen by this run yet */
	vq->descs_valid = false;
	vq->avail_event_set = false;
	vq->used_event_fresh = false;
	vq->event_looked = false;
	for (unsigned h = vq->size; h < VQ_LOG_MAX; h++) /* beyond the queue: nothing held there */
		l.inflight[h / 64] &= ~(1ULL << (h % 64));
	for (unsigned h = 0; h < vq->size; h++)
		if (log_has(&l, (uint16_t)h))
			inflight[(*n)++] = (uint16_t)h;
	/* the repaired state, then kept from here (the held bits before the
	 * indices: a death in between repairs the same way again) */
	for (unsigned w = 0; w < VQ_LOG_MAX / 64; w++)
		__atomic_store_n(&log->inflight[w], l.inflight[w], __ATOMIC_RELEASE);
	__atomic_store_n(&log->last_avail, vq->last_avail, __ATOMIC_RELEASE);
	__atomic_store_n(&log->used_idx, vq->used_idx, __ATOMIC_RELEASE);
	vq->log = log;
	return 0;
}

bool vq_should_notify(struct virtqueue *vq, uint16_t old)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vq->broken)
		return false;
	if (!vq->event_idx) {
		uint16_t flags;
		if (rd(vq, vq->avail, &flags, 2) < 0)
			return false;
		return !(flags & 1); /* VIRTQ_AVAIL_F_NO_INTERRUPT */
	}
	uint16_t used_event = vq->used_event;
	if (!vq->used_event_fresh && rd(vq, vq->avail + 4 + 2ULL * vq->size, &used_event, 2) < 0)
		return false;
	/* vring_need_event(): did we cross used_event? */
	return (uint16_t)(vq->used_idx - used_event - 1) < (uint16_t)(vq->used_idx - old);
}

int vq_set_avail_event(struct virtqueue *vq, uint16_t idx)
{
	if (vq->broken || !vq->event_idx)
		return vq->broken ? -1 : 0;
	if (vq->avail_event_set && vq->avail_event == idx)
		return 0; /* written with the last push */
	if (wr(vq, vq->used + 4 + 8ULL * vq->size, &idx, 2) < 0)
		return -1;
	vq->avail_event = idx;
	vq->avail_event_set = true;
	vq->event_looked = false;
	return 0;
}

bool vq_event_armed(const struct virtqueue *vq)
{
	return !vq->broken && vq->event_idx && vq->avail_event_set && vq->avail_event == vq->last_avail &&
	       vq->event_looked && vq->last_avail == vq->avail_seen;
}

/* ---- moving bytes between a chain's buffers and vmsh's memory ---- */

/* Pieces gathered for one vectored call (the memory's readv/writev): a
 * 256 KiB request in 4 KiB guest pages is 64 of them, one syscall where
 * guest memory is another process's instead of 64. */
#define COPY_PIECES 64

static int copy_pieces(const struct vq_mem *mem, const struct vq_iov *v, size_t n, bool to_guest)
{
	if (to_guest ? mem->writev != NULL : mem->readv != NULL)
		return to_guest ? mem->writev(mem->opaque, v, n) : mem->readv(mem->opaque, v, n);
	for (size_t i = 0; i < n; i++)
		if ((to_guest ? mem->write(mem->opaque, v[i].gpa, v[i].buf, v[i].len)
			      : mem->read(mem->opaque, v[i].gpa, v[i].buf, v[i].len)) < 0)
			return -1;
	return 0;
}

static int chain_copy(const struct vq_mem *mem, const struct vq_chain *c, size_t first, size_t last, uint64_t at,
		      uint8_t *p, size_t len, bool to_guest)
{
	if (last > c->n)
		return -1;
	struct vq_iov v[COPY_PIECES];
	size_t k = 0;
	for (size_t b = first; b < last && len; b++) {
		if (at >= c->bufs[b].len) {
			at -= c->bufs[b].len;
			continue;
		}
		size_t n = c->bufs[b].len - at < len ? c->bufs[b].len - at : len;
		v[k++] = (struct vq_iov){ .gpa = c->bufs[b].gpa + at, .buf = p, .len = n };
		if (k == COPY_PIECES) {
			if (copy_pieces(mem, v, k, to_guest) < 0)
				return -1;
			k = 0;
		}
		p += n;
		len -= n;
		at = 0;
	}
	if (k && copy_pieces(mem, v, k, to_guest) < 0)
		return -1;
	return len ? -1 : 0;
}

int vq_chain_read(const struct vq_mem *mem, const struct vq_chain *c, size_t first, size_t last, uint64_t at,
		  void *dst, size_t len)
{
	return chain_copy(mem, c, first, last, at, dst, len, false);
}

int vq_chain_write(const struct vq_mem *mem, const struct vq_chain *c, size_t first, size_t last, uint64_t at,
		   const void *src, size_t len)
{
	return chain_copy(mem, c, first, last, at, (uint8_t *)src, len, true);
}
