/* test_virtio_blk.c - virtio-blk requests against an in-memory disk and a
 * fake guest memory: every request type, and malformed or hostile requests
 * that must end in an error status without touching the disk. */
#include "unit.h"

#include "devices/virtio_blk.h"

#define GMEM (1u << 20)
#define DISK_SECTORS 64
#define HDR 0x1000
#define DATA 0x2000
#define STATUS 0x9000

static uint8_t guest[GMEM];
static uint8_t disk_bytes[DISK_SECTORS * BLK_SECTOR];
static int flushes, disk_writes;

static int gread(void *o, uint64_t gpa, void *b, size_t len)
{
	(void)o;
	if (gpa >= GMEM || len > GMEM - gpa)
		return -1;
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
static int dread(void *o, uint64_t off, void *b, size_t len)
{
	(void)o;
	assert_true(off + len <= sizeof(disk_bytes));
	memcpy(b, disk_bytes + off, len);
	return 0;
}
static int dwrite(void *o, uint64_t off, const void *b, size_t len)
{
	(void)o;
	assert_true(off + len <= sizeof(disk_bytes));
	memcpy(disk_bytes + off, b, len);
	disk_writes++;
	return 0;
}
static int dflush(void *o)
{
	(void)o;
	flushes++;
	return 0;
}
static int dzero(void *o, uint64_t off, uint64_t len)
{
	(void)o;
	assert_true(off + len <= sizeof(disk_bytes));
	memset(disk_bytes + off, 0, len);
	disk_writes++;
	return 0;
}

static const struct vq_mem mem = { .read = gread, .write = gwrite };
static struct blk_disk disk = {
	.sectors = DISK_SECTORS,
	.id = "vmsh-test-disk",
	.be = { .read = dread, .write = dwrite, .flush = dflush, .discard = dzero, .write_zeroes = dzero },
};

static struct vq_buf bufs[8];
static struct vq_chain chain;

static void req(uint32_t type, uint64_t sector)
{
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} h = { type, 0, sector };
	memcpy(guest + HDR, &h, sizeof(h));
	memset(&chain, 0, sizeof(chain));
	chain.bufs = bufs;
	bufs[0] = (struct vq_buf){ HDR, 16, false };
	chain.n = 1;
	guest[STATUS] = 0xee;
}
static void data(uint64_t gpa, uint32_t len, bool w)
{
	bufs[chain.n++] = (struct vq_buf){ gpa, len, w };
}
static void status_buf(void)
{
	bufs[chain.n++] = (struct vq_buf){ STATUS, 1, true };
}

static void fill_disk(void)
{
	for (size_t i = 0; i < sizeof(disk_bytes); i++)
		disk_bytes[i] = (uint8_t)(i * 7 + 3);
	disk.read_only = false;
	flushes = disk_writes = 0;
}

static void test_read_write_flush(void **state)
{
	(void)state;
	fill_disk();
	uint8_t st;
	req(VIRTIO_BLK_T_IN, 2);
	data(DATA, 512, true);
	data(DATA + 0x1000, 512, true);
	status_buf();
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), 1 + 1024);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
	assert_int_equal(guest[STATUS], 0);
	assert_memory_equal(guest + DATA, disk_bytes + 1024, 512);
	assert_memory_equal(guest + DATA + 0x1000, disk_bytes + 1536, 512);
	memset(guest + DATA, 0x5a, 1024);
	req(VIRTIO_BLK_T_OUT, 10);
	data(DATA, 1024, false);
	status_buf();
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
	assert_int_equal(disk_bytes[10 * 512], 0x5a);
	assert_int_equal(disk_bytes[11 * 512 + 511], 0x5a);
	assert_int_not_equal(disk_bytes[12 * 512], 0x5a);
	req(VIRTIO_BLK_T_FLUSH, 0);
	status_buf();
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), 1);
	assert_int_equal(flushes, 1);
	/* the last sector exactly */
	req(VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
	data(DATA, 512, true);
	status_buf();
	virtio_blk_handle(&disk, &mem, &chain, &st);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
}

static void expect_status(uint8_t want)
{
	uint8_t st = 0xff;
	int writes = disk_writes;
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), 1);
	assert_int_equal(st, want);
	assert_int_equal(guest[STATUS], want);
	if (want != VIRTIO_BLK_S_OK)
		assert_int_equal(disk_writes, writes); /* nothing written on failure */
}

