/* adopt.h - a device that a vmsh run killed outright left in the guest,
 * taken over by a later run so that the guest's drivers can let go of it.
 *
 * The dead run kept each device's state in its ledger (vdev_record: the
 * rings, where they stood, which requests it held). The later run serves
 * the device again from that record, but only to end it: every block
 * request fails with an I/O error, every buffer the guest sends on the
 * console is consumed and dropped, nothing goes to the guest. Requests the
 * dead run held are completed the same way first - a block driver being
 * removed waits for every request it issued, and the console driver spins
 * with preemption off until the host takes its control messages. Then the
 * library unregisters the devices and the run removes what is left of them
 * in the hypervisor.
 *
 * The record lives in memory the guest cannot reach; what it says about the
 * guest's rings is still checked like any queue set-up (vq_init) and the
 * rings' contents are as hostile as ever. */
#ifndef VMSH_ADOPT_H
#define VMSH_ADOPT_H

#include "common/err.h"
#include "devices/vdev.h"

/* Take the device of *rec over at gpa, its register page at `page` (the
 * dead run's memory, mapped by this one), the record kept up to date from
 * here on. Completes what the dead run held. */
int vdev_adopt(struct vdev *d, struct vdev_record *rec, const struct vq_mem *mem, uint8_t *page, uint64_t gpa,
	       struct vmsh_err *err);

#endif
