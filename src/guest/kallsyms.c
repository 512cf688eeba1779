/* kallsyms.c - decoding the guest kernel's kallsyms tables (see kallsyms.h). */
#include "guest/kallsyms.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define KSYM_NAME_LEN 512 /* the kernel's bound on a symbol name */
#define TOKENS 256

/* The image is guest data: a crafted one could hold the token run, zero
 * markers and plausible counts everywhere and make the search quadratic.
 * A real kernel needs a few million steps (its names walked once or twice,
 * every possible count of the seqs table tried once); the budget allows
 * ten times that and then gives up clearly. */
#define WORK_BUDGET 64000000ULL

struct image {
	const uint8_t *p;
	size_t len;
	uint64_t work;
};

static bool spend(struct image *im, uint64_t steps)
{
	im->work += steps;
	return im->work <= WORK_BUDGET;
}

static bool has(const struct image *im, size_t off, size_t n)
{
	return off <= im->len && n <= im->len - off;
}

static uint32_t u32_at(const struct image *im, size_t off)
{
	uint32_t v;
	memcpy(&v, im->p + off, 4);
	return v;
}

static uint64_t u64_at(const struct image *im, size_t off)
{
	uint64_t v;
	memcpy(&v, im->p + off, 8);
	return v;
}

static size_t align8(size_t v)
{
	return (v + 7) & ~(size_t)7;
}

/* The token table and its index. */
struct tokens {
	size_t table, index; /* image offsets */
	uint16_t off[TOKENS];
	uint8_t len[TOKENS];
};

/* Is there a token table starting at t whose index follows it? */
static bool tokens_at(struct image *im, size_t t, struct tokens *tk)
{
	size_t pos = t;
	for (int i = 0; i < TOKENS; i++) {
		if (pos - t > UINT16_MAX || !has(im, pos, 1))
			return false;
		const uint8_t *s = im->p + pos;
		size_t l = strnlen((const char *)s, im->len - pos < KSYM_NAME_LEN ? im->len - pos : KSYM_NAME_LEN);
		if (l == 0 || l >= KSYM_NAME_LEN || !has(im, pos, l + 1))
			return false;
		tk->off[i] = (uint16_t)(pos - t);
		tk->len[i] = (uint8_t)(l > 255 ? 255 : l);
		if (l > 255)
			return false;
		pos += l + 1;
	}
	size_t idx = align8(pos);
	if (!has(im, idx, 2 * TOKENS))
		return false;
	for (int i = 0; i < TOKENS; i++) {
		uint16_t v;
		memcpy(&v, im->p + idx + 2 * i, 2);
		if (v != tk->off[i])
			return false;
	}
	tk->table = t;
	tk->index = idx;
	return true;
}

/* Every character a symbol name holds stands for itself in the token table
 * (only unused byte values become tokens): "0".."9" are ten consecutive
 * one-character tokens at indices 0x30-0x39. Find them, step back to index
 * 0, and check the table against its index. */
static int find_tokens(struct image *im, struct tokens *tk)
{
	static const char digits[] = "0\0" "1\0" "2\0" "3\0" "4\0" "5\0" "6\0" "7\0" "8\0" "9";
	const uint8_t *p = im->p, *end = im->p + im->len;
	while ((p = memmem(p, (size_t)(end - p), digits, sizeof(digits))) != NULL) {
		size_t pos = (size_t)(p - im->p);
		bool ok = true;
		for (int i = 0; i < '0' && ok; i++) { /* back over the tokens before "0" */
			if (pos < 2 || im->p[pos - 1] != 0) {
				ok = false;
				break;
			}
			size_t s = pos - 1;
			while (s > 0 && im->p[s - 1] != 0 && pos - s < KSYM_NAME_LEN)
				s--;
			if (s == pos - 1)
				ok = false; /* an empty token */
			pos = s;
		}
		if (!spend(im, 512))
			return -1;
		if (ok && pos % 8 == 0 && tokens_at(im, pos, tk))
			return 0;
		p++;
	}
	return -1;
}