static void test_out_of_range_and_partial_sectors(void **state)
{
	(void)state;
	fill_disk();
	req(VIRTIO_BLK_T_IN, DISK_SECTORS);
	data(DATA, 512, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	req(VIRTIO_BLK_T_OUT, DISK_SECTORS - 1);
	data(DATA, 1024, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	req(VIRTIO_BLK_T_OUT, UINT64_MAX - 1); /* wrap-around */
	data(DATA, 1024, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	req(VIRTIO_BLK_T_IN, 0);
	data(DATA, 1000, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
}

/* struct virtio_blk_config as the guest reads it: capacity, seg_max,
 * blk_size and the topology (1 MiB optimal I/O: the guest's readahead is
 * twice that) */
static void test_config_space(void **state)
{
	(void)state;
	uint8_t cfg[64];
	memset(cfg, 0xee, sizeof(cfg));
	size_t n = virtio_blk_config(&disk, cfg, sizeof(cfg));
	assert_int_equal(n, 60);
	uint64_t cap;
	uint32_t seg_max, blk_size, opt_io;
	uint16_t min_io;
	memcpy(&cap, cfg + 0, 8);
	memcpy(&seg_max, cfg + 12, 4);
	memcpy(&blk_size, cfg + 20, 4);
	memcpy(&min_io, cfg + 26, 2);
	memcpy(&opt_io, cfg + 28, 4);
	assert_int_equal(cap, disk.sectors);
	assert_true(seg_max >= 1);
	assert_int_equal(blk_size, 512);
	assert_true(virtio_blk_features(&disk) & (1ULL << VIRTIO_BLK_F_TOPOLOGY));
	assert_int_equal(cfg[24], 0); /* physical block exponent: physical = logical */
	assert_int_equal(cfg[25], 0); /* alignment offset */
	assert_int_equal(min_io, 1);
	assert_int_equal((uint64_t)opt_io * blk_size, 1u << 20);
	assert_int_equal(cfg[60], 0xee); /* nothing past what it said it wrote */
	/* one request queue: no multiqueue; more: num_queues, at most 4 */
	uint16_t nq;
	memcpy(&nq, cfg + 34, 2);
	assert_int_equal(nq, 1);
	assert_false(virtio_blk_features(&disk) & (1ULL << VIRTIO_BLK_F_MQ));
	disk.num_queues = 3;
	virtio_blk_config(&disk, cfg, sizeof(cfg));
	memcpy(&nq, cfg + 34, 2);
	assert_int_equal(nq, 3);
	assert_true(virtio_blk_features(&disk) & (1ULL << VIRTIO_BLK_F_MQ));
	disk.num_queues = 200;
	virtio_blk_config(&disk, cfg, sizeof(cfg));
	memcpy(&nq, cfg + 34, 2);
	assert_int_equal(nq, BLK_MAX_QUEUES);
	disk.num_queues = 0;
}

static void test_read_only_disk_refuses_writes(void **state)
{
	(void)state;
	fill_disk();
	disk.read_only = true;
	assert_true(virtio_blk_features(&disk) & (1ULL << VIRTIO_BLK_F_RO));
	assert_false(virtio_blk_features(&disk) & (1ULL << VIRTIO_BLK_F_DISCARD));
	req(VIRTIO_BLK_T_OUT, 0);
	data(DATA, 512, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	req(VIRTIO_BLK_T_WRITE_ZEROES, 0);
	data(DATA, 16, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	disk.read_only = false;
}

static void test_get_id_discard_write_zeroes(void **state)
{
	(void)state;
	fill_disk();
	uint8_t st;
	req(VIRTIO_BLK_T_GET_ID, 0);
	data(DATA, 20, true);
	status_buf();
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), 21);
	assert_string_equal((char *)guest + DATA, "vmsh-test-disk");
	struct {
		uint64_t sector;
		uint32_t num, flags;
	} seg[2] = { { 4, 2, 0 }, { 20, 1, 1 } };
	memcpy(guest + DATA, seg, sizeof(seg));
	req(VIRTIO_BLK_T_WRITE_ZEROES, 0);
	data(DATA, sizeof(seg), false);
	status_buf();
	expect_status(VIRTIO_BLK_S_OK);
	assert_int_equal(disk_bytes[4 * 512], 0);
	assert_int_equal(disk_bytes[6 * 512 - 1], 0);
	assert_int_not_equal(disk_bytes[6 * 512 + 1], 0);
	assert_int_equal(disk_bytes[20 * 512 + 100], 0);
	/* discard with the unmap flag is invalid; an out-of-range segment too */
	req(VIRTIO_BLK_T_DISCARD, 0);
	data(DATA, sizeof(seg), false);
	status_buf();
	expect_status(VIRTIO_BLK_S_UNSUPP);
	seg[1] = (typeof(seg[1])){ DISK_SECTORS - 1, 2, 0 };
	memcpy(guest + DATA, seg, sizeof(seg));
	req(VIRTIO_BLK_T_WRITE_ZEROES, 0);
	data(DATA, sizeof(seg), false);
	status_buf();
	expect_status(VIRTIO_BLK_S_UNSUPP);
	/* a segment list that is not whole segments */
	req(VIRTIO_BLK_T_DISCARD, 0);
	data(DATA, 15, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	/* unknown type */
	req(77, 0);
	status_buf();
	expect_status(VIRTIO_BLK_S_UNSUPP);
}

static void test_malformed_chains(void **state)
{
	(void)state;
	fill_disk();
	uint8_t st;
	/* no status buffer */
	req(VIRTIO_BLK_T_IN, 0);
	data(DATA, 512, true);
	bufs[1].device_writes = false;
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), -1);
	/* header only */
	req(VIRTIO_BLK_T_FLUSH, 0);
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), -1);
	/* header writable */
	req(VIRTIO_BLK_T_IN, 0);
	bufs[0].device_writes = true;
	data(DATA, 512, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	/* header of the wrong size */
	req(VIRTIO_BLK_T_IN, 0);
	bufs[0].len = 12;
	data(DATA, 512, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	/* read into a readable buffer; mixed directions */
	req(VIRTIO_BLK_T_IN, 0);
	data(DATA, 512, false);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	req(VIRTIO_BLK_T_OUT, 0);
	data(DATA, 512, false);
	data(DATA + 512, 512, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	/* data buffer outside guest memory: the status still arrives */
	req(VIRTIO_BLK_T_IN, 0);
	data(GMEM - 256, 512, true);
	status_buf();
	expect_status(VIRTIO_BLK_S_IOERR);
	/* status buffer outside guest memory: nothing can be reported */
	req(VIRTIO_BLK_T_FLUSH, 0);
	data(GMEM + 4096, 1, true);
	assert_int_equal(virtio_blk_handle(&disk, &mem, &chain, &st), -1);
}

/* Guest memory reached with vectored calls (as another process's is):
 * they are counted, with the pieces of the last one. */
static int writev_calls;
static size_t last_pieces;
static int gwritev(void *o, const struct vq_iov *v, size_t n)
{
	writev_calls++;
	last_pieces = n;
	for (size_t i = 0; i < n; i++)
		if (gwrite(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	return 0;
}
static int readv_calls, plain_reads;
static int greadv(void *o, const struct vq_iov *v, size_t n)
{
	readv_calls++;
	for (size_t i = 0; i < n; i++)
		if (gread(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	return 0;
}
static int cread(void *o, uint64_t gpa, void *b, size_t len)
{
	plain_reads++;
	return gread(o, gpa, b, len);
}
static bool gcontains(void *o, uint64_t gpa, uint64_t len)
{
	(void)o;
	return gpa < GMEM && len <= GMEM - gpa;
}

static void test_read_data_goes_with_the_status(void **state)
{
	(void)state;
	fill_disk();
	struct vq_mem vmem = { .read = gread, .write = gwrite, .writev = gwritev, .contains = gcontains };
	uint8_t st;
	/* three data buffers read: their data and the status byte in one write */
	req(VIRTIO_BLK_T_IN, 4);
	data(DATA, 512, true);
	data(DATA + 0x3000, 1024, true);
	data(DATA + 0x1000, 512, true);
	status_buf();
	writev_calls = 0;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1 + 2048);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
	assert_int_equal(writev_calls, 1);
	assert_int_equal(last_pieces, 4);
	assert_int_equal(guest[STATUS], VIRTIO_BLK_S_OK);
	assert_memory_equal(guest + DATA, disk_bytes + 4 * 512, 512);
	assert_memory_equal(guest + DATA + 0x3000, disk_bytes + 5 * 512, 1024);
	assert_memory_equal(guest + DATA + 0x1000, disk_bytes + 7 * 512, 512);
	/* the same through serve: the pieces in order, data first, status last */
	struct blk_reply rep;
	assert_int_equal(virtio_blk_serve(&disk, &vmem, &chain, &rep), 1 + 2048);
	assert_int_equal(rep.n, 4);
	assert_int_equal(rep.v[0].gpa, DATA);
	assert_int_equal(rep.v[1].gpa, DATA + 0x3000);
	assert_int_equal(rep.v[2].len, 512);
	assert_int_equal(rep.v[3].gpa, STATUS);
	assert_int_equal(*(uint8_t *)rep.v[3].buf, VIRTIO_BLK_S_OK);
	assert_memory_equal(rep.v[1].buf, disk_bytes + 5 * 512, 1024);
	blk_reply_done(&rep);
	/* a buffer outside guest memory: written at once (and refused), the
	 * failure reported in the status */
	req(VIRTIO_BLK_T_IN, 0);
	data(GMEM - 256, 512, true);
	status_buf();
	writev_calls = 0;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_IOERR);
	assert_int_equal(guest[STATUS], VIRTIO_BLK_S_IOERR);
	/* a failed read sends no data */
	req(VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
	data(DATA, 1024, true);
	status_buf();
	assert_int_equal(virtio_blk_serve(&disk, &vmem, &chain, &rep), 1);
	assert_int_equal(rep.n, 1);
	assert_int_equal(rep.v[0].gpa, STATUS);
	blk_reply_done(&rep);
}

static void test_write_data_comes_with_the_header(void **state)
{
	(void)state;
	fill_disk();
	struct vq_mem vmem = { .read = cread, .write = gwrite, .readv = greadv, .writev = gwritev, .contains = gcontains };
	uint8_t st;
	for (int i = 0; i < 1536; i++)
		guest[DATA + (i < 512 ? i : 0x3000 + i - 512)] = (uint8_t)(i * 13 + 1);
	/* header and two data buffers: one read */
	req(VIRTIO_BLK_T_OUT, 8);
	data(DATA, 512, false);
	data(DATA + 0x3000, 1024, false);
	status_buf();
	chain.n_readable = 3;
	chain.readable_len = 16 + 1536;
	readv_calls = plain_reads = 0;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
	assert_int_equal(readv_calls, 1);
	assert_int_equal(plain_reads, 0);
	for (int i = 0; i < 1536; i++)
		assert_int_equal(disk_bytes[8 * 512 + i], (uint8_t)(i * 13 + 1));
	/* discard segments come with the header too */
	struct blk_segment_t {
		uint64_t sector;
		uint32_t n, flags;
	} seg = { 20, 2, 0 };
	memcpy(guest + DATA, &seg, sizeof(seg));
	req(VIRTIO_BLK_T_DISCARD, 0);
	data(DATA, 16, false);
	status_buf();
	chain.n_readable = 2;
	chain.readable_len = 32;
	readv_calls = plain_reads = 0;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_OK);
	assert_int_equal(readv_calls + plain_reads, 1);
	assert_int_equal(disk_bytes[20 * 512], 0);
	assert_int_equal(disk_bytes[21 * 512 + 511], 0);
	/* a write to a read-only disk still changes nothing */
	disk.read_only = true;
	int writes = disk_writes;
	req(VIRTIO_BLK_T_OUT, 8);
	data(DATA, 512, false);
	status_buf();
	chain.n_readable = 2;
	chain.readable_len = 16 + 512;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_IOERR);
	assert_int_equal(disk_writes, writes);
	disk.read_only = false;
	/* a write past the end: refused, nothing written */
	req(VIRTIO_BLK_T_OUT, DISK_SECTORS - 1);
	data(DATA, 1024, false);
	status_buf();
	chain.n_readable = 2;
	chain.readable_len = 16 + 1024;
	assert_int_equal(virtio_blk_handle(&disk, &vmem, &chain, &st), 1);
	assert_int_equal(st, VIRTIO_BLK_S_IOERR);
	assert_int_equal(disk_writes, writes);
}

static void test_random_requests_stay_inside_the_disk(void **state)
{
	(void)state;
	struct unit_rng rng = { 1 };
	fill_disk();
	for (int i = 0; i < 20000; i++) {
		req((uint32_t)unit_rand_below(&rng, 16), unit_rand_below(&rng, 2) ? unit_rand_below(&rng, 80)
										   : unit_rand64(&rng));
		size_t n = unit_rand_below(&rng, 5);
		for (size_t k = 0; k < n; k++)
			data(unit_rand_below(&rng, GMEM), (uint32_t)unit_rand_below(&rng, 3000), unit_rand_below(&rng, 2));
		if (unit_rand_below(&rng, 8))
			status_buf();
		unit_rand_fill(&rng, guest + DATA, 64);
		uint8_t st;
		virtio_blk_handle(&disk, &mem, &chain, &st); /* dread/dwrite assert the disk bounds */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_write_flush),
		cmocka_unit_test(test_out_of_range_and_partial_sectors),
		cmocka_unit_test(test_config_space),
		cmocka_unit_test(test_read_only_disk_refuses_writes),
		cmocka_unit_test(test_get_id_discard_write_zeroes),
		cmocka_unit_test(test_malformed_chains),
		cmocka_unit_test(test_read_data_goes_with_the_status),
		cmocka_unit_test(test_write_data_comes_with_the_header),
		cmocka_unit_test(test_random_requests_stay_inside_the_disk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
