/* test_hostile_kernel.c - a guest kernel image crafted to tie vmsh up
 * (src/guest/ksymtab.c): the exported-symbol search must stay bounded in
 * time and memory whatever the image holds. The images are PREL32 tables
 * (value, name: 32-bit self-relative) the anchor search accepts. */
#include "unit.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "guest/ksymtab.h"

#ifndef KSYMTAB_MAX_SYMS
#define KSYMTAB_MAX_SYMS 200000 /* what the fix will export; here for the old code */
#endif

#define BASE_VA 0xffffffff81000000ULL
#define MIB (1u << 20)

static const char *const anchors[] = { "jiffies", "kfree", "schedule", "init_task", "memcpy", "msleep" };

struct crafted {
	uint8_t *img;
	size_t len, str_off, anchor_off[6], long_off, bad_off;
};

static void w32(uint8_t *p, int64_t v)
{
	int32_t x = (int32_t)v;
	memcpy(p, &x, 4);
}

/* entry at e names the string at off */
static void entry(struct crafted *c, size_t e, size_t off)
{
	w32(c->img + e, 0x1000);
	w32(c->img + e + 4, (int64_t)off - (int64_t)(e + 4));
}

/* Strings at the end: the anchors, one 120-character name, and a byte that
 * is no identifier (for entries that must not count). */
static void craft(struct crafted *c, size_t len)
{
	c->len = len;
	c->img = calloc(1, len);
	assert_non_null(c->img);
	c->str_off = len - 4096;
	size_t o = c->str_off + 1;
	for (size_t i = 0; i < ARRAY_LEN(anchors); i++) {
		c->anchor_off[i] = o;
		strcpy((char *)c->img + o, anchors[i]);
		o += strlen(anchors[i]) + 1;
	}
	c->long_off = o;
	memset(c->img + o, 'x', 120);
	o += 121;
	c->bad_off = o;
	c->img[o] = '!';
	/* a genuine-looking table of 64 anchors at the start */
	for (size_t i = 0; i < 64; i++)
		entry(c, i * 8, c->anchor_off[i % ARRAY_LEN(anchors)]);
}

static double secs(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One table as long as the image allows: ~1M symbols from 8 MiB (old code:
 * 45M symbols, 720 MB of vmsh's memory from 1 GiB). */
static void test_symbol_count_is_bounded(void **state)
{
	(void)state;
	struct crafted c;
	craft(&c, 8 * MIB);
	for (size_t e = 0; e + 8 <= c.str_off; e += 8)
		entry(&c, e, c.anchor_off[(e / 8) % ARRAY_LEN(anchors)]);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	int rc = ksymtab_parse(c.img, c.len, BASE_VA, &ks, &err);
	if (rc == 0) {
		assert_true(ks.n <= KSYMTAB_MAX_SYMS);
		ksymtab_free(&ks);
	} else {
		assert_non_null(strstr(err.msg, "symbols"));
	}
	free(c.img);
}

/* Runs of 15 entries (one short of a table) with 120-character names, all
 * through the image: every start of a run re-walks the rest of it. The old
 * scan needed ~0.27 s per MiB (minutes for a large image); the bound holds
 * whatever the image, so this must end in seconds even under ASan. */
static void test_search_time_is_bounded(void **state)
{
	(void)state;
	struct crafted c;
	craft(&c, 24 * MIB);
	for (size_t e = 64 * 8, k = 0; e + 8 <= c.str_off; e += 8, k++)
		entry(&c, e, k % 16 == 15 ? c.bad_off : c.long_off);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	alarm(60); /* the old code is still at it: fail rather than hang */
	double t0 = secs();
	int rc = ksymtab_parse(c.img, c.len, BASE_VA, &ks, &err);
	double dt = secs() - t0;
	alarm(0);
	if (rc == 0)
		ksymtab_free(&ks);
	print_message("crafted 24 MiB image: %s in %.2f s\n", rc == 0 ? "parsed" : err.msg, dt);
	assert_true(dt < 20);
	free(c.img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_symbol_count_is_bounded),
		cmocka_unit_test(test_search_time_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
