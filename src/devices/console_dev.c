/* console_dev.c - the virtio-console device kind (see console_dev.h). */
#include "devices/console_dev.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"

static struct console_dev *of(struct vdev *d)
{
	return (struct console_dev *)((char *)d - offsetof(struct console_dev, dev));
}

static void watch(struct console_dev *c, uint32_t events)
{
	if (c->host_eof && !(events & EPOLLOUT)) {
		/* a closed peer reports EPOLLHUP whatever we ask for */
		if (c->srv && c->events != 0xffffffffu)
			server_unwatch(c->srv, c->fd);
		c->events = 0xffffffffu;
		return;
	}
	if (c->events == 0xffffffffu)
		return;
	if (events != c->events && c->srv && server_modify(c->srv, c->fd, events) == 0)
		c->events = events;
}

/* Guest bytes out to the socket, as far as it takes them. */
static void flush_out(struct console_dev *c)
{
	for (;;) {
		if (c->out_off == c->out_len) {
			c->out_off = 0;
			c->out_len = vcon_host_read(&c->v, c->out, sizeof(c->out));
			if (!c->out_len)
				return;
		}
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w <= 0) {
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				/* nobody listens: drop what the guest sends */
				c->out_off = c->out_len;
				continue;
			}
			return;
		}
		c->out_off += (size_t)w;
		c->from_guest += (uint64_t)w;
	}
}

static uint32_t wanted_events(struct console_dev *c)
{
	uint32_t ev = 0;
	if (!c->host_eof && vcon_host_space(&c->v) > 0)
		ev |= EPOLLIN;
	if (c->out_off < c->out_len)
		ev |= EPOLLOUT;
	return ev;
}

static unsigned con_process(struct vdev *d, unsigned queues)
{
	struct console_dev *c = of(d);
	struct virtqueue *vqs[VCON_NUM_QUEUES];
	unsigned mask = 0;
	for (unsigned i = 0; i < VCON_NUM_QUEUES; i++)
		vqs[i] = d->vq_live[i] ? &d->vq[i] : NULL;
	bool left = false; /* stopped at its budget with work left */
	/* a few rounds: draining the guest's bytes makes room for more */
	for (int round = 0; round < 8; round++) {
		unsigned m = 0;
		size_t before = vcon_host_pending(&c->v);
		int r = vcon_process(&c->v, vqs, &m);
		if (r < 0) {
			vmmio_fail(&d->regs, "console queue broken");
			return mask | 1;
		}
		left = r == 1;
		mask |= m;
		size_t got = vcon_host_pending(&c->v);
		flush_out(c);
		if (got == before && vcon_host_pending(&c->v) == got)
			break;
	}
	if (left)
		vdev_more(d, queues); /* come back after the others had their turn */
	watch(c, wanted_events(c));
	return mask;
}

static void con_reset(struct vdev *d)
{
	vcon_reset(&of(d)->v);
}

static const struct vdev_kind con_kind = { .name = "virtio-console", .process = con_process, .reset = con_reset };

static void on_fd(void *opaque, uint32_t events)
{
	struct console_dev *c = opaque;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		uint8_t buf[16384];
		pthread_mutex_lock(&c->dev.lock);
		size_t space = vcon_host_space(&c->v);
		if (space > sizeof(buf))
			space = sizeof(buf);
		ssize_t n = space ? recv(c->fd, buf, space, MSG_DONTWAIT) : 0;
		if (n > 0) {
			vcon_host_write(&c->v, buf, (size_t)n);
			c->to_guest += (uint64_t)n;
		} else if (space && (n == 0 || (errno != EAGAIN && errno != EINTR))) {
			c->host_eof = true;
		}
		pthread_mutex_unlock(&c->dev.lock);
	}
	/* runs the queues, writes out, updates what we watch */
	vdev_kick(&c->dev, ~0u);
	pthread_mutex_lock(&c->dev.lock);
	if (!c->dev.driver_ok) {
		flush_out(c);
		watch(c, wanted_events(c) & ~(uint32_t)EPOLLIN);
	}
	pthread_mutex_unlock(&c->dev.lock);
}

int console_dev_init(struct console_dev *c, const char *port_name, int fd, const struct vq_mem *mem, uint8_t *page,
		     uint64_t gpa, struct vmsh_err *err)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	if (vcon_init(&c->v, port_name, err) < 0)
		return -1;
	vdev_init(&c->dev, &con_kind, c, VIRTIO_ID_CONSOLE, vcon_features(), VCON_NUM_QUEUES, CONSOLE_QUEUE_SIZE, mem,
		  page, gpa);
	uint8_t cfg[VCON_CONFIG_BYTES];
	size_t n = vcon_config(&c->v, cfg, sizeof(cfg));
	vdev_set_config(&c->dev, cfg, n, false);
	return 0;
}

int console_dev_watch(struct console_dev *c, struct dev_server *srv, struct vmsh_err *err)
{
	c->events = EPOLLIN;
	if (server_watch(srv, c->fd, c->events, on_fd, c, err) < 0)
		return -1;
	c->srv = srv;
	return 0;
}

void console_dev_set_size(struct console_dev *c, uint16_t cols, uint16_t rows)
{
	pthread_mutex_lock(&c->dev.lock);
	bool changed = vcon_set_size(&c->v, cols, rows);
	uint8_t cfg[VCON_CONFIG_BYTES];
	size_t n = vcon_config(&c->v, cfg, sizeof(cfg));
	pthread_mutex_unlock(&c->dev.lock);
	if (changed)
		vdev_set_config(&c->dev, cfg, n, true);
}

void console_dev_destroy(struct console_dev *c)
{
	vdev_destroy(&c->dev);
	vcon_free(&c->v);
}
