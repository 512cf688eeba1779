/* test_adopt.c - a device a dead vmsh run left in the guest, taken over by
 * a later run from the record the dead one kept (devices/adopt.h): the
 * record is written by a live device driven through its registers like a
 * guest driver does; the "later run" is a second struct vdev on the same
 * register page and guest memory. */
#include "unit.h"

#include "devices/adopt.h"
#include "devices/vdev.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_console.h"

#define MEM_SIZE (1u << 20)
#define QSIZE 8
#define RINGS 0x1000 /* queue q: desc at RINGS + q*0x1000, avail +0x400, used +0x800 */
#define DATA 0x20000
#define GPA 0xd0000000ULL

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

static unsigned never(struct vdev *d, unsigned queues)
{
	(void)d;
	(void)queues;
	return 0; /* the live device serves nothing by itself here */
}

static const struct vdev_kind live_kind = { .name = "live", .process = never };

struct fx {
	struct gmem m;
	struct vq_mem mem;
	uint8_t *page;
	struct vdev live, later;
	struct vdev_record rec;
	uint16_t avail_idx[VDEV_REC_QUEUES];
};

static void wr32(struct vdev *d, uint32_t off, uint32_t v)
{
	uint8_t data[8] = { 0 };
	memcpy(data, &v, 4);
	vdev_mmio(d, off, true, data, 4);
}

static uint64_t q_desc(unsigned q) { return RINGS + 0x1000ULL * q; }
static uint64_t q_avail(unsigned q) { return q_desc(q) + 0x400; }
static uint64_t q_used(unsigned q) { return q_desc(q) + 0x800; }

/* What the guest's virtio_mmio driver does to set a device up. */
static void driver_setup_until(struct vdev *d, unsigned n_queues, bool event_idx, bool driver_ok)
{
	wr32(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr32(d, VIRTIO_MMIO_DRIVER_FEATURES, event_idx ? 1u << VIRTIO_F_EVENT_IDX : 0);
	wr32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr32(d, VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 */
	wr32(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	for (unsigned q = 0; q < n_queues; q++) {
		wr32(d, VIRTIO_MMIO_QUEUE_SEL, q);
		wr32(d, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
		wr32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q_desc(q));
		wr32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)q_avail(q));
		wr32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)q_used(q));
		wr32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	}
	if (driver_ok)
		wr32(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
						    VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
}

static void driver_setup(struct vdev *d, unsigned n_queues, bool event_idx)
{
	driver_setup_until(d, n_queues, event_idx, true);
}

