/* blk_dev.c - the virtio-blk device kind (see blk_dev.h). */
#include "devices/blk_dev.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

static void handle(struct vdev *d, struct virtqueue *vq, const struct vq_chain *c)
{
	struct blk_disk *disk = d->kind_data;
	unsigned die = __atomic_load_n(&disk->test_die_at, __ATOMIC_RELAXED);
	if (die && __atomic_sub_fetch(&disk->test_die_at, 1, __ATOMIC_RELAXED) == 0)
		raise(SIGKILL); /* killed outright, holding this request */
	struct blk_reply rep;
	int64_t written = virtio_blk_serve(disk, &d->mem, c, &rep);
	if (written < 0) {
		blk_reply_done(&rep);
		vq->broken = true;
		snprintf(vq->why, sizeof(vq->why), "request %u has no status byte", c->head);
		return;
	}
	/* the data read, the status byte, the used entry and the index in one write */
	vq_push_pieces(vq, c->head, (uint32_t)written, rep.v, rep.n);
	blk_reply_done(&rep);
}

/* Requests per wake-up: a vCPU that keeps bumping avail.idx gets this many
 * served, then the other devices (the console) and a stop request get their
 * turn before the server comes back here. */
#define BLK_BUDGET 64

_Static_assert(BLK_MAX_QUEUES <= VDEV_REC_QUEUES, "every queue is in the device's record (a later run takes it over)");

/* The window is closed, but a notification came soon after the queue
 * last ran dry: requests arriving back to back. Opened again (a quarter of
 * the most) once the notification is seen to have brought a request. */
static bool poll_reopens(const struct blk_disk *disk, unsigned q, uint64_t now)
{
	const struct blk_poll *p = &disk->poll[q];
	uint64_t most = (uint64_t)disk->poll_us * 1000;
	return most && !p->window_ns && p->dry_at_ns && now - p->dry_at_ns < most;
}

/* The queue ran dry: tell the driver about the completions so far (it
 * waits for them before it adds more), then look at the ring again until
 * a request comes (1, in c) or the window ends (0; -1: broken), or this
 * wake-up's polling time *left runs out (a guest that keeps requests
 * coming holds the thread no longer than one window per wake-up). No
 * notification is asked for meanwhile: pushes left avail_event behind. */
static int poll_ring(struct vdev *d, unsigned q, uint16_t *old, struct vq_chain *c, uint64_t *left)
{
	struct blk_disk *disk = d->kind_data;
	struct blk_poll *p = &disk->poll[q];
	struct virtqueue *vq = &d->vq[q];
	uint64_t most = (uint64_t)disk->poll_us * 1000;
	if (vq_should_notify(vq, *old))
		vdev_notify_driver(d);
	*old = vq->used_idx;
	p->polls++;
	uint64_t t0 = now_ns();
	for (;;) {
		sched_yield(); /* where the guest's vCPU shares this CPU, it runs */
		int r = vq_pop(vq, c);
		if (r == 1) {
			p->hits++;
			p->window_ns = p->window_ns * 2 < most ? p->window_ns * 2 : most;
			uint64_t spent = now_ns() - t0;
			*left = spent < *left ? *left - spent : 0;
			return 1;
		}
		if (r < 0)
			return -1;
		uint64_t t = now_ns();
		if (t - t0 >= *left) {
			*left = 0;
			return 0;
		}
		if (t - t0 >= p->window_ns) {
			p->window_ns = p->window_ns / 2 < most / 8 ? 0 : p->window_ns / 2;
			*left -= t - t0;
			return 0;
		}
	}
}

/* One queue's requests, at most a budget of them: whether its driver must
 * be interrupted. */
