/* test_ksymtab.c - finding and parsing the kernel's exported-symbol tables
 * (src/guest/ksymtab.c) in synthetic kernel images of every layout.
 *
 * A synthetic image looks like the relevant part of a real one (tables
 * before strings, as in vmlinux.lds.h):
 *   +0x00000  "text": pseudo-random bytes; exported functions live here
 *   +0x10000  __ksymtab      entries sorted by name
 *             (gap)
 *             __ksymtab_gpl  entries sorted by name
 *   +0x20000  __ksymtab_strings: NUL-separated names in link (not sorted) order
 *   +0x28000  pseudo-random bytes up to the end
 * Exported variables may also live after the image (values are not checked
 * against the image). */
#include "unit.h"

#include <errno.h>

#include "guest/ksymtab.h"

#define BASE_VA 0xffffffff81000000ULL
#define IMG_LEN 0x30000
#define TAB_OFF 0x10000
#define STR_OFF 0x20000
#define TAIL_OFF 0x28000
#define TABLE_GAP 64

struct sym_spec {
	const char *name;
	uint64_t value;
	const char *ns;      /* namespace, NULL = none */
	const char *tail_of; /* name is the tail of this (linker-merged) string */
};

struct kimg {
	uint8_t *img;
	size_t len;
	uint64_t base;
	enum ksymtab_format fmt;
	size_t str_next;   /* next free byte of the strings region */
	size_t empty_str;  /* offset of a "" (a NUL right after a NUL) */
	size_t tab_start[16], tab_n[16], ntab;
	size_t next_tab;   /* where the next table goes */
};

#define entry_size ksymtab_entry_size

static void w32(uint8_t *p, int64_t v)
{
	assert_true(v >= INT32_MIN && v <= INT32_MAX);
	int32_t x = (int32_t)v;
	memcpy(p, &x, 4);
}

static void w64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void kimg_init(struct kimg *k, enum ksymtab_format fmt, uint64_t seed)
{
	memset(k, 0, sizeof(*k));
	k->len = IMG_LEN;
	k->img = calloc(1, k->len);
	assert_non_null(k->img);
	k->base = BASE_VA;
	k->fmt = fmt;
	struct unit_rng r = { seed };
	unit_rand_fill(&r, k->img, TAB_OFF);
	unit_rand_fill(&r, k->img + TAIL_OFF, k->len - TAIL_OFF);
	/* the strings region starts after a NUL; put "" first */
	k->img[STR_OFF - 1] = 0;
	k->empty_str = STR_OFF;
	k->img[STR_OFF] = 0;
	k->str_next = STR_OFF + 1;
	k->next_tab = TAB_OFF;
}

static void kimg_free(struct kimg *k)
{
	free(k->img);
	k->img = NULL;
}

/* Offset of "\0s\0" (of s) in the strings region, adding it if missing. */
static size_t kimg_string(struct kimg *k, const char *s)
{
	size_t l = strlen(s);
	const uint8_t *lo = k->img + STR_OFF - 1;
	size_t n = k->str_next - (STR_OFF - 1);
	for (const uint8_t *p = lo; (p = memmem(p, n - (p - lo), s, l + 1)); p++)
		if (p > lo && p[-1] == 0)
			return p - k->img;
	assert_true(k->str_next + l + 1 < TAIL_OFF);
	memcpy(k->img + k->str_next, s, l + 1);
	k->str_next += l + 1;
	return k->str_next - l - 1;
}

static size_t name_offset(struct kimg *k, const struct sym_spec *s)
{
	if (!s->tail_of)
		return kimg_string(k, s->name);
	size_t full = kimg_string(k, s->tail_of);
	size_t fl = strlen(s->tail_of), nl = strlen(s->name);
	assert_true(nl < fl && !strcmp(s->tail_of + fl - nl, s->name));
	return full + fl - nl;
}

/* Write one entry at image offset e. ns_off: (size_t)-1 = no namespace
 * field value (0), else the offset of the namespace string. */
static void kimg_entry(struct kimg *k, size_t e, uint64_t value, size_t name_off, size_t ns_off)
{
	uint8_t *p = k->img + e;
	int64_t ve = (int64_t)(k->base + e); /* virtual address of the entry */
	switch (k->fmt) {
	case KSYMTAB_PREL32_NS:
		w32(p + 8, ns_off == (size_t)-1 ? 0 : (int64_t)ns_off - (int64_t)(e + 8));
		/* fallthrough */
	case KSYMTAB_PREL32:
		w32(p, (int64_t)value - ve);
		w32(p + 4, (int64_t)name_off - (int64_t)(e + 4));
		break;
	case KSYMTAB_ABS_NS:
		w64(p + 16, ns_off == (size_t)-1 ? 0 : k->base + ns_off);
		/* fallthrough */
	case KSYMTAB_ABS:
		w64(p, value);
		w64(p + 8, k->base + name_off);
		break;
	default:
		fail();
	}
}