/* One name's length prefix at off: 1 or 2 bytes (ULEB128, Linux 6.1+
 * "big" symbols). Returns the bytes of the whole entry, 0 if malformed. */
static size_t entry_size(const struct image *im, size_t off)
{
	if (!has(im, off, 1))
		return 0;
	size_t l = im->p[off], hdr = 1;
	if (l & 0x80) {
		if (!has(im, off, 2))
			return 0;
		l = (l & 0x7f) | ((size_t)(im->p[off + 1] & 0x7f) << 7);
		hdr = 2;
	}
	if (l == 0 || l >= KSYM_NAME_LEN || !has(im, off + hdr, l))
		return 0; /* no token stands for less than a character */
	return hdr + l;
}

struct table {
	size_t num_at, names, markers;
	uint32_t n;
	unsigned marker_size;
};

static uint64_t marker(const struct image *im, const struct table *t, size_t i)
{
	size_t at = t->markers + i * t->marker_size;
	return t->marker_size == 4 ? u32_at(im, at) : u64_at(im, at);
}

/* Do n names start at names and end just before the markers, every 256th
 * where its marker says? */
static bool names_fit(struct image *im, const struct table *t)
{
	size_t off = t->names;
	for (uint32_t i = 0; i < t->n; i++) {
		if ((i & 0xff) == 0 && marker(im, t, i >> 8) != off - t->names)
			return false;
		size_t e = entry_size(im, off);
		if (!e || off + e > t->markers || !spend(im, e))
			return false;
		off += e;
	}
	return align8(off) == t->markers;
}

/* Markers of `count` entries at m: 0 first, strictly ascending. */
static bool markers_at(struct image *im, size_t m, size_t count, unsigned size)
{
	if (!has(im, m, count * size))
		return false;
	struct table t = { .markers = m, .marker_size = size };
	if (marker(im, &t, 0) != 0)
		return false;
	for (size_t i = 1; i < count; i++)
		if (!spend(im, 1) || marker(im, &t, i) <= marker(im, &t, i - 1))
			return false;
	return true;
}

/* The symbol count and the names before markers at m (count entries):
 * kallsyms_num_syms lies 8 bytes before the names (its label aligned, 4
 * bytes of padding), n within [lo, hi]. */
static bool find_names(struct image *im, struct table *t, uint32_t lo, uint32_t hi)
{
	size_t count = ((size_t)hi + 255) / 256;
	uint64_t last = marker(im, t, count - 1);
	if (t->markers < 10 || last > t->markers - 10)
		return false;
	/* names start at least `last` bytes before the markers; from the last
	 * marker on come at most 256 more entries */
	size_t top = (t->markers - (size_t)last - 8 - 2) & ~(size_t)7;
	size_t floor = top > 256 * (KSYM_NAME_LEN + 2) ? top - 256 * (KSYM_NAME_LEN + 2) : 0;
	for (size_t at = top;; at -= 8) {
		if (!spend(im, 1))
			return false;
		uint32_t n = u32_at(im, at);
		if (n >= lo && n <= hi && u32_at(im, at + 4) == 0) {
			t->num_at = at;
			t->names = at + 8;
			t->n = n;
			if (names_fit(im, t))
				return true;
		}
		if (at < floor + 8)
			return false;
	}
}

/* The markers and names, for a token table at tk->table: right before it
 * (Linux 6.4+, and kernels without kallsyms_seqs_of_names), or before the
 * 3-bytes-per-symbol kallsyms_seqs_of_names that lies before it. */
