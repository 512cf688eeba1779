/* test_virtqueue.c - the host side of a split virtqueue against a fake
 * guest memory: well-formed chains, and every kind of hostile ring content
 * (loops, out-of-range addresses and indices, huge lengths, bad indirect
 * tables, random bytes) that must mark the queue broken, never crash. */
#include "unit.h"

#include "devices/virtqueue.h"

#define MEM_SIZE (1u << 20)
#define QSIZE 8
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define DATA 0x10000

struct vcount;
struct gmem {
	uint8_t *buf;
	unsigned char count_space[256]; /* a struct vcount (below) */
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

/* Vectored accesses, counted and logged (the order of the pieces). */
struct vcount {
	unsigned reads, readvs, writes, writevs;
	uint64_t order[16];
	size_t n_order;
	/* the next vectored read of the avail index is torn: the low byte from
	 * before the driver's store, the high byte from after it */
	bool tear;
	uint16_t torn_old, torn_new;
};

static struct vcount *counts(void *o);

static int greadv(void *o, const struct vq_iov *v, size_t n)
{
	struct vcount *c = counts(o);
	c->readvs++;
	for (size_t i = 0; i < n; i++) {
		if (gread(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
		if (c->tear && v[i].gpa == AVAIL + 2 && v[i].len == 2) {
			uint8_t *b = v[i].buf;
			b[0] = (uint8_t)c->torn_old;
			b[1] = (uint8_t)(c->torn_new >> 8);
			c->tear = false;
		}
	}
	return 0;
}

static int gwritev(void *o, const struct vq_iov *v, size_t n)
{
	struct vcount *c = counts(o);
	c->writevs++;
	for (size_t i = 0; i < n; i++) {
		if (c->n_order < 16)
			c->order[c->n_order++] = v[i].gpa;
		if (gwrite(o, v[i].gpa, v[i].buf, v[i].len) < 0)
			return -1;
	}
	return 0;
}

static bool ccontains(void *o, uint64_t gpa, uint64_t len)
{
	return gpa < MEM_SIZE && len <= MEM_SIZE - gpa;
}

static int cread(void *o, uint64_t gpa, void *b, size_t len)
{
	counts(o)->reads++;
	return gread(o, gpa, b, len);
}

static int cwrite(void *o, uint64_t gpa, const void *b, size_t len)
{
	counts(o)->writes++;
	return gwrite(o, gpa, b, len);
}

struct fx {
	struct gmem m;
	struct vq_mem mem;
	struct virtqueue vq;
	uint16_t avail_idx;
};

static void set_desc(struct fx *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = f->m.buf + DESC + 16 * i;
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void make_avail(struct fx *f, uint16_t head)
{
	memcpy(f->m.buf + AVAIL + 4 + 2 * (f->avail_idx % QSIZE), &head, 2);
	f->avail_idx++;
	memcpy(f->m.buf + AVAIL + 2, &f->avail_idx, 2);
}

static struct vcount *counts(void *o)
{
	_Static_assert(sizeof(struct vcount) <= sizeof(((struct gmem *)0)->count_space), "room");
	return (struct vcount *)(void *)((struct gmem *)o)->count_space;
}

static struct fx *setup(bool event_idx)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->m.buf = calloc(1, MEM_SIZE);
	f->mem = (struct vq_mem){ .read = gread, .write = gwrite, .opaque = &f->m };
	assert_int_equal(vq_init(&f->vq, &f->mem, QSIZE, DESC, AVAIL, USED, event_idx), 0);
	return f;
}

/* The same queue on memory with vectored access, every call counted (the
 * counts zeroed). */
static struct fx *setup_counted(uint16_t size, bool event_idx)
{
	struct fx *f = setup(event_idx);
	f->mem = (struct vq_mem){ .read = cread, .write = cwrite, .readv = greadv, .writev = gwritev,
				 .contains = ccontains, .opaque = &f->m };
	vq_free(&f->vq);
	assert_int_equal(vq_init(&f->vq, &f->mem, size, DESC, AVAIL, USED, event_idx), 0);
	memset(counts(&f->m), 0, sizeof(struct vcount));
	return f;
}

static void teardown(struct fx *f)
{
	vq_free(&f->vq);
	free(f->m.buf);
	free(f);
}

static uint16_t used_idx(struct fx *f)
{
	uint16_t v;
	memcpy(&v, f->m.buf + USED + 2, 2);
	return v;
}

static void test_request_chain_is_popped_and_pushed(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->vq, &c), 0);
	set_desc(f, 3, DATA, 16, VIRTQ_DESC_F_NEXT, 5);
	set_desc(f, 5, DATA + 0x1000, 4096, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	set_desc(f, 1, DATA + 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 3);
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 3);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.n_readable, 1);
	assert_int_equal(c.readable_len, 16);
	assert_int_equal(c.writable_len, 4097);
	assert_int_equal(c.bufs[1].gpa, DATA + 0x1000);
	assert_true(c.bufs[2].device_writes);
	assert_int_equal(vq_pop(&f->vq, &c), 0);
	assert_int_equal(vq_push(&f->vq, 3, 4097), 0);
	assert_int_equal(used_idx(f), 1);
	uint32_t id, len;
	memcpy(&id, f->m.buf + USED + 4, 4);
	memcpy(&len, f->m.buf + USED + 8, 4);
	assert_int_equal(id, 3);
	assert_int_equal(len, 4097);
	assert_true(vq_should_notify(&f->vq, 0));
	/* the driver suppresses interrupts */
	uint16_t no_irq = 1;
	memcpy(f->m.buf + AVAIL, &no_irq, 2);
	assert_false(vq_should_notify(&f->vq, 0));
	teardown(f);
}

