/* virtio_mmio.c - virtio-mmio version 2 register file (see virtio_mmio.h;
 * virtio 1.x section 4.2.2 for the registers, 3.1.1 for the status dance). */
#include "devices/virtio_mmio.h"

#include <stdio.h>
#include <string.h>

#define MAGIC 0x74726976 /* "virt" */
#define VENDOR 0x68736d76 /* "vmsh" */

void vmmio_init(struct vmmio_dev *d, uint32_t device_id, uint64_t features, unsigned n_queues, uint16_t queue_max,
		const struct vmmio_ops *ops, void *opaque)
{
	memset(d, 0, sizeof(*d));
	d->device_id = device_id;
	d->device_features = features | (1ULL << VIRTIO_F_VERSION_1);
	d->n_queues = n_queues > VIRTIO_MMIO_MAX_QUEUES ? VIRTIO_MMIO_MAX_QUEUES : n_queues;
	for (unsigned i = 0; i < d->n_queues; i++)
		d->q[i].num_max = queue_max;
	d->ops = ops;
	d->opaque = opaque;
}

bool vmmio_feature(const struct vmmio_dev *d, unsigned bit)
{
	return bit < 64 && (d->driver_features >> bit) & 1;
}

static struct vmmio_queue *selected(struct vmmio_dev *d)
{
	return d->queue_sel < d->n_queues ? &d->q[d->queue_sel] : NULL;
}

static const struct vmmio_queue *selected_c(const struct vmmio_dev *d)
{
	return d->queue_sel < d->n_queues ? &d->q[d->queue_sel] : NULL;
}

static void reset(struct vmmio_dev *d)
{
	d->status = 0;
	d->driver_features = 0;
	d->interrupt_status = 0;
	d->device_features_sel = d->driver_features_sel = d->queue_sel = 0;
	for (unsigned i = 0; i < d->n_queues; i++) {
		uint16_t max = d->q[i].num_max;
		d->q[i] = (struct vmmio_queue){ .num_max = max };
	}
	d->why[0] = '\0';
	if (d->ops && d->ops->reset)
		d->ops->reset(d->opaque);
}

void vmmio_fail(struct vmmio_dev *d, const char *why)
{
	if (!(d->status & VIRTIO_STATUS_NEEDS_RESET))
		snprintf(d->why, sizeof(d->why), "%s", why);
	d->status |= VIRTIO_STATUS_NEEDS_RESET;
	if (d->status & VIRTIO_STATUS_DRIVER_OK)
		vmmio_raise(d, 2); /* config change tells the driver to look */
}

/* queue registers may change only while the queue is not ready and the
 * driver is not running */
static bool queue_writable(struct vmmio_dev *d, struct vmmio_queue *q)
{
	if (!q)
		return false;
	if (q->ready || (d->status & VIRTIO_STATUS_DRIVER_OK)) {
		vmmio_fail(d, "queue changed while in use");
		return false;
	}
	return true;
}

