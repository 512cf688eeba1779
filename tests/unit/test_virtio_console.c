/* test_virtio_console.c - the virtio-console device against a fake guest
 * memory and a driver written here the way Linux's virtio_console.c acts:
 * the multiport handshake, bytes both ways byte-exact through small
 * buffers, flow control when the host does not read, a held EOF, resets,
 * the window size in config, and hostile rings and control messages that
 * must break a queue or be ignored, never crash. */
#include "unit.h"

#include "devices/virtio_console.h"

#define MEM_SIZE (16u << 20)
#define QSIZE 64
#define QREGION 0x20000ULL
#define QBASE 0x100000ULL /* queue q's rings at QBASE + q * QREGION */
#define DATA 0x200000ULL  /* buffers from here on */
#define CTRL_BUF 4096     /* Linux fills the control receiveq with pages */
#define BAD_ID 0xffffffffu

struct gmem {
	uint8_t *buf;
};

static int gread(void *o, uint64_t gpa, void *b, size_t len)
{
	struct gmem *m = o;
	if (gpa >= MEM_SIZE || len > MEM_SIZE - gpa)
		return -1;
	memcpy(b, m->buf + gpa, len);
	return 0;
}

static int gwrite(void *o, uint64_t gpa, const void *b, size_t len)
{
	struct gmem *m = o;
	if (gpa >= MEM_SIZE || len > MEM_SIZE - gpa)
		return -1;
	memcpy(m->buf + gpa, b, len);
	return 0;
}

/* The driver's view of one queue, and the device's. */
struct dq {
	uint64_t desc, avail, used;
	uint16_t size, avail_idx, used_seen;
	struct virtqueue vq;
};

struct fx {
	struct gmem m;
	struct vq_mem mem;
	struct dq q[VCON_NUM_QUEUES];
	struct virtqueue *vqs[VCON_NUM_QUEUES];
	struct vcon v;
	unsigned notify;
	unsigned ctrl_slot; /* next control transmit descriptor */
};

static uint8_t *gp(struct fx *f, uint64_t gpa)
{
	assert_true(gpa < MEM_SIZE);
	return f->m.buf + gpa;
}

static void dq_init(struct fx *f, unsigned q, uint16_t size, bool event_idx)
{
	struct dq *d = &f->q[q];
	memset(d, 0, sizeof(*d));
	d->size = size;
	d->desc = QBASE + q * QREGION;
	d->avail = d->desc + 0x10000; /* room for queues of up to 4096 */
	d->used = d->desc + 0x14000;
	memset(gp(f, d->desc), 0, QREGION);
	assert_int_equal(vq_init(&d->vq, &f->mem, size, d->desc, d->avail, d->used, event_idx), 0);
	f->vqs[q] = &d->vq;
}