static int cmp_spec(const void *a, const void *b)
{
	return strcmp(((const struct sym_spec *)a)->name, ((const struct sym_spec *)b)->name);
}

/* Add a table of n symbols (sorted by name, as the kernel keeps them) at
 * k->next_tab, followed by `gap` zero bytes. Returns its offset. */
static size_t kimg_table_gap(struct kimg *k, const struct sym_spec *syms, size_t n, size_t gap)
{
	struct sym_spec *sorted = malloc(n * sizeof(*sorted));
	assert_non_null(sorted);
	memcpy(sorted, syms, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_spec);
	size_t es = entry_size(k->fmt), start = k->next_tab;
	assert_true(start + n * es + gap <= STR_OFF - 1);
	for (size_t i = 0; i < n; i++) {
		size_t ns_off = (size_t)-1;
		if (sorted[i].ns)
			ns_off = *sorted[i].ns ? kimg_string(k, sorted[i].ns) : k->empty_str;
		kimg_entry(k, start + i * es, sorted[i].value, name_offset(k, &sorted[i]), ns_off);
	}
	memset(k->img + start + n * es, 0, gap);
	k->tab_start[k->ntab] = start;
	k->tab_n[k->ntab] = n;
	k->ntab++;
	k->next_tab = start + n * es + gap;
	free(sorted);
	return start;
}

static size_t kimg_table(struct kimg *k, const struct sym_spec *syms, size_t n)
{
	return kimg_table_gap(k, syms, n, TABLE_GAP);
}

/* Put the strings in link order (not sorted, not table order) before the
 * tables reference them, as a real __ksymtab_strings would be. */
static void kimg_strings_in_link_order(struct kimg *k, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kimg_string(k, names[(i * 7) % n]); /* n is not a multiple of 7 */
}

/* ---------------- symbol sets ---------------- */

#define TEXT(i) (BASE_VA + 0x1000 + (uint64_t)(i) * 0x40)
#define DATA(i) (BASE_VA + 0x2000000 + (uint64_t)(i) * 0x100) /* beyond the image */

/* __ksymtab: 22 symbols, 8 anchors among them */
static const struct sym_spec tab1[] = {
	{ "jiffies", DATA(0), NULL, NULL },
	{ "kfree", TEXT(1), NULL, NULL },
	{ "schedule", TEXT(2), NULL, NULL },
	{ "init_task", DATA(3), NULL, NULL },
	{ "memcpy", TEXT(4), NULL, NULL },
	{ "msleep", TEXT(5), NULL, NULL },
	{ "kmalloc_caches", DATA(6), NULL, NULL },
	{ "call_rcu", TEXT(7), NULL, NULL },
	{ "__kmalloc", TEXT(8), NULL, NULL },
	{ "__const_udelay", TEXT(9), NULL, NULL },
	{ "vfree", TEXT(10), NULL, NULL },
	{ "vmalloc", TEXT(11), NULL, NULL },
	{ "kstrdup", TEXT(12), NULL, NULL },
	{ "strlen", TEXT(13), NULL, NULL },
	{ "strcmp", TEXT(14), NULL, NULL },
	{ "memset", TEXT(15), NULL, NULL },
	{ "mutex_lock", TEXT(16), NULL, NULL },
	{ "mutex_unlock", TEXT(17), NULL, NULL },
	{ "mmiotrace_printk", TEXT(18), NULL, NULL },
	{ "printk_ratelimit", TEXT(19), NULL, NULL },
	{ "iomem_resource", DATA(20), NULL, NULL },
	{ "boot_cpu_data", DATA(21), NULL, NULL },
};

