/* server.h - the threads that serve vmsh's devices: they wait on the
 * eventfds KVM signals (queue notifications, interrupt acknowledgements)
 * and on extra fds of the device kinds (the console's host side), and run
 * the devices' work. Nothing of the hypervisor is involved.
 *
 * Lanes: one thread each. Lane 0 serves everything but the request queues
 * of a kind that serves its queues in parallel (vdev_kind.parallel_queues,
 * the block device); queue q of such a kind is served by lane q % lanes,
 * so that with multiqueue each guest CPU's requests are served by a host
 * thread of their own. A lane's queues are only ever served by it. */
#ifndef VMSH_SERVER_H
#define VMSH_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/vdev.h"

#define SERVER_MAX_DEVS 4
#define SERVER_MAX_EXTRA 4
#define SERVER_MAX_LANES 4

enum server_src_kind {
	SRC_NOTIFY, /* a queue's ioeventfd: the guest kicked it */
	SRC_ACK,    /* a device's interrupt-acknowledge eventfd */
	SRC_EXTRA,  /* an fd a device watches (the console's host side): cb */
	SRC_STOP,   /* stop the thread (server_stop, or the hypervisor exited) */
};

struct server_src {
	enum server_src_kind kind;
	int fd;
	struct vdev *dev;
	unsigned queue;
	void (*cb)(void *opaque, uint32_t events);
	void *opaque;
};

struct dev_server;

struct server_lane {
	struct dev_server *s;
	int epfd;
	pthread_t thread;
	bool running;
	unsigned mask[SERVER_MAX_DEVS]; /* the queues of each device it serves */
	unsigned long wakeups;
};

struct dev_server {
	int stop_fd;
	unsigned n_lanes;
	struct server_lane lane[SERVER_MAX_LANES];
	bool running; /* some lane's thread runs */
	struct vdev *devs[SERVER_MAX_DEVS];
	size_t n_devs;
	struct server_src src[SERVER_MAX_DEVS * (VIRTIO_MMIO_MAX_QUEUES + 1) + SERVER_MAX_EXTRA + 2 * SERVER_MAX_LANES];
	size_t n_src;
};

/* lanes: threads wanted (1..SERVER_MAX_LANES); no more are made than the
 * parallel kinds have queues. */
int server_init(struct dev_server *s, struct vdev **devs, size_t n, unsigned lanes, struct vmsh_err *err);
/* An extra fd to watch (epoll events); cb runs in lane 0's thread. */
int server_watch(struct dev_server *s, int fd, uint32_t events, void (*cb)(void *opaque, uint32_t events),
		 void *opaque, struct vmsh_err *err);
int server_modify(struct dev_server *s, int fd, uint32_t events);
/* Stop serving as soon as fd is readable (the hypervisor's pidfd: once it
 * has exited, its PID and guest-memory addresses may belong to another
 * process, and nothing may be copied there). Every lane watches it. */
int server_stop_on(struct dev_server *s, int fd, struct vmsh_err *err);
/* Stop watching an extra fd. */
void server_unwatch(struct dev_server *s, int fd);
int server_start(struct dev_server *s, struct vmsh_err *err);
/* Stop the threads (if started); the fds stay for server_stop. A thread
 * looks for the stop request after each budget of work, so this returns
 * quickly even while a guest keeps a queue busy. */
void server_stop_thread(struct dev_server *s);
/* Stop the threads (if started) and free everything. */
void server_stop(struct dev_server *s);
/* Wake-ups of all lanes so far. */
unsigned long server_wakeups(const struct dev_server *s);

#endif
