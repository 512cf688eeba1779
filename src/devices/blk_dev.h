/* blk_dev.h - the virtio-blk device kind: a vdev whose request queue is
 * served by virtio_blk.h on a disk backend. */
#ifndef VMSH_BLK_DEV_H
#define VMSH_BLK_DEV_H

#include "devices/vdev.h"
#include "devices/virtio_blk.h"

#define BLK_QUEUE_SIZE 256

/* Set up d as a block device for disk (which must outlive d). */
void blk_dev_init(struct vdev *d, struct blk_disk *disk, const struct vq_mem *mem, uint8_t *page, uint64_t gpa);

#endif