/* __ksymtab_gpl: 18 symbols, 4 anchors, some in a namespace */
static const struct sym_spec tab2[] = {
	{ "queue_work_on", TEXT(100), NULL, NULL },
	{ "synchronize_rcu", TEXT(101), NULL, NULL },
	{ "__platform_driver_register", TEXT(102), NULL, NULL },
	{ "platform_device_register_full", TEXT(103), NULL, NULL },
	{ "usb_stor_probe1", TEXT(104), "USB_STORAGE", NULL },
	{ "usb_stor_probe2", TEXT(105), "USB_STORAGE", NULL },
	{ "kvm_vcpu_kick", TEXT(106), NULL, NULL },
	{ "devm_kmalloc", TEXT(107), NULL, NULL },
	{ "pci_enable_msi", TEXT(108), NULL, NULL },
	{ "sysfs_create_group", TEXT(109), NULL, NULL },
	{ "kobject_uevent", TEXT(110), NULL, NULL },
	{ "ktime_get", TEXT(111), NULL, NULL },
	{ "rcu_barrier", TEXT(112), NULL, NULL },
	{ "cpu_bit_bitmap", DATA(113), NULL, NULL },
	{ "irq_domain_add_legacy", TEXT(114), NULL, NULL },
	{ "dma_buf_get", TEXT(115), "DMA_BUF", NULL },
	{ "usb_stor_disconnect", TEXT(116), "USB_STORAGE", NULL },
	{ "__SCK__tp_func_kfree", DATA(117), NULL, NULL },
};

/* Names with namespace: for the _NS layouts, symbols without one get either
 * a 0 field or a pointer to "" (both occur in real kernels). */
static void with_empty_ns(struct sym_spec *out, const struct sym_spec *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		out[i] = in[i];
		if (!out[i].ns && i % 2)
			out[i].ns = "";
	}
}

static void build_standard(struct kimg *k, enum ksymtab_format fmt)
{
	kimg_init(k, fmt, 0x1234 + fmt);
	const char *names[ARRAY_LEN(tab1) + ARRAY_LEN(tab2)];
	for (size_t i = 0; i < ARRAY_LEN(tab1); i++)
		names[i] = tab1[i].name;
	for (size_t i = 0; i < ARRAY_LEN(tab2); i++)
		names[ARRAY_LEN(tab1) + i] = tab2[i].name;
	kimg_strings_in_link_order(k, names, ARRAY_LEN(names));
	struct sym_spec t1[ARRAY_LEN(tab1)], t2[ARRAY_LEN(tab2)];
	with_empty_ns(t1, tab1, ARRAY_LEN(tab1));
	with_empty_ns(t2, tab2, ARRAY_LEN(tab2));
	kimg_table(k, t1, ARRAY_LEN(t1));
	kimg_table(k, t2, ARRAY_LEN(t2));
}

static void assert_lookup(const struct ksymtab *ks, const char *name, uint64_t want)
{
	uint64_t v = 0xdeadbeef;
	if (ksymtab_lookup(ks, name, &v) != 0)
		fail_msg("'%s' not found", name);
	if (v != want)
		fail_msg("'%s' = %#" PRIx64 ", want %#" PRIx64, name, v, want);
}

static void assert_missing(const struct ksymtab *ks, const char *name)
{
	uint64_t v = 0x1234;
	if (ksymtab_lookup(ks, name, &v) == 0)
		fail_msg("'%s' found (%#" PRIx64 ") but is not exported", name, v);
	assert_int_equal(v, 0x1234); /* untouched */
}

/* ---------------- layouts ---------------- */

static void check_standard(enum ksymtab_format fmt)
{
	struct kimg k;
	build_standard(&k, fmt);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_int_equal(ks.format, fmt);
	assert_int_equal(ks.n, ARRAY_LEN(tab1) + ARRAY_LEN(tab2));
	assert_int_equal(ks.n_tables, 2);
	/* every symbol, both tables */
	for (size_t i = 0; i < ARRAY_LEN(tab1); i++)
		assert_lookup(&ks, tab1[i].name, tab1[i].value);
	for (size_t i = 0; i < ARRAY_LEN(tab2); i++)
		assert_lookup(&ks, tab2[i].name, tab2[i].value);
	/* a few spelled out */
	assert_lookup(&ks, "jiffies", BASE_VA + 0x2000000);
	assert_lookup(&ks, "kfree", BASE_VA + 0x1040);
	assert_lookup(&ks, "usb_stor_probe2", BASE_VA + 0x1000 + 105 * 0x40);
	/* names point into the image copy */
	for (size_t i = 0; i < ks.n; i++) {
		assert_true((const uint8_t *)ks.syms[i].name >= k.img + STR_OFF);
		assert_true((const uint8_t *)ks.syms[i].name < k.img + k.str_next);
		if (i)
			assert_true(strcmp(ks.syms[i - 1].name, ks.syms[i].name) < 0);
	}
	/* not exported: a namespace string, a prefix, a missing name */
	assert_missing(&ks, "USB_STORAGE");
	assert_missing(&ks, "kfre");
	assert_missing(&ks, "kfree_skb");
	assert_missing(&ks, "");
	assert_missing(&ks, "zzz_not_there");
	/* with the names copied, the image can go: every lookup stays right */
	assert_int_equal(ksymtab_own_names(&ks, k.img, k.len, &err), 0);
	memset(k.img, 0xa5, k.len);
	for (size_t i = 0; i < ARRAY_LEN(tab1); i++)
		assert_lookup(&ks, tab1[i].name, tab1[i].value);
	for (size_t i = 0; i < ARRAY_LEN(tab2); i++)
		assert_lookup(&ks, tab2[i].name, tab2[i].value);
	assert_missing(&ks, "kfre");
	for (size_t i = 0; i < ks.n; i++)
		assert_true((const uint8_t *)ks.syms[i].name < k.img || (const uint8_t *)ks.syms[i].name >= k.img + k.len);
	ksymtab_free(&ks);
	assert_null(ks.syms);
	assert_int_equal(ks.n, 0);
	kimg_free(&k);
}

