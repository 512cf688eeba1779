/* server.c - the device serving threads (see server.h). */
#include "devices/server.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"

static int add(struct dev_server *s, unsigned lane, int fd, uint32_t events, struct server_src src,
	       struct vmsh_err *err)
{
	if (s->n_src >= sizeof(s->src) / sizeof(s->src[0]))
		return vmsh_error(err, ENOSPC, "device server: too many fds");
	src.fd = fd;
	s->src[s->n_src] = src;
	struct epoll_event ev = { .events = events, .data.ptr = &s->src[s->n_src] };
	if (epoll_ctl(s->lane[lane].epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return vmsh_error(err, errno, "device server: watch fd %d", fd);
	s->n_src++;
	return 0;
}

/* The same stop source in every lane (level-triggered: each sees it). */
static int add_stop(struct dev_server *s, int fd, struct vmsh_err *err)
{
	for (unsigned l = 0; l < s->n_lanes; l++)
		if (add(s, l, fd, EPOLLIN, (struct server_src){ .kind = SRC_STOP }, err) < 0)
			return -1;
	return 0;
}

/* Lanes worth having: no more than a parallel kind has queues. */
static unsigned lanes_for(struct vdev **devs, size_t n, unsigned wanted)
{
	unsigned most = 1;
	for (size_t i = 0; i < n; i++)
		if (devs[i]->kind->parallel_queues && devs[i]->regs.n_queues > most)
			most = devs[i]->regs.n_queues;
	if (wanted > most)
		wanted = most;
	if (wanted > SERVER_MAX_LANES)
		wanted = SERVER_MAX_LANES;
	return wanted ? wanted : 1;
}

static unsigned lane_of(const struct dev_server *s, const struct vdev *d, unsigned q)
{
	return d->kind->parallel_queues ? q % s->n_lanes : 0;
}

int server_init(struct dev_server *s, struct vdev **devs, size_t n, unsigned lanes, struct vmsh_err *err)
{
	memset(s, 0, sizeof(*s));
	if (n > SERVER_MAX_DEVS)
		n = SERVER_MAX_DEVS;
	s->stop_fd = -1;
	s->n_lanes = lanes_for(devs, n, lanes);
	for (unsigned l = 0; l < SERVER_MAX_LANES; l++)
		s->lane[l] = (struct server_lane){ .s = s, .epfd = -1 };
	for (unsigned l = 0; l < s->n_lanes; l++)
		if ((s->lane[l].epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
			vmsh_error(err, errno, "device server: epoll");
			goto fail;
		}
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		vmsh_error(err, errno, "device server: eventfd");
		goto fail;
	}
	if (add_stop(s, s->stop_fd, err) < 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		struct vdev *d = devs[i];
		s->devs[s->n_devs++] = d;
		/* Edge-triggered: each signal of an eventfd is an event of its
		 * own, so its count need not be read (a syscall per wake-up
		 * saved); the count only grows, by one per notification. */
		for (unsigned q = 0; q < d->regs.n_queues; q++) {
			unsigned l = lane_of(s, d, q);
			s->lane[l].mask[i] |= 1u << q;
			if (d->notify[q].local >= 0 &&
			    add(s, l, d->notify[q].local, EPOLLIN | EPOLLET,
				(struct server_src){ .kind = SRC_NOTIFY, .dev = d, .queue = q }, err) < 0)
				goto fail;
		}
		if (d->ack.local >= 0 &&
		    add(s, 0, d->ack.local, EPOLLIN, (struct server_src){ .kind = SRC_ACK, .dev = d }, err) < 0)
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
	return add(s, 0, fd, events, (struct server_src){ .kind = SRC_EXTRA, .cb = cb, .opaque = opaque }, err);
}

int server_stop_on(struct dev_server *s, int fd, struct vmsh_err *err)
{
	return add_stop(s, fd, err);
}

int server_modify(struct dev_server *s, int fd, uint32_t events)
{
	for (size_t i = 0; i < s->n_src; i++) {
		if (s->src[i].kind != SRC_EXTRA || s->src[i].fd != fd)
			continue;
		struct epoll_event ev = { .events = events, .data.ptr = &s->src[i] };
		return epoll_ctl(s->lane[0].epfd, EPOLL_CTL_MOD, fd, &ev);
	}
	return -1;
}

void server_unwatch(struct dev_server *s, int fd)
{
	epoll_ctl(s->lane[0].epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void drain(int fd)
{
	uint64_t v; /* one read takes an eventfd's whole count */
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_info("device server: eventfd read: %s", strerror(errno));
}

/* The lane's queues left with work after their budget: one more budget
 * each, after every event of this wake-up was served. Returns whether any
 * still has. */
static bool serve_leftovers(struct server_lane *ln)
{
	struct dev_server *s = ln->s;
	bool any = false;
	for (size_t i = 0; i < s->n_devs; i++) {
		unsigned more = __atomic_load_n(&s->devs[i]->more, __ATOMIC_RELAXED) & ln->mask[i];
		if (more && vdev_kick(s->devs[i], more))
			any = true;
	}
	return any;
}

static void *loop(void *opaque)
{
	struct server_lane *ln = opaque;
	bool busy = false;
	for (;;) {
		struct epoll_event ev[16];
		/* with work left, only look for new events (and a stop) */
		int n = epoll_wait(ln->epfd, ev, 16, busy ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_info("device server: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		__atomic_fetch_add(&ln->wakeups, 1, __ATOMIC_RELAXED);
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
		busy = serve_leftovers(ln);
	}
}

int server_start(struct dev_server *s, struct vmsh_err *err)
{
	/* the threads take no signals: they belong to the session */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = 0;
	for (unsigned l = 0; l < s->n_lanes && !rc; l++) {
		struct server_lane *ln = &s->lane[l];
		if (!(rc = pthread_create(&ln->thread, NULL, loop, ln)))
			ln->running = s->running = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		server_stop_thread(s);
		return vmsh_error(err, rc, "device server: start thread");
	}
	return 0;
}

void server_stop_thread(struct dev_server *s)
{
	if (!s->running)
		return;
	uint64_t one = 1;
	if (write(s->stop_fd, &one, 8) != 8)
		log_info("device server: stop: %s", strerror(errno));
	for (unsigned l = 0; l < s->n_lanes; l++) {
		if (s->lane[l].running)
			pthread_join(s->lane[l].thread, NULL);
		s->lane[l].running = false;
	}
	s->running = false;
}

void server_stop(struct dev_server *s)
{
	server_stop_thread(s);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	s->stop_fd = -1;
	for (unsigned l = 0; l < SERVER_MAX_LANES; l++) {
		if (s->lane[l].epfd >= 0)
			close(s->lane[l].epfd);
		s->lane[l].epfd = -1;
	}
}

unsigned long server_wakeups(const struct dev_server *s)
{
	unsigned long n = 0;
	for (unsigned l = 0; l < s->n_lanes; l++)
		n += __atomic_load_n(&s->lane[l].wakeups, __ATOMIC_RELAXED);
	return n;
}
