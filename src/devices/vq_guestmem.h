/* vq_guestmem.h - a virtqueue's memory access (struct vq_mem) on a guest's
 * memory map (struct guest_mem): what the devices use when they serve a
 * real guest. Vectored accesses keep their pieces together, so that one
 * process_vm_readv/writev takes up to GUEST_IOV_BATCH of them. */
#ifndef VMSH_DEVICES_VQ_GUESTMEM_H
#define VMSH_DEVICES_VQ_GUESTMEM_H

#include "devices/virtqueue.h"
#include "guest/guestmem.h"

/* gm must outlive every use of *mem. */
void vq_mem_of_guest(struct vq_mem *mem, struct guest_mem *gm);

#endif
