/* session.h - vmsh's devices in a running guest, from set-up to removal:
 *
 *   attach, find the kernel, load the kernel library; put the devices'
 *   register pages into a read-only memory slot and their notifications on
 *   ioeventfds; let the library pick an interrupt line and bind an irqfd to
 *   it; let the hypervisor go; trap its KVM_RUN exits while the guest's
 *   drivers set the devices up (and the library starts the helper); stop
 *   tracing: the devices are now served by a thread from eventfds alone.
 *   Then the caller's `serve` runs. Afterwards: attach again, let the
 *   library remove the devices (trapping the drivers' reset writes),
 *   remove every eventfd, slot and mapping, detach.
 */
#ifndef VMSH_SESSION_H
#define VMSH_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct session;

struct session_opts {
	pid_t pid;
	int vm_fd;                 /* -1: the only VM */
	const char *disk;          /* backing file or block device of the block device */
	bool disk_ro;
	const char *id;            /* block device serial and console port name */
	bool console;              /* also a console device */
	const void *helper;        /* in-guest helper binary, NULL: none */
	size_t helper_len;
	const char *helper_args;   /* NUL-separated arguments after argv[0] */
	size_t helper_args_len;
	unsigned helper_argc;
	unsigned timeout_ms;       /* for each step that waits on the guest */
	/* the devices are up and the hypervisor is untraced; console_fd (or
	 * -1) is a stream socket carrying the console port's bytes */
	int (*serve)(struct session *s, int console_fd, void *opaque, struct vmsh_err *err);
	void *opaque;
};

struct session_stats {
	uint64_t setup_ns;         /* attach until serving */
	uint64_t traced_ns;        /* KVM_RUN traced while the drivers set up */
	unsigned long trapped;     /* register writes trapped */
	unsigned long syscall_exits;
	uint64_t teardown_ns;
	uint32_t gsi, irq;
	uint64_t dev_gpa;
	uint64_t disk_sectors;
	uint32_t blk_status, con_status;
	unsigned blk_interrupts, con_interrupts;
};

int session_run(const struct session_opts *o, struct session_stats *st, struct vmsh_err *err);
/* A pidfd of the hypervisor (readable once it has exited), or -1: for a
 * serve callback that must end when the VM goes away. */
int session_hypervisor_pidfd(const struct session *s);

#endif