static void test_indices_wrap_around(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	set_desc(f, 0, DATA, 8, 0, 0);
	struct vq_chain c;
	for (int i = 0; i < 70000; i++) {
		make_avail(f, 0);
		assert_int_equal(vq_pop(&f->vq, &c), 1);
		assert_int_equal(vq_push(&f->vq, c.head, 0), 0);
	}
	assert_int_equal(used_idx(f), (uint16_t)70000);
	assert_false(f->vq.broken);
	teardown(f);
}

static void expect_broken(struct fx *f, const char *why)
{
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->vq, &c), -1);
	assert_true(f->vq.broken);
	if (!strstr(f->vq.why, why))
		print_message("why: %s\n", f->vq.why);
	assert_non_null(strstr(f->vq.why, why));
	/* and stays broken */
	assert_int_equal(vq_pop(&f->vq, &c), -1);
	assert_int_equal(vq_push(&f->vq, 0, 0), -1);
}

static void test_descriptor_loop_breaks_the_queue(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	set_desc(f, 0, DATA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA, 8, VIRTQ_DESC_F_NEXT, 0);
	make_avail(f, 0);
	expect_broken(f, "loop");
	teardown(f);
}

static void test_buffer_outside_guest_memory(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	set_desc(f, 0, MEM_SIZE - 4, 8, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest memory");
	teardown(f);
	f = setup(false);
	set_desc(f, 0, UINT64_MAX - 2, 8, 0, 0); /* wraps */
	make_avail(f, 0);
	expect_broken(f, "outside guest memory");
	teardown(f);
}

static void test_huge_chains_are_refused(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	for (unsigned i = 0; i < QSIZE; i++)
		set_desc(f, i, 0, MEM_SIZE, i + 1 < QSIZE ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	/* 8 x 1 MiB is fine; make one buffer claim more than memory */
	set_desc(f, 2, 0, 0xffffffff, VIRTQ_DESC_F_NEXT, 3);
	make_avail(f, 0);
	expect_broken(f, "outside guest memory");
	teardown(f);
}

static void test_bad_indices(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	make_avail(f, QSIZE); /* head out of range */
	expect_broken(f, "head");
	teardown(f);
	f = setup(false);
	set_desc(f, 0, DATA, 8, VIRTQ_DESC_F_NEXT, 200);
	make_avail(f, 0);
	expect_broken(f, "next");
	teardown(f);
	f = setup(false);
	uint16_t idx = 100; /* more available than the queue holds */
	memcpy(f->m.buf + AVAIL + 2, &idx, 2);
	expect_broken(f, "available");
	teardown(f);
	f = setup(false);
	set_desc(f, 0, DATA, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA, 8, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "readable buffer after a writable");
	teardown(f);
	f = setup(false);
	set_desc(f, 0, DATA, 0, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "zero-length");
	teardown(f);
}

static void test_indirect_tables(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	uint64_t table = 0x8000;
	struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
	} t[3] = {
		{ DATA, 32, VIRTQ_DESC_F_NEXT, 2 },
		{ 0, 0, 0, 0 },
		{ DATA + 0x100, 512, VIRTQ_DESC_F_WRITE, 0 },
	};
	memcpy(f->m.buf + table, t, sizeof(t));
	set_desc(f, 4, table, sizeof(t), VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 4);
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 4);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.readable_len, 32);
	assert_int_equal(c.writable_len, 512);
	/* a loop inside the table */
	t[2].flags = VIRTQ_DESC_F_NEXT; /* readable, back to the first */
	t[2].next = 0;
	memcpy(f->m.buf + table, t, sizeof(t));
	make_avail(f, 4);
	expect_broken(f, "indirect chain loops");
	teardown(f);
	/* nested */
	f = setup(false);
	t[0] = (typeof(t[0])){ table, 48, VIRTQ_DESC_F_INDIRECT, 0 };
	memcpy(f->m.buf + table, t, sizeof(t));
	set_desc(f, 4, table, sizeof(t), VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 4);
	expect_broken(f, "nested");
	teardown(f);
	/* bad length */
	f = setup(false);
	set_desc(f, 4, table, 17, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 4);
	expect_broken(f, "indirect table length");
	teardown(f);
}

