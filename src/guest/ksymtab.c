/* ksymtab.c - finding and parsing the exported-symbol tables (see ksymtab.h).
 *
 * Method: find the name string of a few symbols every kernel exports, find
 * the table entries pointing at those strings (trying each layout), and
 * learn from them the layout and the extent of __ksymtab_strings. Then scan
 * the whole image for runs of entries whose names all point to string starts
 * inside that section: each run is one table. Plain string search is not
 * enough to resolve a name (the linker merges "_printk" into the tail of
 * "mmiotrace_printk"): names are only resolved through the tables. */
#include "guest/ksymtab.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define MAX_NAME 128
#define ANCHORS_FIRST 1
#define MIN_RUN 16

/* Names exported (EXPORT_SYMBOL or _GPL) by every x86-64 kernel since 4.x;
 * the long ones first: a search for a longer string skips further (memmem
 * for "jiffies" in 10 MiB took 19 ms on the emulated host). */
static const char *const anchors[] = {
	"platform_device_register_full", "__platform_driver_register", "synchronize_rcu", "kmalloc_caches",
	"queue_work_on", "init_task", "jiffies", "kfree", "schedule", "memcpy", "msleep", "call_rcu",
};

const char *ksymtab_format_name(enum ksymtab_format f)
{
	switch (f) {
	case KSYMTAB_ABS: return "absolute";
	case KSYMTAB_ABS_NS: return "absolute+namespace";
	case KSYMTAB_PREL32: return "prel32";
	case KSYMTAB_PREL32_NS: return "prel32+namespace";
	case KSYMTAB_KALLSYMS: return "kallsyms";
	default: return "none";
	}
}

size_t ksymtab_entry_size(enum ksymtab_format f)
{
	switch (f) {
	case KSYMTAB_ABS: return 16;
	case KSYMTAB_ABS_NS: return 24;
	case KSYMTAB_PREL32: return 8;
	case KSYMTAB_PREL32_NS: return 12;
	default: return 0;
	}
}

struct scan {
	const uint8_t *img;
	size_t len;
	uint64_t base;
	enum ksymtab_format fmt;
	size_t str_lo, str_hi; /* image offsets bounding __ksymtab_strings; 0/len if unknown */
	uint64_t work, budget; /* entry checks and name bytes examined, and their limit */
};

/* The image is guest data: a crafted one could make the search quadratic
 * (runs one entry short of a table, long names: ~0.27 s per MiB before this
 * bound) or produce tens of millions of "symbols". A real kernel needs about
 * one check per aligned word plus its names (Debian 6.1: ~15M for 54 MiB);
 * the budget allows several times that and then gives up clearly. */
#define WORK_PER_BYTE 2
#define WORK_EXTRA (64ULL << 20)
#define MAX_STRINGS (16u << 20) /* __ksymtab_strings: ~250 KiB in real kernels */

static bool over_budget(const struct scan *s)
{
	return s->work > s->budget;
}