static void set_desc(struct fx *f, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = f->m.buf + q_desc(q) + 16 * i;
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void make_avail(struct fx *f, unsigned q, uint16_t head)
{
	memcpy(f->m.buf + q_avail(q) + 4 + 2 * (f->avail_idx[q] % QSIZE), &head, 2);
	f->avail_idx[q]++;
	memcpy(f->m.buf + q_avail(q) + 2, &f->avail_idx[q], 2);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
	uint16_t v;
	memcpy(&v, f->m.buf + q_used(q) + 2, 2);
	return v;
}

/* A block request at head h: header, 512 data bytes, status byte. */
static void blk_request(struct fx *f, uint16_t h)
{
	uint64_t base = DATA + 0x1000ULL * h;
	set_desc(f, 0, h, base, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(h + 1));
	set_desc(f, 0, h + 1u, base + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, (uint16_t)(h + 2));
	set_desc(f, 0, h + 2u, base + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
	f->m.buf[base + 0x400] = 0xff;
	make_avail(f, 0, h);
}

static uint8_t blk_status(struct fx *f, uint16_t h)
{
	return f->m.buf[DATA + 0x1000ULL * h + 0x400];
}

static struct fx *setup_idx(uint32_t device_id, unsigned n_queues, bool event_idx)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->m.buf = calloc(1, MEM_SIZE);
	f->page = calloc(1, 4096);
	f->mem = (struct vq_mem){ .read = gread, .write = gwrite, .opaque = &f->m };
	vdev_init(&f->live, &live_kind, NULL, device_id, 0, n_queues, 256, &f->mem, f->page, GPA);
	uint8_t cfg[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	vdev_set_config(&f->live, cfg, sizeof(cfg), false);
	vdev_keep_record(&f->live, &f->rec);
	driver_setup(&f->live, n_queues, event_idx);
	return f;
}

static struct fx *setup(uint32_t device_id, unsigned n_queues)
{
	return setup_idx(device_id, n_queues, false);
}

static void teardown(struct fx *f)
{
	vdev_destroy(&f->live);
	vdev_destroy(&f->later);
	free(f->page);
	free(f->m.buf);
	free(f);
}

/* The dead run held one block request and had one more waiting; the later
 * run fails both (IOERR), a third one too, and the page still reads as
 * the device the driver set up. */
static void test_block_requests_held_by_the_dead_run_fail(void **state)
{
	(void)state;
	struct fx *f = setup(VIRTIO_ID_BLOCK, 1);
	assert_int_equal(f->rec.on, 1);
	assert_int_equal(f->rec.q[0].ready, 1);
	assert_int_equal(f->rec.q[0].num, QSIZE);
	blk_request(f, 0);
	blk_request(f, 3);
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->live.vq[0], &c), 1); /* held when it died */
	assert_int_equal(f->rec.q[0].log.inflight[0], 1);
	/* the dead run's page as the guest reads it */
	uint8_t before[4096];
	memcpy(before, f->page, sizeof(before));

	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, NULL), 0);
	assert_int_equal(blk_status(f, 0), VIRTIO_BLK_S_IOERR);
	assert_int_equal(used_idx(f, 0), 1);
	assert_int_equal(blk_status(f, 3), 0xff); /* not taken yet */
	vdev_kick(&f->later, ~0u);
	assert_int_equal(blk_status(f, 3), VIRTIO_BLK_S_IOERR);
	assert_int_equal(used_idx(f, 0), 2);
	blk_request(f, 5);
	vdev_kick(&f->later, ~0u);
	assert_int_equal(blk_status(f, 5), VIRTIO_BLK_S_IOERR);
	assert_int_equal(used_idx(f, 0), 3);
	assert_int_equal(f->rec.q[0].log.inflight[0], 0);
	assert_int_equal(f->rec.q[0].log.used_idx, 3);
	/* status, device id and config read as before */
	assert_memory_equal(f->page + VIRTIO_MMIO_STATUS, before + VIRTIO_MMIO_STATUS, 4);
	assert_memory_equal(f->page + VIRTIO_MMIO_DEVICE_ID, before + VIRTIO_MMIO_DEVICE_ID, 4);
	assert_memory_equal(f->page + VIRTIO_MMIO_CONFIG, before + VIRTIO_MMIO_CONFIG, 8);
	assert_memory_equal(f->page + VIRTIO_MMIO_CONFIG_GENERATION, before + VIRTIO_MMIO_CONFIG_GENERATION, 4);
	/* the driver removes the device: queue off, reset */
	wr32(&f->later, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr32(&f->later, VIRTIO_MMIO_STATUS, 0);
	uint32_t st;
	memcpy(&st, f->page + VIRTIO_MMIO_STATUS, 4);
	assert_int_equal(st, 0);
	assert_int_equal(f->rec.q[0].ready, 0);
	teardown(f);
}

/* Console: what the guest sent (transmit, control out) and the dead run
 * held is consumed - the driver spins until it is; receive buffers the
 * dead run held are left to the driver, never returned empty. */
