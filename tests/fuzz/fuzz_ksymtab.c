/* fuzz_ksymtab.c - finding and parsing the guest kernel's exported-symbol
 * tables (ksymtab_parse, ksymtab.c) in a kernel image copy (guest data), and
 * looking names up in the result.
 *
 * Invariants: every symbol's name lies inside the image and ends there with
 * a NUL; the symbols are sorted by name; looking up a parsed name finds it.
 * Slow paths show up as libFuzzer timeouts (-timeout, FUZZ_TIMEOUT).
 *
 * Input: u8 base selector (0: the default _text, 1: a KASLR-like base,
 * 2: base 0, 3: the u64 that follows), [u64 base], then the image. */
#include "fuzz.h"

#include "guest/kernel.h"
#include "guest/ksymtab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t sel = fz_u8(&f) % 4;
	uint64_t base = sel == 0 ? KERNEL_DEFAULT_TEXT : sel == 1 ? 0xffffffffaa000000ULL : sel == 2 ? 0 : fz_u64(&f);
	size_t len;
	const uint8_t *p = fz_rest(&f, &len);
	uint8_t *img = malloc(len ? len : 1);
	if (!img)
		abort();
	memcpy(img, p, len);
	struct ksymtab ks = { 0 };
	struct vmsh_err err = { 0 };
	if (ksymtab_parse(img, len, base, &ks, &err) == 0) {
		FUZZ_CHECK(ks.format != KSYMTAB_NONE, "parsed without a format");
		for (size_t i = 0; i < ks.n; i++) {
			const char *name = ks.syms[i].name;
			FUZZ_CHECK((const uint8_t *)name >= img && (const uint8_t *)name < img + len,
				   "symbol %zu's name outside the image", i);
			FUZZ_CHECK(memchr(name, 0, len - (size_t)((const uint8_t *)name - img)),
				   "symbol %zu's name unterminated", i);
			if (i > 0)
				FUZZ_CHECK(strcmp(ks.syms[i - 1].name, name) <= 0, "symbols %zu, %zu unsorted", i - 1, i);
			if (i < 256) {
				uint64_t v;
				FUZZ_CHECK(ksymtab_lookup(&ks, name, &v) == 0, "'%s' parsed but not found", name);
			}
		}
		uint64_t v;
		(void)ksymtab_lookup(&ks, "iomem_resource", &v);
		(void)ksymtab_lookup(&ks, "", &v);
	}
	ksymtab_free(&ks);
	free(img);
	return 0;
}