static void test_event_idx(void **state)
{
	(void)state;
	struct fx *f = setup(true);
	set_desc(f, 0, DATA, 8, 0, 0);
	/* driver wants an interrupt once used_idx passes 2 */
	uint16_t used_event = 2;
	memcpy(f->m.buf + AVAIL + 4 + 2 * QSIZE, &used_event, 2);
	struct vq_chain c;
	bool notified[4];
	for (int i = 0; i < 4; i++) {
		make_avail(f, 0);
		assert_int_equal(vq_pop(&f->vq, &c), 1);
		uint16_t old = f->vq.used_idx;
		assert_int_equal(vq_push(&f->vq, 0, 0), 0);
		notified[i] = vq_should_notify(&f->vq, old);
	}
	assert_false(notified[0]);
	assert_false(notified[1]);
	assert_true(notified[2]);
	assert_false(notified[3]);
	assert_int_equal(vq_set_avail_event(&f->vq, 9), 0);
	uint16_t ae;
	memcpy(&ae, f->m.buf + USED + 4 + 8 * QSIZE, 2);
	assert_int_equal(ae, 9);
	teardown(f);
}

static void test_unpop_gives_the_chain_back(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	struct vq_chain c;
	assert_int_equal(vq_unpop(&f->vq), -1); /* nothing popped yet */
	set_desc(f, 2, DATA, 100, 0, 0);
	set_desc(f, 6, DATA + 0x1000, 200, 0, 0);
	make_avail(f, 2);
	make_avail(f, 6);
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 2);
	assert_int_equal(vq_unpop(&f->vq), 0);
	assert_int_equal(vq_unpop(&f->vq), -1); /* only once per pop */
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 2);
	assert_int_equal(c.readable_len, 100);
	assert_int_equal(vq_push(&f->vq, c.head, 0), 0);
	assert_int_equal(vq_unpop(&f->vq), -1); /* pushed: no longer ours to give back */
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 6);
	assert_int_equal(vq_unpop(&f->vq), 0);
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(c.head, 6);
	assert_int_equal(vq_pop(&f->vq, &c), 0);
	assert_int_equal(vq_unpop(&f->vq), -1); /* the empty pop took nothing */
	assert_false(f->vq.broken);
	teardown(f);
}

