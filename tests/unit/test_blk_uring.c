/* test_blk_uring.c - the io_uring disk backend on temporary files in /tmp
 * (ext4 and the like) and /dev/shm (tmpfs: no ZERO_RANGE, so write_zeroes
 * writes zeros), and on a loop block device when the test may make one:
 * sizes, round trips checked against the file itself, fsync, discard and
 * write-zeroes reading back zeros, read-only disks refusing writes, the
 * batched interface, and the errors for files that cannot be disks. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "devices/blk_uring.h"

#define DISK_BYTES (1u << 20)

struct tmp {
	char path[64];
	int fd; /* the test's own view of the file */
};

static void tmp_make(struct tmp *t, const char *dir, size_t bytes, struct unit_rng *rng)
{
	snprintf(t->path, sizeof(t->path), "%s/vmsh-blk-XXXXXX", dir);
	t->fd = mkstemp(t->path);
	assert_true(t->fd >= 0);
	uint8_t *b = malloc(bytes ? bytes : 1);
	assert_non_null(b);
	unit_rand_fill(rng, b, bytes);
	assert_int_equal(pwrite(t->fd, b, bytes, 0), (ssize_t)bytes);
	free(b);
}

static void tmp_drop(struct tmp *t)
{
	close(t->fd);
	unlink(t->path);
}

static void file_read(struct tmp *t, uint64_t off, void *buf, size_t len)
{
	assert_int_equal(pread(t->fd, buf, len, (off_t)off), (ssize_t)len);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void round_trip_in(const char *dir)
{
	struct unit_rng rng = { 1 };
	struct tmp t;
	tmp_make(&t, dir, DISK_BYTES, &rng);
	struct blk_uring u;
	struct blk_disk d;
	memset(&d, 0xff, sizeof(d));
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), 0);
	assert_int_equal(d.sectors, DISK_BYTES / BLK_SECTOR);
	assert_false(d.read_only);
	assert_true(all_zero((const uint8_t *)d.id, sizeof(d.id))); /* the caller names it */
	assert_ptr_equal(d.be.opaque, &u);
	assert_true(d.be.read && d.be.write && d.be.flush && d.be.discard && d.be.write_zeroes);

	uint8_t *a = malloc(DISK_BYTES), *b = malloc(DISK_BYTES + 1);
	assert_true(a && b);
	/* the whole disk, then odd pieces at odd places, unaligned buffers */
	assert_int_equal(d.be.read(d.be.opaque, 0, a, DISK_BYTES), 0);
	file_read(&t, 0, b, DISK_BYTES);
	assert_memory_equal(a, b, DISK_BYTES);
	for (int i = 0; i < 200; i++) {
		size_t len = 1 + unit_rand_below(&rng, 70000);
		uint64_t off = unit_rand_below(&rng, DISK_BYTES - len + 1);
		unit_rand_fill(&rng, b + 1, len);
		assert_int_equal(d.be.write(d.be.opaque, off, b + 1, len), 0);
		file_read(&t, off, a, len);
		assert_memory_equal(a, b + 1, len);
		memset(a, 0, len);
		assert_int_equal(d.be.read(d.be.opaque, off, a, len), 0);
		assert_memory_equal(a, b + 1, len);
	}
	assert_int_equal(d.be.flush(d.be.opaque), 0);
	/* outside the disk */
	assert_int_equal(d.be.read(d.be.opaque, DISK_BYTES - 512, a, 1024), -EINVAL);
	assert_int_equal(d.be.write(d.be.opaque, UINT64_MAX - 10, a, 20), -EINVAL);
	assert_int_equal(d.be.discard(d.be.opaque, DISK_BYTES, 512), -EINVAL);
	assert_int_equal(d.be.write_zeroes(d.be.opaque, 512, DISK_BYTES), -EINVAL);
	assert_int_equal(d.be.read(d.be.opaque, DISK_BYTES, a, 0), 0);
	blk_uring_close(&u);
	assert_int_equal(u.fd, -1);
	free(a);
	free(b);
	tmp_drop(&t);
}

static void test_round_trip_tmp(void **state)
{
	(void)state;
	round_trip_in("/tmp");
}

static void test_round_trip_shm(void **state)
{
	(void)state;
	round_trip_in("/dev/shm");
}