static void dq_desc(struct fx *f, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = gp(f, f->q[q].desc + 16 * i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void dq_avail(struct fx *f, unsigned q, uint16_t head)
{
	struct dq *d = &f->q[q];
	memcpy(gp(f, d->avail + 4 + 2 * (d->avail_idx % d->size)), &head, 2);
	d->avail_idx++;
	memcpy(gp(f, d->avail + 2), &d->avail_idx, 2);
}

/* A one-buffer chain in descriptor i. */
static void dq_add(struct fx *f, unsigned q, unsigned i, uint64_t addr, uint32_t len, bool device_writes)
{
	dq_desc(f, q, i, addr, len, device_writes ? VIRTQ_DESC_F_WRITE : 0, 0);
	dq_avail(f, q, (uint16_t)i);
}

/* The next used entry: 1 and id/len, or 0. */
static int dq_used(struct fx *f, unsigned q, uint32_t *id, uint32_t *len)
{
	struct dq *d = &f->q[q];
	uint16_t idx;
	memcpy(&idx, gp(f, d->used + 2), 2);
	if (idx == d->used_seen)
		return 0;
	uint8_t *e = gp(f, d->used + 4 + 8 * (d->used_seen % d->size));
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
	d->used_seen++;
	return 1;
}

static uint16_t dq_used_idx(struct fx *f, unsigned q)
{
	uint16_t idx;
	memcpy(&idx, gp(f, f->q[q].used + 2), 2);
	return idx;
}

static int process(struct fx *f)
{
	f->notify = 0;
	return vcon_process(&f->v, f->vqs, &f->notify);
}

/* Buffer addresses: control receive buffers, control transmit buffers, and
 * a data area per port queue. */
static uint64_t ctrl_rx_buf(unsigned i)
{
	return DATA + CTRL_BUF * i;
}
static uint64_t ctrl_tx_buf(unsigned i)
{
	return DATA + 0x100000 + 64 * i;
}
#define RX_AREA (DATA + 0x200000)
#define TX_AREA (DATA + 0x600000)
#define BIG_AREA (DATA + 0xa00000)

static struct fx *setup_queues(bool event_idx, bool port_queues)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->m.buf = calloc(1, MEM_SIZE);
	assert_non_null(f->m.buf);
	f->mem = (struct vq_mem){ .read = gread, .write = gwrite, .opaque = &f->m };
	struct vmsh_err err = { 0 };
	assert_int_equal(vcon_init(&f->v, "vmsh-1234", &err), 0);
	dq_init(f, VCON_Q_CTRL_RX, QSIZE, event_idx);
	dq_init(f, VCON_Q_CTRL_TX, QSIZE, event_idx);
	if (port_queues) {
		dq_init(f, VCON_Q_RX, QSIZE, event_idx);
		dq_init(f, VCON_Q_TX, QSIZE, event_idx);
	}
	return f;
}

static void teardown(struct fx *f)
{
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		if (f->vqs[q])
			vq_free(f->vqs[q]);
	vcon_free(&f->v);
	free(f->m.buf);
	free(f);
}

/* Linux's fill_queue on the control receiveq: page-sized buffers. */
static void fill_ctrl_rx(struct fx *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		dq_add(f, VCON_Q_CTRL_RX, i, ctrl_rx_buf(i), CTRL_BUF, true);
}

/* A control message made available, not yet processed; its descriptor. */
static unsigned post_ctrl(struct fx *f, uint32_t id, uint16_t event, uint16_t value)
{
	unsigned i = f->ctrl_slot++ % 32; /* 32.. are the tests' own */
	struct virtio_console_control m = { id, event, value };
	memcpy(gp(f, ctrl_tx_buf(i)), &m, sizeof(m));
	dq_add(f, VCON_Q_CTRL_TX, i, ctrl_tx_buf(i), sizeof(m), false);
	return i;
}

/* Linux's __send_control_msg: one 8-byte buffer, kick, spin until used. */
static void send_ctrl(struct fx *f, uint32_t id, uint16_t event, uint16_t value)
{
	unsigned i = post_ctrl(f, id, event, value);
	assert_int_equal(process(f), 0);
	uint32_t id_used, len;
	assert_int_equal(dq_used(f, VCON_Q_CTRL_TX, &id_used, &len), 1); /* no spinning forever */
	assert_int_equal(id_used, i);
	assert_int_equal(len, 0);
}

/* Linux's control_work_handler: take one message from the control receiveq
 * and give the buffer back. Returns 1 with the message, 0 if none. */
static int recv_ctrl(struct fx *f, struct virtio_console_control *m, char *payload, size_t cap, uint32_t *len_out)
{
	uint32_t id, len;
	if (!dq_used(f, VCON_Q_CTRL_RX, &id, &len))
		return 0;
	assert_true(id < QSIZE);
	assert_true(len >= sizeof(*m) && len <= CTRL_BUF);
	memcpy(m, gp(f, ctrl_rx_buf(id)), sizeof(*m));
	if (payload) {
		size_t n = len - sizeof(*m) < cap ? len - sizeof(*m) : cap;
		memcpy(payload, gp(f, ctrl_rx_buf(id) + sizeof(*m)), n);
	}
	if (len_out)
		*len_out = len;
	dq_add(f, VCON_Q_CTRL_RX, id, ctrl_rx_buf(id), CTRL_BUF, true);
	return 1;
}

static void expect_ctrl(struct fx *f, uint16_t event, uint16_t value)
{
	struct virtio_console_control m;
	assert_int_equal(recv_ctrl(f, &m, NULL, 0, NULL), 1);
	assert_int_equal(m.id, 0);
	assert_int_equal(m.event, event);
	assert_int_equal(m.value, value);
}

static void expect_no_ctrl(struct fx *f)
{
	struct virtio_console_control m;
	assert_int_equal(recv_ctrl(f, &m, NULL, 0, NULL), 0);
}

/* Receive buffers of rx_len bytes in all descriptors of the port's receiveq. */
static void fill_rx(struct fx *f, uint32_t rx_len)
{
	for (unsigned i = 0; i < QSIZE; i++)
		dq_add(f, VCON_Q_RX, i, RX_AREA + 0x10000ULL * i, rx_len, true);
}

/* The whole handshake up to a guest process holding the port open. */
static void handshake(struct fx *f, uint32_t rx_len)
{
	fill_ctrl_rx(f, 8);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	fill_rx(f, rx_len);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_NAME, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);
	expect_no_ctrl(f);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
	assert_true(f->v.guest_connected);
}

/* ---- tests ---- */