static int32_t rd32(const uint8_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return v;
}
static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static bool is_ident(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* A name must be a NUL-terminated identifier inside __ksymtab_strings. It
 * need not start after a NUL: the section is SHF_MERGE|SHF_STRINGS and the
 * linker merges names into the tails of longer ones. */
static bool valid_name_at(struct scan *s, int64_t off)
{
	if (off <= 0 || (size_t)off >= s->len)
		return false;
	if ((size_t)off < s->str_lo || (size_t)off >= s->str_hi)
		return false;
	for (size_t i = 0; i < MAX_NAME && (size_t)off + i < s->len; i++) {
		uint8_t c = s->img[off + i];
		s->work++;
		if (c == '\0')
			return i > 0;
		if (!is_ident(c))
			return false;
	}
	return false;
}

/* Image offset the name field of the entry at `e` points to, or -1. */
static int64_t name_off(const struct scan *s, size_t e)
{
	size_t es = ksymtab_entry_size(s->fmt);
	if (e + es > s->len)
		return -1;
	switch (s->fmt) {
	case KSYMTAB_PREL32:
	case KSYMTAB_PREL32_NS:
		return (int64_t)(e + 4) + rd32(s->img + e + 4);
	case KSYMTAB_ABS:
	case KSYMTAB_ABS_NS: {
		uint64_t va = rd64(s->img + e + 8);
		if (va < s->base || va - s->base >= s->len)
			return -1;
		return (int64_t)(va - s->base);
	}
	default:
		return -1;
	}
}

static uint64_t value_of(const struct scan *s, size_t e)
{
	if (s->fmt == KSYMTAB_PREL32 || s->fmt == KSYMTAB_PREL32_NS)
		return s->base + e + (int64_t)rd32(s->img + e);
	return rd64(s->img + e);
}

/* Namespaces are printable strings ("", "CRYPTO_INTERNAL", "module:kvm") in
 * __ksymtab_strings. */
static bool valid_ns_at(struct scan *s, int64_t off)
{
	if (off <= 0 || (size_t)off < s->str_lo || (size_t)off >= s->str_hi)
		return false;
	for (size_t i = 0; i < MAX_NAME && (size_t)off + i < s->len; i++) {
		uint8_t c = s->img[off + i];
		s->work++;
		if (c == '\0')
			return true;
		if (c <= ' ' || c >= 0x7f)
			return false;
	}
	return false;
}

static bool valid_ns(struct scan *s, size_t e)
{
	if (s->fmt == KSYMTAB_PREL32_NS) {
		int32_t o = rd32(s->img + e + 8);
		return o == 0 || valid_ns_at(s, (int64_t)(e + 8) + o);
	}
	if (s->fmt == KSYMTAB_ABS_NS) {
		uint64_t va = rd64(s->img + e + 16);
		return va == 0 || (va >= s->base && va - s->base < s->len);
	}
	return true;
}

static bool valid_entry(struct scan *s, int64_t e)
{
	s->work++;
	if (e < 0 || (size_t)e + ksymtab_entry_size(s->fmt) > s->len || over_budget(s))
		return false;
	return valid_name_at(s, name_off(s, (size_t)e)) && valid_ns(s, (size_t)e);
}

/* Number of consecutive valid entries starting at e going in direction dir. */
static size_t run_length(struct scan *s, int64_t e, int dir, size_t max)
{
	size_t es = ksymtab_entry_size(s->fmt), n = 0;
	while (n < max && valid_entry(s, e)) {
		n++;
		e += dir * (int64_t)es;
	}
	return n;
}

/* All offsets where the string "name\0" starts (possibly as the tail of a
 * longer string: see valid_name_at). */
static size_t find_strings(const uint8_t *img, size_t len, const char *name, size_t *offs, size_t max)
{
	size_t nl = strlen(name) + 1, n = 0; /* with its NUL */
	const uint8_t *p = img;
	while (n < max && (size_t)(p - img) < len) {
		const uint8_t *hit = memmem(p, len - (p - img), name, nl);
		if (!hit)
			break;
		offs[n++] = hit - img;
		p = hit + 1;
	}
	return n;
}

/* Length of the run of valid entries through e (0 if e is not valid). */
static size_t run_through(struct scan *s, int64_t e, size_t max)
{
	size_t fwd = run_length(s, e, 1, max);
	return fwd ? fwd + run_length(s, e, -1, max) - 1 : 0;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return (x > y) - (x < y);
}

static bool in_sorted(const size_t *v, size_t n, int64_t x)
{
	if (n == 0 || x < (int64_t)v[0] || x > (int64_t)v[n - 1])
		return false;
	return bsearch(&(size_t){ (size_t)x }, v, n, sizeof(*v), cmp_size) != NULL;
}

static bool is_strbyte(uint8_t c)
{
	return c == '\0' || (c > ' ' && c < 0x7f);
}

/* Widen [lo,hi) to the whole block of NUL-separated strings around it. */
static void widen_strings(const struct scan *s, size_t *lo, size_t *hi)
{
	while (*lo > 0 && *hi - *lo < MAX_STRINGS && is_strbyte(s->img[*lo - 1]))
		(*lo)--;
	while (*hi < s->len && *hi - *lo < MAX_STRINGS && is_strbyte(s->img[*hi]))
		(*hi)++;
}

/* Whether the word at f points at one of the anchor names (sorted image
 * offsets, spanning [lo, lo + span]) as a prel32 or an absolute name field;
 * if so, try each layout with f as that field and keep the entry with the
 * longest run of valid neighbours. */
static void anchor_at(struct scan *s, size_t f, const size_t *names, size_t n_names, size_t *best_score,
		      enum ksymtab_format *best_fmt, size_t *entry)
{
	static const enum ksymtab_format fmts[] = { KSYMTAB_PREL32_NS, KSYMTAB_PREL32, KSYMTAB_ABS_NS, KSYMTAB_ABS };
	/* the names' span first, inline: this visits every aligned word */
	uint64_t lo = names[0], span = names[n_names - 1] - names[0];
	s->work++;
	int64_t p = (int64_t)f + rd32(s->img + f);
	uint64_t a = f + 8 <= s->len ? rd64(s->img + f) - s->base : UINT64_MAX;
	if ((uint64_t)p - lo > span && a - lo > span)
		return;
	bool prel = in_sorted(names, n_names, p);
	bool abs = f + 8 <= s->len && in_sorted(names, n_names, (int64_t)a);
	if (!prel && !abs)
		return;
	for (size_t k = 0; k < sizeof(fmts) / sizeof(fmts[0]); k++) {
		bool is_prel = fmts[k] == KSYMTAB_PREL32 || fmts[k] == KSYMTAB_PREL32_NS;
		size_t off_in_entry = is_prel ? 4 : 8;
		if (is_prel != prel || f < off_in_entry)
			continue;
		s->fmt = fmts[k];
		size_t score = run_through(s, (int64_t)(f - off_in_entry), 64);
		if (score > *best_score) {
			*best_score = score;
			*best_fmt = fmts[k];
			*entry = f - off_in_entry;
		}
	}
}

/* Entries pointing at any anchor name, trying each layout at each hit; on
 * success set s->fmt and *entry to the entry with the longest run of valid
 * neighbours. Every layout of every version puts the tables just below
 * __ksymtab_strings (include/asm-generic/vmlinux.lds.h), so the search
 * looks first below each block of strings holding a name, the lowest
 * first, then everywhere: a real kernel's table comes within a few hundred
 * KiB (searched from the start, 4.5 of Debian 6.1's 9 MiB of read-only
 * data: 100 ms on the emulated host). */
#define MIN_STRING_BLOCK 1024
#define NEAR_STRINGS (1u << 20)
static bool find_anchor_entry(struct scan *s, const size_t *names, size_t n_names, size_t *entry)
{
	size_t best_score = 0;
	enum ksymtab_format best_fmt = KSYMTAB_NONE;
	if (!n_names || s->len < 4)
		return false;
	for (size_t i = 0; i < n_names && best_score < 2 * MIN_RUN && !over_budget(s);) {
		size_t lo = names[i], hi = names[i];
		widen_strings(s, &lo, &hi);
		s->work += hi - lo;
		while (i < n_names && names[i] <= hi)
			i++;
		if (hi - lo < MIN_STRING_BLOCK)
			continue;
		size_t stop = lo > NEAR_STRINGS ? lo - NEAR_STRINGS : 0;
		for (size_t f = lo & ~(size_t)3; f >= stop + 4 && best_score < 2 * MIN_RUN && !over_budget(s);) {
			f -= 4;
			anchor_at(s, f, names, n_names, &best_score, &best_fmt, entry);
		}
	}
	for (size_t f = 0; f + 4 <= s->len && best_score < 2 * MIN_RUN && !over_budget(s); f += 4)
		anchor_at(s, f, names, n_names, &best_score, &best_fmt, entry);
	s->fmt = best_score >= MIN_RUN ? best_fmt : KSYMTAB_NONE;
	return s->fmt != KSYMTAB_NONE;
}

static int cmp_sym(const void *a, const void *b)
{
	const struct ksym *x = a, *y = b;
	return strcmp(x->name, y->name);
}

static int too_costly(struct vmsh_err *err, size_t len)
{
	return vmsh_error_kind(err, VMSH_E_NOKERNEL, EOVERFLOW,
			       "searching the %zu MiB kernel image for its symbol table exceeded its work bound "
			       "(a crafted image?): given up", len >> 20);
}

/* Sort the symbols by name. The kernel sorts each table by name for its own
 * binary search, so the tables are merged, one after the other (a qsort of
 * Debian 6.1's two took 8 ms on the emulated host); whatever is not made of
 * a few sorted runs (a crafted image) is sorted as a whole. */
#define MAX_MERGED_RUNS 8
static int sort_syms(struct ksymtab *ks)
{
	size_t ends[MAX_MERGED_RUNS], n_runs = 0;
	for (size_t i = 1; i <= ks->n && n_runs < MAX_MERGED_RUNS; i++)
		if (i == ks->n || strcmp(ks->syms[i - 1].name, ks->syms[i].name) > 0)
			ends[n_runs++] = i;
	if (ks->n < 2 || n_runs == 1)
		return 0;
	if (!n_runs || ends[n_runs - 1] != ks->n) {
		qsort(ks->syms, ks->n, sizeof(*ks->syms), cmp_sym);
		return 0;
	}
	struct ksym *tmp = malloc(ks->n * sizeof(*tmp));
	if (!tmp)
		return -1;
	/* [0, ends[r - 1]) is sorted; merge run r into it */
	for (size_t r = 1; r < n_runs; r++) {
		size_t i = 0, j = ends[r - 1], k = 0;
		while (i < ends[r - 1] && j < ends[r])
			tmp[k++] = strcmp(ks->syms[i].name, ks->syms[j].name) <= 0 ? ks->syms[i++] : ks->syms[j++];
		while (i < ends[r - 1])
			tmp[k++] = ks->syms[i++];
		while (j < ends[r])
			tmp[k++] = ks->syms[j++];
		memcpy(ks->syms, tmp, k * sizeof(*tmp));
	}
	free(tmp);
	return 0;
}

/* Append the run of rl entries at e to out. */
static int add_table(struct scan *s, size_t e, size_t rl, struct ksymtab *out, size_t *cap, struct vmsh_err *err)
{
	size_t es = ksymtab_entry_size(s->fmt);
	if (rl > KSYMTAB_MAX_SYMS - out->n)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, E2BIG,
				       "the kernel image claims more than %u exported symbols: not searched further",
				       KSYMTAB_MAX_SYMS);
	if (out->n + rl > *cap) {
		size_t nc = *cap;
		while (nc < out->n + rl)
			nc *= 2;
		struct ksym *ns = realloc(out->syms, nc * sizeof(*ns));
		if (!ns)
			return vmsh_error(err, ENOMEM, "parse ksymtab");
		out->syms = ns;
		*cap = nc;
	}
	for (size_t i = 0; i < rl; i++) {
		size_t ee = e + i * es;
		out->syms[out->n++] = (struct ksym){
			.value = value_of(s, ee),
			.name = (const char *)s->img + name_off(s, ee),
		};
	}
	out->n_tables++;
	return 0;
}

