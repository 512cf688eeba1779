/* virtio_console.c - virtio-console with one named port (see
 * virtio_console.h): the multiport control protocol, the two byte buffers
 * between the host and the port's queues, and the serving of the queues. */
#include "devices/virtio_console.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- the byte FIFOs ---- */

static int fifo_init(struct vcon_fifo *f, size_t cap)
{
	memset(f, 0, sizeof(*f));
	f->data = malloc(cap);
	if (!f->data)
		return -1;
	f->cap = cap;
	return 0;
}

static size_t fifo_space(const struct vcon_fifo *f)
{
	return f->cap - f->len;
}

/* The contiguous run of bytes at the front. */
static size_t fifo_front(const struct vcon_fifo *f, const uint8_t **p)
{
	*p = f->data + f->head;
	return MIN(f->len, f->cap - f->head);
}

static void fifo_consume(struct vcon_fifo *f, size_t n)
{
	f->head = (f->head + n) % f->cap;
	f->len -= n;
	if (f->len == 0)
		f->head = 0; /* keep runs long */
}

/* The contiguous free run after the back. */
static size_t fifo_back(struct vcon_fifo *f, uint8_t **p)
{
	size_t tail = (f->head + f->len) % f->cap;
	*p = f->data + tail;
	return MIN(fifo_space(f), f->cap - tail);
}

static size_t fifo_put(struct vcon_fifo *f, const void *buf, size_t len)
{
	const uint8_t *src = buf;
	size_t done = 0;
	while (done < len) {
		uint8_t *p;
		size_t n = MIN(fifo_back(f, &p), len - done);
		if (n == 0)
			break;
		memcpy(p, src + done, n);
		f->len += n;
		done += n;
	}
	return done;
}

static size_t fifo_get(struct vcon_fifo *f, void *buf, size_t cap)
{
	uint8_t *dst = buf;
	size_t done = 0;
	while (done < cap) {
		const uint8_t *p;
		size_t n = MIN(fifo_front(f, &p), cap - done);
		if (n == 0)
			break;
		memcpy(dst + done, p, n);
		fifo_consume(f, n);
		done += n;
	}
	return done;
}

/* ---- setup and host side ---- */