static void test_handshake_as_linux_does_it(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, false); /* Linux sets up all four, but be lenient */
	assert_int_equal(process(f), 0);
	fill_ctrl_rx(f, 8);
	assert_int_equal(process(f), 0);
	expect_no_ctrl(f); /* nothing before DEVICE_READY */

	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	assert_true(f->v.device_ready);
	assert_true(f->notify & (1u << VCON_Q_CTRL_RX));
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	assert_true(f->v.port_added);
	assert_false(f->v.port_ready);

	/* add_port: the port's queues get buffers, then PORT_READY */
	dq_init(f, VCON_Q_RX, QSIZE, false);
	dq_init(f, VCON_Q_TX, QSIZE, false);
	fill_rx(f, 4096);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	assert_true(f->v.port_ready);
	struct virtio_console_control m;
	char name[64] = { 0 };
	uint32_t len;
	assert_int_equal(recv_ctrl(f, &m, name, sizeof(name), &len), 1);
	assert_int_equal(m.id, 0);
	assert_int_equal(m.event, VIRTIO_CONSOLE_PORT_NAME);
	/* Linux: name_size = len - sizeof(cpkt) + 1, copied up to the NUL */
	assert_int_equal(len, sizeof(m) + strlen("vmsh-1234") + 1);
	assert_string_equal(name, "vmsh-1234");
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1); /* host connected: reads don't see EOF */
	expect_no_ctrl(f);                           /* and never CONSOLE_PORT */

	/* bytes for the guest wait until a process opens the port */
	assert_int_equal(vcon_host_write(&f->v, "hello", 5), 5);
	assert_int_equal(process(f), 0);
	uint32_t id;
	assert_int_equal(dq_used(f, VCON_Q_RX, &id, &len), 0);
	assert_int_equal(vcon_host_unsent(&f->v), 5);

	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
	assert_true(f->v.guest_connected);
	assert_true(f->notify & (1u << VCON_Q_RX));
	assert_int_equal(dq_used(f, VCON_Q_RX, &id, &len), 1);
	assert_int_equal(id, 0);
	assert_int_equal(len, 5);
	assert_memory_equal(gp(f, RX_AREA), "hello", 5);
	assert_int_equal(vcon_host_unsent(&f->v), 0);

	/* the guest writes */
	memcpy(gp(f, TX_AREA), "world!", 6);
	dq_add(f, VCON_Q_TX, 0, TX_AREA, 6, false);
	assert_int_equal(process(f), 0);
	assert_true(f->notify & (1u << VCON_Q_TX));
	assert_int_equal(dq_used(f, VCON_Q_TX, &id, &len), 1);
	assert_int_equal(len, 0);
	assert_int_equal(vcon_host_pending(&f->v), 6);
	char buf[16];
	assert_int_equal(vcon_host_read(&f->v, buf, sizeof(buf)), 6);
	assert_memory_equal(buf, "world!", 6);
	assert_int_equal(vcon_host_pending(&f->v), 0);

	/* the process closes the port; the host closes its end */
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 0);
	assert_false(f->v.guest_connected);
	assert_int_equal(vcon_set_host_connected(&f->v, false), 0);
	assert_int_equal(process(f), 0);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 0);
	assert_int_equal(vcon_set_host_connected(&f->v, true), 0);
	assert_int_equal(process(f), 0);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);
	expect_no_ctrl(f);
	assert_int_equal(f->v.ignored, 0);
	teardown(f);
}

static void test_host_open_state_before_the_port_is_ready(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	/* the host end closed before the guest got the port: no PORT_OPEN at all */
	assert_int_equal(vcon_set_host_connected(&f->v, false), 0);
	fill_ctrl_rx(f, 8);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_NAME, 1);
	expect_no_ctrl(f);
	assert_int_equal(vcon_set_host_connected(&f->v, true), 0);
	assert_int_equal(process(f), 0);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);
	teardown(f);
}

static void test_eof_waits_for_the_bytes_before_it(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	fill_ctrl_rx(f, 8);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1); /* no receive buffers yet */
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_NAME, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
	assert_int_equal(vcon_host_write(&f->v, "bye\n", 4), 4);
	assert_int_equal(vcon_set_host_connected(&f->v, false), 0);
	assert_int_equal(process(f), 0);
	expect_no_ctrl(f); /* the EOF would overtake "bye" */
	dq_add(f, VCON_Q_RX, 0, RX_AREA, 2, true);
	dq_add(f, VCON_Q_RX, 1, RX_AREA + 2, 2, true);
	assert_int_equal(process(f), 0);
	uint32_t id, len;
	assert_int_equal(dq_used(f, VCON_Q_RX, &id, &len), 1);
	assert_int_equal(dq_used(f, VCON_Q_RX, &id, &len), 1);
	assert_memory_equal(gp(f, RX_AREA), "bye\n", 4);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 0);
	teardown(f);
}

/* Move 1 MiB each way through small buffers (receive buffers of 100 bytes,
 * transmit chains of 1..3 descriptors with random lengths), the host
 * reading and writing random amounts; both streams arrive byte-exact. */