/* The log names exactly the chains the device holds: taken and not yet
 * returned, an unpopped one not; a later run's take-over finds them. */
static void test_log_names_the_held_chains(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	struct vq_log log;
	memset(&log, 0xee, sizeof(log));
	vq_log_start(&f->vq, &log);
	struct vq_chain c;
	for (unsigned h = 0; h < 4; h++) {
		set_desc(f, h, DATA + 0x1000 * h, 64, VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, (uint16_t)h);
	}
	for (unsigned h = 0; h < 4; h++)
		assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(vq_unpop(&f->vq), 0); /* 3 given back */
	assert_int_equal(vq_push(&f->vq, 1, 64), 0);
	assert_int_equal(log.last_avail, 3);
	assert_int_equal(log.used_idx, 1);
	assert_int_equal(log.inflight[0], (1u << 0) | (1u << 2));

	/* a later run takes the queue over from the log */
	struct virtqueue vq2;
	assert_int_equal(vq_init(&vq2, &f->mem, QSIZE, DESC, AVAIL, USED, false), 0);
	uint16_t held[VQ_LOG_MAX];
	size_t n;
	assert_int_equal(vq_take_over(&vq2, &log, held, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(held[0], 0);
	assert_int_equal(held[1], 2);
	assert_int_equal(vq_chain_at(&vq2, held[1], &c), 0);
	assert_int_equal(c.bufs[0].gpa, DATA + 0x2000);
	assert_int_equal(vq_push(&vq2, 0, 0), 0);
	assert_int_equal(vq_push(&vq2, 2, 0), 0);
	assert_int_equal(log.inflight[0], 0);
	assert_int_equal(vq_pop(&vq2, &c), 1); /* the one given back */
	assert_int_equal(c.head, 3);
	assert_int_equal(log.inflight[0], 1u << 3);
	assert_int_equal(used_idx(f), 3);
	vq_free(&vq2);
	teardown(f);
}

/* A death between two stores of the log is repaired by the take-over:
 * a chain returned but not crossed out is not held any more; a chain held
 * but not counted as taken is not taken again. */
static void test_take_over_repairs_a_death_between_two_stores(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	struct vq_log log;
	vq_log_start(&f->vq, &log);
	struct vq_chain c;
	for (unsigned h = 0; h < 3; h++) {
		set_desc(f, h, DATA + 0x1000 * h, 64, VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, (uint16_t)h);
	}
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(vq_push(&f->vq, 0, 64), 0);
	/* died after returning head 0 to the guest, before crossing it out */
	struct vq_log dead = log;
	dead.inflight[0] |= 1u << 0;
	dead.used_idx = 0;
	/* ... and after holding head 2 without counting it as taken */
	dead.inflight[0] |= 1u << 2;
	struct virtqueue vq2;
	assert_int_equal(vq_init(&vq2, &f->mem, QSIZE, DESC, AVAIL, USED, false), 0);
	uint16_t held[VQ_LOG_MAX];
	size_t n;
	assert_int_equal(vq_take_over(&vq2, &dead, held, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(held[0], 1);
	assert_int_equal(held[1], 2);
	assert_int_equal(vq2.used_idx, 1);
	assert_int_equal(vq2.last_avail, 3);
	assert_int_equal(dead.used_idx, 1);
	assert_int_equal(dead.last_avail, 3);
	assert_int_equal(vq_pop(&vq2, &c), 0); /* head 2 is not taken twice */
	/* a used index the guest moved further than one is refused */
	uint16_t far = 5;
	memcpy(f->m.buf + USED + 2, &far, 2);
	struct virtqueue vq3;
	assert_int_equal(vq_init(&vq3, &f->mem, QSIZE, DESC, AVAIL, USED, false), 0);
	assert_int_equal(vq_take_over(&vq3, &log, held, &n), -1);
	assert_true(vq3.broken);
	vq_free(&vq3);
	vq_free(&vq2);
	teardown(f);
}

static bool inside_first_page_only(void *o, uint64_t gpa, uint64_t len)
{
	(void)o;
	return gpa >= DATA && gpa + len <= DATA + 0x1000;
}

/* With a contains callback the buffers are checked by it, not by reading
 * their first and last byte (two syscalls each for another process's
 * memory): a readable buffer it rejects breaks the queue. */
static void test_contains_checks_the_buffers(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	f->vq.mem.contains = inside_first_page_only;
	struct vq_chain c;
	set_desc(f, 0, DATA, 16, 0, 0);
	make_avail(f, 0);
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(vq_push(&f->vq, 0, 0), 0);
	set_desc(f, 1, DATA + 0xff0, 32, 0, 0); /* readable, but past what contains allows */
	make_avail(f, 1);
	assert_int_equal(vq_pop(&f->vq, &c), -1);
	assert_true(f->vq.broken);
	teardown(f);
}

static void test_device_can_break_the_queue(void **state)
{
	(void)state;
	struct fx *f = setup(false);
	set_desc(f, 0, DATA, 8, 0, 0);
	make_avail(f, 0);
	struct vq_chain c;
	assert_int_equal(vq_pop(&f->vq, &c), 1);
	assert_int_equal(vq_break(&f->vq, "chain of %d bytes is too short", 8), -1);
	assert_int_equal(vq_break(&f->vq, "second reason"), -1);
	assert_string_equal(f->vq.why, "chain of 8 bytes is too short"); /* the first one stays */
	assert_int_equal(vq_unpop(&f->vq), -1);
	expect_broken(f, "too short");
	teardown(f);
}

static void test_bad_setup(void **state)
{
	(void)state;
	struct gmem m = { .buf = calloc(1, MEM_SIZE) };
	struct vq_mem mem = { .read = gread, .write = gwrite, .opaque = &m };
	struct virtqueue vq;
	assert_int_equal(vq_init(&vq, &mem, 6, DESC, AVAIL, USED, false), -1);
	assert_int_equal(vq_init(&vq, &mem, 8, DESC + 8, AVAIL, USED, false), -1);
	assert_int_equal(vq_init(&vq, &mem, 8, MEM_SIZE - 16, AVAIL, USED, false), -1);
	assert_int_equal(vq_init(&vq, &mem, 0, DESC, AVAIL, USED, false), -1);
	free(m.buf);
}

/* With vectored access (vmsh's own, over process_vm_readv/writev): a
 * request costs one look at the index, one read of its entry and the whole
 * descriptor table, and one write of its status byte, used entry and index
 * in that order; what the guest changes in its table after the look does
 * not reach the chain being served. */
static void test_vectored_access_reads_and_writes_a_request_at_once(void **state)
{
	struct fx *f = setup_counted(QSIZE, true);
	struct vcount *c = counts(&f->m);
	set_desc(f, 0, DATA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	set_desc(f, 2, DATA + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 0);
	struct vq_chain ch;
	assert_int_equal(vq_pop(&f->vq, &ch), 1);
	assert_int_equal(c->reads, 0);
	assert_int_equal(c->readvs, 2); /* the index (and used_event), then the entry and the table */
	assert_int_equal(ch.n, 3);
	/* the guest rewrites descriptor 1 now: the chain taken is the one announced */
	set_desc(f, 1, 0xdead0000, 4096, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(ch.bufs[1].gpa, DATA + 0x100);
	assert_int_equal(ch.bufs[1].len, 512);
	uint8_t status = 0;
	assert_int_equal(vq_push_after(&f->vq, ch.head, 513, DATA + 0x400, &status, 1), 0);
	assert_int_equal(c->writevs, 1);
	assert_int_equal(c->writes, 0);
	assert_int_equal(c->n_order, 4);
	assert_int_equal(c->order[0], DATA + 0x400);        /* status */
	assert_int_equal(c->order[1], USED + 4);            /* entry */
	assert_int_equal(c->order[2], USED + 2);            /* index after them */
	assert_int_equal(c->order[3], USED + 4 + 8 * QSIZE); /* avail_event: the queue is empty */
	assert_int_equal(used_idx(f), 1);
	uint16_t ae;
	memcpy(&ae, f->m.buf + USED + 4 + 8 * QSIZE, 2);
	assert_int_equal(ae, 1);
	assert_false(vq_event_armed(&f->vq)); /* asked, not looked since */
	/* nothing new: one look, and the device may sleep without asking again */
	assert_int_equal(vq_pop(&f->vq, &ch), 0);
	assert_int_equal(c->readvs, 3);
	assert_true(vq_event_armed(&f->vq));
	assert_int_equal(vq_set_avail_event(&f->vq, f->vq.last_avail), 0);
	assert_int_equal(c->writes + c->writevs, 1); /* already asked */
	/* the driver's used_event came with the look */
	unsigned before = c->reads + c->readvs;
	(void)vq_should_notify(&f->vq, 0);
	assert_int_equal(c->reads + c->readvs, before);
	/* two more at once: one look, one read for both, the table as it is now */
	set_desc(f, 1, DATA + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	set_desc(f, 3, DATA + 0x800, 16, VIRTQ_DESC_F_NEXT, 4);
	set_desc(f, 4, DATA + 0x900, 1, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 0);
	make_avail(f, 3);
	assert_int_equal(vq_pop(&f->vq, &ch), 1);
	assert_int_equal(ch.head, 0);
	assert_false(vq_event_armed(&f->vq));
	assert_int_equal(vq_pop(&f->vq, &ch), 1);
	assert_int_equal(ch.head, 3);
	assert_int_equal(ch.n, 2);
	assert_int_equal(c->reads, 0);
	assert_int_equal(c->readvs, 5);
	/* a push with chains seen and not yet taken does not ask to be notified */
	make_avail(f, 0);
	make_avail(f, 3);
	assert_int_equal(vq_pop(&f->vq, &ch), 1);
	c->n_order = 0;
	assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	assert_int_equal(c->n_order, 2); /* entry and index, no avail_event */
	teardown(f);
}

/* After a notification the first look reads index, ring and table in one
 * go; the look that finds the queue empty again is the small one. */
static void test_notified_look_is_one_read(void **state)
{
	struct fx *f = setup_counted(QSIZE, true);
	struct vcount *c = counts(&f->m);
	struct vq_chain ch;
	for (unsigned round = 0; round < 3 * QSIZE; round++) { /* the ring wraps */
		uint16_t h = (uint16_t)(round % QSIZE), h2 = (uint16_t)((round + 3) % QSIZE);
		set_desc(f, h, DATA + 0x100 * h, 16 + h, 0, 0);
		set_desc(f, h2, DATA + 0x100 * h2, 16 + h2, 0, 0);
		make_avail(f, h);
		make_avail(f, h2);
		unsigned before = c->readvs;
		vq_expect_work(&f->vq);
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(c->readvs - before, 1);
		assert_int_equal(ch.head, h);
		assert_int_equal(ch.bufs[0].len, 16 + h);
		/* rewritten after the look: the copy is what was announced */
		set_desc(f, h2, 0xdead0000, 4096, 0, 0);
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(c->readvs - before, 1);
		assert_int_equal(ch.head, h2);
		assert_int_equal(ch.bufs[0].gpa, DATA + 0x100 * h2);
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
		assert_int_equal(vq_pop(&f->vq, &ch), 0); /* the small look */
		assert_int_equal(c->readvs - before, 2);
	}
	/* a notification with nothing new: nothing taken */
	vq_expect_work(&f->vq);
	assert_int_equal(vq_pop(&f->vq, &ch), 0);
	assert_false(f->vq.broken);
	teardown(f);
}

/* Notification protocol with the used_event read along with the index:
 * after a push, vq_should_notify reads used_event anew unless a look came
 * after the push - a stale value would lose an interrupt the guest waits for. */
static void test_used_event_is_never_stale(void **state)
{
	struct fx *f = setup_counted(QSIZE, true);
	set_desc(f, 0, DATA, 16, 0, 0);
	uint16_t ue = 100; /* the driver wants no interrupt for a while */
	memcpy(f->m.buf + AVAIL + 4 + 2 * QSIZE, &ue, 2);
	make_avail(f, 0);
	struct vq_chain ch;
	assert_int_equal(vq_pop(&f->vq, &ch), 1); /* looked: used_event 100 */
	ue = 0; /* the driver changes its mind: interrupt at the next used entry */
	memcpy(f->m.buf + AVAIL + 4 + 2 * QSIZE, &ue, 2);
	assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	assert_true(vq_should_notify(&f->vq, 0)); /* read anew after the push */
	teardown(f);
}

/* The entries of a wrapped avail ring come in two pieces of one read. */
static void test_vectored_read_of_a_wrapped_ring(void **state)
{
	struct fx *f = setup_counted(QSIZE, false);
	set_desc(f, 0, DATA, 16, 0, 0);
	struct vq_chain ch;
	for (int i = 0; i < QSIZE - 2; i++) { /* to two entries before the end */
		make_avail(f, 0);
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	}
	for (uint16_t h = 0; h < 4; h++) {
		set_desc(f, h, DATA + 0x100 * h, 16 + h, 0, 0);
		make_avail(f, h);
	}
	for (uint16_t h = 0; h < 4; h++) {
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(ch.head, h);
		assert_int_equal(ch.bufs[0].len, 16 + h);
	}
	assert_int_equal(vq_pop(&f->vq, &ch), 0);
	teardown(f);
}

/* A 2-byte index copied a byte at a time while the driver stores it reads
 * as a value never written: 0x00ff -> 0x0100 as 0x01ff, in a queue of 256
 * "256 new entries", 255 of them chains long returned (served again: an old
 * write to an old sector, duplicate used entries). The look reads the index
 * twice and believes only two equal reads. */
static void test_torn_avail_index_is_not_believed(void **state)
{
	struct fx *f = setup_counted(256, true);
	struct vcount *c = counts(&f->m);
	for (unsigned i = 0; i < 256; i++)
		set_desc(f, i, DATA + 0x100 * i, 16, 0, 0);
	struct vq_chain ch;
	for (uint16_t idx = 0; idx < 0xff; idx++) { /* 255 requests served and returned */
		uint16_t n = (uint16_t)(idx + 1);
		memcpy(f->m.buf + AVAIL + 4 + 2 * idx, &idx, 2);
		memcpy(f->m.buf + AVAIL + 2, &n, 2);
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	}
	assert_int_equal(vq_pop(&f->vq, &ch), 0);
	uint16_t head = 7, n = 0x100; /* the 256th, stored while the device looks */
	memcpy(f->m.buf + AVAIL + 4 + 2 * 0xff, &head, 2);
	memcpy(f->m.buf + AVAIL + 2, &n, 2);
	c->tear = true;
	c->torn_old = 0x00ff;
	c->torn_new = 0x0100;
	unsigned served = 0;
	while (served < 512 && vq_pop(&f->vq, &ch) == 1) {
		assert_int_equal(ch.head, 7);
		served++;
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	}
	assert_false(f->vq.broken);
	assert_int_equal(served, 1);
	/* the same when the look after a notification reads it all at once */
	head = 9, n = 0x200;
	for (uint16_t idx = 0x100; idx < 0x1ff; idx++) {
		uint16_t k = (uint16_t)(idx + 1), h = (uint16_t)(idx % 256);
		memcpy(f->m.buf + AVAIL + 4 + 2 * h, &h, 2);
		memcpy(f->m.buf + AVAIL + 2, &k, 2);
		vq_expect_work(&f->vq);
		assert_int_equal(vq_pop(&f->vq, &ch), 1);
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	}
	assert_int_equal(vq_pop(&f->vq, &ch), 0);
	memcpy(f->m.buf + AVAIL + 4 + 2 * 0xff, &head, 2);
	memcpy(f->m.buf + AVAIL + 2, &n, 2);
	c->tear = true;
	c->torn_old = 0x01ff;
	c->torn_new = 0x0200;
	served = 0;
	vq_expect_work(&f->vq);
	while (served < 512 && vq_pop(&f->vq, &ch) == 1) {
		assert_int_equal(ch.head, 9);
		served++;
		assert_int_equal(vq_push(&f->vq, ch.head, 0), 0);
	}
	assert_false(f->vq.broken);
	assert_int_equal(served, 1);
	teardown(f);
}

static void test_random_rings_never_crash(void **state)
{
	(void)state;
	struct unit_rng rng = { 77 };
	for (int round = 0; round < 2000; round++) {
		struct fx *f = setup(round & 1);
		unit_rand_fill(&rng, f->m.buf + DESC, 16 * QSIZE);
		unit_rand_fill(&rng, f->m.buf + AVAIL, 6 + 2 * QSIZE);
		/* keep some descriptors pointing into memory so chains get walked */
		for (unsigned i = 0; i < QSIZE; i++)
			if (unit_rand_below(&rng, 2)) {
				uint64_t a = unit_rand_below(&rng, MEM_SIZE);
				memcpy(f->m.buf + DESC + 16 * i, &a, 8);
			}
		struct vq_chain c;
		for (int k = 0; k < 3 * QSIZE; k++) {
			int r = vq_pop(&f->vq, &c);
			if (r <= 0)
				break;
			assert_true(c.n >= 1 && c.readable_len + c.writable_len <= VQ_MAX_CHAIN_BYTES);
			for (size_t b = 0; b < c.n; b++)
				assert_true(c.bufs[b].gpa + c.bufs[b].len <= MEM_SIZE);
			vq_push(&f->vq, c.head, 0);
		}
		teardown(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_chain_is_popped_and_pushed),
		cmocka_unit_test(test_indices_wrap_around),
		cmocka_unit_test(test_descriptor_loop_breaks_the_queue),
		cmocka_unit_test(test_buffer_outside_guest_memory),
		cmocka_unit_test(test_huge_chains_are_refused),
		cmocka_unit_test(test_bad_indices),
		cmocka_unit_test(test_indirect_tables),
		cmocka_unit_test(test_event_idx),
		cmocka_unit_test(test_unpop_gives_the_chain_back),
		cmocka_unit_test(test_log_names_the_held_chains),
		cmocka_unit_test(test_take_over_repairs_a_death_between_two_stores),
		cmocka_unit_test(test_contains_checks_the_buffers),
		cmocka_unit_test(test_device_can_break_the_queue),
		cmocka_unit_test(test_bad_setup),
		cmocka_unit_test(test_vectored_access_reads_and_writes_a_request_at_once),
		cmocka_unit_test(test_vectored_read_of_a_wrapped_ring),
		cmocka_unit_test(test_used_event_is_never_stale),
		cmocka_unit_test(test_notified_look_is_one_read),
		cmocka_unit_test(test_torn_avail_index_is_not_believed),
		cmocka_unit_test(test_random_rings_never_crash),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
