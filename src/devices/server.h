/* server.h - the thread that serves vmsh's devices: it waits on the
 * eventfds KVM signals (queue notifications, interrupt acknowledgements)
 * and on extra fds of the device kinds (the console's host side), and runs
 * the devices' work. Nothing of the hypervisor is involved. */
#ifndef VMSH_SERVER_H
#define VMSH_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/vdev.h"

#define SERVER_MAX_DEVS 4
#define SERVER_MAX_EXTRA 4

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

struct dev_server {
	int epfd, stop_fd;
	pthread_t thread;
	bool running;
	struct vdev *devs[SERVER_MAX_DEVS];
	size_t n_devs;
	struct server_src src[SERVER_MAX_DEVS * (VIRTIO_MMIO_MAX_QUEUES + 1) + SERVER_MAX_EXTRA + 2];
	size_t n_src;
	unsigned long wakeups;
};

int server_init(struct dev_server *s, struct vdev **devs, size_t n, struct vmsh_err *err);
/* An extra fd to watch (epoll events); cb runs in the server thread. */
int server_watch(struct dev_server *s, int fd, uint32_t events, void (*cb)(void *opaque, uint32_t events),
		 void *opaque, struct vmsh_err *err);
int server_modify(struct dev_server *s, int fd, uint32_t events);
/* Stop serving as soon as fd is readable (the hypervisor's pidfd: once it
 * has exited, its PID and guest-memory addresses may belong to another
 * process, and nothing may be copied there). */
int server_stop_on(struct dev_server *s, int fd, struct vmsh_err *err);
/* Stop watching an extra fd. */
void server_unwatch(struct dev_server *s, int fd);
int server_start(struct dev_server *s, struct vmsh_err *err);
/* Stop the thread (if started); the fds stay for server_stop. The thread
 * looks for the stop request after each budget of work, so this returns
 * quickly even while a guest keeps a queue busy. */
void server_stop_thread(struct dev_server *s);
/* Stop the thread (if started) and free everything. */
void server_stop(struct dev_server *s);

#endif