static void test_layout_prel32_ns(void **state)
{
	(void)state;
	check_standard(KSYMTAB_PREL32_NS);
}

static void test_layout_prel32(void **state)
{
	(void)state;
	check_standard(KSYMTAB_PREL32);
}

static void test_layout_abs(void **state)
{
	(void)state;
	check_standard(KSYMTAB_ABS);
}

static void test_layout_abs_ns(void **state)
{
	(void)state;
	check_standard(KSYMTAB_ABS_NS);
}

static void test_format_names(void **state)
{
	(void)state;
	assert_string_equal(ksymtab_format_name(KSYMTAB_ABS), "absolute");
	assert_string_equal(ksymtab_format_name(KSYMTAB_ABS_NS), "absolute+namespace");
	assert_string_equal(ksymtab_format_name(KSYMTAB_PREL32), "prel32");
	assert_string_equal(ksymtab_format_name(KSYMTAB_PREL32_NS), "prel32+namespace");
	assert_string_equal(ksymtab_format_name(KSYMTAB_NONE), "none");
}

/* PREL32: value = address of the entry's value field + its offset, with
 * base_va the image's virtual address. Check it byte for byte, including a
 * negative offset and an image loaded at another (KASLR) base. */
static void test_prel32_value_relative_to_field(void **state)
{
	(void)state;
	struct kimg k;
	build_standard(&k, KSYMTAB_PREL32_NS);
	size_t e = k.tab_start[0]; /* first entry of __ksymtab: "__const_udelay" */
	int32_t off;
	memcpy(&off, k.img + e, 4);
	assert_true(off < 0); /* text lies before the table */
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_lookup(&ks, "__const_udelay", BASE_VA + e + (int64_t)off);
	assert_lookup(&ks, "__const_udelay", TEXT(9));
	ksymtab_free(&ks);

	/* the same bytes seen at another base: every value moves with it */
	uint64_t kaslr = BASE_VA + 0x2a00000;
	assert_int_equal(ksymtab_parse(k.img, k.len, kaslr, &ks, &err), 0);
	assert_lookup(&ks, "__const_udelay", TEXT(9) + 0x2a00000);
	assert_lookup(&ks, "jiffies", DATA(0) + 0x2a00000);
	ksymtab_free(&ks);
	kimg_free(&k);
}

/* Real kernels put __ksymtab_gpl right after __ksymtab: the symbols are all
 * found whether or not the two are told apart. */
static void test_adjacent_tables(void **state)
{
	(void)state;
	struct kimg k;
	kimg_init(&k, KSYMTAB_PREL32_NS, 77);
	kimg_table_gap(&k, tab1, ARRAY_LEN(tab1), 0);
	kimg_table_gap(&k, tab2, ARRAY_LEN(tab2), 0);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_int_equal(ks.n, ARRAY_LEN(tab1) + ARRAY_LEN(tab2));
	assert_true(ks.n_tables >= 1 && ks.n_tables <= 2);
	assert_lookup(&ks, "synchronize_rcu", TEXT(101));
	assert_lookup(&ks, "strlen", TEXT(13));
	ksymtab_free(&ks);
	kimg_free(&k);
}

/* ---------------- the sampled scan and the merge ---------------- */

/* ksymtab.c probes for tables only at one entry width's offsets every
 * MIN_RUN - 1 (16 - 1) entries: a table of exactly 16 entries starting at
 * any aligned offset, and the table right after it, must still be found
 * whole, in every layout. */