static void stream_both_ways(bool event_idx)
{
	enum { TOTAL = 1 << 20, TX_SLOTS = QSIZE / 3, SLOT_BYTES = 0x1000 };
	struct fx *f = setup_queues(event_idx, true);
	handshake(f, 100);
	struct unit_rng rng = { event_idx ? 11 : 12 };
	uint8_t *h_src = malloc(TOTAL), *h_dst = malloc(TOTAL), *g_src = malloc(TOTAL), *g_dst = malloc(TOTAL);
	assert_true(h_src && h_dst && g_src && g_dst);
	unit_rand_fill(&rng, h_src, TOTAL);
	unit_rand_fill(&rng, g_src, TOTAL);
	size_t h_sent = 0, h_got = 0, g_sent = 0, g_got = 0;
	bool slot_busy[TX_SLOTS] = { 0 };
	unsigned rounds = 0;
	while (h_got < TOTAL || g_got < TOTAL) {
		assert_true(++rounds < 100000);
		/* host writes */
		size_t want = unit_rand_below(&rng, 20000);
		if (want > TOTAL - h_sent)
			want = TOTAL - h_sent;
		h_sent += vcon_host_write(&f->v, h_src + h_sent, want);
		/* guest writes chains into free slots */
		for (unsigned s = 0; s < TX_SLOTS && g_sent < TOTAL; s++) {
			if (slot_busy[s] || unit_rand_below(&rng, 3) == 0)
				continue;
			unsigned nd = 1 + (unsigned)unit_rand_below(&rng, 3);
			uint16_t first = (uint16_t)(3 * s);
			for (unsigned d = 0; d < nd && g_sent < TOTAL; d++) {
				uint32_t len = 1 + (uint32_t)unit_rand_below(&rng, 700);
				if (len > TOTAL - g_sent)
					len = (uint32_t)(TOTAL - g_sent);
				uint64_t gpa = TX_AREA + (uint64_t)SLOT_BYTES * s + 1024 * d;
				memcpy(gp(f, gpa), g_src + g_sent, len);
				g_sent += len;
				bool last = d + 1 == nd || g_sent == TOTAL;
				dq_desc(f, VCON_Q_TX, first + d, gpa, len, last ? 0 : VIRTQ_DESC_F_NEXT,
					(uint16_t)(first + d + 1));
				if (last)
					break;
			}
			dq_avail(f, VCON_Q_TX, first);
			slot_busy[s] = true;
		}
		int rc = process(f);
		assert_true(rc == 0 || rc == 1);
		/* guest reads its receive buffers and gives them back */
		uint32_t id, len;
		while (dq_used(f, VCON_Q_RX, &id, &len)) {
			assert_true(id < QSIZE && len >= 1 && len <= 100 && h_got + len <= TOTAL);
			memcpy(h_dst + h_got, gp(f, RX_AREA + 0x10000ULL * id), len);
			h_got += len;
			dq_add(f, VCON_Q_RX, id, RX_AREA + 0x10000ULL * id, 100, true);
		}
		while (dq_used(f, VCON_Q_TX, &id, &len)) {
			assert_true(id % 3 == 0 && id / 3 < TX_SLOTS && slot_busy[id / 3]);
			assert_int_equal(len, 0);
			slot_busy[id / 3] = false;
		}
		/* host reads */
		size_t n = unit_rand_below(&rng, 70000);
		g_got += vcon_host_read(&f->v, g_dst + g_got, n < TOTAL - g_got ? n : TOTAL - g_got);
	}
	assert_memory_equal(h_src, h_dst, TOTAL);
	assert_memory_equal(g_src, g_dst, TOTAL);
	assert_int_equal(vcon_host_pending(&f->v), 0);
	assert_int_equal(vcon_host_unsent(&f->v), 0);
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		assert_false(f->vqs[q]->broken);
	if (event_idx) /* the device asks to hear of the next buffers */
		assert_int_not_equal(f->q[VCON_Q_TX].vq.last_avail, 0);
	free(h_src);
	free(h_dst);
	free(g_src);
	free(g_dst);
	teardown(f);
}

static void test_one_mib_each_way(void **state)
{
	(void)state;
	stream_both_ways(false);
}

static void test_one_mib_each_way_event_idx(void **state)
{
	(void)state;
	stream_both_ways(true);
}

