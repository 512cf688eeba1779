/* test_blk_dev.c - the virtio-blk device kind (src/devices/blk_dev.c) under
 * a guest that never stops making requests: a vCPU that keeps bumping
 * avail.idx must not keep vmsh's serving thread in one device forever. */
#include "unit.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "devices/blk_dev.h"
#include "devices/server.h"

#define GMEM (64u << 10)
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define HDR 0x4000
#define STATUS 0x5000
#define QSIZE 16
#define RUNAWAY 100000UL /* far beyond any sane budget per wake-up */

static uint8_t guest[GMEM];
static bool runaway = true; /* avail.idx of queue 0 always one ahead */
static uint8_t page[4096];
static struct vdev dev;
static volatile unsigned long idx_reads;
static bool in_thread; /* the server thread reads: no cmocka calls there */
static unsigned appear_at; /* the Nth read of avail.idx from now makes a second request appear (0: never) */
static void second_request(void);

/* avail.idx always one ahead of what the device took: a driver that adds a
 * request as fast as vmsh completes one. */
static int gread(void *o, uint64_t gpa, void *b, size_t len)
{
	(void)o;
	if (gpa >= GMEM || len > GMEM - gpa)
		return -1;
	if (runaway && gpa == AVAIL + 2 && len == 2) {
		if (++idx_reads > RUNAWAY && !in_thread)
			fail_msg("the device kept serving one queue for %d requests in one call", RUNAWAY);
		uint16_t idx = (uint16_t)(dev.vq[0].last_avail + 1);
		memcpy(b, &idx, 2);
		return 0;
	}
	if (appear_at && gpa == AVAIL + 2 && --appear_at == 0)
		second_request();
	memcpy(b, guest + gpa, len);
	return 0;
}

static int gwrite(void *o, uint64_t gpa, const void *b, size_t len)
{
	(void)o;
	if (gpa >= GMEM || len > GMEM - gpa)
		return -1;
	memcpy(guest + gpa, b, len);
	return 0;
}

static int dflush(void *o)
{
	(void)o;
	return 0;
}

static const struct vq_mem mem = { .read = gread, .write = gwrite };
static struct blk_disk disk = { .sectors = 8, .id = "t", .be = { .flush = dflush } };

static void put_desc_at(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	memcpy(guest + table + 16 * i, &addr, 8);
	memcpy(guest + table + 16 * i + 8, &len, 4);
	memcpy(guest + table + 16 * i + 12, &flags, 2);
	memcpy(guest + table + 16 * i + 14, &next, 2);
}

static void put_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	put_desc_at(DESC, i, addr, len, flags, next);
}

static void busy_device(void)
{
	memset(guest, 0, sizeof(guest));
	uint32_t hdr[4] = { VIRTIO_BLK_T_FLUSH, 0, 0, 0 };
	memcpy(guest + HDR, hdr, sizeof(hdr));
	put_desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	/* every ring entry names the same request */
	blk_dev_init(&dev, &disk, &mem, page, 0xd0000000);
	assert_int_equal(vq_init(&dev.vq[0], &mem, QSIZE, DESC, AVAIL, USED, false), 0);
	dev.vq_live[0] = true;
	dev.driver_ok = true;
	idx_reads = 0;
}

static void test_moving_avail_idx_is_budgeted(void **state)
{
	(void)state;
	busy_device();
	unsigned more = vdev_kick(&dev, 1);
	assert_false(dev.vq[0].broken);
	assert_true(dev.vq[0].used_idx > 0);
	assert_true(idx_reads < RUNAWAY);
	assert_int_equal(more, 1); /* the server must come back to it */
	vdev_destroy(&dev);
}


/* The driver adds its second request while the device polls (the avail
 * index read for the Nth time): the first request's completion was
 * signalled before polling, no notification was asked for the second
 * (avail_event left behind it), and once nothing more comes the window
 * halves and the device asks to be notified again. */