static void test_tables_found_at_every_offset(void **state)
{
	(void)state;
	static const enum ksymtab_format fmts[] = { KSYMTAB_PREL32_NS, KSYMTAB_PREL32, KSYMTAB_ABS_NS, KSYMTAB_ABS };
	for (size_t f = 0; f < ARRAY_LEN(fmts); f++) {
		size_t es = entry_size(fmts[f]), align = es % 8 ? 4 : 8;
		for (size_t phase = 0; phase < 16 * es; phase += align) {
			struct kimg k;
			kimg_init(&k, fmts[f], 500 + phase);
			k.next_tab = TAB_OFF + phase;
			kimg_table(&k, tab2, 16); /* platform_device_register_full among them */
			kimg_table(&k, tab1, ARRAY_LEN(tab1));
			struct ksymtab ks;
			struct vmsh_err err = { 0 };
			if (ksymtab_parse(k.img, k.len, k.base, &ks, &err) != 0)
				fail_msg("%s, table at +%#zx: %s", ksymtab_format_name(fmts[f]), TAB_OFF + phase, err.msg);
			if (ks.n != 16 + ARRAY_LEN(tab1) || ks.n_tables != 2)
				fail_msg("%s, table at +%#zx: %zu symbols in %zu tables", ksymtab_format_name(fmts[f]),
					 TAB_OFF + phase, ks.n, ks.n_tables);
			for (size_t i = 0; i < 16; i++)
				assert_lookup(&ks, tab2[i].name, tab2[i].value);
			for (size_t i = 0; i < ARRAY_LEN(tab1); i++)
				assert_lookup(&ks, tab1[i].name, tab1[i].value);
			ksymtab_free(&ks);
			kimg_free(&k);
		}
	}
}

/* Tables whose names interleave: merged (a few) or sorted whole (many);
 * either way every name is found and the order is strcmp's. */
static void check_interleaved_tables(size_t n_tables)
{
	enum { PER = 16 };
	struct kimg k;
	kimg_init(&k, KSYMTAB_PREL32_NS, 900 + n_tables);
	char names[12 * PER][24];
	struct sym_spec t[PER];
	for (size_t tb = 0; tb < n_tables; tb++) {
		for (size_t i = 0; i < PER; i++) {
			snprintf(names[tb * PER + i], sizeof(names[0]), "sym_%03zu", i * n_tables + tb);
			t[i] = (struct sym_spec){ names[tb * PER + i], TEXT(tb * PER + i), NULL, NULL };
		}
		if (tb == 0)
			t[0].name = "platform_device_register_full";
		kimg_table(&k, t, PER);
	}
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_int_equal(ks.n, n_tables * PER);
	assert_int_equal(ks.n_tables, n_tables);
	for (size_t i = 1; i < ks.n; i++)
		assert_true(strcmp(ks.syms[i - 1].name, ks.syms[i].name) < 0);
	assert_lookup(&ks, "platform_device_register_full", TEXT(0));
	for (size_t tb = 0; tb < n_tables; tb++)
		for (size_t i = tb ? 0 : 1; i < PER; i++)
			assert_lookup(&ks, names[tb * PER + i], TEXT(tb * PER + i));
	ksymtab_free(&ks);
	kimg_free(&k);
}

static void test_interleaved_tables_sorted(void **state)
{
	(void)state;
	check_interleaved_tables(3);  /* merged */
	check_interleaved_tables(12); /* more runs than are merged: sorted whole */
}

/* ---------------- merged string tails ---------------- */

/* "mmiotrace_printk" contains "printk" at its end; a plain string search
 * finds it, but printk is not exported here: lookup must fail. */
static void test_tail_of_other_name_is_not_exported(void **state)
{
	(void)state;
	struct kimg k;
	build_standard(&k, KSYMTAB_PREL32_NS);
	assert_non_null(memmem(k.img, k.len, "printk\0", 7));
	assert_null(memmem(k.img, k.len, "\0printk\0", 8));
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_lookup(&ks, "mmiotrace_printk", TEXT(18));
	assert_missing(&ks, "printk");
	assert_missing(&ks, "_printk");
	assert_missing(&ks, "trace_printk");
	assert_int_equal(ks.n, ARRAY_LEN(tab1) + ARRAY_LEN(tab2));
	ksymtab_free(&ks);
	kimg_free(&k);
}

