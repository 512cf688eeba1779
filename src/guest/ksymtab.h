/* ksymtab.h - the guest kernel's exported-symbol table, found and parsed in
 * a copy of the running kernel image, without System.map or debug info.
 *
 * Three layouts exist (include/linux/export.h over the years):
 *   absolute     { unsigned long value; const char *name; }                    16 bytes
 *   absolute+ns  { unsigned long value; const char *name; const char *ns; }   24 bytes
 *   prel32       { int value_offset; int name_offset; }                        8 bytes (4.19-5.3)
 *   prel32+ns    { int value_offset; int name_offset; int namespace_offset; } 12 bytes (5.4+)
 * The layout is detected, not assumed from a version number. */
#ifndef VMSH_KSYMTAB_H
#define VMSH_KSYMTAB_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

enum ksymtab_format {
	KSYMTAB_NONE = 0,
	KSYMTAB_ABS,
	KSYMTAB_ABS_NS,
	KSYMTAB_PREL32,
	KSYMTAB_PREL32_NS,
	KSYMTAB_KALLSYMS, /* not an export table: kallsyms (kallsyms.h) */
};

struct ksym {
	uint64_t value;   /* runtime virtual address */
	const char *name; /* points into the image copy */
};

struct ksymtab {
	enum ksymtab_format format;
	struct ksym *syms; /* sorted by name */
	size_t n;
	size_t n_tables;   /* how many tables (__ksymtab, __ksymtab_gpl, ...) */
	char *names;       /* after ksymtab_own_names: the names' own copy */
	/* where in the image the tables and their names lie: [span_lo,
	 * span_hi) covers them all (a later search can look there first) */
	size_t span_lo, span_hi;
};

/* More than any kernel exports (Debian 6.1: ~10500): a table claiming more
 * is crafted, and would cost vmsh memory for nothing. */
#define KSYMTAB_MAX_SYMS 200000u

const char *ksymtab_format_name(enum ksymtab_format f);
/* Bytes of one table entry in layout f (0 for KSYMTAB_NONE). */
size_t ksymtab_entry_size(enum ksymtab_format f);

/* Find every export table in img (len bytes, mapped at virtual address
 * base_va in the guest). */
int ksymtab_parse(const uint8_t *img, size_t len, uint64_t base_va, struct ksymtab *out, struct vmsh_err *err);
/* Copy the names (which point into img) into memory of the table's own, so
 * that img can be freed: a few hundred KiB instead of the image's tens of
 * MiB. */
int ksymtab_own_names(struct ksymtab *ks, const uint8_t *img, size_t len, struct vmsh_err *err);
/* 0 and *value on success, -1 if not exported. */
int ksymtab_lookup(const struct ksymtab *ks, const char *name, uint64_t *value);
void ksymtab_free(struct ksymtab *ks);

#endif
