/* test_kallsyms.c - the kallsyms decoder on tables laid out as the three
 * generations of scripts/kallsyms.c write them, and on crafted images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "guest/kallsyms.h"

#define TEXT 0xffffffff81000000ULL
#define IMAGE (4u << 20)
#define NSYMS 700
#define LONG_NAME_LEN 200 /* a "big" symbol: two length bytes (6.1+) */

enum layout {
	L_510,  /* offsets, base, count, names, 8-byte markers, tokens */
	L_61,   /* offsets, base, count, names, markers, seqs, tokens */
	L_612,  /* count, names, markers, tokens, offsets, base, seqs */
};

struct sym {
	char name[LONG_NAME_LEN + 1];
	char type;
	uint64_t addr;
};

struct builder {
	uint8_t *img;
	size_t pos;
};

static void put(struct builder *b, const void *p, size_t n)
{
	assert_true(b->pos + n <= IMAGE);
	memcpy(b->img + b->pos, p, n);
	b->pos += n;
}

static void align(struct builder *b)
{
	b->pos = (b->pos + 7) & ~(size_t)7;
}

static void put32(struct builder *b, uint32_t v)
{
	put(b, &v, 4);
}

/* Token i is the character i, except a few unused values that stand for
 * pairs (so expansion is exercised): 0x01 "ir", 0x02 "_r", 0x03 "sym". */
static const char *token(int i, char *buf)
{
	static const char *pairs[] = { NULL, "ir", "_r", "sym" };
	if (i >= 1 && i <= 3)
		return pairs[i];
	if (i < 0x20 || i >= 0x7f) {
		snprintf(buf, 8, "~%02x", i); /* never used by a name here */
		return buf;
	}
	buf[0] = (char)i;
	buf[1] = '\0';
	return buf;
}

static void put_name(struct builder *b, const struct sym *s)
{
	uint8_t enc[LONG_NAME_LEN + 2];
	size_t n = 0;
	enc[n++] = (uint8_t)s->type;
	for (const char *p = s->name; *p;) {
		if (!strncmp(p, "sym", 3)) {
			enc[n++] = 3;
			p += 3;
		} else if (!strncmp(p, "ir", 2)) {
			enc[n++] = 1;
			p += 2;
		} else
			enc[n++] = (uint8_t)*p++;
	}
	if (n <= 0x7f) {
		uint8_t l = (uint8_t)n;
		put(b, &l, 1);
	} else {
		uint8_t l[2] = { (uint8_t)((n & 0x7f) | 0x80), (uint8_t)(n >> 7) };
		put(b, l, 2);
	}
	put(b, enc, n);
}

static void make_syms(struct sym *syms)
{
	for (int i = 0; i < NSYMS; i++) {
		struct sym *s = &syms[i];
		s->addr = TEXT + 0x40ULL * (uint64_t)i;
		s->type = i % 3 ? 'T' : 't';
		snprintf(s->name, sizeof(s->name), "sym_%04d", i);
	}
	strcpy(syms[0].name, "_text");
	syms[0].type = 'T';
	strcpy(syms[5].name, "iomem_resource");
	syms[5].type = 'D';
	memset(syms[9].name, 'q', LONG_NAME_LEN);
	syms[9].name[LONG_NAME_LEN] = '\0';
	syms[9].type = 'T';
}

/* The tables of `layout` at image offset 0x1000; returns the image. */
static uint8_t *build(enum layout layout, const struct sym *syms)
{
	struct builder b = { calloc(1, IMAGE), 0x1000 };
	assert_non_null(b.img);
	uint64_t base = TEXT; /* kallsyms_relative_base: the lowest address */
	uint32_t markers[(NSYMS + 255) / 256];
	/* names first into a scratch builder to know the markers */
	struct builder nb = { calloc(1, IMAGE), 0 };
	for (int i = 0; i < NSYMS; i++) {
		if (i % 256 == 0)
			markers[i / 256] = (uint32_t)nb.pos;
		put_name(&nb, &syms[i]);
	}
	char buf[8];
	for (int part = 0; part < 8; part++) {
		/* the order of the parts per layout */
		static const int order[3][8] = {
			{ 0, 1, 2, 3, 4, 6, 7, -1 },  /* 5.10: offsets base count names markers tokens index */
			{ 0, 1, 2, 3, 4, 5, 6, 7 },   /* 6.1 */
			{ 2, 3, 4, 6, 7, 0, 1, 5 },   /* 6.12 */
		};
		int what = order[layout][part];
		if (what < 0)
			continue;
		align(&b);
		switch (what) {
		case 0: /* offsets: per-CPU absolute, the rest relative below zero */
			for (int i = 0; i < NSYMS; i++)
				put32(&b, (uint32_t)(int32_t)(-(int64_t)(syms[i].addr - base) - 1));
			break;
		case 1:
			put(&b, &base, 8);
			break;
		case 2:
			put32(&b, NSYMS);
			break;
		case 3:
			put(&b, nb.img, nb.pos);
			break;
		case 4:
			for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++) {
				if (layout == L_510) {
					uint64_t m = markers[i];
					put(&b, &m, 8);
				} else
					put32(&b, markers[i]);
			}
			break;
		case 5: /* seqs: any permutation; the decoder does not read them */
			for (int i = 0; i < NSYMS; i++) {
				uint8_t s[3] = { 0, (uint8_t)(i >> 8), (uint8_t)i };
				put(&b, s, 3);
			}
			break;
		case 6:
			for (int i = 0; i < 256; i++) {
				const char *t = token(i, buf);
				put(&b, t, strlen(t) + 1);
			}
			break;
		case 7: {
			uint16_t off = 0;
			for (int i = 0; i < 256; i++) {
				put(&b, &off, 2);
				off = (uint16_t)(off + strlen(token(i, buf)) + 1);
			}
			break;
		}
		}
	}
	free(nb.img);
	return b.img;
}