static bool serve_queue(struct vdev *d, unsigned q)
{
	struct virtqueue *vq = &d->vq[q];
	struct blk_disk *disk = d->kind_data;
	uint16_t old = vq->used_idx;
	struct vq_chain c;
	bool reopen = vq->event_idx && poll_reopens(disk, q, now_ns());
	uint64_t most = (uint64_t)disk->poll_us * 1000;
	uint64_t left = 2 * most; /* polling time of this wake-up */
	/* while polling, completions do not ask for the next notification */
	vq->hold_event = vq->event_idx && most && disk->poll[q].window_ns > 0;
	vq_expect_work(vq); /* notified, or left with work: the first look takes it all */
	for (unsigned done = 0;; done++) {
		if (done == BLK_BUDGET) {
			vdev_more(d, 1u << q); /* come back without waiting for a notification */
			break;
		}
		int r = vq_pop(vq, &c);
		if (r == 1 && reopen) { /* the notification brought a request */
			disk->poll[q].window_ns = most / 4;
			vq->hold_event = true;
		}
		reopen = false;
		if (r == 0 && vq->hold_event) {
			if (left)
				r = poll_ring(d, q, &old, &c, &left);
			if (r == 0) /* nothing came, or time is up: ask to be notified, as below */
				vq->hold_event = false;
		}
		if (r == 1) {
			handle(d, vq, &c);
			continue;
		}
		if (r < 0)
			break;
		/* nothing left: ask to be notified for the next request, then
		 * look once more (it may have come in between) */
		if (disk->poll_us)
			disk->poll[q].dry_at_ns = now_ns();
		vq_set_avail_event(vq, vq->last_avail);
		if (vq_event_armed(vq))
			break; /* asked with the last completion, and looked since */
		if ((r = vq_pop(vq, &c)) == 1) {
			handle(d, vq, &c);
			continue;
		}
		break;
	}
	vq->hold_event = false;
	if (vq->broken) {
		log_info("vmsh-blk: request queue %u broken: %s", q, vq->why);
		pthread_mutex_lock(&d->lock); /* the registers are the device's */
		vmmio_fail(&d->regs, vq->why);
		pthread_mutex_unlock(&d->lock);
		return true;
	}
	return vq_should_notify(vq, old);
}

/* The queues in the mask (one, from vdev_kick: parallel_queues): with
 * several (VIRTIO_BLK_F_MQ) each guest CPU submits to a queue of its own
 * (no lock shared between them in the guest), each queue is served by a
 * host thread of its own (server.h), and one interrupt line tells the
 * driver about all of them. A request touches nothing shared but the disk,
 * whose synchronous callbacks are positioned syscalls (blk_uring.h). */
static unsigned blk_process(struct vdev *d, unsigned queues)
{
	unsigned irq = 0;
	for (unsigned q = 0; q < d->regs.n_queues; q++)
		if ((queues & (1u << q)) && d->vq_live[q] && !d->vq[q].broken && serve_queue(d, q))
			irq |= 1u << q;
	return irq;
}

/* Direct descriptors only: a request's chain (header, data, status) is then
 * in the table the look after a notification reads with the ring, where an
 * indirect table would take one more read per request. A queue of 256
 * holds 85 requests of 4 KiB at once, 3 of 256 KiB. */
static const struct vdev_kind blk_kind = { .name = "virtio-blk", .process = blk_process, .direct_only = true,
					   .parallel_queues = true };

void blk_dev_init(struct vdev *d, struct blk_disk *disk, const struct vq_mem *mem, uint8_t *page, uint64_t gpa)
{
	vdev_init(d, &blk_kind, disk, VIRTIO_ID_BLOCK, virtio_blk_features(disk), virtio_blk_queues(disk), BLK_QUEUE_SIZE,
		  mem, page, gpa);
	for (unsigned q = 0; q < BLK_MAX_QUEUES; q++) /* polling starts with the widest window */
		disk->poll[q] = (struct blk_poll){ .window_ns = (uint64_t)disk->poll_us * 1000 };
	uint8_t cfg[64];
	size_t n = virtio_blk_config(disk, cfg, sizeof(cfg));
	vdev_set_config(d, cfg, n, false);
}
