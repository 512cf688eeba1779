/* vdev.h - one virtio-mmio device served by vmsh: its register file
 * rendered into a page the guest reads from a read-only memory slot, its
 * virtqueues, and the eventfds through which KVM tells vmsh about
 * notifications and acknowledgements (ioeventfd) and raises its interrupt
 * (irqfd). What the device does with its queues is the kind's business
 * (struct vdev_kind: block, console).
 *
 * Two paths reach a device: writes the guest makes while setting it up,
 * trapped from the hypervisor's KVM_RUN (vdev_mmio), and the eventfds,
 * served by threads (server.h). Both hold the device's lock - except that
 * a kind with parallel_queues has each queue served under a lock of its
 * own (qlock[q], taken before the device's lock), so that several threads
 * serve its queues at once; vdev_mmio then takes every queue's lock too
 * (a reset frees the queues). */
#ifndef VMSH_VDEV_H
#define VMSH_VDEV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "devices/virtqueue.h"
#include "kvm/kvm.h"
#include "kvm/hv_shared.h"

struct vdev;

/* What a later vmsh run needs to take the device over should this one die
 * outright (kept in the hypervisor's ledger, out of the guest's reach; see
 * adopt.h): every field is stored after what it describes exists. */
#define VDEV_REC_QUEUES 4
struct vdev_record_queue {
	uint16_t num;
	uint8_t ready;          /* the driver enabled it: rings below (from then on) */
	uint8_t pad[5];
	uint64_t desc, avail, used;
	struct vq_log log;
};
struct vdev_record {
	uint32_t on;            /* the device may be in the guest */
	uint32_t device_id;
	uint64_t gpa;
	uint32_t gsi, gsi_on;
	uint32_t status, n_queues;
	uint64_t driver_features;
	struct vdev_record_queue q[VDEV_REC_QUEUES];
};

struct vdev_kind {
	const char *name;
	/* queues were notified (mask of queue indices, ~0u: all) or host data
	 * arrived: do the work, at most a budget of chains per queue (a guest
	 * that keeps adding requests must not keep the serving thread here);
	 * set d->more for queues left with work; return a mask of queues whose
	 * driver must be interrupted */
	unsigned (*process)(struct vdev *d, unsigned queues);
	/* the driver reset the device */
	void (*reset)(struct vdev *d);
	/* no indirect descriptor tables offered: every chain is in the
	 * descriptor table vmsh reads whole with the ring (one read less per
	 * request where guest memory is another process's; offered anyway
	 * where vmsh maps guest memory itself, vq_mem.local) */
	bool direct_only;
	/* process() is called for one queue at a time, holding only that
	 * queue's lock (not the device's): it may then touch nothing of the
	 * device but that queue, d->more (vdev_more) and, under d->lock, the
	 * registers */
	bool parallel_queues;
};

struct vdev {
	pthread_mutex_t lock;
	pthread_mutex_t qlock[VIRTIO_MMIO_MAX_QUEUES]; /* kinds with parallel_queues */
	const struct vdev_kind *kind;
	void *kind_data;

	struct vmmio_dev regs;
	uint8_t *page;          /* the register page the guest reads (in shared memory) */
	uint64_t gpa;
	struct virtqueue vq[VIRTIO_MMIO_MAX_QUEUES];
	bool vq_live[VIRTIO_MMIO_MAX_QUEUES];
	struct vq_mem mem;
	bool driver_ok;         /* DRIVER_OK seen (and not reset since) */
	bool ever_driver_ok;
	uint32_t max_status;    /* every status bit the driver ever set */
	unsigned interrupts;
	unsigned more;          /* queues process() left work in (atomic: vdev_more) */

	struct kvm_eventfd notify[VIRTIO_MMIO_MAX_QUEUES];
	/* InterruptACK: a driver acknowledges what it read from the interrupt
	 * status, which always has the used-buffer bit once DRIVER_OK is set
	 * (vdev.c): 1 goes to `ack_sink`, an eventfd nobody waits on (KVM
	 * takes the write in the kernel, vmsh is not woken for it); 3 (it saw
	 * a configuration change) to `ack`, which the server watches */
	struct kvm_eventfd ack, ack_sink, irq;
	bool notify_on[VIRTIO_MMIO_MAX_QUEUES], ack_on, ack_sink_on, irq_on;
	uint32_t gsi;
	struct vdev_record *rec; /* NULL: not kept */
};

void vdev_init(struct vdev *d, const struct vdev_kind *kind, void *kind_data, uint32_t device_id, uint64_t features,
	       unsigned n_queues, uint16_t queue_max, const struct vq_mem *mem, uint8_t *page, uint64_t gpa);
/* Keep the device's state in *rec from now on (before the guest has it). */
void vdev_keep_record(struct vdev *d, struct vdev_record *rec);
/* Config space contents changed (and the driver is told when running). */
void vdev_set_config(struct vdev *d, const uint8_t *cfg, size_t len, bool notify_driver);
void vdev_destroy(struct vdev *d);

/* In the hypervisor (tracer attached): ioeventfds for QueueNotify (one per
 * queue) and InterruptACK; an eventfd for the interrupt, bound to a line
 * later with vdev_connect_irq. */
int vdev_connect(struct vdev *d, struct kvm_vm *vm, struct vmsh_err *err);
int vdev_connect_irq(struct vdev *d, struct kvm_vm *vm, uint32_t gsi, struct vmsh_err *err);
/* Undo vdev_connect(_irq) (tracer attached). */
void vdev_disconnect(struct vdev *d, struct kvm_vm *vm);

/* A trapped guest access to the register page (lock taken inside). */
void vdev_mmio(struct vdev *d, uint32_t off, bool is_write, uint8_t data[8], unsigned len);
/* Run the kind's work on the queues in mask (one budget) and interrupt the
 * driver as needed (lock taken inside). Returns the queues left with work:
 * kick them again after serving everything else. */
unsigned vdev_kick(struct vdev *d, unsigned queues);
/* process() left work in these queues: come back to them. */
void vdev_more(struct vdev *d, unsigned queues);
/* Tell the driver to look at its used rings (an interrupt). */
void vdev_notify_driver(struct vdev *d);
/* The guest acknowledged an interrupt. */
void vdev_acked(struct vdev *d);
/* Status bits the driver set, for diagnostics: ACKNOWLEDGE (virtio_mmio
 * saw the device), DRIVER (a driver took it), DRIVER_OK. */
uint32_t vdev_status(struct vdev *d);

#endif