static void check_layout(enum layout layout)
{
	static struct sym syms[NSYMS];
	make_syms(syms);
	uint8_t *img = build(layout, syms);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(kallsyms_parse(img, IMAGE, TEXT, TEXT, &ks, &err), 0);
	assert_int_equal(ks.format, KSYMTAB_KALLSYMS);
	size_t globals = 0;
	for (int i = 0; i < NSYMS; i++) {
		uint64_t v = 0;
		int rc = ksymtab_lookup(&ks, syms[i].name, &v);
		if (syms[i].type == 't') {
			assert_int_equal(rc, -1); /* local: not kept */
			continue;
		}
		globals++;
		assert_int_equal(rc, 0);
		assert_int_equal(v, syms[i].addr);
	}
	assert_int_equal(ks.n, globals);
	/* the images is not needed any more: names are the table's own */
	memset(img, 0, IMAGE);
	uint64_t v;
	assert_int_equal(ksymtab_lookup(&ks, "iomem_resource", &v), 0);
	assert_int_equal(v, TEXT + 5 * 0x40);
	ksymtab_free(&ks);
	free(img);
}

static void test_layout_510(void **state)
{
	(void)state;
	check_layout(L_510);
}

static void test_layout_61(void **state)
{
	(void)state;
	check_layout(L_61);
}

static void test_layout_612(void **state)
{
	(void)state;
	check_layout(L_612);
}

/* A _text the page tables contradict: refused, no wrong values. */
static void test_wrong_text_refused(void **state)
{
	(void)state;
	static struct sym syms[NSYMS];
	make_syms(syms);
	uint8_t *img = build(L_61, syms);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(kallsyms_parse(img, IMAGE, TEXT, TEXT + 0x200000, &ks, &err), -1);
	assert_non_null(strstr(err.msg, "_text"));
	assert_null(ks.syms);
	free(img);
}

/* No kallsyms at all (CONFIG_KALLSYMS off): said so. */
static void test_no_table(void **state)
{
	(void)state;
	uint8_t *img = calloc(1, IMAGE);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(kallsyms_parse(img, IMAGE, TEXT, TEXT, &ks, &err), -1);
	assert_non_null(strstr(err.msg, "CONFIG_KALLSYMS"));
	free(img);
}

/* A crafted image: the token run everywhere, a valid-looking token table
 * and index, zero markers and counts around them. The search ends within
 * its budget instead of running for minutes. */
static void test_crafted_image_is_bounded(void **state)
{
	(void)state;
	static struct sym syms[NSYMS];
	make_syms(syms);
	uint8_t *img = build(L_61, syms);
	/* keep the token table and index, replace everything before it with a
	 * pattern of counts that look right and zero padding */
	const char digits[] = "0\0" "1\0" "2\0" "3\0" "4\0" "5\0" "6\0" "7\0" "8\0" "9";
	static const char first_tokens[] = "~00\0ir\0_r\0sym";
	uint8_t *tt = memmem(img, IMAGE, first_tokens, sizeof(first_tokens));
	assert_non_null(tt);
	size_t t = (size_t)(tt - img);
	for (size_t at = 0; at + 8 <= t; at += 8) {
		uint32_t v[2] = { (uint32_t)(at / 8 % 3 ? 0 : 300), 0 };
		memcpy(img + at, v, 8);
	}
	/* and the digit run repeated after the table */
	for (size_t at = IMAGE / 2; at + sizeof(digits) + 1 < IMAGE; at += sizeof(digits) + 1)
		memcpy(img + at, digits, sizeof(digits));
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(kallsyms_parse(img, IMAGE, TEXT, TEXT, &ks, &err), -1);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	assert_true(secs < 5.0);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_510),
		cmocka_unit_test(test_layout_61),
		cmocka_unit_test(test_layout_612),
		cmocka_unit_test(test_wrong_text_refused),
		cmocka_unit_test(test_no_table),
		cmocka_unit_test(test_crafted_image_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