static void test_full_host_buffer_leaves_chains_in_the_ring(void **state)
{
	(void)state;
	enum { CHUNK = 64 << 10, N = 8 };
	struct fx *f = setup_queues(false, true);
	handshake(f, 4096);
	struct unit_rng rng = { 5 };
	uint8_t *src = malloc(CHUNK * N + (512 << 10)), *dst = malloc(CHUNK * N + (512 << 10));
	assert_true(src && dst);
	unit_rand_fill(&rng, src, CHUNK * N + (512 << 10));
	memcpy(gp(f, BIG_AREA), src, CHUNK * N);
	for (unsigned i = 0; i < N; i++)
		dq_add(f, VCON_Q_TX, i, BIG_AREA + (uint64_t)CHUNK * i, CHUNK, false);
	assert_int_equal(process(f), 0);
	/* 256 KiB fit: four chains used, the rest stay available */
	assert_int_equal(dq_used_idx(f, VCON_Q_TX), VCON_BUF_BYTES / CHUNK);
	assert_int_equal(f->q[VCON_Q_TX].vq.last_avail, VCON_BUF_BYTES / CHUNK);
	assert_int_equal(vcon_host_pending(&f->v), VCON_BUF_BYTES);
	assert_int_equal(process(f), 0); /* nothing changes without room */
	assert_int_equal(dq_used_idx(f, VCON_Q_TX), VCON_BUF_BYTES / CHUNK);

	size_t got = vcon_host_read(&f->v, dst, 10000);
	assert_int_equal(got, 10000);
	assert_int_equal(process(f), 0);
	/* the fifth chain is taken in part, not used yet */
	assert_int_equal(dq_used_idx(f, VCON_Q_TX), VCON_BUF_BYTES / CHUNK);
	assert_int_equal(vcon_host_pending(&f->v), VCON_BUF_BYTES);
	while (got < (size_t)CHUNK * N) {
		got += vcon_host_read(&f->v, dst + got, 30000);
		assert_true(process(f) == 0);
	}
	assert_int_equal(dq_used_idx(f, VCON_Q_TX), N);
	assert_memory_equal(src, dst, CHUNK * N);

	/* one chain larger than the whole host buffer: 512 KiB in 8 buffers */
	memcpy(gp(f, BIG_AREA), src + CHUNK * N, 512 << 10);
	for (unsigned d = 0; d < 8; d++)
		dq_desc(f, VCON_Q_TX, 10 + d, BIG_AREA + (uint64_t)CHUNK * d, CHUNK, d < 7 ? VIRTQ_DESC_F_NEXT : 0,
			(uint16_t)(11 + d));
	dq_avail(f, VCON_Q_TX, 10);
	got = 0;
	for (unsigned k = 0; k < 100 && dq_used_idx(f, VCON_Q_TX) == N; k++) {
		assert_int_equal(process(f), 0);
		got += vcon_host_read(&f->v, dst + got, 100000);
	}
	got += vcon_host_read(&f->v, dst + got, 512 << 10);
	assert_int_equal(dq_used_idx(f, VCON_Q_TX), N + 1);
	assert_int_equal(got, 512 << 10);
	assert_memory_equal(src + CHUNK * N, dst, 512 << 10);
	assert_false(f->vqs[VCON_Q_TX]->broken);
	free(src);
	free(dst);
	teardown(f);
}

static void test_host_buffer_limits(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	uint8_t *big = calloc(1, VCON_BUF_BYTES + 100);
	assert_non_null(big);
	assert_int_equal(vcon_host_space(&f->v), VCON_BUF_BYTES);
	assert_int_equal(vcon_host_write(&f->v, big, VCON_BUF_BYTES + 100), VCON_BUF_BYTES);
	assert_int_equal(vcon_host_space(&f->v), 0);
	assert_int_equal(vcon_host_write(&f->v, big, 1), 0);
	assert_int_equal(vcon_host_read(&f->v, big, 10), 0);
	free(big);
	teardown(f);
}

static void test_window_size_in_config(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, false);
	assert_int_equal(vcon_features(), (1ULL << VIRTIO_CONSOLE_F_SIZE) | (1ULL << VIRTIO_CONSOLE_F_MULTIPORT));
	uint8_t cfg[32];
	memset(cfg, 0xaa, sizeof(cfg));
	assert_int_equal(vcon_config(&f->v, cfg, sizeof(cfg)), VCON_CONFIG_BYTES);
	uint16_t cols, rows;
	uint32_t ports, emerg;
	memcpy(&cols, cfg, 2);
	memcpy(&rows, cfg + 2, 2);
	memcpy(&ports, cfg + 4, 4);
	memcpy(&emerg, cfg + 8, 4);
	assert_int_equal(cols, 80);
	assert_int_equal(rows, 24);
	assert_int_equal(ports, 1);
	assert_int_equal(emerg, 0);
	assert_int_equal(cfg[12], 0xaa);
	assert_true(vcon_set_size(&f->v, 132, 43));
	assert_false(vcon_set_size(&f->v, 132, 43));
	vcon_config(&f->v, cfg, sizeof(cfg));
	memcpy(&cols, cfg, 2);
	memcpy(&rows, cfg + 2, 2);
	assert_int_equal(cols, 132);
	assert_int_equal(rows, 43);
	memset(cfg, 0xaa, sizeof(cfg));
	assert_int_equal(vcon_config(&f->v, cfg, 3), 3);
	assert_int_equal(cfg[3], 0xaa);
	teardown(f);
}

