/* server.c - the device serving thread (see server.h). */
#include "devices/server.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

static int add(struct dev_server *s, int fd, uint32_t events, struct server_src src, struct vmsh_err *err)
{
	if (s->n_src >= sizeof(s->src) / sizeof(s->src[0]))
		return vmsh_error(err, ENOSPC, "device server: too many fds");
	src.fd = fd;
	s->src[s->n_src] = src;
	struct epoll_event ev = { .events = events, .data.ptr = &s->src[s->n_src] };
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return vmsh_error(err, errno, "device server: watch fd %d", fd);
	s->n_src++;
	return 0;
}

int server_init(struct dev_server *s, struct vdev **devs, size_t n, struct vmsh_err *err)
{
	memset(s, 0, sizeof(*s));
	s->stop_fd = -1;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0)
		return vmsh_error(err, errno, "device server: epoll");
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0 || add(s, s->stop_fd, EPOLLIN, (struct server_src){ .kind = SRC_STOP }, err) < 0)
		goto fail;
	for (size_t i = 0; i < n && i < SERVER_MAX_DEVS; i++) {
		struct vdev *d = devs[i];
		s->devs[s->n_devs++] = d;
		/* Edge-triggered: each signal of an eventfd is an event of its
		 * own, so its count need not be read (a syscall per wake-up
		 * saved); the count only grows, by one per notification. */
		for (unsigned q = 0; q < d->regs.n_queues; q++)
			if (d->notify[q].local >= 0 &&
			    add(s, d->notify[q].local, EPOLLIN | EPOLLET,
				(struct server_src){ .kind = SRC_NOTIFY, .dev = d, .queue = q }, err) < 0)
				goto fail;
		if (d->ack.local >= 0 && add(s, d->ack.local, EPOLLIN, (struct server_src){ .kind = SRC_ACK, .dev = d }, err) < 0)
			goto fail;
	}
	return 0;
fail:
	server_stop(s);
	return -1;
}

int server_watch(struct dev_server *s, int fd, uint32_t events, void (*cb)(void *opaque, uint32_t events),
		 void *opaque, struct vmsh_err *err)
{
	return add(s, fd, events, (struct server_src){ .kind = SRC_EXTRA, .cb = cb, .opaque = opaque }, err);
}

int server_stop_on(struct dev_server *s, int fd, struct vmsh_err *err)
{
	return add(s, fd, EPOLLIN, (struct server_src){ .kind = SRC_STOP }, err);
}

int server_modify(struct dev_server *s, int fd, uint32_t events)
{
	for (size_t i = 0; i < s->n_src; i++) {
		if (s->src[i].kind != SRC_EXTRA || s->src[i].fd != fd)
			continue;
		struct epoll_event ev = { .events = events, .data.ptr = &s->src[i] };
		return epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev);
	}
	return -1;
}

void server_unwatch(struct dev_server *s, int fd)
{
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void drain(int fd)
{
	uint64_t v; /* one read takes an eventfd's whole count */
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_info("device server: eventfd read: %s", strerror(errno));
}

/* Devices left with work after their budget: one more budget each, after
 * every event of this wake-up was served. Returns whether any still has. */
static bool serve_leftovers(struct dev_server *s)
{
	bool any = false;
	for (size_t i = 0; i < s->n_devs; i++) {
		unsigned more = __atomic_load_n(&s->devs[i]->more, __ATOMIC_RELAXED);
		if (more && vdev_kick(s->devs[i], more))
			any = true;
	}
	return any;
}

static void *loop(void *opaque)
{
	struct dev_server *s = opaque;
	bool busy = false;
	for (;;) {
		struct epoll_event ev[16];
		/* with work left, only look for new events (and a stop) */
		int n = epoll_wait(s->epfd, ev, 16, busy ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_info("device server: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		s->wakeups++;
		for (int i = 0; i < n; i++) {
			struct server_src *src = ev[i].data.ptr;
			switch (src->kind) {
			case SRC_NOTIFY:
				vdev_kick(src->dev, 1u << src->queue);
				break;
			case SRC_ACK:
				drain(src->dev->ack.local);
				vdev_acked(src->dev);
				break;
			case SRC_EXTRA:
				src->cb(src->opaque, ev[i].events);
				break;
			case SRC_STOP:
				return NULL;
			}
		}
		busy = serve_leftovers(s);
	}
}

int server_start(struct dev_server *s, struct vmsh_err *err)
{
	/* the thread takes no signals: they belong to the session */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&s->thread, NULL, loop, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return vmsh_error(err, rc, "device server: start thread");
	s->running = true;
	return 0;
}

void server_stop_thread(struct dev_server *s)
{
	if (!s->running)
		return;
	uint64_t one = 1;
	if (write(s->stop_fd, &one, 8) != 8)
		log_info("device server: stop: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	s->running = false;
}

void server_stop(struct dev_server *s)
{
	server_stop_thread(s);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	if (s->epfd >= 0)
		close(s->epfd);
	s->stop_fd = s->epfd = -1;
}