static int find_table(struct image *im, const struct tokens *tk, struct table *t)
{
	const unsigned sizes[2] = { 4, 8 };
	for (int s = 0; s < 2; s++) {
		unsigned ms = sizes[s];
		/* markers right before the token table (padding: 0 or 4 bytes) */
		for (size_t pad = 0; pad <= 4; pad += 4) {
			if (tk->table < pad + ms)
				continue;
			size_t end = tk->table - pad, m = end;
			while (m >= ms && (end - m) / ms < (KALLSYMS_MAX_SYMS + 255) / 256) {
				m -= ms;
				struct table probe = { .markers = m, .marker_size = ms };
				if (marker(im, &probe, 0) == 0)
					break;
			}
			size_t count = (end - m) / ms;
			if (count == 0 || m % 8 || !markers_at(im, m, count, ms))
				continue;
			*t = (struct table){ .markers = m, .marker_size = ms };
			uint32_t lo = (uint32_t)(count - 1) * 256 + 1, hi = (uint32_t)count * 256;
			if (find_names(im, t, lo, hi))
				return 0;
		}
		/* markers, then the seqs (3 bytes a symbol), then the tokens */
		for (uint32_t n = 1; n <= KALLSYMS_MAX_SYMS && 3ULL * n <= tk->table && spend(im, 1); n++) {
			size_t seqs = (tk->table - 3ULL * n) & ~(size_t)7;
			if (align8(seqs + 3ULL * n) != tk->table)
				continue;
			size_t count = ((size_t)n + 255) / 256;
			for (size_t pad = 0; pad <= 4; pad += 4) {
				if (seqs < pad + count * ms)
					continue;
				size_t m = seqs - pad - count * ms;
				if (m % 8 || !markers_at(im, m, count, ms))
					continue;
				*t = (struct table){ .markers = m, .marker_size = ms };
				if (find_names(im, t, n, n))
					return 0;
			}
		}
	}
	return -1;
}

/* Expand one name (after its type character) into out. */
static size_t expand(const struct image *im, const struct tokens *tk, size_t off, char *out, char *type)
{
	size_t e = entry_size(im, off), hdr = im->p[off] & 0x80 ? 2 : 1, o = 0;
	bool first = true;
	for (size_t i = hdr; i < e && o + 1 < KSYM_NAME_LEN; i++) {
		uint8_t tok = im->p[off + i];
		const char *s = (const char *)im->p + tk->table + tk->off[tok];
		for (size_t k = 0; k < tk->len[tok] && o + 1 < KSYM_NAME_LEN; k++) {
			if (first) {
				*type = s[k];
				first = false;
			} else
				out[o++] = s[k];
		}
	}
	out[o] = '\0';
	return o;
}

static int cmp_name(const void *a, const void *b)
{
	const struct ksym *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->value > y->value) - (x->value < y->value);
}

enum value_mode { ABS_PERCPU, RELATIVE };

static uint64_t value_of(int32_t off, uint64_t base, enum value_mode mode)
{
	if (mode == RELATIVE)
		return base + (uint32_t)off;
	return off >= 0 ? (uint64_t)off : base - 1 - (uint64_t)(int64_t)off;
}

/* Where the offsets and relative base are, and how values are made: the
 * one that puts `_text` at text_va. idx_text: the number of _text. */
static int find_values(const struct image *im, const struct tokens *tk, const struct table *t, uint32_t idx_text,
		       uint64_t text_va, size_t *offsets, uint64_t *base, enum value_mode *mode)
{
	size_t span = align8(4ULL * t->n);
	size_t cand[2][2] = {
		/* offsets, relative base: before the count (up to 6.3) */
		{ t->num_at >= 8 + span ? t->num_at - 8 - span : SIZE_MAX, t->num_at - 8 },
		/* after the token index (6.4+) */
		{ align8(tk->index + 2 * TOKENS), align8(tk->index + 2 * TOKENS) + span },
	};
	for (int c = 0; c < 2; c++) {
		if (cand[c][0] == SIZE_MAX || !has(im, cand[c][0], 4ULL * t->n) || !has(im, cand[c][1], 8))
			continue;
		uint64_t b = u64_at(im, cand[c][1]);
		int32_t o;
		memcpy(&o, im->p + cand[c][0] + 4ULL * idx_text, 4);
		for (int m = 0; m < 2; m++)
			if (value_of(o, b, (enum value_mode)m) == text_va) {
				*offsets = cand[c][0];
				*base = b;
				*mode = (enum value_mode)m;
				return 0;
			}
	}
	return -1;
}

