/* elf_rel.h - loading a relocatable x86-64 ELF object (the kernel library)
 * into an image for a chosen virtual address, with its undefined symbols
 * resolved by a caller-provided function (the guest kernel's exports).
 *
 * Layout: code and read-only data first (to be mapped read+execute), then,
 * on the next page boundary, writable data and bss (read+write, no execute).
 * Everything in the object comes from our own build, but it is still parsed
 * defensively: every offset, size and index is checked. */
#ifndef VMSH_ELF_REL_H
#define VMSH_ELF_REL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Resolve an undefined symbol: 0 and *addr, or -1 if unknown. */
typedef int (*elf_rel_resolve_fn)(void *opaque, const char *name, uint64_t *addr);

struct loaded_lib {
	uint8_t *image;    /* size bytes, to be placed at base */
	size_t size;
	size_t rx_size;    /* [0, rx_size) read+execute, [rx_size, size) read+write */
	uint64_t base;
	/* defined global symbols, for elf_rel_symbol */
	struct loaded_sym {
		char *name;
		uint64_t addr;
	} *syms;
	size_t n_syms;
	unsigned n_relocs;  /* statistics */
	unsigned n_imports;
};

int elf_rel_load(const uint8_t *elf, size_t len, uint64_t base, elf_rel_resolve_fn resolve, void *opaque,
		struct loaded_lib *out, struct vmsh_err *err);
/* Address of a global symbol the object defines; -1 if none. */
int elf_rel_symbol(const struct loaded_lib *lib, const char *name, uint64_t *addr);
void elf_rel_free(struct loaded_lib *lib);

#endif