int vcon_init(struct vcon *v, const char *port_name, struct vmsh_err *err)
{
	memset(v, 0, sizeof(*v));
	size_t n = strnlen(port_name, VCON_NAME_MAX + 1);
	if (n == 0 || n > VCON_NAME_MAX)
		return vmsh_error(err, EINVAL, "console port name must be 1 to %d bytes", VCON_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		if (port_name[i] <= ' ' || port_name[i] > '~' || port_name[i] == '/')
			return vmsh_error(err, EINVAL, "console port name '%s': only printable characters, no '/' or space",
					  port_name);
	memcpy(v->name, port_name, n);
	v->cols = 80;
	v->rows = 24;
	v->host_connected = true;
	if (fifo_init(&v->to_guest, VCON_BUF_BYTES) < 0 || fifo_init(&v->from_guest, VCON_BUF_BYTES) < 0) {
		vcon_free(v);
		return vmsh_error(err, ENOMEM, "console port '%s' buffers", port_name);
	}
	return 0;
}

void vcon_free(struct vcon *v)
{
	free(v->to_guest.data);
	free(v->from_guest.data);
	v->to_guest.data = v->from_guest.data = NULL;
	v->to_guest.cap = v->from_guest.cap = 0;
	v->to_guest.len = v->from_guest.len = 0;
}

void vcon_reset(struct vcon *v)
{
	v->device_ready = v->port_added = v->port_ready = v->guest_connected = false;
	v->ignored = 0;
	v->ctrl_head = v->ctrl_len = 0;
	v->tx_partial = false;
	v->tx_head = 0;
	v->tx_done = 0;
}

uint64_t vcon_features(void)
{
	return (1ULL << VIRTIO_CONSOLE_F_SIZE) | (1ULL << VIRTIO_CONSOLE_F_MULTIPORT);
}

size_t vcon_config(const struct vcon *v, uint8_t *cfg, size_t cap)
{
	uint8_t c[VCON_CONFIG_BYTES] = { 0 };
	uint32_t max_nr_ports = 1;
	memcpy(c + 0, &v->cols, 2);
	memcpy(c + 2, &v->rows, 2);
	memcpy(c + 4, &max_nr_ports, 4);
	/* c + 8: emerg_wr, driver-written, only with F_EMERG_WRITE (not offered) */
	size_t n = MIN(cap, sizeof(c));
	memcpy(cfg, c, n);
	return n;
}

bool vcon_set_size(struct vcon *v, uint16_t cols, uint16_t rows)
{
	if (v->cols == cols && v->rows == rows)
		return false;
	v->cols = cols;
	v->rows = rows;
	return true;
}

size_t vcon_host_write(struct vcon *v, const void *buf, size_t len)
{
	return fifo_put(&v->to_guest, buf, len);
}

size_t vcon_host_space(const struct vcon *v)
{
	return fifo_space(&v->to_guest);
}

size_t vcon_host_unsent(const struct vcon *v)
{
	return v->to_guest.len;
}

size_t vcon_host_read(struct vcon *v, void *buf, size_t cap)
{
	return fifo_get(&v->from_guest, buf, cap);
}

size_t vcon_host_pending(const struct vcon *v)
{
	return v->from_guest.len;
}

/* ---- control messages to the driver ---- */

/* What the guest's messages may queue at most: PORT_ADD, PORT_NAME and
 * PORT_OPEN 1, each deduplicated below. The host keeps out of those slots,
 * so an answer to the guest never finds the queue full. */
#define CTRL_GUEST_SLOTS 3

/* Queue a control message for port 0, unless the last one of this event
 * still waiting says the same. -1 if `limit` messages are waiting. */
static int ctrl_send(struct vcon *v, uint16_t event, uint16_t value, unsigned limit)
{
	for (unsigned k = v->ctrl_len; k-- > 0;) {
		unsigned i = (v->ctrl_head + k) % VCON_CTRL_PENDING;
		if (v->ctrl[i].event == event) {
			if (v->ctrl[i].value == value)
				return 0;
			break;
		}
	}
	if (v->ctrl_len >= limit)
		return -1;
	unsigned i = (v->ctrl_head + v->ctrl_len) % VCON_CTRL_PENDING;
	v->ctrl[i].event = event;
	v->ctrl[i].value = value;
	v->ctrl_len++;
	return 0;
}

int vcon_set_host_connected(struct vcon *v, bool connected)
{
	if (v->host_connected == connected)
		return 0;
	if (v->port_ready && ctrl_send(v, VIRTIO_CONSOLE_PORT_OPEN, connected, VCON_CTRL_PENDING - CTRL_GUEST_SLOTS) < 0)
		return -1;
	v->host_connected = connected;
	return 0;
}

/* ---- moving bytes between chains and memory ---- */

/* len bytes of the chain's device-readable buffers, from byte `at` of them
 * on, to dst. -1 if guest memory refused. */
static int chain_get(const struct virtqueue *vq, const struct vq_chain *c, uint64_t at, void *dst, size_t len)
{
	return vq_chain_read(&vq->mem, c, 0, c->n_readable, at, dst, len);
}

/* len bytes from src into the chain's device-writable buffers, from byte
 * `at` of them on. -1 if guest memory refused. */
static int chain_put(const struct virtqueue *vq, const struct vq_chain *c, uint64_t at, const void *src, size_t len)
{
	return vq_chain_write(&vq->mem, c, c->n_readable, c->n, at, src, len);
}

/* ---- serving the queues ---- */

/* Guest -> device control: the driver spins until each message is used, so
 * every chain is used at once, even one that is ignored. */
static void handle_ctrl(struct vcon *v, const struct virtio_console_control *m)
{
	switch (m->event) {
	case VIRTIO_CONSOLE_DEVICE_READY: /* id is VIRTIO_CONSOLE_BAD_ID (~0): not checked */
		if (m->value > 1)
			break;
		v->device_ready = m->value == 1; /* 0: the driver failed to set the device up */
		if (v->device_ready)
			ctrl_send(v, VIRTIO_CONSOLE_PORT_ADD, 1, VCON_CTRL_PENDING);
		return;
	case VIRTIO_CONSOLE_PORT_READY:
		if (m->id != 0 || !v->port_added || m->value > 1)
			break;
		v->port_ready = m->value == 1; /* 0: the driver failed to set the port up */
		if (v->port_ready) {
			ctrl_send(v, VIRTIO_CONSOLE_PORT_NAME, 1, VCON_CTRL_PENDING);
			if (v->host_connected)
				ctrl_send(v, VIRTIO_CONSOLE_PORT_OPEN, 1, VCON_CTRL_PENDING);
		}
		return;
	case VIRTIO_CONSOLE_PORT_OPEN:
		/* port_added, not port_ready: a process may open the port
		 * before the driver's PORT_READY is sent */
		if (m->id != 0 || !v->port_added || m->value > 1)
			break;
		v->guest_connected = m->value == 1;
		return;
	default:
		break;
	}
	v->ignored++;
}

static int serve_ctrl_tx(struct vcon *v, struct virtqueue *vq)
{
	for (unsigned k = 0; k < VCON_BUDGET; k++) {
		struct vq_chain c;
		int r = vq_pop(vq, &c);
		if (r <= 0)
			return r;
		if (c.n_readable != c.n)
			return vq_break(vq, "control transmit chain with device-writable buffers");
		struct virtio_console_control m;
		if (c.readable_len < sizeof(m))
			v->ignored++;
		else if (chain_get(vq, &c, 0, &m, sizeof(m)) < 0)
			return vq_break(vq, "control transmit buffer unreadable");
		else
			handle_ctrl(v, &m); /* any bytes after the header are ignored */
		if (vq_push(vq, c.head, 0) < 0)
			return -1;
	}
	return 1;
}

static int serve_ctrl_rx(struct vcon *v, struct virtqueue *vq)
{
	for (unsigned k = 0; k < VCON_BUDGET; k++) {
		if (v->ctrl_len == 0)
			return 0;
		unsigned i = v->ctrl_head;
		uint16_t event = v->ctrl[i].event, value = v->ctrl[i].value;
		/* the guest's reader must see the bytes before the EOF */
		if (event == VIRTIO_CONSOLE_PORT_OPEN && value == 0 && v->guest_connected && v->to_guest.len)
			return 0;
		uint8_t msg[sizeof(struct virtio_console_control) + VCON_NAME_MAX + 1];
		struct virtio_console_control h = { .id = 0, .event = event, .value = value };
		memcpy(msg, &h, sizeof(h));
		size_t len = sizeof(h);
		if (event == VIRTIO_CONSOLE_PORT_NAME) {
			size_t n = strlen(v->name) + 1; /* with the NUL, as qemu sends it */
			memcpy(msg + len, v->name, n);
			len += n;
		}
		struct vq_chain c;
		int r = vq_pop(vq, &c);
		if (r <= 0)
			return r;
		if (c.n_readable)
			return vq_break(vq, "control receive chain with device-readable buffers");
		if (c.writable_len < len)
			return vq_break(vq, "control receive buffer of %llu bytes cannot hold a %zu-byte message",
					(unsigned long long)c.writable_len, len);
		if (chain_put(vq, &c, 0, msg, len) < 0)
			return vq_break(vq, "control receive buffer unwritable");
		if (vq_push(vq, c.head, (uint32_t)len) < 0)
			return -1;
		v->ctrl_head = (v->ctrl_head + 1) % VCON_CTRL_PENDING;
		v->ctrl_len--;
		if (event == VIRTIO_CONSOLE_PORT_ADD)
			v->port_added = true;
	}
	return 1;
}

/* Guest -> host bytes, as far as the host buffer has room. A chain larger
 * than the room is taken in part and given back, to be continued. */
static int serve_tx(struct vcon *v, struct virtqueue *vq)
{
	struct vcon_fifo *f = &v->from_guest;
	for (unsigned k = 0; k < VCON_BUDGET; k++) {
		if (fifo_space(f) == 0)
			return 0;
		struct vq_chain c;
		int r = vq_pop(vq, &c);
		if (r <= 0)
			return r;
		if (c.n_readable != c.n)
			return vq_break(vq, "transmit chain with device-writable buffers");
		uint64_t at = 0;
		/* continue the chain taken in part (the same head: a driver
		 * that changed the ring meanwhile only garbles its own bytes) */
		if (v->tx_partial && c.head == v->tx_head && v->tx_done < c.readable_len)
			at = v->tx_done;
		v->tx_partial = false;
		while (at < c.readable_len) {
			uint8_t *p;
			size_t n = (size_t)MIN((uint64_t)fifo_back(f, &p), c.readable_len - at);
			if (n == 0)
				break;
			if (chain_get(vq, &c, at, p, n) < 0)
				return vq_break(vq, "transmit buffer unreadable");
			f->len += n;
			at += n;
		}
		if (at < c.readable_len) {
			v->tx_partial = true;
			v->tx_head = c.head;
			v->tx_done = at;
			vq_unpop(vq);
			return 0;
		}
		if (vq_push(vq, c.head, 0) < 0)
			return -1;
	}
	return 1;
}

/* Host -> guest bytes, once a guest process has the port open (the driver
 * drops what arrives before). */
static int serve_rx(struct vcon *v, struct virtqueue *vq)
{
	struct vcon_fifo *f = &v->to_guest;
	if (!v->guest_connected)
		return 0;
	for (unsigned k = 0; k < VCON_BUDGET; k++) {
		if (f->len == 0)
			return 0;
		struct vq_chain c;
		int r = vq_pop(vq, &c);
		if (r <= 0)
			return r;
		if (c.n_readable)
			return vq_break(vq, "receive chain with device-readable buffers");
		uint64_t total = MIN((uint64_t)f->len, c.writable_len), at = 0;
		while (at < total) {
			const uint8_t *p;
			size_t n = (size_t)MIN((uint64_t)fifo_front(f, &p), total - at);
			if (chain_put(vq, &c, at, p, n) < 0)
				return vq_break(vq, "receive buffer unwritable");
			fifo_consume(f, n);
			at += n;
		}
		if (vq_push(vq, c.head, (uint32_t)total) < 0)
			return -1;
	}
	return 1;
}

/* Each serves one queue: 0 done, 1 stopped at the budget, -1 queue broken. */
typedef int (*serve_fn)(struct vcon *v, struct virtqueue *vq);

/* Serve one queue; with EVENT_IDX ask to be notified of what comes next,
 * then serve again what came in before that request was visible. */
static int serve(struct vcon *v, struct virtqueue *vq, serve_fn fn, unsigned q, unsigned *notify_mask)
{
	if (!vq || vq->broken)
		return 0;
	uint16_t old = vq->used_idx;
	int more = fn(v, vq);
	if (more == 0 && vq->event_idx) {
		vq_set_avail_event(vq, vq->last_avail);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		more = fn(v, vq);
	}
	if (vq->used_idx != old && vq_should_notify(vq, old))
		*notify_mask |= 1u << q;
	return more > 0;
}

int vcon_process(struct vcon *v, struct virtqueue *const vqs[VCON_NUM_QUEUES], unsigned *notify_mask)
{
	/* control first: what the driver said decides what may be sent; host
	 * bytes before control messages, so a PORT_OPEN 0 never overtakes them */
	int more = serve(v, vqs[VCON_Q_CTRL_TX], serve_ctrl_tx, VCON_Q_CTRL_TX, notify_mask);
	more |= serve(v, vqs[VCON_Q_RX], serve_rx, VCON_Q_RX, notify_mask);
	more |= serve(v, vqs[VCON_Q_CTRL_RX], serve_ctrl_rx, VCON_Q_CTRL_RX, notify_mask);
	more |= serve(v, vqs[VCON_Q_TX], serve_tx, VCON_Q_TX, notify_mask);
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		if (vqs[q] && vqs[q]->broken)
			return -1;
	return more ? 1 : 0;
}