/* Every table in the image: each run of at least MIN_RUN valid entries.
 *
 * Such a run covers MIN_RUN - 1 entry widths after its first entry, so of
 * the offsets with x mod ((MIN_RUN - 1) * es) < es, one of every entry
 * width's aligned offsets, it holds an entry at one: probing only those
 * finds every table (1 probe in 15 instead of every aligned word: the scan
 * of Debian 6.1's 10 MiB of read-only data took 90 ms on the emulated host).
 * A hit is followed back to its run's first entry, never below the end of
 * the table found before, so that the tables are those a scan of every
 * offset would find (unless runs overlap at different offsets within an
 * entry, which only a crafted image has: then one of them is taken, the
 * work bounded as before). On success out holds the entries (unsorted) and
 * [*lo, *hi) the tables' extent. */
static int find_tables(struct scan *s, struct ksymtab *out, size_t *lo, size_t *hi, struct vmsh_err *err)
{
	size_t es = ksymtab_entry_size(s->fmt), cap = 4096;
	bool absolute = s->fmt == KSYMTAB_ABS || s->fmt == KSYMTAB_ABS_NS;
	size_t align = absolute ? 8 : 4, stride = (MIN_RUN - 1) * es;
	uint64_t str_span = s->str_hi - s->str_lo;
	out->syms = malloc(cap * sizeof(*out->syms));
	if (!out->syms)
		return vmsh_error(err, ENOMEM, "parse ksymtab");
	*lo = SIZE_MAX;
	*hi = 0;
	size_t floor = 0; /* the end of the last table found */
	for (size_t e = 0; e + es <= s->len;) {
		if (over_budget(s)) {
			ksymtab_free(out);
			return too_costly(err, s->len);
		}
		size_t next = e + align;
		if (next % stride >= es)
			next += stride - next % stride;
		/* an entry's name lies in __ksymtab_strings: checked inline first
		 * (valid_entry checks it again, with the rest) */
		uint64_t no = absolute ? rd64(s->img + e + 8) - s->base : e + 4 + (uint64_t)(int64_t)rd32(s->img + e + 4);
		s->work++;
		if (no - s->str_lo >= str_span || !valid_entry(s, (int64_t)e)) {
			e = next;
			continue;
		}
		size_t first = e;
		while (first >= floor + es && valid_entry(s, (int64_t)(first - es)))
			first -= es;
		size_t rl = run_length(s, (int64_t)first, 1, SIZE_MAX);
		if (rl < MIN_RUN) {
			e = next;
			continue;
		}
		if (add_table(s, first, rl, out, &cap, err) < 0) {
			ksymtab_free(out);
			return -1;
		}
		if (first < *lo)
			*lo = first;
		floor = first + rl * es;
		if (floor > *hi)
			*hi = floor;
		e = floor;
		if (e % stride >= es)
			e += stride - e % stride;
	}
	return 0;
}