static bool second_notifies; /* would the driver have notified for the second request? */
static unsigned irqs_before_second; /* interrupts raised when it came */
static void second_request(void)
{
	irqs_before_second = dev.interrupts;
	uint16_t event;
	memcpy(&event, guest + USED + 4 + 8 * QSIZE, 2);
	second_notifies = (uint16_t)(2 - event - 1) < (uint16_t)(2 - 1); /* vring_need_event(event, 2, 1) */
	uint16_t zero = 0, two = 2;
	memcpy(guest + AVAIL + 4 + 2, &zero, 2); /* ring[1] = head 0 again: a flush */
	memcpy(guest + AVAIL + 2, &two, 2);
}

static uint16_t avail_event_of(uint64_t used, unsigned size)
{
	uint16_t v;
	memcpy(&v, guest + used + 4 + 8 * size, 2);
	return v;
}

static void test_polling_takes_the_next_request_without_a_notification(void **state)
{
	(void)state;
	memset(guest, 0, sizeof(guest));
	runaway = false;
	uint32_t hdr[4] = { VIRTIO_BLK_T_FLUSH, 0, 0, 0 };
	memcpy(guest + HDR, hdr, sizeof(hdr));
	put_desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	uint16_t zero = 0, one = 1;
	memcpy(guest + AVAIL + 4, &zero, 2);
	memcpy(guest + AVAIL + 2, &one, 2);
	disk.poll_us = 1000;
	blk_dev_init(&dev, &disk, &mem, page, 0xd0000000);
	assert_int_equal(vq_init(&dev.vq[0], &mem, QSIZE, DESC, AVAIL, USED, true), 0);
	dev.vq_live[0] = true;
	dev.driver_ok = true;
	appear_at = 5; /* each look reads the index twice: the first look, the look that finds
			* the queue dry, then while polling */
	vdev_kick(&dev, 1);
	assert_int_equal(appear_at, 0);
	assert_int_equal(dev.vq[0].used_idx, 2);
	assert_int_equal(disk.poll[0].hits, 1);
	assert_false(second_notifies);
	assert_int_equal(irqs_before_second, 1); /* the first completion, signalled before polling */
	/* the second poll found nothing: the window halved, and the device
	 * asked to be notified of the next request */
	assert_int_equal(disk.poll[0].polls, 2);
	assert_int_equal(disk.poll[0].window_ns, 500000);
	assert_int_equal(avail_event_of(USED, QSIZE), 2);
	/* polled with nothing coming, the window keeps halving and closes */
	for (int i = 0; i < 3; i++)
		vdev_kick(&dev, 1);
	assert_int_equal(disk.poll[0].polls, 5);
	assert_int_equal(disk.poll[0].window_ns, 0);
	disk.poll[0].dry_at_ns = 1; /* long ago */
	vdev_kick(&dev, 1);
	assert_int_equal(disk.poll[0].polls, 5); /* closed */
	/* a notification soon after the queue ran dry that brings a request
	 * opens it again (a quarter of the most; halved after the miss) */
	vdev_kick(&dev, 1);
	assert_int_equal(disk.poll[0].polls, 5); /* without a request: still closed */
	uint16_t zero2 = 0, three = 3;
	memcpy(guest + AVAIL + 4 + 4, &zero2, 2); /* ring[2] = head 0: a third flush */
	memcpy(guest + AVAIL + 2, &three, 2);
	disk.poll[0].dry_at_ns = now_ns();
	vdev_kick(&dev, 1);
	assert_int_equal(dev.vq[0].used_idx, 3);
	assert_int_equal(disk.poll[0].polls, 6);
	assert_int_equal(disk.poll[0].window_ns, 125000);
	assert_false(dev.vq[0].broken);
	disk.poll_us = 0;
	vdev_destroy(&dev);
	runaway = true;
}

/* Indirect descriptor tables: not offered where guest memory is another
 * process's (a table would be a syscall more per request; every chain is
 * then in the table read with the ring), offered where vmsh maps it (a
 * 256 KiB request then takes one queue entry, not 66). */