static void set_status(struct vmmio_dev *d, uint32_t val)
{
	if (val == 0) {
		reset(d);
		return;
	}
	uint32_t added = val & ~d->status;
	if (d->status & ~val & ~VIRTIO_STATUS_NEEDS_RESET) {
		vmmio_fail(d, "status bits cleared without a reset");
		return;
	}
	if ((added & VIRTIO_STATUS_FEATURES_OK) &&
	    ((d->driver_features & ~d->device_features) || !vmmio_feature(d, VIRTIO_F_VERSION_1))) {
		if (val & VIRTIO_STATUS_DRIVER_OK) {
			vmmio_fail(d, "DRIVER_OK with refused features");
			return;
		}
		/* the driver reads FEATURES_OK back and sees it refused */
		d->status = (val & ~VIRTIO_STATUS_FEATURES_OK) | (d->status & VIRTIO_STATUS_NEEDS_RESET);
		return;
	}
	if ((added & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
		vmmio_fail(d, "DRIVER_OK without FEATURES_OK");
		return;
	}
	if (added & VIRTIO_STATUS_DRIVER_OK) {
		for (unsigned i = 0; i < d->n_queues; i++) {
			struct vmmio_queue *q = &d->q[i];
			if (q->ready && (q->num == 0 || q->num > q->num_max || (q->num & (q->num - 1)))) {
				vmmio_fail(d, "queue size not a power of two up to the maximum");
				return;
			}
		}
	}
	d->status = val | (d->status & VIRTIO_STATUS_NEEDS_RESET);
	if ((added & VIRTIO_STATUS_DRIVER_OK) && d->ops && d->ops->driver_ok)
		d->ops->driver_ok(d->opaque);
}

static void set_half(uint64_t *v, bool high, uint32_t val)
{
	*v = high ? (*v & 0xffffffffULL) | ((uint64_t)val << 32) : (*v & ~0xffffffffULL) | val;
}

void vmmio_write(struct vmmio_dev *d, uint32_t off, unsigned size, uint32_t val)
{
	if (off >= VIRTIO_MMIO_CONFIG) {
		/* all config fields of our devices are read-only for the driver */
		return;
	}
	if (size != 4 || (off & 3))
		return;
	struct vmmio_queue *q = selected(d);
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL: d->device_features_sel = val; break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL: d->driver_features_sel = val; break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (d->status & VIRTIO_STATUS_FEATURES_OK) {
			vmmio_fail(d, "features changed after FEATURES_OK");
			break;
		}
		if (d->driver_features_sel < 2)
			set_half(&d->driver_features, d->driver_features_sel == 1, val);
		break;
	case VIRTIO_MMIO_QUEUE_SEL: d->queue_sel = val; break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (queue_writable(d, q))
			q->num = (uint16_t)(val > 0xffff ? 0 : val);
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (!q)
			break;
		if (val == 0) {
			q->ready = false;
		} else if (!q->ready && queue_writable(d, q)) {
			if (q->num == 0 || q->num > q->num_max || (q->num & (q->num - 1)))
				vmmio_fail(d, "queue enabled with a bad size");
			else
				q->ready = true;
		}
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW: case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (queue_writable(d, q))
			set_half(&q->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, val);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW: case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		if (queue_writable(d, q))
			set_half(&q->avail, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, val);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW: case VIRTIO_MMIO_QUEUE_USED_HIGH:
		if (queue_writable(d, q))
			set_half(&q->used, off == VIRTIO_MMIO_QUEUE_USED_HIGH, val);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (val < d->n_queues && d->q[val].ready && (d->status & VIRTIO_STATUS_DRIVER_OK) && d->ops &&
		    d->ops->notify)
			d->ops->notify(d->opaque, val);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK: d->interrupt_status &= ~val; break;
	case VIRTIO_MMIO_STATUS: set_status(d, val); break;
	default: break; /* read-only or unknown: ignored */
	}
}

uint32_t vmmio_read(const struct vmmio_dev *d, uint32_t off, unsigned size)
{
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint32_t v = 0, co = off - VIRTIO_MMIO_CONFIG;
		if ((size == 1 || size == 2 || size == 4) && co < d->config_len && size <= d->config_len - co)
			memcpy(&v, d->config + co, size);
		return v;
	}
	if (size != 4 || (off & 3))
		return 0;
	const struct vmmio_queue *q = selected_c(d);
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE: return MAGIC;
	case VIRTIO_MMIO_VERSION: return 2;
	case VIRTIO_MMIO_DEVICE_ID: return d->device_id;
	case VIRTIO_MMIO_VENDOR_ID: return VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return d->device_features_sel < 2 ? (uint32_t)(d->device_features >> (32 * d->device_features_sel)) : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? q->num_max : 0;
	case VIRTIO_MMIO_QUEUE_READY: return q ? q->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS: return d->interrupt_status;
	case VIRTIO_MMIO_STATUS: return d->status;
	case VIRTIO_MMIO_CONFIG_GENERATION: return d->config_generation;
	default: return 0; /* write-only or unknown */
	}
}

void vmmio_render(const struct vmmio_dev *d, uint8_t page[4096])
{
	memset(page, 0, 4096);
	for (uint32_t off = 0; off < VIRTIO_MMIO_CONFIG; off += 4) {
		uint32_t v = vmmio_read(d, off, 4);
		memcpy(page + off, &v, 4);
	}
	memcpy(page + VIRTIO_MMIO_CONFIG, d->config, d->config_len);
}

void vmmio_raise(struct vmmio_dev *d, uint32_t reason)
{
	d->interrupt_status |= reason;
}
