/* vdev.c - a virtio-mmio device served by vmsh (see vdev.h). */
#include "devices/vdev.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static void on_driver_ok(void *opaque)
{
	struct vdev *d = opaque;
	bool event_idx = vmmio_feature(&d->regs, VIRTIO_F_EVENT_IDX);
	for (unsigned i = 0; i < d->regs.n_queues; i++) {
		const struct vmmio_queue *q = &d->regs.q[i];
		if (!q->ready)
			continue;
		if (vq_init(&d->vq[i], &d->mem, q->num, q->desc, q->avail, q->used, event_idx) < 0) {
			log_info("%s: queue %u refused: %s", d->kind->name, i, d->vq[i].why);
			continue;
		}
		d->vq_live[i] = true;
		/* its rings are in the record since the driver enabled it
		 * (record_sync); from here it also notes what it takes */
		if (d->rec && i < d->rec->n_queues)
			vq_log_start(&d->vq[i], &d->rec->q[i].log);
	}
	if (d->rec)
		d->rec->driver_features = d->regs.driver_features;
	/* From here the interrupt status always has the used-buffer bit (it
	 * is never cleared, see vdev_acked): the driver reads 1 or 3 and
	 * acknowledges that, and only 3 wakes vmsh. */
	vmmio_raise(&d->regs, 1);
	d->driver_ok = d->ever_driver_ok = true;
}

static void on_reset(void *opaque)
{
	struct vdev *d = opaque;
	for (unsigned i = 0; d->rec && i < VDEV_REC_QUEUES; i++)
		__atomic_store_n(&d->rec->q[i].ready, 0, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++) {
		if (d->vq_live[i])
			vq_free(&d->vq[i]);
		d->vq_live[i] = false;
	}
	d->driver_ok = false;
	if (d->kind->reset)
		d->kind->reset(d);
}

static const struct vmmio_ops ops = { .driver_ok = on_driver_ok, .reset = on_reset };

/* The page as the driver must read it, changed one aligned 32-bit word at
 * a time so that a concurrent guest read never sees a half-written page. */
static void render(struct vdev *d)
{
	uint8_t fresh[4096];
	vmmio_render(&d->regs, fresh);
	for (size_t off = 0; off < sizeof(fresh); off += 4) {
		uint32_t v, *dst = (uint32_t *)(d->page + off);
		memcpy(&v, fresh + off, 4);
		if (__atomic_load_n(dst, __ATOMIC_RELAXED) != v)
			__atomic_store_n(dst, v, __ATOMIC_RELEASE);
	}
}

void vdev_init(struct vdev *d, const struct vdev_kind *kind, void *kind_data, uint32_t device_id, uint64_t features,
	       unsigned n_queues, uint16_t queue_max, const struct vq_mem *mem, uint8_t *page, uint64_t gpa)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		pthread_mutex_init(&d->qlock[i], NULL);
	d->kind = kind;
	d->kind_data = kind_data;
	d->mem = *mem;
	d->page = page;
	d->gpa = gpa;
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		d->notify[i].local = -1;
	d->ack.local = d->ack_sink.local = d->irq.local = -1;
	/* indirect descriptor tables: a request's buffers in one guest read
	 * (unless the kind reads the whole table anyway and guest memory is
	 * another process's: then a table is a syscall more per request). With
	 * them a 256 KiB request of 64 pages takes one entry of the queue, not
	 * 66: the driver can have more than three in flight. */
	features |= 1ULL << VIRTIO_F_EVENT_IDX;
	if (!kind->direct_only || mem->local)
		features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	vmmio_init(&d->regs, device_id, features, n_queues, queue_max, &ops, d);
	render(d);
}

void vdev_keep_record(struct vdev *d, struct vdev_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->device_id = d->regs.device_id;
	rec->gpa = d->gpa;
	rec->n_queues = d->regs.n_queues < VDEV_REC_QUEUES ? d->regs.n_queues : VDEV_REC_QUEUES;
	__atomic_store_n(&rec->on, 1, __ATOMIC_RELEASE);
	d->rec = rec;
}

/* Interrupt the guest through the irqfd (once it is bound), outside d->lock:
 * the reason is already in the interrupt status register. */
static void signal_irq(struct vdev *d)
{
	if (!d->irq_on)
		return;
	uint64_t one = 1;
	if (write(d->irq.local, &one, 8) != 8)
		log_info("%s: raising the interrupt failed: %s", d->kind->name, strerror(errno));
}