static void zeroing_in(const char *dir)
{
	struct unit_rng rng = { 2 };
	struct tmp t;
	tmp_make(&t, dir, DISK_BYTES, &rng);
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), 0);
	uint8_t *before = malloc(DISK_BYTES), *after = malloc(DISK_BYTES);
	assert_true(before && after);
	file_read(&t, 0, before, DISK_BYTES);
	struct stat st0, st1;
	assert_int_equal(fstat(t.fd, &st0), 0);

	/* discard 256 KiB at 128 KiB: zeros there, blocks freed, size kept */
	assert_int_equal(d.be.discard(d.be.opaque, 128 << 10, 256 << 10), 0);
	assert_int_equal(fstat(t.fd, &st1), 0);
	assert_int_equal(st1.st_size, DISK_BYTES);
	assert_true(st1.st_blocks < st0.st_blocks);
	memset(before + (128 << 10), 0, 256 << 10);
	assert_int_equal(d.be.read(d.be.opaque, 0, after, DISK_BYTES), 0);
	assert_memory_equal(before, after, DISK_BYTES);

	/* write zeroes over an odd sector range, and over the last sector */
	assert_int_equal(d.be.write_zeroes(d.be.opaque, 7 * 512, 300 * 512), 0);
	memset(before + 7 * 512, 0, 300 * 512);
	assert_int_equal(d.be.write_zeroes(d.be.opaque, DISK_BYTES - 512, 512), 0);
	memset(before + DISK_BYTES - 512, 0, 512);
	/* more than one fallback chunk */
	assert_int_equal(d.be.write_zeroes(d.be.opaque, 600 << 10, 200 << 10), 0);
	memset(before + (600 << 10), 0, 200 << 10);
	assert_int_equal(d.be.read(d.be.opaque, 0, after, DISK_BYTES), 0);
	assert_memory_equal(before, after, DISK_BYTES);
	file_read(&t, 0, after, DISK_BYTES);
	assert_memory_equal(before, after, DISK_BYTES);
	assert_int_equal(fstat(t.fd, &st1), 0);
	assert_int_equal(st1.st_size, DISK_BYTES);
	assert_int_equal(d.be.discard(d.be.opaque, 0, 0), 0);
	assert_int_equal(d.be.flush(d.be.opaque), 0);
	blk_uring_close(&u);
	free(before);
	free(after);
	tmp_drop(&t);
}

static void test_discard_and_write_zeroes_tmp(void **state)
{
	(void)state;
	zeroing_in("/tmp");
}

static void test_discard_and_write_zeroes_shm(void **state)
{
	(void)state;
	zeroing_in("/dev/shm");
}

static void test_read_only_refuses_writes(void **state)
{
	(void)state;
	struct unit_rng rng = { 3 };
	struct tmp t;
	tmp_make(&t, "/tmp", 64 * 512, &rng);
	uint8_t orig[64 * 512], buf[64 * 512];
	file_read(&t, 0, orig, sizeof(orig));
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open(&u, t.path, true, &d, &err), 0);
	assert_true(d.read_only);
	assert_int_equal(d.sectors, 64);
	assert_int_equal(d.be.read(d.be.opaque, 0, buf, sizeof(buf)), 0);
	assert_memory_equal(orig, buf, sizeof(buf));
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(d.be.write(d.be.opaque, 0, buf, 512), -EROFS);
	assert_int_equal(d.be.discard(d.be.opaque, 0, 512), -EROFS);
	assert_int_equal(d.be.write_zeroes(d.be.opaque, 0, 512), -EROFS);
	assert_int_equal(d.be.flush(d.be.opaque), 0);
	struct blk_uring_req r = { .op = BLK_URING_WRITE, .off = 0, .buf = buf, .len = 512 };
	assert_int_equal(blk_uring_queue(&u, &r), -EROFS);
	file_read(&t, 0, buf, sizeof(buf));
	assert_memory_equal(orig, buf, sizeof(buf));
	blk_uring_close(&u);
	tmp_drop(&t);
}

static void test_files_that_cannot_be_disks(void **state)
{
	(void)state;
	struct unit_rng rng = { 4 };
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };

	struct tmp t;
	tmp_make(&t, "/tmp", 1000, &rng);
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), -1);
	assert_non_null(strstr(err.msg, t.path));
	assert_non_null(strstr(err.msg, "1000 bytes"));
	assert_non_null(strstr(err.msg, "512"));
	assert_int_equal(u.fd, -1); /* nothing left open */
	tmp_drop(&t);

	assert_int_equal(blk_uring_open(&u, "/tmp/vmsh-no-such-disk.img", true, &d, &err), -1);
	assert_int_equal(err.errnum, ENOENT);
	assert_non_null(strstr(err.msg, "/tmp/vmsh-no-such-disk.img"));
	assert_non_null(strstr(err.msg, "No such file"));

	/* cannot be opened for writing: says so */
	assert_int_equal(blk_uring_open(&u, "/tmp", false, &d, &err), -1);
	assert_int_equal(err.errnum, EISDIR);
	assert_non_null(strstr(err.msg, "read-write"));
	/* opened, but no disk */
	assert_int_equal(blk_uring_open(&u, "/tmp", true, &d, &err), -1);
	assert_non_null(strstr(err.msg, "neither a regular file nor a block device"));
	assert_int_equal(blk_uring_open(&u, "/dev/null", false, &d, &err), -1);
	assert_non_null(strstr(err.msg, "neither"));

	/* empty is a disk of no sectors */
	tmp_make(&t, "/tmp", 0, &rng);
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), 0);
	assert_int_equal(d.sectors, 0);
	uint8_t b;
	assert_int_equal(d.be.read(d.be.opaque, 0, &b, 1), -EINVAL);
	blk_uring_close(&u);
	tmp_drop(&t);
}