int ksymtab_parse(const uint8_t *img, size_t len, uint64_t base_va, struct ksymtab *out, struct vmsh_err *err)
{
	memset(out, 0, sizeof(*out));
	struct scan s = { .img = img, .len = len, .base = base_va, .str_lo = 0, .str_hi = len,
			  .budget = (uint64_t)len * WORK_PER_BYTE + WORK_EXTRA };
	size_t entry = 0, names[32 * sizeof(anchors) / sizeof(anchors[0])], n_names = 0;
	/* one anchor first (each is a search of the whole image: 3 ms for
	 * 9 MiB on the emulated host), all of them if that is not enough */
	static const size_t stages[] = { ANCHORS_FIRST, sizeof(anchors) / sizeof(anchors[0]) };
	bool found = false;
	for (size_t st = 0, a = 0; st < 2 && !found && !over_budget(&s); st++) {
		for (; a < stages[st]; a++)
			n_names += find_strings(img, len, anchors[a], names + n_names, 32);
		qsort(names, n_names, sizeof(*names), cmp_size);
		found = find_anchor_entry(&s, names, n_names, &entry);
	}
	if (!found)
		return over_budget(&s) ? too_costly(err, len)
				       : vmsh_error_kind(err, VMSH_E_NOKERNEL, ENOENT,
							 "no exported-symbol table found in kernel image");

	/* bound __ksymtab_strings from the anchor's run */
	size_t es = ksymtab_entry_size(s.fmt);
	size_t back = run_length(&s, (int64_t)entry, -1, SIZE_MAX);
	size_t fwd = run_length(&s, (int64_t)entry, 1, SIZE_MAX);
	size_t first = entry - (back - 1) * es;
	size_t lo = SIZE_MAX, hi = 0;
	for (size_t i = 0; i < back + fwd - 1; i++) {
		int64_t no = name_off(&s, first + i * es);
		if ((size_t)no < lo)
			lo = no;
		if ((size_t)no > hi)
			hi = no;
	}
	widen_strings(&s, &lo, &hi);
	s.str_lo = lo;
	s.str_hi = hi;

	/* every table */
	size_t span_lo = SIZE_MAX, span_hi = 0;
	int rc = find_tables(&s, out, &span_lo, &span_hi, err);
	if (rc < 0)
		return rc;
	out->format = s.fmt;
	out->span_lo = span_lo < s.str_lo ? span_lo : s.str_lo;
	out->span_hi = span_hi > s.str_hi ? span_hi : s.str_hi;
	if (sort_syms(out) < 0) {
		ksymtab_free(out);
		return vmsh_error(err, ENOMEM, "sort the exported symbols");
	}
	log_debug("ksymtab: %s, %zu tables, %zu symbols, strings at +%#zx..+%#zx", ksymtab_format_name(s.fmt),
		  out->n_tables, out->n, s.str_lo, s.str_hi);
	return 0;
}