/* ... unless an entry points at a real "\0printk\0". */
static void test_name_with_own_string_is_exported(void **state)
{
	(void)state;
	struct kimg k;
	kimg_init(&k, KSYMTAB_PREL32_NS, 5);
	struct sym_spec t1[ARRAY_LEN(tab1) + 1];
	memcpy(t1, tab1, sizeof(tab1));
	t1[ARRAY_LEN(tab1)] = (struct sym_spec){ "printk", TEXT(50), NULL, NULL };
	kimg_string(&k, "mmiotrace_printk"); /* the longer one first */
	kimg_table(&k, t1, ARRAY_LEN(t1));
	kimg_table(&k, tab2, ARRAY_LEN(tab2));
	assert_non_null(memmem(k.img, k.len, "\0printk\0", 8));
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_lookup(&ks, "printk", TEXT(50));
	assert_lookup(&ks, "mmiotrace_printk", TEXT(18));
	assert_missing(&ks, "_printk");
	assert_int_equal(ks.n, ARRAY_LEN(t1) + ARRAY_LEN(tab2));
	ksymtab_free(&ks);
	kimg_free(&k);
}

/* __ksymtab_strings is a mergeable string section ("aMS"): the linker stores
 * "_printk" as the tail of "mmiotrace_printk", and the __ksymtab entry of
 * _printk points into the middle of that string (the byte before its name is
 * 'e', not NUL). Such an entry is a real export and must resolve, and must
 * not cut its table into pieces (which would also lose __const_udelay and
 * __kmalloc, sorted before it, as a run shorter than 16). */
static void test_linker_merged_tail_name_resolves(void **state)
{
	(void)state;
	struct kimg k;
	kimg_init(&k, KSYMTAB_PREL32_NS, 6);
	struct sym_spec t1[ARRAY_LEN(tab1) + 1];
	memcpy(t1, tab1, sizeof(tab1));
	t1[ARRAY_LEN(tab1)] = (struct sym_spec){ "_printk", TEXT(51), NULL, "mmiotrace_printk" };
	kimg_table(&k, t1, ARRAY_LEN(t1));
	kimg_table(&k, tab2, ARRAY_LEN(tab2));
	assert_null(memmem(k.img, k.len, "\0_printk\0", 9)); /* only as a tail */
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
	assert_lookup(&ks, "_printk", TEXT(51));
	assert_lookup(&ks, "mmiotrace_printk", TEXT(18));
	assert_lookup(&ks, "__kmalloc", TEXT(8));
	assert_lookup(&ks, "__const_udelay", TEXT(9));
	assert_missing(&ks, "printk");
	assert_int_equal(ks.n, ARRAY_LEN(t1) + ARRAY_LEN(tab2));
	assert_int_equal(ks.n_tables, 2);
	ksymtab_free(&ks);
	kimg_free(&k);
}

/* ---------------- no table ---------------- */

static void expect_nokernel(const uint8_t *img, size_t len)
{
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(img, len, BASE_VA, &ks, &err), -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
	assert_int_equal(err.errnum, ENOENT);
	assert_non_null(strstr(err.msg, "no exported-symbol table"));
	assert_int_equal(ks.n, 0);
	assert_null(ks.syms);
	ksymtab_free(&ks); /* safe on a failed parse */
}

/* Strings of anchor names but no table referencing them. */
static void test_no_table_is_nokernel_error(void **state)
{
	(void)state;
	struct kimg k;
	kimg_init(&k, KSYMTAB_PREL32_NS, 9);
	for (size_t i = 0; i < ARRAY_LEN(tab1); i++)
		kimg_string(&k, tab1[i].name);
	expect_nokernel(k.img, k.len);
	kimg_free(&k);

	uint8_t *zeros = calloc(1, 1 << 16);
	assert_non_null(zeros);
	expect_nokernel(zeros, 1 << 16);
	free(zeros);
	/* empty and tiny images */
	uint8_t *one = malloc(1);
	assert_non_null(one);
	one[0] = 0;
	expect_nokernel(one, 1);
	expect_nokernel(one, 0);
	free(one);
}

/* Tables of fewer than MIN_RUN (16) entries are not tables. */
static void test_short_table_is_nokernel_error(void **state)
{
	(void)state;
	for (size_t n = 4; n <= 14; n += 5) {
		struct kimg k;
		kimg_init(&k, KSYMTAB_PREL32_NS, 10 + n);
		kimg_table(&k, tab1, n);
		expect_nokernel(k.img, k.len);
		kimg_free(&k);
	}
}

/* One entry short of MIN_RUN, with the anchor in the middle: the anchor's
 * score counts its own entry twice (forward and backward run), so it passes
 * the MIN_RUN check although the table scan then keeps nothing. */
struct fifteen {
	struct kimg k;
	struct ksymtab ks;
};

static int fifteen_setup(void **state)
{
	struct fifteen *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	*state = f;
	return 0;
}