static void test_image_shrinking_underneath_is_an_error(void **state)
{
	(void)state;
	struct unit_rng rng = { 5 };
	struct tmp t;
	tmp_make(&t, "/tmp", 64 << 10, &rng);
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), 0);
	assert_int_equal(ftruncate(t.fd, 32 << 10), 0);
	uint8_t buf[16 << 10];
	assert_int_equal(d.be.read(d.be.opaque, 40 << 10, buf, sizeof(buf)), -EIO);
	assert_int_equal(d.be.read(d.be.opaque, 24 << 10, buf, sizeof(buf)), -EIO); /* short, then nothing */
	assert_int_equal(d.be.read(d.be.opaque, 0, buf, sizeof(buf)), 0);
	blk_uring_close(&u);
	tmp_drop(&t);
}

struct reaped {
	unsigned n;
	unsigned failed;
	bool seen[BLK_URING_DEPTH + 1];
};

static void on_done(struct blk_uring_req *req, void *opaque)
{
	struct reaped *r = opaque;
	uintptr_t i = (uintptr_t)req->tag;
	assert_true(i <= BLK_URING_DEPTH);
	assert_false(r->seen[i]);
	r->seen[i] = true;
	r->n++;
	if (req->res)
		r->failed++;
	else
		assert_int_equal(req->done, req->len);
}

static void reap_all(struct blk_uring *u, struct reaped *r, unsigned want)
{
	for (int k = 0; k < 10000 && r->n < want; k++)
		assert_true(blk_uring_reap(u, true, on_done, r) >= 0);
	assert_int_equal(r->n, want);
	assert_int_equal(blk_uring_reap(u, true, on_done, r), 0); /* nothing in flight: no wait */
}