static void test_port_names(void **state)
{
	(void)state;
	struct vcon v;
	struct vmsh_err err = { 0 };
	char longname[VCON_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(vcon_init(&v, "", &err), -1);
	assert_int_equal(vcon_init(&v, longname, &err), -1);
	assert_int_equal(vcon_init(&v, "a/b", &err), -1);
	assert_non_null(strstr(err.msg, "a/b"));
	assert_int_equal(vcon_init(&v, "a b", &err), -1);
	assert_int_equal(vcon_init(&v, "a\nb", &err), -1);
	longname[VCON_NAME_MAX] = 0;
	assert_int_equal(vcon_init(&v, longname, &err), 0);
	vcon_free(&v);
}

/* A long name still reaches a guest whose control buffer is split. */
static void test_name_into_a_split_buffer(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	vcon_free(&f->v);
	struct vmsh_err err;
	char name[VCON_NAME_MAX + 1];
	memset(name, 'n', VCON_NAME_MAX);
	name[VCON_NAME_MAX] = 0;
	assert_int_equal(vcon_init(&f->v, name, &err), 0);
	fill_ctrl_rx(f, 1);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	uint32_t id, len;
	assert_int_equal(dq_used(f, VCON_Q_CTRL_RX, &id, &len), 1); /* PORT_ADD, buffer not given back */
	dq_desc(f, VCON_Q_CTRL_RX, 5, ctrl_rx_buf(5), 10, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 6);
	dq_desc(f, VCON_Q_CTRL_RX, 6, ctrl_rx_buf(6), 100, VIRTQ_DESC_F_WRITE, 0);
	dq_avail(f, VCON_Q_CTRL_RX, 5);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	assert_int_equal(dq_used(f, VCON_Q_CTRL_RX, &id, &len), 1);
	assert_int_equal(id, 5);
	assert_int_equal(len, 8 + VCON_NAME_MAX + 1);
	uint16_t event;
	memcpy(&event, gp(f, ctrl_rx_buf(5) + 4), 2);
	assert_int_equal(event, VIRTIO_CONSOLE_PORT_NAME);
	assert_memory_equal(gp(f, ctrl_rx_buf(5) + 8), name, 2);
	assert_memory_equal(gp(f, ctrl_rx_buf(6)), name + 2, VCON_NAME_MAX - 2);
	assert_int_equal(*gp(f, ctrl_rx_buf(6) + VCON_NAME_MAX - 2), 0);
	teardown(f);
}

static void test_hostile_control_messages_are_ignored(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	fill_ctrl_rx(f, 8);
	/* before the port exists: PORT_READY and PORT_OPEN mean nothing */
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
	assert_false(f->v.port_ready);
	assert_false(f->v.guest_connected);
	expect_no_ctrl(f);
	assert_int_equal(f->v.ignored, 2);

	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	unsigned ign = f->v.ignored;
	send_ctrl(f, 1, VIRTIO_CONSOLE_PORT_READY, 1);      /* no port 1 */
	send_ctrl(f, 0x7fffffff, VIRTIO_CONSOLE_PORT_OPEN, 1);
	send_ctrl(f, 0, 99, 1);                               /* unknown event */
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_NAME, 1);         /* device -> driver only */
	send_ctrl(f, 0, VIRTIO_CONSOLE_RESIZE, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 7);         /* not a boolean */
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 2);
	assert_int_equal(f->v.ignored, ign + 7);
	assert_true(f->v.device_ready);
	assert_false(f->v.port_ready);
	assert_false(f->v.guest_connected);
	expect_no_ctrl(f);

	/* short: 4 bytes; the driver still gets its buffer back */
	dq_add(f, VCON_Q_CTRL_TX, 40, ctrl_tx_buf(40), 4, false);
	assert_int_equal(process(f), 0);
	uint32_t id, len;
	assert_int_equal(dq_used(f, VCON_Q_CTRL_TX, &id, &len), 1);
	assert_int_equal(id, 40);
	assert_int_equal(f->v.ignored, ign + 8);

	/* a header split over two buffers is a header */
	struct virtio_console_control m = { 0, VIRTIO_CONSOLE_PORT_READY, 1 };
	memcpy(gp(f, ctrl_tx_buf(41)), &m, 3);
	memcpy(gp(f, ctrl_tx_buf(42)), (uint8_t *)&m + 3, 5);
	dq_desc(f, VCON_Q_CTRL_TX, 41, ctrl_tx_buf(41), 3, VIRTQ_DESC_F_NEXT, 42);
	dq_desc(f, VCON_Q_CTRL_TX, 42, ctrl_tx_buf(42), 5, 0, 0);
	dq_avail(f, VCON_Q_CTRL_TX, 41);
	assert_int_equal(process(f), 0);
	assert_true(f->v.port_ready);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_NAME, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);

	/* a huge message: 8 MiB of which only the header counts */
	m = (struct virtio_console_control){ 0, VIRTIO_CONSOLE_PORT_OPEN, 1 };
	memcpy(gp(f, BIG_AREA - 0x400000), &m, sizeof(m));
	dq_add(f, VCON_Q_CTRL_TX, 43, BIG_AREA - 0x400000, 8u << 20, false);
	assert_int_equal(process(f), 0);
	assert_int_equal(dq_used(f, VCON_Q_CTRL_TX, &id, &len), 1);
	assert_true(f->v.guest_connected);

	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		assert_false(f->vqs[q]->broken);
	teardown(f);
}

static void test_control_flood_is_answered_once(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	fill_ctrl_rx(f, 1);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1); /* PORT_ADD takes the only buffer */
	assert_true(f->v.port_added);
	for (int i = 0; i < 200; i++) {
		send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
		send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
		send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, (uint16_t)(i & 1));
	}
	assert_int_equal(f->v.ctrl_len, 3);
	for (unsigned i = 1; i < 9; i++)
		dq_add(f, VCON_Q_CTRL_RX, i, ctrl_rx_buf(i), CTRL_BUF, true);
	assert_int_equal(process(f), 0);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_NAME, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_OPEN, 1);
	expect_no_ctrl(f);
	teardown(f);
}

