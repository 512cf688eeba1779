/* kallsyms.h - the guest kernel's own symbol table (kallsyms), found and
 * decoded in a copy of the running kernel image. vmsh reads the exported-
 * symbol tables (ksymtab.h) first; a kernel built without CONFIG_MODULES has
 * none (EXPORT_SYMBOL expands to nothing), and kallsyms is all it offers.
 *
 * scripts/kallsyms.c writes, each array aligned to 8 bytes:
 *   kallsyms_offsets[N] (s32), kallsyms_relative_base (u64),
 *   kallsyms_num_syms (u32), kallsyms_names (compressed: a length of one or
 *   two bytes, then token indices), kallsyms_markers[(N+255)/256] (the
 *   offset of every 256th name; u32, or unsigned long before 6.1),
 *   [kallsyms_seqs_of_names: 3 bytes per symbol, 6.2+ and Debian's 6.1],
 *   kallsyms_token_table (256 strings), kallsyms_token_index[256] (u16);
 * from Linux 6.4 on, the offsets and the relative base come after the
 * token index. The layout is found from the data, not from a version
 * string: the token table by its run of one-character tokens "0".."9",
 * checked against the token index; the markers, names and symbol count by
 * their agreement with each other; the values by the symbol `_text`, which
 * must land on the text base vmsh found through the page tables.
 *
 * The image is guest data: every count, offset and length is bounded and
 * checked against the image. */
#ifndef VMSH_KALLSYMS_H
#define VMSH_KALLSYMS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "guest/ksymtab.h"

/* More symbols than any kernel has (Debian 6.1 with KALLSYMS_ALL: ~150,000) */
#define KALLSYMS_MAX_SYMS 2000000u

/* Decode the kallsyms table of img (len bytes mapped at base_va; the
 * kernel's text starts at text_va) into out (format KSYMTAB_KALLSYMS, names
 * in out->names, sorted by name). Only global symbols are kept (what the
 * exported tables would hold, and more). 0, or -1 with err. */
int kallsyms_parse(const uint8_t *img, size_t len, uint64_t base_va, uint64_t text_va, struct ksymtab *out,
		   struct vmsh_err *err);

#endif