static void test_batched_reads_and_writes(void **state)
{
	(void)state;
	enum { PIECE = 8192, N = BLK_URING_DEPTH };
	struct unit_rng rng = { 6 };
	struct tmp t;
	tmp_make(&t, "/tmp", (size_t)PIECE * N, &rng);
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open(&u, t.path, false, &d, &err), 0);
	assert_true(blk_uring_poll_fd(&u) >= 0);
	uint8_t *src = malloc((size_t)PIECE * N), *dst = malloc((size_t)PIECE * N);
	assert_true(src && dst);
	unit_rand_fill(&rng, src, (size_t)PIECE * N);
	struct blk_uring_req *rq = calloc(N + 1, sizeof(*rq));
	assert_non_null(rq);

	/* writes in reverse order, all at once */
	for (unsigned i = 0; i < N; i++) {
		unsigned p = N - 1 - i;
		rq[i] = (struct blk_uring_req){ .op = BLK_URING_WRITE, .off = (uint64_t)PIECE * p, .buf = src + PIECE * p,
						.len = PIECE, .tag = (void *)(uintptr_t)i };
		assert_int_equal(blk_uring_queue(&u, &rq[i]), 0);
	}
	rq[N] = (struct blk_uring_req){ .op = BLK_URING_READ, .off = 0, .buf = dst, .len = 512 };
	assert_int_equal(blk_uring_queue(&u, &rq[N]), -EBUSY); /* full */
	assert_int_equal(blk_uring_submit(&u), N);
	struct reaped r = { 0 };
	reap_all(&u, &r, N);
	assert_int_equal(r.failed, 0);
	file_read(&t, 0, dst, (size_t)PIECE * N);
	assert_memory_equal(src, dst, (size_t)PIECE * N);

	/* reads of odd sizes, an fsync, and two refused at the door */
	memset(dst, 0, (size_t)PIECE * N);
	memset(&r, 0, sizeof(r));
	uint64_t off = 0;
	unsigned n = 0;
	while (off < (uint64_t)PIECE * N && n < N - 1) {
		size_t len = 1 + unit_rand_below(&rng, 3 * PIECE);
		if (len > (uint64_t)PIECE * N - off)
			len = (size_t)((uint64_t)PIECE * N - off);
		rq[n] = (struct blk_uring_req){ .op = BLK_URING_READ, .off = off, .buf = dst + off, .len = len,
						.tag = (void *)(uintptr_t)n };
		assert_int_equal(blk_uring_queue(&u, &rq[n]), 0);
		off += len;
		n++;
	}
	rq[n] = (struct blk_uring_req){ .op = BLK_URING_FSYNC, .tag = (void *)(uintptr_t)n };
	assert_int_equal(blk_uring_queue(&u, &rq[n]), 0);
	n++;
	struct blk_uring_req bad = { .op = BLK_URING_READ, .off = (uint64_t)PIECE * N, .buf = dst, .len = 1 };
	assert_int_equal(blk_uring_queue(&u, &bad), -EINVAL);
	bad = (struct blk_uring_req){ .op = (enum blk_uring_op)7, .buf = dst, .len = 1 };
	assert_int_equal(blk_uring_queue(&u, &bad), -EINVAL);
	/* reaping with wait submits what is queued */
	reap_all(&u, &r, n);
	assert_int_equal(r.failed, 0);
	assert_memory_equal(src, dst, off);

	/* a read past the end after the file shrank fails, the others don't */
	assert_int_equal(ftruncate(t.fd, PIECE), 0);
	memset(&r, 0, sizeof(r));
	rq[0] = (struct blk_uring_req){ .op = BLK_URING_READ, .off = 0, .buf = dst, .len = PIECE, .tag = (void *)0 };
	rq[1] = (struct blk_uring_req){ .op = BLK_URING_READ, .off = PIECE / 2, .buf = dst, .len = PIECE,
					.tag = (void *)1 };
	assert_int_equal(blk_uring_queue(&u, &rq[0]), 0);
	assert_int_equal(blk_uring_queue(&u, &rq[1]), 0);
	assert_int_equal(blk_uring_submit(&u), 2);
	reap_all(&u, &r, 2);
	assert_int_equal(r.failed, 1);
	assert_int_equal(rq[0].res, 0);
	assert_int_equal(rq[1].res, -EIO);
	assert_int_equal(rq[1].done, PIECE / 2);

	/* closing with requests in flight waits for them */
	rq[0] = (struct blk_uring_req){ .op = BLK_URING_READ, .off = 0, .buf = dst, .len = PIECE };
	assert_int_equal(blk_uring_queue(&u, &rq[0]), 0);
	blk_uring_close(&u);
	assert_int_equal(rq[0].done, PIECE);
	free(rq);
	free(src);
	free(dst);
	tmp_drop(&t);
}

/* A disk that is a window of a larger file (vmsh's tools image inside its
 * executable): the window's bytes and nothing else, read-only, through
 * every interface; a file whose size is no sector multiple may hold one;
 * windows outside the file are refused. */
static void test_window_of_a_file(void **state)
{
	(void)state;
	enum { BASE = 12345, SECTORS = 40, FILE_BYTES = BASE + SECTORS * 512 + 777 };
	struct unit_rng rng = { 11 };
	struct tmp t;
	tmp_make(&t, "/tmp", FILE_BYTES, &rng);
	uint8_t want[SECTORS * 512], buf[SECTORS * 512];
	file_read(&t, BASE, want, sizeof(want));
	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	assert_int_equal(blk_uring_open_window(&u, t.path, BASE, SECTORS * 512, &d, &err), 0);
	assert_true(d.read_only);
	assert_int_equal(d.sectors, SECTORS);
	assert_int_equal(d.be.read(d.be.opaque, 0, buf, sizeof(buf)), 0);
	assert_memory_equal(want, buf, sizeof(buf));
	struct iovec iov[2] = { { buf, 512 }, { buf + 512, 1024 } };
	assert_int_equal(d.be.rwv(d.be.opaque, false, 7 * 512, iov, 2), 0);
	assert_memory_equal(want + 7 * 512, buf, 1536);
	/* past the window's end: refused, although the file goes on */
	assert_int_not_equal(d.be.read(d.be.opaque, (SECTORS - 1) * 512, buf, 1024), 0);
	struct blk_uring_req r = { .op = BLK_URING_READ, .off = 3 * 512, .buf = buf, .len = 2048 };
	assert_int_equal(blk_uring_queue(&u, &r), 0);
	assert_int_equal(blk_uring_submit(&u), 1);
	struct reaped rp = { 0 };
	reap_all(&u, &rp, 1);
	assert_int_equal(rp.failed, 0);
	assert_memory_equal(want + 3 * 512, buf, 2048);
	/* never written */
	memset(buf, 0x5a, 512);
	assert_int_equal(d.be.write(d.be.opaque, 0, buf, 512), -EROFS);
	r = (struct blk_uring_req){ .op = BLK_URING_WRITE, .off = 0, .buf = buf, .len = 512 };
	assert_int_equal(blk_uring_queue(&u, &r), -EROFS);
	file_read(&t, BASE, buf, sizeof(buf));
	assert_memory_equal(want, buf, sizeof(buf));
	blk_uring_close(&u);
	/* windows the file does not hold, or that are no whole sectors */
	assert_int_equal(blk_uring_open_window(&u, t.path, BASE, SECTORS * 512 + 512 + 1024, &d, &err), -1);
	assert_int_equal(blk_uring_open_window(&u, t.path, FILE_BYTES + 512, 512, &d, &err), -1);
	assert_int_equal(blk_uring_open_window(&u, t.path, BASE, 100, &d, &err), -1);
	assert_int_equal(blk_uring_open_window(&u, t.path, BASE, 0, &d, &err), -1);
	assert_int_equal(blk_uring_open_window(&u, t.path, UINT64_MAX - 511, 1024, &d, &err), -1);
	tmp_drop(&t);
}

