/* snapshot.h - a consistent image of a running VM's RAM, taken in a stop of
 * milliseconds: a copy-on-write fork of the hypervisor (tracer.h,
 * tracer_fork_frozen) that never runs, whose memory vmsh then reads at its
 * leisure while the guest goes on.
 *
 * Where it applies: guest RAM in private anonymous memory (QEMU's default,
 * Firecracker, cloud-hypervisor without shared memory). MAP_SHARED RAM
 * (memfd, a file, vhost-user) would be the same memory in the fork, not a
 * copy; hugetlbfs RAM is left out too (its copy-on-write may take huge pages
 * the hypervisor's own faults need). The hypervisor's MADV_DONTFORK on guest
 * RAM (QEMU sets it) is lifted for the one fork and set again in the same
 * stop.
 *
 * What it costs the host: every page the guest writes while the image is
 * read is copied once (at most the guest RAM resident now), and the fork
 * copies page tables. vm_snapshot_prepare refuses when that much memory is
 * not free - on the host (MemAvailable) and in the hypervisor's memory
 * cgroup (memory.max) - so that the hypervisor is never the one to pay for
 * it with an OOM kill; and where a device may hold guest RAM pinned (vfio,
 * vDPA, iommufd), whose pages a fork copies at once. */
#ifndef VMSH_CORE_SNAPSHOT_H
#define VMSH_CORE_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/procfs.h"
#include "core/vm.h"

struct vm_snapshot {
	struct tracer_fork copy;
	struct proc_vma *dontfork; /* guest RAM mappings kept out of forks by the hypervisor */
	size_t n_dontfork;
	uint64_t resident;         /* guest RAM resident in the hypervisor: the most copy-on-write costs */
	char *maps;                /* the maps lines of guest RAM when read: the same at the fork */
	bool prepared, taken;
};

/* Outside any stop: can this VM's RAM be snapshotted, and at what cost? 0,
 * or -1 with the reason (then dump otherwise). */
int vm_snapshot_prepare(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err);
/* With the hypervisor held: reap the copies an earlier vmsh left behind
 * when it was killed (zombie children of the hypervisor with no exit
 * signal, named as it is: no hypervisor makes such children itself).
 * Returns how many were reaped. */
int vm_snapshot_reap_leftovers(struct vm *vm);
/* Inside a stop window (the caller holds every thread with
 * tracer_stop_others): fork the hypervisor with its guest RAM in the fork,
 * then put its MADV_DONTFORK back. */
int vm_snapshot_take(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err);
/* len bytes of guest memory at gpa as they were at vm_snapshot_take (the
 * ranges of gm, read from the copy): 0, or -1 with errno. */
int vm_snapshot_read(const struct vm_snapshot *s, const struct guest_mem *gm, uint64_t gpa, void *buf,
		     size_t len);
/* Kill the copy and have the hypervisor reap it (held again for that if it
 * was let go). Safe to call on a snapshot never taken. */
int vm_snapshot_drop(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err);

#endif
