/* fuzz_kallsyms.c - decoding kallsyms in a kernel image copy (kallsyms.c),
 * the symbol source of kernels without export tables. The image is guest
 * data.
 *
 * Invariants: a decoded table is sorted by name, every name is a non-empty
 * NUL-terminated string shorter than the kernel's bound, _text (the only
 * value the decoder can check) lies at the text base given, and the
 * search ends within the decoder's work budget (libFuzzer's -timeout).
 *
 * Input: u8 flags (bit 0: text base one 2 MiB page higher than the image's
 * start, so that no layout can match), then the image, mapped at 0xffffffff81000000. */
#include "fuzz.h"

#include "guest/kallsyms.h"

#define BASE 0xffffffff81000000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	unsigned flags = fz_u8(&f);
	size_t len;
	const uint8_t *p = fz_rest(&f, &len);
	uint8_t *img = malloc(len ? len : 1);
	if (!img)
		abort();
	memcpy(img, p, len);
	uint64_t text = BASE + ((flags & 1) ? 0x200000 : 0);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	if (kallsyms_parse(img, len, BASE, text, &ks, &err) == 0) {
		free(img); /* the table must not point into the image */
		img = NULL;
		FUZZ_CHECK(ks.n <= KALLSYMS_MAX_SYMS, "%zu symbols", ks.n);
		for (size_t i = 0; i < ks.n; i++) {
			size_t l = strlen(ks.syms[i].name);
			FUZZ_CHECK(l > 0 && l < 512, "name length %zu", l);
			FUZZ_CHECK(i == 0 || strcmp(ks.syms[i - 1].name, ks.syms[i].name) <= 0, "unsorted at %zu", i);
		}
		uint64_t v;
		if (ksymtab_lookup(&ks, "_text", &v) == 0)
			FUZZ_LOG("_text %#llx\n", (unsigned long long)v);
		ksymtab_free(&ks);
	}
	free(img);
	return 0;
}