static void test_console_buffers_sent_are_consumed_received_left(void **state)
{
	(void)state;
	struct fx *f = setup(VIRTIO_ID_CONSOLE, 4);
	for (unsigned q = 0; q < 4; q++) {
		set_desc(f, q, 0, DATA + 0x1000ULL * q, 64, (q & 1) ? 0 : VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, q, 0);
		struct vq_chain c;
		assert_int_equal(vq_pop(&f->live.vq[q], &c), 1);
	}
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, NULL), 0);
	assert_int_equal(used_idx(f, 0), 0);
	assert_int_equal(used_idx(f, 1), 1);
	assert_int_equal(used_idx(f, 2), 0);
	assert_int_equal(used_idx(f, 3), 1);
	set_desc(f, 3, 1, DATA + 0x8000, 8, 0, 0);
	make_avail(f, 3, 1);
	set_desc(f, 0, 1, DATA + 0x9000, 8, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 0, 1);
	vdev_kick(&f->later, ~0u);
	assert_int_equal(used_idx(f, 3), 2);
	assert_int_equal(used_idx(f, 0), 0);
	teardown(f);
}

/* With EVENT_IDX the driver notifies only when its index passes the one
 * the device asked for: the later run must ask anew (the dead run's is
 * stale), else the driver's next requests wait for ever. */
static void test_the_later_run_asks_for_notifications(void **state)
{
	(void)state;
	struct fx *f = setup_idx(VIRTIO_ID_BLOCK, 1, true);
	blk_request(f, 0);
	blk_request(f, 3);
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->live.vq[0], &c), 1);
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, NULL), 0);
	vdev_kick(&f->later, ~0u);
	uint16_t avail_event;
	memcpy(&avail_event, f->m.buf + q_used(0) + 4 + 8 * QSIZE, 2);
	assert_int_equal(avail_event, 2);
	teardown(f);
}

/* vmsh killed as the driver wrote DRIVER_OK: the write is lost (the
 * hypervisor drops it), the driver goes on and queues requests. The later
 * run must serve the queue the driver enabled all the same, or removing
 * the device waits for those requests for ever. */
static void test_a_lost_driver_ok_still_gets_its_queues_served(void **state)
{
	(void)state;
	struct fx *f = calloc(1, sizeof(*f));
	f->m.buf = calloc(1, MEM_SIZE);
	f->page = calloc(1, 4096);
	f->mem = (struct vq_mem){ .read = gread, .write = gwrite, .opaque = &f->m };
	vdev_init(&f->live, &live_kind, NULL, VIRTIO_ID_BLOCK, 0, 1, 256, &f->mem, f->page, GPA);
	vdev_keep_record(&f->live, &f->rec);
	driver_setup_until(&f->live, 1, false, false);
	assert_int_equal(f->rec.q[0].ready, 1);
	blk_request(f, 0);
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, NULL), 0);
	vdev_kick(&f->later, ~0u);
	assert_int_equal(blk_status(f, 0), VIRTIO_BLK_S_IOERR);
	assert_int_equal(used_idx(f, 0), 1);
	teardown(f);
}

/* A record that is not one vmsh writes is refused with nothing touched. */
static void test_a_foreign_record_is_refused(void **state)
{
	(void)state;
	struct fx *f = setup(VIRTIO_ID_BLOCK, 1);
	uint8_t before[4096];
	memcpy(before, f->page, sizeof(before));
	struct vmsh_err e = { 0 };
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA + 4096, &e), -1);
	f->rec.device_id = 9;
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, &e), -1);
	f->rec.device_id = VIRTIO_ID_BLOCK;
	f->rec.n_queues = VDEV_REC_QUEUES + 1;
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, &e), -1);
	assert_memory_equal(f->page, before, sizeof(before));
	/* rings outside guest memory: taken over broken, nothing written */
	f->rec.n_queues = 1;
	f->rec.q[0].desc = MEM_SIZE;
	assert_int_equal(vdev_adopt(&f->later, &f->rec, &f->mem, f->page, GPA, &e), 0);
	assert_true(f->later.vq[0].broken);
	teardown(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_block_requests_held_by_the_dead_run_fail),
		cmocka_unit_test(test_console_buffers_sent_are_consumed_received_left),
		cmocka_unit_test(test_the_later_run_asks_for_notifications),
		cmocka_unit_test(test_a_lost_driver_ok_still_gets_its_queues_served),
		cmocka_unit_test(test_a_foreign_record_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
