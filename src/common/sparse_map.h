/* sparse_map.h - a large scratch mapping of which only pieces are written
 * (such as the copy of a guest kernel image: its read-only parts, scattered
 * over tens of MiB of address space). */
#ifndef VMSH_SPARSE_MAP_H
#define VMSH_SPARSE_MAP_H

#include <stddef.h>

/* len bytes of zeroed, private, unreserved memory in small pages only, or
 * NULL. With transparent huge pages set to "always" (Debian's default) a
 * write to such a mapping would make a whole 2 MiB page resident: the
 * 10 MiB read of a kernel image's read-only parts made vmsh's peak 26 MiB
 * (24 of it in huge pages), 12.7 without. Free with munmap(p, len). */
void *sparse_map(size_t len);

#endif
