/* fuzz.h - shared helpers for the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Each target defines LLVMFuzzerTestOneInput and is built twice: with clang
 * and libFuzzer (make fuzz), and with any compiler plus driver.c, a plain
 * main() that replays files and directories of inputs (make check-fuzz
 * replays the corpus that way, also where clang is missing).
 *
 *   - struct fz: takes typed values off the front of the input; past its end
 *     every value is 0, so any input is a valid (if short) program
 *   - struct fuzz_ram: a guest-physical RAM image in a buffer of ours, with
 *     the callbacks the device code (vq_mem) and the page-table walker
 *     (pt_read_page_fn) use; accesses outside it fail as on a real guest
 *   - FUZZ_CHECK: an invariant of the code under test; a violation aborts,
 *     which libFuzzer and the sanitizers report as a crash with the input */
#ifndef VMSH_FUZZ_H
#define VMSH_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                                  \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                          \
			fputc('\n', stderr);                                                   \
			abort();                                                               \
		}                                                                              \
	} while (0)

/* What a target found, when built with -DFUZZ_VERBOSE (to check that a
 * seed reaches what it is meant to reach). */
#ifdef FUZZ_VERBOSE
#define FUZZ_LOG(...) fprintf(stderr, __VA_ARGS__)
#else
#define FUZZ_LOG(...) ((void)0)
#endif

/* ---- input consumer ---- */

struct fz {
	const uint8_t *p;
	size_t n;
};

static inline size_t fz_left(const struct fz *f)
{
	return f->n;
}

/* len bytes into out; zeros past the end of the input */
static inline void fz_bytes(struct fz *f, void *out, size_t len)
{
	size_t k = len < f->n ? len : f->n;
	memcpy(out, f->p, k);
	memset((uint8_t *)out + k, 0, len - k);
	f->p += k;
	f->n -= k;
}

static inline uint8_t fz_u8(struct fz *f)
{
	uint8_t v;
	fz_bytes(f, &v, 1);
	return v;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v;
	fz_bytes(f, &v, 2);
	return v;
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v;
	fz_bytes(f, &v, 4);
	return v;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v;
	fz_bytes(f, &v, 8);
	return v;
}

/* the rest of the input, as a pointer (nothing is copied) */
static inline const uint8_t *fz_rest(struct fz *f, size_t *len)
{
	const uint8_t *p = f->p;
	*len = f->n;
	f->p += f->n;
	f->n = 0;
	return p;
}

/* ---- guest RAM image ---- */

struct fuzz_ram {
	uint8_t *buf;
	uint64_t size; /* guest-physical [0, size) is RAM */
	uint64_t reads, writes;
};

static inline bool fuzz_ram_inside(const struct fuzz_ram *r, uint64_t gpa, uint64_t len)
{
	return gpa <= r->size && len <= r->size - gpa;
}

static inline int fuzz_ram_read(void *o, uint64_t gpa, void *b, size_t len)
{
	struct fuzz_ram *r = o;
	if (!fuzz_ram_inside(r, gpa, len))
		return -1;
	memcpy(b, r->buf + gpa, len);
	r->reads++;
	return 0;
}

static inline int fuzz_ram_write(void *o, uint64_t gpa, const void *b, size_t len)
{
	struct fuzz_ram *r = o;
	if (!fuzz_ram_inside(r, gpa, len))
		return -1;
	memcpy(r->buf + gpa, b, len);
	r->writes++;
	return 0;
}

static inline uint8_t *fuzz_ram_ptr(void *o, uint64_t gpa, size_t len)
{
	struct fuzz_ram *r = o;
	return fuzz_ram_inside(r, gpa, len) ? r->buf + gpa : NULL;
}

/* pt_read_page_fn */
static inline int fuzz_ram_read_page(void *o, uint64_t gpa, uint64_t page[512])
{
	return fuzz_ram_read(o, gpa & ~0xfffULL, page, 4096);
}

/* One RAM buffer per process, reused by every input: allocating and
 * zeroing megabytes per run would dominate the exec rate. Each input gets a
 * fresh image: `img` at the start, zeros after it. */
static inline void fuzz_ram_reset(struct fuzz_ram *r, uint64_t size, const uint8_t *img, size_t img_len)
{
	static uint8_t *buf;
	static uint64_t cap;
	if (cap < size) {
		free(buf);
		buf = malloc(size);
		if (!buf)
			abort();
		cap = size;
	}
	if (img_len > size)
		img_len = size;
	memcpy(buf, img, img_len);
	memset(buf + img_len, 0, size - img_len);
	*r = (struct fuzz_ram){ .buf = buf, .size = size };
}

#endif