int kallsyms_parse(const uint8_t *img, size_t len, uint64_t base_va, uint64_t text_va, struct ksymtab *out,
		   struct vmsh_err *err)
{
	(void)base_va;
	memset(out, 0, sizeof(*out));
	struct image im = { img, len, 0 };
	struct tokens tk;
	struct table t;
	if (find_tokens(&im, &tk) < 0)
		return vmsh_error(err, ENOENT, im.work > WORK_BUDGET ? "kallsyms: gave up searching the image (crafted?)"
								: "no kallsyms table in the kernel image (CONFIG_KALLSYMS off?)");
	if (find_table(&im, &tk, &t) < 0)
		return vmsh_error(err, ENOENT, "kallsyms token table at image offset %#zx, but no symbol names that "
				  "fit its markers", tk.table);
	/* names, once: find _text, count the global ones and their bytes */
	char name[KSYM_NAME_LEN], type = 0;
	size_t off = t.names, keep = 0, bytes = 0;
	uint32_t idx_text = UINT32_MAX;
	for (uint32_t i = 0; i < t.n; i++) {
		size_t l = expand(&im, &tk, off, name, &type);
		if (!spend(&im, l + 1))
			return vmsh_error(err, E2BIG, "kallsyms: gave up decoding the names (crafted?)");
		if (idx_text == UINT32_MAX && !strcmp(name, "_text"))
			idx_text = i;
		if (isupper((unsigned char)type)) {
			keep++;
			bytes += l + 1;
		}
		off += entry_size(&im, off);
	}
	size_t offsets;
	uint64_t base;
	enum value_mode mode;
	if (idx_text == UINT32_MAX || find_values(&im, &tk, &t, idx_text, text_va, &offsets, &base, &mode) < 0)
		return vmsh_error(err, ENOENT, "kallsyms: %u symbol names, but no offsets that put _text at %#llx",
				  t.n, (unsigned long long)text_va);
	out->syms = calloc(keep ? keep : 1, sizeof(*out->syms));
	out->names = malloc(bytes ? bytes : 1);
	if (!out->syms || !out->names) {
		ksymtab_free(out);
		return vmsh_error(err, ENOMEM, "kallsyms: %zu symbols", keep);
	}
	char *q = out->names;
	off = t.names;
	for (uint32_t i = 0; i < t.n; i++) {
		size_t l = expand(&im, &tk, off, name, &type);
		if (isupper((unsigned char)type) && out->n < keep) {
			int32_t o;
			memcpy(&o, im.p + offsets + 4ULL * i, 4);
			memcpy(q, name, l + 1);
			out->syms[out->n++] = (struct ksym){ .value = value_of(o, base, mode), .name = q };
			q += l + 1;
		}
		off += entry_size(&im, off);
	}
	qsort(out->syms, out->n, sizeof(*out->syms), cmp_name);
	out->format = KSYMTAB_KALLSYMS;
	out->n_tables = 1;
	out->span_lo = offsets < t.num_at ? offsets : t.num_at;
	out->span_hi = offsets > tk.index ? align8(offsets + 4ULL * t.n) + 8 : tk.index + 2 * TOKENS;
	log_debug("kallsyms: %u symbols (%zu global), token table at %#zx, markers of %u bytes, values %s",
		  t.n, out->n, tk.table, t.marker_size, mode == ABS_PERCPU ? "relative, per-CPU absolute" : "relative");
	return 0;
}
