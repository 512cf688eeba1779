/* virtio_mmio.h - the register file of a virtio-mmio (version 2) device, as
 * a state machine independent of how writes reach it (trapped exits or
 * ioeventfds) and of which device it is (block, console).
 *
 * vmsh keeps the device's register page in a read-only memory slot, so the
 * driver's reads cost no exit: after every write it handles, vmsh renders
 * the page again (vmmio_render). Every value the driver writes is checked;
 * a driver that breaks the protocol gets DEVICE_NEEDS_RESET, never a crash. */
#ifndef VMSH_VIRTIO_MMIO_H
#define VMSH_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	VIRTIO_MMIO_MAGIC_VALUE = 0x000,
	VIRTIO_MMIO_VERSION = 0x004,
	VIRTIO_MMIO_DEVICE_ID = 0x008,
	VIRTIO_MMIO_VENDOR_ID = 0x00c,
	VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
	VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
	VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
	VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
	VIRTIO_MMIO_QUEUE_SEL = 0x030,
	VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
	VIRTIO_MMIO_QUEUE_NUM = 0x038,
	VIRTIO_MMIO_QUEUE_READY = 0x044,
	VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
	VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
	VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
	VIRTIO_MMIO_STATUS = 0x070,
	VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080,
	VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084,
	VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090,
	VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094,
	VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0,
	VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4,
	VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
	VIRTIO_MMIO_CONFIG = 0x100,
};

enum {
	VIRTIO_STATUS_ACKNOWLEDGE = 1,
	VIRTIO_STATUS_DRIVER = 2,
	VIRTIO_STATUS_DRIVER_OK = 4,
	VIRTIO_STATUS_FEATURES_OK = 8,
	VIRTIO_STATUS_NEEDS_RESET = 64,
	VIRTIO_STATUS_FAILED = 128,
};

#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_MMIO_MAX_QUEUES 8
#define VIRTIO_MMIO_CONFIG_MAX 256

struct vmmio_queue {
	uint16_t num_max, num;
	bool ready;
	uint64_t desc, avail, used;
};

/* What the device does when the driver acts. Any may be NULL. */
struct vmmio_ops {
	/* the driver set DRIVER_OK: queues are set up */
	void (*driver_ok)(void *opaque);
	/* the driver reset the device (status 0) */
	void (*reset)(void *opaque);
	/* a queue was notified (when not caught by an ioeventfd) */
	void (*notify)(void *opaque, unsigned queue);
};

struct vmmio_dev {
	uint32_t device_id;
	uint64_t device_features;
	uint64_t driver_features;
	uint32_t device_features_sel, driver_features_sel, queue_sel;
	uint32_t status;
	uint32_t interrupt_status;
	uint32_t config_generation;
	unsigned n_queues;
	struct vmmio_queue q[VIRTIO_MMIO_MAX_QUEUES];
	uint8_t config[VIRTIO_MMIO_CONFIG_MAX];
	size_t config_len;
	const struct vmmio_ops *ops;
	void *opaque;
	char why[96]; /* why the device asked for a reset, for the log */
};

void vmmio_init(struct vmmio_dev *d, uint32_t device_id, uint64_t features, unsigned n_queues, uint16_t queue_max,
		const struct vmmio_ops *ops, void *opaque);
/* A driver access of `size` bytes at `off`: reads of registers, writes that
 * change state. Unknown or misaligned accesses read 0 and are ignored. */
uint32_t vmmio_read(const struct vmmio_dev *d, uint32_t off, unsigned size);
void vmmio_write(struct vmmio_dev *d, uint32_t off, unsigned size, uint32_t val);
/* The 4 KiB register page as the driver must currently read it. */
void vmmio_render(const struct vmmio_dev *d, uint8_t page[4096]);
/* The device raises an interrupt reason (1: used buffer, 2: config change). */
void vmmio_raise(struct vmmio_dev *d, uint32_t reason);
/* The device is broken (e.g. a malformed queue): DEVICE_NEEDS_RESET, and a
 * config-change interrupt reason when the driver runs. */
void vmmio_fail(struct vmmio_dev *d, const char *why);
bool vmmio_feature(const struct vmmio_dev *d, unsigned bit);

#endif
