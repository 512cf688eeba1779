/* fuzz_banner.c - finding "Linux version X ..." in a kernel image copy
 * (kernel_parse_banner, kernel.c). The image is guest data.
 *
 * Invariants: the outputs are NUL-terminated inside their buffers (sized
 * exactly, so ASan sees any overrun), the version has no spaces or control
 * characters, and the banner starts with "Linux version ".
 *
 * Input: u8 version buffer size, u16 banner buffer size, then the image. */
#include "fuzz.h"

#include "guest/kernel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	size_t vlen = 1 + fz_u8(&f), blen = 1 + fz_u16(&f) % 1024;
	size_t len;
	const uint8_t *p = fz_rest(&f, &len);
	/* an exact-size copy: the parser must not read past the image */
	uint8_t *img = malloc(len ? len : 1);
	char *version = malloc(vlen), *banner = malloc(blen);
	if (!img || !version || !banner)
		abort();
	memcpy(img, p, len);
	if (kernel_parse_banner(img, len, version, vlen, banner, blen) == 0) {
		FUZZ_CHECK(memchr(version, 0, vlen) && memchr(banner, 0, blen), "unterminated output");
		for (const char *c = version; *c; c++)
			FUZZ_CHECK(*c > ' ' && *c < 0x7f, "version byte %#x", (unsigned)(uint8_t)*c);
		FUZZ_CHECK(blen < 15 || !strncmp(banner, "Linux version ", 14), "banner '%s'", banner);
	}
	free(img);
	free(version);
	free(banner);
	return 0;
}