void vdev_set_config(struct vdev *d, const uint8_t *cfg, size_t len, bool notify_driver)
{
	pthread_mutex_lock(&d->lock);
	if (len > sizeof(d->regs.config))
		len = sizeof(d->regs.config);
	memcpy(d->regs.config, cfg, len);
	d->regs.config_len = len;
	d->regs.config_generation++;
	bool raise = notify_driver && d->driver_ok;
	if (raise)
		vmmio_raise(&d->regs, 2);
	render(d);
	pthread_mutex_unlock(&d->lock);
	if (raise)
		signal_irq(d);
}

void vdev_destroy(struct vdev *d)
{
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		if (d->vq_live[i])
			vq_free(&d->vq[i]);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		pthread_mutex_destroy(&d->qlock[i]);
	pthread_mutex_destroy(&d->lock);
}

int vdev_connect(struct vdev *d, struct kvm_vm *vm, struct vmsh_err *err)
{
	for (unsigned i = 0; i < d->regs.n_queues; i++) {
		if (kvm_eventfd_create(vm, &d->notify[i], err) < 0 ||
		    kvm_ioeventfd(vm, &d->notify[i], d->gpa + VIRTIO_MMIO_QUEUE_NOTIFY, 4, true, i, false, err) < 0)
			goto fail;
		d->notify_on[i] = true;
	}
	if (kvm_eventfd_create(vm, &d->ack, err) < 0 ||
	    kvm_ioeventfd(vm, &d->ack, d->gpa + VIRTIO_MMIO_INTERRUPT_ACK, 4, true, 3, false, err) < 0)
		goto fail;
	d->ack_on = true;
	if (kvm_eventfd_create(vm, &d->ack_sink, err) < 0 ||
	    kvm_ioeventfd(vm, &d->ack_sink, d->gpa + VIRTIO_MMIO_INTERRUPT_ACK, 4, true, 1, false, err) < 0)
		goto fail;
	d->ack_sink_on = true;
	if (kvm_eventfd_create(vm, &d->irq, err) < 0)
		goto fail;
	return 0;
fail:
	vdev_disconnect(d, vm);
	return vmsh_err_prefix(err, "connect the %s device", d->kind->name);
}

int vdev_connect_irq(struct vdev *d, struct kvm_vm *vm, uint32_t gsi, struct vmsh_err *err)
{
	if (kvm_irqfd(vm, &d->irq, gsi, false, err) < 0)
		return vmsh_err_prefix(err, "interrupt line %u for the %s device", gsi, d->kind->name);
	d->gsi = gsi;
	d->irq_on = true;
	if (d->rec) {
		d->rec->gsi = gsi;
		__atomic_store_n(&d->rec->gsi_on, 1, __ATOMIC_RELEASE);
	}
	return 0;
}

void vdev_disconnect(struct vdev *d, struct kvm_vm *vm)
{
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++) {
		if (d->notify_on[i])
			kvm_ioeventfd(vm, &d->notify[i], d->gpa + VIRTIO_MMIO_QUEUE_NOTIFY, 4, true, i, true, NULL);
		d->notify_on[i] = false;
		if (d->notify[i].local >= 0)
			kvm_eventfd_close(vm, &d->notify[i]);
	}
	if (d->ack_on)
		kvm_ioeventfd(vm, &d->ack, d->gpa + VIRTIO_MMIO_INTERRUPT_ACK, 4, true, 3, true, NULL);
	d->ack_on = false;
	if (d->ack.local >= 0)
		kvm_eventfd_close(vm, &d->ack);
	if (d->ack_sink_on)
		kvm_ioeventfd(vm, &d->ack_sink, d->gpa + VIRTIO_MMIO_INTERRUPT_ACK, 4, true, 1, true, NULL);
	d->ack_sink_on = false;
	if (d->ack_sink.local >= 0)
		kvm_eventfd_close(vm, &d->ack_sink);
	if (d->irq_on)
		kvm_irqfd(vm, &d->irq, d->gsi, true, NULL);
	d->irq_on = false;
	if (d->irq.local >= 0)
		kvm_eventfd_close(vm, &d->irq);
}

/* The record follows the driver: a queue's rings as soon as it enables it
 * (a later run must serve a queue the driver uses even if vmsh died before
 * it saw DRIVER_OK: the driver goes on as if the write had been taken), off
 * when it disables it; the status. */