static int fifteen_teardown(void **state)
{
	struct fifteen *f = *state;
	ksymtab_free(&f->ks);
	kimg_free(&f->k);
	free(f);
	return 0;
}

static void test_table_of_fifteen_is_nokernel_error(void **state)
{
	struct fifteen *f = *state;
	kimg_init(&f->k, KSYMTAB_PREL32_NS, 15);
	kimg_table(&f->k, tab1, 15); /* 15 of the names, "jiffies" among them */
	struct vmsh_err err = { 0 };
	int rc = ksymtab_parse(f->k.img, f->k.len, f->k.base, &f->ks, &err);
	assert_int_equal(rc, -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
}

/* ---------------- hostile input ---------------- */

/* Entries whose name or namespace offsets point outside the image are not
 * entries: they end a run, the rest is still found, nothing is read out of
 * bounds (ASan). */
static void test_offsets_outside_image(void **state)
{
	(void)state;
	static const enum ksymtab_format fmts[] = { KSYMTAB_PREL32_NS, KSYMTAB_PREL32, KSYMTAB_ABS, KSYMTAB_ABS_NS };
	for (size_t f = 0; f < ARRAY_LEN(fmts); f++) {
		struct kimg k;
		kimg_init(&k, fmts[f], 20 + f);
		/* one big table of 40: corrupt entries 19 and 20 */
		struct sym_spec big[ARRAY_LEN(tab1) + ARRAY_LEN(tab2)];
		memcpy(big, tab1, sizeof(tab1));
		memcpy(big + ARRAY_LEN(tab1), tab2, sizeof(tab2));
		qsort(big, ARRAY_LEN(big), sizeof(big[0]), cmp_spec);
		size_t t = kimg_table(&k, big, ARRAY_LEN(big));
		size_t es = entry_size(fmts[f]);
		uint8_t *e19 = k.img + t + 19 * es, *e20 = k.img + t + 20 * es;
		if (fmts[f] == KSYMTAB_PREL32 || fmts[f] == KSYMTAB_PREL32_NS) {
			w32(e19 + 4, INT32_MIN);
			w32(e20 + 4, INT32_MAX);
			w32(e20, INT32_MIN); /* a value offset is not checked: any is fine */
		} else {
			w64(e19 + 8, UINT64_MAX);
			w64(e20 + 8, BASE_VA + IMG_LEN); /* one past the end */
		}
		/* entry 21: valid name, namespace far outside */
		uint8_t *e21 = k.img + t + 21 * es;
		if (fmts[f] == KSYMTAB_PREL32_NS)
			w32(e21 + 8, INT32_MAX);
		if (fmts[f] == KSYMTAB_ABS_NS)
			w64(e21 + 16, BASE_VA - 0x1000);
		bool ns = fmts[f] == KSYMTAB_PREL32_NS || fmts[f] == KSYMTAB_ABS_NS;

		struct ksymtab ks;
		struct vmsh_err err = { 0 };
		assert_int_equal(ksymtab_parse(k.img, k.len, k.base, &ks, &err), 0);
		assert_int_equal(ks.format, fmts[f]);
		assert_int_equal(ks.n, ARRAY_LEN(big) - (ns ? 3 : 2));
		assert_int_equal(ks.n_tables, 2);
		assert_missing(&ks, big[19].name);
		assert_missing(&ks, big[20].name);
		if (ns)
			assert_missing(&ks, big[21].name);
		else
			assert_lookup(&ks, big[21].name, big[21].value);
		assert_lookup(&ks, big[0].name, big[0].value);
		assert_lookup(&ks, big[18].name, big[18].value);
		assert_lookup(&ks, big[22].name, big[22].value);
		assert_lookup(&ks, big[39].name, big[39].value);
		ksymtab_free(&ks);
		kimg_free(&k);
	}
}

/* The image cut short anywhere: no out-of-bounds read (the copy is an
 * allocation of exactly the cut length), and whatever is found is right. */
static void test_truncated_image(void **state)
{
	(void)state;
	struct kimg k;
	build_standard(&k, KSYMTAB_PREL32_NS);
	size_t es = entry_size(k.fmt);
	size_t cuts[] = {
		k.tab_start[0] + 3 * es,                  /* inside __ksymtab */
		k.tab_start[1] + 5 * es + 2,              /* inside __ksymtab_gpl, mid-entry */
		STR_OFF,                                  /* before every string */
		STR_OFF + 1,                              /* "" only */
		STR_OFF + 40,                             /* a few strings, one cut in half */
		(STR_OFF + k.str_next) / 2,               /* half of them */
		k.str_next - 1,                           /* last string without its NUL */
		k.str_next,                               /* everything */
		k.len - 1,
	};
	for (size_t c = 0; c < ARRAY_LEN(cuts); c++) {
		size_t len = cuts[c];
		uint8_t *copy = malloc(len);
		assert_non_null(copy);
		memcpy(copy, k.img, len);
		struct ksymtab ks;
		struct vmsh_err err = { 0 };
		int rc = ksymtab_parse(copy, len, k.base, &ks, &err);
		if (len <= STR_OFF + 1) {
			assert_int_equal(rc, -1);
			assert_int_equal(err.kind, VMSH_E_NOKERNEL);
		}
		if (len >= k.str_next) {
			assert_int_equal(rc, 0);
			assert_int_equal(ks.n, ARRAY_LEN(tab1) + ARRAY_LEN(tab2));
		}
		if (rc == 0) {
			/* every symbol found carries its true value */
			for (size_t i = 0; i < ks.n; i++) {
				const struct sym_spec *s = NULL;
				for (size_t j = 0; j < ARRAY_LEN(tab1); j++)
					if (!strcmp(tab1[j].name, ks.syms[i].name))
						s = &tab1[j];
				for (size_t j = 0; j < ARRAY_LEN(tab2); j++)
					if (!strcmp(tab2[j].name, ks.syms[i].name))
						s = &tab2[j];
				if (!s)
					fail_msg("cut %zu: unknown symbol '%s'", len, ks.syms[i].name);
				assert_int_equal(ks.syms[i].value, s->value);
			}
		}
		ksymtab_free(&ks);
		free(copy);
	}
	kimg_free(&k);
}

/* A few MB of pseudo-random bytes: nothing found, no crash. Then the same
 * with the anchor names planted as strings, so the expensive search for
 * entries referencing them runs over random data. */
static void test_random_bytes(void **state)
{
	(void)state;
	size_t len = 4u << 20;
	uint8_t *img = malloc(len);
	assert_non_null(img);
	struct unit_rng r = { 0xfeedface };
	unit_rand_fill(&r, img, len);
	expect_nokernel(img, len);

	static const char *const anchors[] = { "jiffies", "kfree", "schedule", "init_task", "memcpy", "msleep",
					       "kmalloc_caches", "queue_work_on", "synchronize_rcu", "call_rcu" };
	for (size_t i = 0; i < ARRAY_LEN(anchors); i++) {
		size_t off = 4096 + unit_rand_below(&r, len - 8192);
		img[off] = 0;
		memcpy(img + off + 1, anchors[i], strlen(anchors[i]) + 1);
	}
	expect_nokernel(img, len);
	/* random data at several bases, including 0 and one that wraps */
	expect_nokernel(img, len);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	assert_int_equal(ksymtab_parse(img, len, 0, &ks, &err), -1);
	assert_int_equal(ksymtab_parse(img, len, UINT64_MAX - 0x1000, &ks, &err), -1);
	assert_int_equal(err.kind, VMSH_E_NOKERNEL);
	free(img);
}

static void test_lookup_in_empty_table(void **state)
{
	(void)state;
	struct ksymtab ks = { 0 };
	uint64_t v = 7;
	assert_int_equal(ksymtab_lookup(&ks, "kfree", &v), -1);
	assert_int_equal(v, 7);
	ksymtab_free(&ks);
	ksymtab_free(&ks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_prel32_ns),
		cmocka_unit_test(test_layout_prel32),
		cmocka_unit_test(test_layout_abs),
		cmocka_unit_test(test_layout_abs_ns),
		cmocka_unit_test(test_format_names),
		cmocka_unit_test(test_prel32_value_relative_to_field),
		cmocka_unit_test(test_adjacent_tables),
		cmocka_unit_test(test_tables_found_at_every_offset),
		cmocka_unit_test(test_interleaved_tables_sorted),
		cmocka_unit_test(test_tail_of_other_name_is_not_exported),
		cmocka_unit_test(test_name_with_own_string_is_exported),
		cmocka_unit_test(test_linker_merged_tail_name_resolves),
		cmocka_unit_test(test_no_table_is_nokernel_error),
		cmocka_unit_test(test_short_table_is_nokernel_error),
		cmocka_unit_test_setup_teardown(test_table_of_fifteen_is_nokernel_error, fifteen_setup, fifteen_teardown),
		cmocka_unit_test(test_offsets_outside_image),
		cmocka_unit_test(test_truncated_image),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_lookup_in_empty_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