int ksymtab_lookup(const struct ksymtab *ks, const char *name, uint64_t *value)
{
	size_t lo = 0, hi = ks->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(ks->syms[mid].name, name);
		if (c == 0) {
			*value = ks->syms[mid].value;
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int ksymtab_own_names(struct ksymtab *ks, const uint8_t *img, size_t len, struct vmsh_err *err)
{
	size_t total = 0;
	for (size_t i = 0; i < ks->n; i++) {
		const uint8_t *p = (const uint8_t *)ks->syms[i].name;
		if (p < img || p >= img + len)
			return vmsh_error(err, EFAULT, "symbol name outside the image");
		total += strnlen(ks->syms[i].name, (size_t)(img + len - p)) + 1;
	}
	char *pool = malloc(total ? total : 1), *q = pool;
	if (!pool)
		return vmsh_error(err, ENOMEM, "symbol names");
	for (size_t i = 0; i < ks->n; i++) {
		const uint8_t *p = (const uint8_t *)ks->syms[i].name;
		size_t l = strnlen(ks->syms[i].name, (size_t)(img + len - p));
		memcpy(q, p, l);
		q[l] = '\0';
		ks->syms[i].name = q;
		q += l + 1;
	}
	free(ks->names);
	ks->names = pool;
	return 0;
}

void ksymtab_free(struct ksymtab *ks)
{
	free(ks->syms);
	free(ks->names);
	ks->syms = NULL;
	ks->names = NULL;
	ks->n = 0;
}