static void test_indirect_tables_only_where_memory_is_local(void **state)
{
	(void)state;
	memset(guest, 0, sizeof(guest));
	blk_dev_init(&dev, &disk, &mem, page, 0xd0000000);
	assert_false(dev.regs.device_features & (1ULL << VIRTIO_F_INDIRECT_DESC));
	assert_true(dev.regs.device_features & (1ULL << VIRTIO_F_EVENT_IDX));
	vdev_destroy(&dev);
	struct vq_mem local = mem;
	local.local = true;
	blk_dev_init(&dev, &disk, &local, page, 0xd0000000);
	assert_true(dev.regs.device_features & (1ULL << VIRTIO_F_INDIRECT_DESC));
	vdev_destroy(&dev);
}

/* One flush request in queue rings at base (desc, avail +0x1000, used
 * +0x2000), its header at HDR, its status byte at status. */
static void one_flush(uint64_t base, uint64_t status)
{
	uint64_t a = HDR;
	uint32_t l16 = 16, l1 = 1;
	uint16_t f_next = VIRTQ_DESC_F_NEXT, f_w = VIRTQ_DESC_F_WRITE, one = 1, zero = 0;
	memcpy(guest + base, &a, 8), memcpy(guest + base + 8, &l16, 4), memcpy(guest + base + 12, &f_next, 2);
	memcpy(guest + base + 14, &one, 2);
	memcpy(guest + base + 16, &status, 8), memcpy(guest + base + 24, &l1, 4), memcpy(guest + base + 28, &f_w, 2);
	memcpy(guest + base + 0x1000 + 4, &zero, 2); /* ring[0] = head 0 */
	memcpy(guest + base + 0x1000 + 2, &one, 2);  /* avail.idx = 1 */
	guest[status] = 0xee;
}

/* Several request queues (VIRTIO_BLK_F_MQ): each is served from its own
 * rings, a busy one does not starve the others, and the interrupt covers
 * the queues that completed something. */
