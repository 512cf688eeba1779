/* session.h - vmsh's devices in a running guest, from set-up to removal.
 *
 *   session_open   on a VM opened with the guest kernel found (vm.h, held):
 *                  load the kernel library; put the devices' register pages
 *                  into a read-only memory slot and their notifications on
 *                  ioeventfds; let the library pick an interrupt line and
 *                  bind an irqfd to it; let the hypervisor go; trap its
 *                  KVM_RUN exits while the guest's drivers set the devices
 *                  up (and the library starts the helper); stop tracing:
 *                  the devices are now served by a thread from eventfds
 *                  alone, and the hypervisor runs untraced.
 *   session_close  attach again, let the library remove the devices
 *                  (trapping the drivers' reset writes), remove every
 *                  eventfd, slot and mapping; the VM stays open.
 *
 * Terminating signals (term_signals_block, common/signals.h) should be
 * blocked from before vm_open until after vm_close: the set-up checks for
 * them between steps, and session_close always runs. */
#ifndef VMSH_CORE_SESSION_H
#define VMSH_CORE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "vmsh/channel.h" /* VMSH_MAX_MODULES, VMSH_MAX_DEVS */
#include "core/vm.h"

struct session;

struct session_opts {
	const char *disk;          /* backing file or block device of the block device */
	bool disk_ro;
	unsigned blk_queues;       /* its request queues; 0: one per vCPU (at most BLK_MAX_QUEUES) */
	unsigned blk_poll_us;      /* polling window at most of each queue, 0: none */
	uint64_t disk_base, disk_size; /* disk_size > 0: only these bytes of it, read-only */
	const char *id;            /* block device serial and console port name */
	bool console;              /* also a console device */
	const void *helper;        /* in-guest helper binary, NULL: none */
	size_t helper_len;
	const char *helper_args;   /* NUL-separated arguments after argv[0] */
	size_t helper_args_len;
	unsigned helper_argc;
	const char *modules[VMSH_MAX_MODULES]; /* for the helper's mounts, NULL-terminated if fewer */
	unsigned timeout_ms;       /* for each step that waits on the guest */
};

struct session_stats {
	uint64_t setup_ns;         /* attach until serving */
	uint64_t traced_ns;        /* KVM_RUN traced while the drivers set up */
	unsigned long trapped;     /* register writes trapped */
	unsigned long syscall_exits;
	uint64_t teardown_ns;
	uint32_t gsi[VMSH_MAX_DEVS], irq[VMSH_MAX_DEVS]; /* our devices' interrupt lines (block, console) */
	uint64_t dev_gpa;
	uint64_t disk_sectors;
	unsigned blk_queues;
	uint32_t blk_status, con_status;
	unsigned blk_interrupts, con_interrupts;
	unsigned long wakeups;     /* of the device serving threads */
	unsigned serve_threads;    /* the device serving threads (one per request queue) */
	unsigned long lane_wakeups[4]; /* of each of them (the first four) */
	uint64_t serve_remote_calls; /* process_vm_readv/writev on guest memory from then on */
	uint64_t serve_remote_bytes; /* the bytes they moved */
	uint64_t blk_polls, blk_poll_hits; /* polls of the request queues, and those that found a request */
};

/* NULL on failure (err says why; whatever was added is removed again).
 * st is written until session_close. o must outlive the session. */
struct session *session_open(struct vm *vm, const struct session_opts *o, struct session_stats *st,
			     struct vmsh_err *err);
/* Our end of the console port's byte stream (a stream socket), -1 without
 * a console. It stays open until session_close. */
int session_console_fd(const struct session *s);
/* A pidfd of the hypervisor (readable once it has exited), or -1: serving
 * ends when the VM goes away. */
int session_hypervisor_pidfd(const struct session *s);
void session_close(struct session *s);

#endif
