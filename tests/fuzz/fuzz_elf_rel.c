/* fuzz_elf_rel.c - the relocatable ELF loader (loader/elf_rel.c) on fuzzed
 * objects. The object is built by us, not the guest, but the loader parses
 * it defensively and it is the one place where a file's offsets, sizes and
 * indices drive writes into a buffer: every one must be checked.
 *
 * Invariants: a loaded image has rx_size page-aligned and <= size, bounded
 * size, and every defined symbol it reports is found by elf_rel_symbol.
 *
 * Input: u8 load-address selector (a kernel-map address, a
 * module-area address, a user address, or 0), then the ELF object. */
#include "fuzz.h"

#include "loader/elf_rel.h"

static const uint64_t bases[] = { 0xffffffffc0000000ULL, 0xffffffffa0200000ULL, 0x7f0000000000ULL, 0 };

/* The guest kernel's exports: names starting with an 'x' do not exist,
 * the rest resolve into the kernel map. */
static int resolve(void *opaque, const char *name, uint64_t *addr)
{
	(void)opaque;
	if (name[0] == 'x')
		return -1;
	*addr = 0xffffffff81000000ULL + (strlen(name) << 12);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint64_t base = bases[fz_u8(&f) % 4];
	size_t len;
	const uint8_t *p = fz_rest(&f, &len);
	uint8_t *elf = malloc(len ? len : 1); /* exact size: ASan sees reads past the end */
	if (!elf)
		abort();
	memcpy(elf, p, len);
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	if (elf_rel_load(elf, len, base, resolve, NULL, &lib, &err) == 0) {
		FUZZ_CHECK(lib.rx_size <= lib.size && !(lib.rx_size & 4095), "rx %zu of %zu", lib.rx_size, lib.size);
		FUZZ_CHECK(lib.base == base, "base moved");
		for (size_t i = 0; i < lib.n_syms; i++) {
			uint64_t a;
			FUZZ_CHECK(elf_rel_symbol(&lib, lib.syms[i].name, &a) == 0, "'%s' not found", lib.syms[i].name);
		}
		elf_rel_free(&lib);
	}
	free(elf);
	return 0;
}