static void record_sync(struct vdev *d)
{
	struct vdev_record *rec = d->rec;
	for (unsigned i = 0; i < rec->n_queues; i++) {
		const struct vmmio_queue *q = &d->regs.q[i];
		struct vdev_record_queue *r = &rec->q[i];
		if (!q->ready) {
			__atomic_store_n(&r->ready, 0, __ATOMIC_RELEASE);
			continue;
		}
		if (r->ready)
			continue;
		if (!d->vq_live[i]) /* before DRIVER_OK nothing was taken yet */
			memset(&r->log, 0, sizeof(r->log));
		r->num = q->num;
		r->desc = q->desc;
		r->avail = q->avail;
		r->used = q->used;
		__atomic_store_n(&r->ready, 1, __ATOMIC_RELEASE);
	}
	rec->driver_features = d->regs.driver_features;
	__atomic_store_n(&rec->status, d->regs.status, __ATOMIC_RELEASE);
}

/* The device whole: every queue's lock (where the kind serves them in
 * parallel), then the device's. */
static void lock_all(struct vdev *d)
{
	if (d->kind->parallel_queues)
		for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
			pthread_mutex_lock(&d->qlock[i]);
	pthread_mutex_lock(&d->lock);
}

static void unlock_all(struct vdev *d)
{
	pthread_mutex_unlock(&d->lock);
	if (d->kind->parallel_queues)
		for (unsigned i = VIRTIO_MMIO_MAX_QUEUES; i-- > 0;)
			pthread_mutex_unlock(&d->qlock[i]);
}

void vdev_mmio(struct vdev *d, uint32_t off, bool is_write, uint8_t data[8], unsigned len)
{
	lock_all(d);
	if (is_write) {
		uint32_t v = 0;
		memcpy(&v, data, len > 4 ? 4 : len);
		vmmio_write(&d->regs, off, len, v);
		d->max_status |= d->regs.status;
		if (d->rec)
			record_sync(d);
		render(d);
	} else {
		uint32_t v = vmmio_read(&d->regs, off, len);
		memset(data, 0, 8);
		memcpy(data, &v, len > 4 ? 4 : len);
	}
	unlock_all(d);
}

void vdev_more(struct vdev *d, unsigned queues)
{
	__atomic_fetch_or(&d->more, queues, __ATOMIC_RELAXED);
}

/* The queues one at a time, each under its own lock: another thread may be
 * serving another queue meanwhile. driver_ok and the queues change only
 * under every queue's lock (vdev_mmio). */
static unsigned process_each(struct vdev *d, unsigned queues)
{
	unsigned irq = 0;
	for (unsigned q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		if (!(queues & (1u << q)))
			continue;
		pthread_mutex_lock(&d->qlock[q]);
		if (d->driver_ok)
			irq |= d->kind->process(d, 1u << q);
		pthread_mutex_unlock(&d->qlock[q]);
	}
	return irq;
}

unsigned vdev_kick(struct vdev *d, unsigned queues)
{
	__atomic_fetch_and(&d->more, ~queues, __ATOMIC_RELAXED);
	bool parallel = d->kind->parallel_queues;
	unsigned irq = parallel ? process_each(d, queues) : 0;
	pthread_mutex_lock(&d->lock);
	if (!parallel && d->driver_ok)
		irq = d->kind->process(d, queues);
	if (irq && d->driver_ok) { /* not reset since */
		vmmio_raise(&d->regs, 1);
		render(d);
		d->interrupts++;
	} else {
		irq = 0;
	}
	unsigned more = d->driver_ok ? __atomic_load_n(&d->more, __ATOMIC_RELAXED) & queues : 0;
	pthread_mutex_unlock(&d->lock);
	if (irq)
		signal_irq(d);
	return more;
}

void vdev_notify_driver(struct vdev *d)
{
	pthread_mutex_lock(&d->lock);
	bool raise = d->driver_ok;
	if (raise) {
		vmmio_raise(&d->regs, 1);
		render(d);
		d->interrupts++;
	}
	pthread_mutex_unlock(&d->lock);
	if (raise)
		signal_irq(d);
}

void vdev_acked(struct vdev *d)
{
	/* The used-buffer bit stays set: a driver that reads it finds nothing
	 * new at worst, while clearing it here could hide a notification
	 * raised between the driver's read and its acknowledgement. */
	pthread_mutex_lock(&d->lock);
	if (d->regs.interrupt_status & 2) {
		d->regs.interrupt_status &= ~2u;
		render(d);
	}
	pthread_mutex_unlock(&d->lock);
}

uint32_t vdev_status(struct vdev *d)
{
	pthread_mutex_lock(&d->lock);
	uint32_t s = d->max_status;
	pthread_mutex_unlock(&d->lock);
	return s;
}
