/* adopt.c - ending a dead run's device (see adopt.h). */
#include "devices/adopt.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_console.h"

#define BUDGET 64 /* chains per queue and wake-up, as the live devices */

/* The guest sent it (block: every queue; console: the odd ones, transmit
 * and control-out) - rather than the device filling it (console receive:
 * the driver frees those itself when the device goes). */
static bool guest_sends(const struct vdev *d, unsigned q)
{
	return d->regs.device_id == VIRTIO_ID_BLOCK || (q & 1);
}

/* Complete one chain: a block request fails (its status byte, the last
 * byte the device may write, says IOERR), a console buffer is consumed. */
static int end_chain(struct vdev *d, struct virtqueue *vq, const struct vq_chain *c)
{
	uint32_t written = 0;
	if (d->regs.device_id == VIRTIO_ID_BLOCK) {
		if (c->n == 0 || !c->bufs[c->n - 1].device_writes)
			return vq_break(vq, "block request without a status byte");
		const struct vq_buf *st = &c->bufs[c->n - 1];
		uint8_t s = VIRTIO_BLK_S_IOERR;
		if (d->mem.write(d->mem.opaque, st->gpa + st->len - 1, &s, 1) < 0)
			return vq_break(vq, "status byte outside guest memory");
		written = 1;
	}
	return vq_push(vq, c->head, written);
}

static unsigned drain(struct vdev *d, unsigned queues)
{
	unsigned irq = 0;
	for (unsigned q = 0; q < d->regs.n_queues; q++) {
		if (!(queues & (1u << q)) || !d->vq_live[q] || !guest_sends(d, q))
			continue;
		struct virtqueue *vq = &d->vq[q];
		uint16_t old = vq->used_idx;
		struct vq_chain c;
		unsigned n = 0;
		for (int r; n < BUDGET; n++) {
			if ((r = vq_pop(vq, &c)) == 0) {
				/* with EVENT_IDX the driver notifies only when it
				 * passes the index asked for here (the dead run's
				 * is stale): ask, then look once more */
				vq_set_avail_event(vq, vq->last_avail);
				r = vq_pop(vq, &c);
			}
			if (r != 1 || end_chain(d, vq, &c) < 0)
				break;
		}
		if (n == BUDGET)
			vdev_more(d, 1u << q);
		if (vq->used_idx != old && vq_should_notify(vq, old))
			irq |= 1u << q;
	}
	return irq;
}

static const struct vdev_kind dead_blk = { .name = "earlier block", .process = drain };
static const struct vdev_kind dead_con = { .name = "earlier console", .process = drain };

/* A queue as the dead run left it: the chains it held completed. */
static int take_queue(struct vdev *d, unsigned i, const struct vdev_record_queue *r, struct vq_log *log,
		      bool event_idx)
{
	struct virtqueue *vq = &d->vq[i];
	if (vq_init(vq, &d->mem, r->num, r->desc, r->avail, r->used, event_idx) < 0)
		return -1;
	d->vq_live[i] = true;
	uint16_t held[VQ_LOG_MAX];
	size_t n;
	if (vq_take_over(vq, log, held, &n) < 0)
		return -1;
	for (size_t k = 0; k < n && guest_sends(d, i); k++) {
		struct vq_chain c;
		if (vq_chain_at(vq, held[k], &c) < 0 || end_chain(d, vq, &c) < 0)
			return -1;
	}
	return 0;
}

int vdev_adopt(struct vdev *d, struct vdev_record *rec, const struct vq_mem *mem, uint8_t *page, uint64_t gpa,
	       struct vmsh_err *err)
{
	struct vdev_record r = *rec; /* checked once, used from here */
	bool blk = r.device_id == VIRTIO_ID_BLOCK;
	if (!r.on || r.gpa != gpa || (!blk && r.device_id != VIRTIO_ID_CONSOLE) || r.n_queues == 0 ||
	    r.n_queues > VDEV_REC_QUEUES)
		return vmsh_error(err, EINVAL, "the earlier device's record at %#llx is not one vmsh writes",
				  (unsigned long long)gpa);
	/* what the driver already read stays: the config space and its generation */
	uint8_t cfg[VIRTIO_MMIO_CONFIG_MAX];
	uint32_t gen;
	memcpy(cfg, page + VIRTIO_MMIO_CONFIG, sizeof(cfg));
	memcpy(&gen, page + VIRTIO_MMIO_CONFIG_GENERATION, 4);
	/* set up on a page of our own: the guest reads the real one meanwhile */
	uint8_t scratch[4096];
	vdev_init(d, blk ? &dead_blk : &dead_con, NULL, r.device_id, r.driver_features, r.n_queues, VQ_LOG_MAX, mem,
		  scratch, gpa);
	pthread_mutex_lock(&d->lock);
	d->regs.config_generation = gen - 1; /* vdev_set_config below counts one */
	d->regs.driver_features = r.driver_features;
	d->regs.status = r.status & ~(uint32_t)VIRTIO_STATUS_NEEDS_RESET;
	d->max_status = d->regs.status;
	/* Every queue the driver enabled is served, whether or not vmsh saw
	 * its DRIVER_OK (a kill can lose that write: the driver goes on). The
	 * driver is told about completed requests once the line is connected
	 * (vdev_notify_driver). */
	bool running = r.status & VIRTIO_STATUS_DRIVER_OK;
	for (unsigned i = 0; i < r.n_queues; i++) {
		if (!r.q[i].ready)
			continue;
		d->regs.q[i] = (struct vmmio_queue){ .num_max = VQ_LOG_MAX, .num = r.q[i].num, .ready = true,
						     .desc = r.q[i].desc, .avail = r.q[i].avail, .used = r.q[i].used };
		running = true;
		/* the checked copy's rings; the live log, kept up to date */
		if (take_queue(d, i, &r.q[i], &rec->q[i].log, vmmio_feature(&d->regs, VIRTIO_F_EVENT_IDX)) < 0)
			log_info("%s device at %#llx, queue %u: %s (left as it is)", blk ? "an earlier block" :
				 "an earlier console", (unsigned long long)gpa, i, d->vq[i].why);
	}
	d->driver_ok = running;
	if (running) /* as on_driver_ok does: acknowledgements of 1 do not wake vmsh */
		vmmio_raise(&d->regs, 1);
	d->rec = rec;
	d->page = page;
	pthread_mutex_unlock(&d->lock);
	vdev_set_config(d, cfg, sizeof(cfg), false); /* renders the page, a word at a time */
	log_verbose("taking over an earlier %s device at %#llx (status %#x)", blk ? "block" : "console",
		    (unsigned long long)gpa, r.status);
	return 0;
}