static void test_host_control_queue_is_bounded(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	fill_ctrl_rx(f, 2);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1); /* NAME sent, OPEN 1 waits */
	assert_int_equal(f->v.ctrl_len, 1);
	int rc = 0;
	unsigned k;
	for (k = 0; k < 100 && rc == 0; k++)
		rc = vcon_set_host_connected(&f->v, k % 2 == 0);
	assert_int_equal(rc, -1);
	assert_true(f->v.ctrl_len < VCON_CTRL_PENDING); /* room kept for the guest's answers */
	bool state_kept = f->v.host_connected;
	/* the guest still gets answers */
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	assert_int_equal(f->v.ctrl_len, VCON_CTRL_PENDING - 3 + 1);
	assert_int_equal(f->v.host_connected, state_kept);
	/* buffers come: everything goes out in order, OPENs alternating */
	for (unsigned i = 0; i < 16; i++)
		dq_add(f, VCON_Q_CTRL_RX, 8 + i, ctrl_rx_buf(8 + i), CTRL_BUF, true);
	assert_int_equal(process(f), 0);
	assert_int_equal(f->v.ctrl_len, 0);
	teardown(f);
}

static void expect_queue_broken(struct fx *f, unsigned q, const char *why)
{
	assert_int_equal(process(f), -1);
	assert_true(f->vqs[q]->broken);
	if (!strstr(f->vqs[q]->why, why))
		print_message("why: %s\n", f->vqs[q]->why);
	assert_non_null(strstr(f->vqs[q]->why, why));
	assert_int_equal(process(f), -1); /* and stays so, without crashing */
}

static void test_chains_in_the_wrong_direction_break_the_queue(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	dq_add(f, VCON_Q_CTRL_TX, 0, ctrl_tx_buf(0), 8, true);
	expect_queue_broken(f, VCON_Q_CTRL_TX, "device-writable");
	teardown(f);

	f = setup_queues(false, true);
	dq_add(f, VCON_Q_CTRL_RX, 0, ctrl_rx_buf(0), CTRL_BUF, false);
	post_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_queue_broken(f, VCON_Q_CTRL_RX, "device-readable");
	teardown(f);

	f = setup_queues(false, true);
	handshake(f, 64);
	dq_add(f, VCON_Q_TX, 0, TX_AREA, 8, true);
	expect_queue_broken(f, VCON_Q_TX, "device-writable");
	teardown(f);

	f = setup_queues(false, true);
	fill_ctrl_rx(f, 8);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_ctrl(f, VIRTIO_CONSOLE_PORT_ADD, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	send_ctrl(f, 0, VIRTIO_CONSOLE_PORT_OPEN, 1);
	vcon_host_write(&f->v, "x", 1);
	dq_add(f, VCON_Q_RX, 0, RX_AREA, 8, false);
	expect_queue_broken(f, VCON_Q_RX, "device-readable");
	teardown(f);
}

static void test_tiny_control_buffer_breaks_the_queue(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	dq_add(f, VCON_Q_CTRL_RX, 0, ctrl_rx_buf(0), 8, true); /* a PORT_ADD fits */
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	uint32_t id, len;
	assert_int_equal(dq_used(f, VCON_Q_CTRL_RX, &id, &len), 1);
	assert_int_equal(len, 8);
	dq_add(f, VCON_Q_CTRL_RX, 0, ctrl_rx_buf(0), 8, true); /* the same small buffer again */
	post_ctrl(f, 0, VIRTIO_CONSOLE_PORT_READY, 1);
	expect_queue_broken(f, VCON_Q_CTRL_RX, "cannot hold");
	/* the transmit side still works */
	assert_true(f->v.port_ready);
	teardown(f);

	f = setup_queues(false, true);
	dq_add(f, VCON_Q_CTRL_RX, 0, ctrl_rx_buf(0), 4, true);
	post_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	expect_queue_broken(f, VCON_Q_CTRL_RX, "cannot hold");
	teardown(f);
}

static void test_reset_then_handshake_again(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	handshake(f, 4096);
	assert_int_equal(vcon_host_write(&f->v, "0123456789", 10), 10);
	vcon_reset(&f->v);
	assert_false(f->v.device_ready || f->v.port_added || f->v.port_ready || f->v.guest_connected);
	assert_int_equal(vcon_host_unsent(&f->v), 10);
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++) {
		vq_free(f->vqs[q]);
		f->vqs[q] = NULL;
	}
	assert_int_equal(process(f), 0);
	/* the driver comes back with fresh queues */
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		dq_init(f, q, QSIZE, true);
	handshake(f, 4096);
	uint32_t id, len;
	assert_int_equal(dq_used(f, VCON_Q_RX, &id, &len), 1);
	assert_int_equal(len, 10);
	assert_memory_equal(gp(f, RX_AREA + 0x10000ULL * id), "0123456789", 10);
	teardown(f);
}