/* A loop device over a temp file: the block device paths (BLKGETSIZE64,
 * BLKDISCARD, BLKZEROOUT). Skipped where loop devices cannot be made. */
static void test_block_device(void **state)
{
	(void)state;
	struct unit_rng rng = { 7 };
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		fail_msg("no /dev/loop-control (%s): the block-device test needs root and loop devices", strerror(errno));
	}
	struct tmp t;
	tmp_make(&t, "/tmp", 4u << 20, &rng);
	int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	char dev[32];
	snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
	int lfd = nr >= 0 ? open(dev, O_RDWR | O_CLOEXEC) : -1;
	if (lfd < 0 || ioctl(lfd, LOOP_SET_FD, t.fd) < 0) {
		int e = errno;
		if (lfd >= 0)
			close(lfd);
		tmp_drop(&t);
		fail_msg("cannot set up %s (%s): the block-device test needs root and loop devices", dev, strerror(e));
	}
	struct loop_info64 info = { .lo_flags = LO_FLAGS_AUTOCLEAR }; /* goes away with the last close */
	assert_int_equal(ioctl(lfd, LOOP_SET_STATUS64, &info), 0);

	struct blk_uring u;
	struct blk_disk d;
	struct vmsh_err err = { 0 };
	int rc = blk_uring_open(&u, dev, false, &d, &err);
	if (rc < 0)
		print_message("%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_true(u.is_blockdev);
	assert_int_equal(d.sectors, (4u << 20) / 512);
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	assert_true(a && b);
	unit_rand_fill(&rng, a, 1 << 20);
	assert_int_equal(d.be.write(d.be.opaque, 1 << 20, a, 1 << 20), 0);
	assert_int_equal(d.be.read(d.be.opaque, 1 << 20, b, 1 << 20), 0);
	assert_memory_equal(a, b, 1 << 20);
	assert_int_equal(d.be.flush(d.be.opaque), 0);
	assert_int_equal(d.be.write_zeroes(d.be.opaque, (1 << 20) + 4096, 64 << 10), 0);
	memset(a + 4096, 0, 64 << 10);
	rc = d.be.discard(d.be.opaque, (1 << 20) + (512 << 10), 128 << 10);
	if (rc == 0) /* a loop device over a file discards by punching holes */
		memset(a + (512 << 10), 0, 128 << 10);
	else
		assert_int_equal(rc, -EOPNOTSUPP);
	assert_int_equal(d.be.read(d.be.opaque, 1 << 20, b, 1 << 20), 0);
	assert_memory_equal(a, b, 1 << 20);
	blk_uring_close(&u);
	close(lfd);
	free(a);
	free(b);
	tmp_drop(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_tmp),
		cmocka_unit_test(test_round_trip_shm),
		cmocka_unit_test(test_discard_and_write_zeroes_tmp),
		cmocka_unit_test(test_discard_and_write_zeroes_shm),
		cmocka_unit_test(test_read_only_refuses_writes),
		cmocka_unit_test(test_window_of_a_file),
		cmocka_unit_test(test_files_that_cannot_be_disks),
		cmocka_unit_test(test_image_shrinking_underneath_is_an_error),
		cmocka_unit_test(test_batched_reads_and_writes),
		cmocka_unit_test(test_block_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