static void test_each_queue_is_served(void **state)
{
	(void)state;
	memset(guest, 0, sizeof(guest));
	disk.num_queues = 3;
	blk_dev_init(&dev, &disk, &mem, page, 0xd0000000);
	disk.num_queues = 0;
	assert_int_equal(dev.regs.n_queues, 3);
	assert_true(dev.regs.device_features & (1ULL << VIRTIO_BLK_F_MQ));
	/* queue 0: the runaway driver of busy_device; queue 2: one flush in
	 * rings of its own; queue 1: nothing */
	uint32_t hdr[4] = { VIRTIO_BLK_T_FLUSH, 0, 0, 0 };
	memcpy(guest + HDR, hdr, sizeof(hdr));
	put_desc(0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	put_desc(1, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	const uint64_t q2 = 0x8000; /* desc, avail, used of queue 2 */
	one_flush(q2, STATUS + 8);
	const uint16_t zero = 0;
	assert_int_equal(vq_init(&dev.vq[0], &mem, QSIZE, DESC, AVAIL, USED, false), 0);
	assert_int_equal(vq_init(&dev.vq[1], &mem, QSIZE, 0x6000, 0x6800, 0x7000, false), 0);
	assert_int_equal(vq_init(&dev.vq[2], &mem, QSIZE, q2, q2 + 0x1000, q2 + 0x2000, false), 0);
	dev.vq_live[0] = dev.vq_live[1] = dev.vq_live[2] = true;
	dev.driver_ok = true;
	idx_reads = 0;
	unsigned more = vdev_kick(&dev, 0x7);
	assert_int_equal(more, 1); /* queue 0 still busy: come back */
	assert_true(dev.vq[0].used_idx > 0);
	assert_int_equal(dev.vq[1].used_idx, 0);
	assert_int_equal(dev.vq[2].used_idx, 1);
	assert_int_equal(guest[STATUS + 8], VIRTIO_BLK_S_OK);
	uint16_t used2;
	memcpy(&used2, guest + q2 + 0x2000 + 2, 2);
	assert_int_equal(used2, 1);
	assert_true(dev.regs.interrupt_status & 1);
	assert_false(dev.vq[2].broken);
	/* only the queues named are looked at */
	guest[STATUS + 8] = 0xee;
	memcpy(guest + q2 + 0x1000 + 6, &zero, 2);
	uint16_t two = 2;
	memcpy(guest + q2 + 0x1000 + 2, &two, 2);
	vdev_kick(&dev, 0x2);
	assert_int_equal(dev.vq[2].used_idx, 1);
	vdev_kick(&dev, 0x4);
	assert_int_equal(dev.vq[2].used_idx, 2);
	vdev_destroy(&dev);
}

static volatile int other_served;

static void on_other(void *opaque, uint32_t events)
{
	char b[16];
	if (read(*(int *)opaque, b, sizeof(b)) > 0)
		other_served = 1;
}

static uint64_t ms_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* A guest that keeps the block queue busy: the serving thread still serves
 * another fd (the console's) and stops when asked. */
static void test_busy_queue_does_not_pin_the_server(void **state)
{
	(void)state;
	busy_device();
	in_thread = true;
	dev.notify[0].local = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(dev.notify[0].local >= 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct dev_server srv;
	struct vdev *devs[] = { &dev };
	struct vmsh_err err = { 0 };
	assert_int_equal(server_init(&srv, devs, 1, 1, &err), 0);
	assert_int_equal(server_watch(&srv, p[0], EPOLLIN, on_other, &p[0], &err), 0);
	assert_int_equal(server_start(&srv, &err), 0);
	uint64_t one = 1;
	assert_int_equal(write(dev.notify[0].local, &one, 8), 8);
	while (idx_reads < 1000)
		usleep(1000);
	assert_int_equal(write(p[1], "x", 1), 1);
	uint64_t t0 = ms_now();
	while (!other_served && ms_now() - t0 < 5000)
		usleep(1000);
	assert_true(other_served);
	/* server_stop must return while the guest keeps going: a watchdog
	 * thread would be overkill, alarm() ends a pinned test */
	alarm(10);
	server_stop(&srv);
	alarm(0);
	in_thread = false;
	assert_true(dev.vq[0].used_idx > 0);
	close(p[0]);
	close(p[1]);
	close(dev.notify[0].local);
	dev.notify[0].local = -1;
	vdev_destroy(&dev);
}

/* A flush that blocks until released (the first one only): a slow request. */
static pthread_mutex_t slow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slow_cond = PTHREAD_COND_INITIALIZER;
static int slow_state; /* 0: the next flush blocks, 1: blocked in it, 2: released */

static int slow_flush(void *o)
{
	(void)o;
	pthread_mutex_lock(&slow_lock);
	if (slow_state == 0) {
		slow_state = 1;
		pthread_cond_broadcast(&slow_cond);
		while (slow_state != 2)
			pthread_cond_wait(&slow_cond, &slow_lock);
	}
	pthread_mutex_unlock(&slow_lock);
	return 0;
}

static uint16_t used_idx_in_guest(uint64_t used)
{
	return __atomic_load_n((uint16_t *)(guest + used + 2), __ATOMIC_ACQUIRE);
}


/* d set up with two request queues whose rings start at q0 and q1 (desc,
 * avail +0x1000, used +0x2000), the driver done. */
static void two_queues(struct blk_disk *bd, uint64_t q0, uint64_t q1, bool event_idx)
{
	blk_dev_init(&dev, bd, &mem, page, 0xd0000000);
	assert_int_equal(dev.regs.n_queues, 2);
	const uint64_t base[2] = { q0, q1 };
	for (int q = 0; q < 2; q++) {
		assert_int_equal(vq_init(&dev.vq[q], &mem, QSIZE, base[q], base[q] + 0x1000, base[q] + 0x2000, event_idx), 0);
		dev.vq_live[q] = true;
	}
	dev.driver_ok = true;
}

/* Notification eventfds for the first n queues (a server watches them). */
static void open_notifies(unsigned n)
{
	for (unsigned q = 0; q < n; q++)
		assert_true((dev.notify[q].local = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0);
}

static void close_notifies(unsigned n)
{
	for (unsigned q = 0; q < n; q++) {
		close(dev.notify[q].local);
		dev.notify[q].local = -1;
	}
}

/* Multiqueue served by a thread per queue: a request that takes long in
 * one queue (a slow flush of the backing file) does not hold up another
 * queue's; with one serving thread it did, request after request. */
static void test_queues_are_served_in_parallel(void **state)
{
	(void)state;
	memset(guest, 0, sizeof(guest));
	runaway = false;
	uint32_t hdr[4] = { VIRTIO_BLK_T_FLUSH, 0, 0, 0 };
	memcpy(guest + HDR, hdr, sizeof(hdr));
	const uint64_t q0 = 0x6000, q1 = 0x9000;
	one_flush(q0, STATUS);
	one_flush(q1, STATUS + 8);
	struct blk_disk slow = { .sectors = 8, .id = "t", .num_queues = 2, .be = { .flush = slow_flush } };
	two_queues(&slow, q0, q1, false);
	open_notifies(2);
	struct dev_server srv;
	struct vdev *devs[] = { &dev };
	struct vmsh_err err = { 0 };
	assert_int_equal(server_init(&srv, devs, 1, 4, &err), 0);
	assert_int_equal(srv.n_lanes, 2); /* no more threads than queues */
	assert_int_equal(server_start(&srv, &err), 0);
	uint64_t one = 1;
	assert_int_equal(write(dev.notify[0].local, &one, 8), 8);
	pthread_mutex_lock(&slow_lock);
	while (slow_state != 1)
		pthread_cond_wait(&slow_cond, &slow_lock);
	pthread_mutex_unlock(&slow_lock);
	/* queue 0's flush is under way and stays so: queue 1's completes */
	assert_int_equal(write(dev.notify[1].local, &one, 8), 8);
	uint64_t t0 = ms_now();
	while (used_idx_in_guest(q1 + 0x2000) != 1 && ms_now() - t0 < 5000)
		usleep(1000);
	bool parallel = used_idx_in_guest(q1 + 0x2000) == 1;
	bool q0_waited = used_idx_in_guest(q0 + 0x2000) == 0;
	pthread_mutex_lock(&slow_lock);
	slow_state = 2;
	pthread_cond_broadcast(&slow_cond);
	pthread_mutex_unlock(&slow_lock);
	t0 = ms_now();
	while (used_idx_in_guest(q0 + 0x2000) != 1 && ms_now() - t0 < 5000)
		usleep(1000);
	server_stop(&srv);
	assert_true(parallel);
	assert_true(q0_waited);
	assert_int_equal(used_idx_in_guest(q0 + 0x2000), 1);
	assert_int_equal(guest[STATUS], VIRTIO_BLK_S_OK);
	assert_int_equal(guest[STATUS + 8], VIRTIO_BLK_S_OK);
	assert_true(srv.lane[0].wakeups >= 1 && srv.lane[1].wakeups >= 1);
	close_notifies(2);
	vdev_destroy(&dev);
	runaway = true;
}

/* A hostile driver on one queue of several: a chain that loops in queue 0
 * (served first) breaks queue 0 (and asks the driver for a reset), while
 * queue 1's request in the same wake-up is served as usual, and so is its
 * next one. */
static void test_a_hostile_queue_breaks_only_itself(void **state)
{
	(void)state;
	memset(guest, 0, sizeof(guest));
	runaway = false;
	uint32_t hdr[4] = { VIRTIO_BLK_T_FLUSH, 0, 0, 0 };
	memcpy(guest + HDR, hdr, sizeof(hdr));
	const uint64_t q0 = 0x6000, q1 = 0x9000;
	one_flush(q0, STATUS);
	one_flush(q1, STATUS + 8);
	uint16_t f_next = VIRTQ_DESC_F_NEXT, zero = 0;
	memcpy(guest + q0 + 16 + 12, &f_next, 2); /* desc 1 -> next 0: a loop */
	memcpy(guest + q0 + 16 + 14, &zero, 2);
	disk.num_queues = 2;
	two_queues(&disk, q0, q1, false);
	disk.num_queues = 0;
	vdev_kick(&dev, 0x3);
	assert_true(dev.vq[0].broken);
	assert_true(dev.regs.status & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(guest[STATUS], 0xee); /* nothing answered there */
	assert_int_equal(used_idx_in_guest(q0 + 0x2000), 0);
	assert_false(dev.vq[1].broken);
	assert_int_equal(used_idx_in_guest(q1 + 0x2000), 1);
	assert_int_equal(guest[STATUS + 8], VIRTIO_BLK_S_OK);
	/* queue 1's next request: served too */
	guest[STATUS + 8] = 0xee;
	uint16_t two = 2;
	memcpy(guest + q1 + 0x1000 + 6, &zero, 2);
	memcpy(guest + q1 + 0x1000 + 2, &two, 2);
	vdev_kick(&dev, 0x3);
	assert_int_equal(used_idx_in_guest(q1 + 0x2000), 2);
	assert_int_equal(guest[STATUS + 8], VIRTIO_BLK_S_OK);
	assert_int_equal(used_idx_in_guest(q0 + 0x2000), 0);
	vdev_destroy(&dev);
	runaway = true;
}

/* Disk callbacks for the storm below: every access inside the disk, or
 * the test fails (counted: the serving threads make no cmocka calls). */
#define STORM_SECTORS 64
static uint8_t storm_disk[STORM_SECTORS * BLK_SECTOR];
static volatile int storm_outside, storm_requests;
static int storm_io(uint64_t off, size_t len)
{
	if (off > sizeof(storm_disk) || len > sizeof(storm_disk) - off)
		__atomic_fetch_add(&storm_outside, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&storm_requests, 1, __ATOMIC_RELAXED);
	return 0;
}
static int storm_read(void *o, uint64_t off, void *b, size_t len)
{
	(void)o;
	if (storm_io(off, len) == 0 && off <= sizeof(storm_disk) && len <= sizeof(storm_disk) - off)
		memcpy(b, storm_disk + off, len);
	return 0;
}
static int storm_write(void *o, uint64_t off, const void *b, size_t len)
{
	(void)o;
	if (storm_io(off, len) == 0 && off <= sizeof(storm_disk) && len <= sizeof(storm_disk) - off)
		memcpy(storm_disk + off, b, len);
	return 0;
}
static int storm_flush(void *o)
{
	(void)o;
	return storm_io(0, 0);
}
static int storm_zero(void *o, uint64_t off, uint64_t len)
{
	(void)o;
	return storm_io(off, len);
}

/* One queue's rings at base full of requests (header, data, status
 * chains): mostly well formed, of every type, near the disk's end or past
 * it; now and then a corrupted descriptor or ring entry. */
static void storm_fill(struct unit_rng *rng, uint64_t base, uint64_t hdrs, uint64_t data)
{
	memset(guest + base, 0, 0x3000);
	unsigned n = 1 + (unsigned)unit_rand_below(rng, QSIZE / 3);
	for (unsigned k = 0; k < n; k++) {
		static const uint32_t types[] = { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH,
						  VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, 77 };
		uint32_t type = types[unit_rand_below(rng, 7)];
		uint64_t sector = unit_rand_below(rng, 8) ? unit_rand_below(rng, STORM_SECTORS + 4) : unit_rand64(rng);
		uint32_t h[4] = { type, 0, 0, 0 };
		memcpy(h + 2, &sector, 8);
		memcpy(guest + hdrs + 16 * k, h, sizeof(h));
		uint32_t len = unit_rand_below(rng, 8) ? 512 * (1 + (uint32_t)unit_rand_below(rng, 2))
						       : (uint32_t)unit_rand_below(rng, 1100);
		uint64_t seg[2] = { unit_rand_below(rng, 2) ? unit_rand_below(rng, STORM_SECTORS) : unit_rand64(rng),
				    unit_rand_below(rng, 16) }; /* a discard's sector, count and flags */
		memcpy(guest + data + 1024 * k, seg, sizeof(seg));
		uint16_t w = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID ? VIRTQ_DESC_F_WRITE : 0;
		unsigned d = 3 * k;
		put_desc_at(base, d, hdrs + 16 * k, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
		put_desc_at(base, d + 1, data + 1024 * k, len, (uint16_t)(w | VIRTQ_DESC_F_NEXT), (uint16_t)(d + 2));
		put_desc_at(base, d + 2, STATUS + 64 * (base == 0x6000) + k, 1, VIRTQ_DESC_F_WRITE, 0);
		uint16_t head = (uint16_t)d;
		memcpy(guest + base + 0x1000 + 4 + 2 * k, &head, 2);
	}
	uint16_t idx = (uint16_t)n;
	memcpy(guest + base + 0x1000 + 2, &idx, 2);
	if (unit_rand_below(rng, 4) == 0) /* a corrupted byte in the table or the ring */
		guest[base + (unit_rand_below(rng, 2) ? 0 : 0x1000) + unit_rand_below(rng, 16 * QSIZE)] ^=
			(uint8_t)(1 + unit_rand_below(rng, 255));
}

/* Two queues, each served by a thread of its own, in 300 rounds: both
 * filled with requests of every kind (storm_fill), both notified, and
 * while the threads serve them the guest keeps rewriting both queues'
 * tables and rings at random (every other round with event indices and
 * polling). Nothing outside the disk or guest memory is touched (the
 * sanitizer build checks the latter), a broken queue is reported to the
 * driver, the threads stop when asked, and requests are served in both
 * queues. */
static void test_hostile_rings_in_two_queues_served_at_once(void **state)
{
	(void)state;
	runaway = false;
	in_thread = true;
	const uint64_t qb[2] = { 0x6000, 0xa000 }, hdrs[2] = { 0x4000, 0x4400 }, data[2] = { 0xd000, 0xe800 };
	struct blk_disk storm = { .sectors = STORM_SECTORS, .id = "t", .num_queues = 2,
				  .be = { .read = storm_read, .write = storm_write, .flush = storm_flush,
					  .discard = storm_zero, .write_zeroes = storm_zero } };
	struct unit_rng rng = { 13 };
	unsigned served[2] = { 0, 0 }, broke = 0;
	for (int round = 0; round < 300; round++) {
		memset(guest, 0, sizeof(guest));
		for (int q = 0; q < 2; q++)
			storm_fill(&rng, qb[q], hdrs[q], data[q]);
		/* every other round with event indices and polling (50 us) */
		storm.poll_us = round % 2 ? 50 : 0;
		two_queues(&storm, qb[0], qb[1], round % 2);
		open_notifies(2);
		struct dev_server srv;
		struct vdev *devs[] = { &dev };
		struct vmsh_err err = { 0 };
		assert_int_equal(server_init(&srv, devs, 1, 2, &err), 0);
		assert_int_equal(srv.n_lanes, 2);
		assert_int_equal(server_start(&srv, &err), 0);
		uint64_t one = 1;
		for (int q = 0; q < 2; q++)
			assert_int_equal(write(dev.notify[q].local, &one, 8), 8);
		/* the guest rewrites its rings while they are served */
		for (int i = 0; i < 4; i++) {
			usleep(20);
			uint64_t base = qb[unit_rand_below(&rng, 2)];
			uint64_t at = base + (unit_rand_below(&rng, 2) ? 0 : 0x1000) + unit_rand_below(&rng, 16 * QSIZE);
			__atomic_store_n(&guest[at], (uint8_t)unit_rand64(&rng), __ATOMIC_RELAXED);
		}
		alarm(10);
		server_stop(&srv);
		alarm(0);
		for (int q = 0; q < 2; q++) {
			served[q] += dev.vq[q].used_idx;
			broke += dev.vq[q].broken;
			if (dev.vq[q].broken)
				assert_true(dev.regs.status & VIRTIO_STATUS_NEEDS_RESET);
		}
		close_notifies(2);
		vdev_destroy(&dev);
	}
	in_thread = false;
	assert_int_equal(storm_outside, 0);
	assert_true(storm_requests > 0);
	assert_true(served[0] > 100 && served[1] > 100);
	assert_true(broke > 0); /* the corruptions were seen as such */
	runaway = true;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_moving_avail_idx_is_budgeted),
		cmocka_unit_test(test_indirect_tables_only_where_memory_is_local),
		cmocka_unit_test(test_each_queue_is_served),
		cmocka_unit_test(test_busy_queue_does_not_pin_the_server),
		cmocka_unit_test(test_queues_are_served_in_parallel),
		cmocka_unit_test(test_a_hostile_queue_breaks_only_itself),
		cmocka_unit_test(test_polling_takes_the_next_request_without_a_notification),
		cmocka_unit_test(test_hostile_rings_in_two_queues_served_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