static void test_budget_bounds_one_call(void **state)
{
	(void)state;
	enum { BIG_Q = 4096 };
	struct fx *f = setup_queues(false, true);
	vq_free(f->vqs[VCON_Q_CTRL_TX]);
	dq_init(f, VCON_Q_CTRL_TX, BIG_Q, false);
	struct virtio_console_control m = { 0, 99, 0 };
	memcpy(gp(f, ctrl_tx_buf(0)), &m, sizeof(m));
	for (unsigned i = 0; i < BIG_Q; i++)
		dq_add(f, VCON_Q_CTRL_TX, i, ctrl_tx_buf(0), sizeof(m), false);
	assert_int_equal(process(f), 1);
	assert_int_equal(dq_used_idx(f, VCON_Q_CTRL_TX), VCON_BUDGET);
	unsigned calls = 1;
	while (process(f) == 1)
		assert_true(++calls < 10);
	assert_int_equal(dq_used_idx(f, VCON_Q_CTRL_TX), BIG_Q);
	assert_int_equal(f->v.ignored, BIG_Q);
	teardown(f);
}

static void test_notifications_follow_the_driver(void **state)
{
	(void)state;
	struct fx *f = setup_queues(false, true);
	uint16_t no_irq = 1; /* Linux's c_ovq has no callback */
	memcpy(gp(f, f->q[VCON_Q_CTRL_TX].avail), &no_irq, 2);
	fill_ctrl_rx(f, 8);
	send_ctrl(f, BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
	assert_false(f->notify & (1u << VCON_Q_CTRL_TX));
	assert_true(f->notify & (1u << VCON_Q_CTRL_RX));
	assert_int_equal(process(f), 0);
	assert_int_equal(f->notify, 0); /* nothing used, nothing to say */
	teardown(f);
}

static void test_random_rings_never_crash(void **state)
{
	(void)state;
	struct unit_rng rng = { 99 };
	for (int round = 0; round < 1000; round++) {
		struct fx *f = setup_queues(round & 1, true);
		if (round % 3 == 0)
			handshake(f, 64);
		vcon_host_write(&f->v, "some bytes for the guest", 24);
		for (unsigned q = 0; q < VCON_NUM_QUEUES; q++) {
			struct dq *d = &f->q[q];
			unit_rand_fill(&rng, gp(f, d->desc), 16 * QSIZE);
			/* keep many descriptors inside memory so chains get walked */
			for (unsigned i = 0; i < QSIZE; i++) {
				if (unit_rand_below(&rng, 4) == 0)
					continue;
				uint64_t a = DATA + unit_rand_below(&rng, MEM_SIZE - DATA - 0x10000);
				uint32_t len = (uint32_t)unit_rand_below(&rng, 0x10000);
				uint16_t flags = (uint16_t)unit_rand_below(&rng, 4);
				uint16_t next = (uint16_t)unit_rand_below(&rng, QSIZE + 2);
				dq_desc(f, q, i, a, len, flags, next);
			}
			/* control messages with plausible events and ids */
			for (unsigned i = 0; i < 64; i++) {
				struct virtio_console_control m = { (uint32_t)unit_rand_below(&rng, 3),
								    (uint16_t)unit_rand_below(&rng, 9),
								    (uint16_t)unit_rand_below(&rng, 3) };
				memcpy(gp(f, ctrl_tx_buf(i)), &m, sizeof(m));
			}
			uint16_t n = (uint16_t)unit_rand_below(&rng, QSIZE + 1);
			for (uint16_t k = 0; k < n; k++)
				dq_avail(f, q, (uint16_t)unit_rand_below(&rng, QSIZE + 1));
		}
		for (int k = 0; k < 4; k++) {
			int rc = process(f);
			assert_true(rc >= -1 && rc <= 1);
			char buf[256];
			vcon_host_read(&f->v, buf, sizeof(buf));
		}
		teardown(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_as_linux_does_it),
		cmocka_unit_test(test_host_open_state_before_the_port_is_ready),
		cmocka_unit_test(test_eof_waits_for_the_bytes_before_it),
		cmocka_unit_test(test_one_mib_each_way),
		cmocka_unit_test(test_one_mib_each_way_event_idx),
		cmocka_unit_test(test_full_host_buffer_leaves_chains_in_the_ring),
		cmocka_unit_test(test_host_buffer_limits),
		cmocka_unit_test(test_window_size_in_config),
		cmocka_unit_test(test_port_names),
		cmocka_unit_test(test_name_into_a_split_buffer),
		cmocka_unit_test(test_hostile_control_messages_are_ignored),
		cmocka_unit_test(test_control_flood_is_answered_once),
		cmocka_unit_test(test_host_control_queue_is_bounded),
		cmocka_unit_test(test_chains_in_the_wrong_direction_break_the_queue),
		cmocka_unit_test(test_tiny_control_buffer_breaks_the_queue),
		cmocka_unit_test(test_reset_then_handshake_again),
		cmocka_unit_test(test_budget_bounds_one_call),
		cmocka_unit_test(test_notifications_follow_the_driver),
		cmocka_unit_test(test_random_rings_never_crash),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
