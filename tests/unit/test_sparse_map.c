/* test_sparse_map.c - the scratch mapping for a kernel image's copy stays in
 * small pages: a scattered write makes 4 KiB resident, not 2 MiB. */
#include "unit.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "common/sparse_map.h"

/* The Rss (KiB) and VmFlags of the mapping starting at p, from smaps. */
static void vma_of(const void *p, long *rss_kib, char *flags, size_t cap)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	assert_non_null(f);
	char line[512];
	bool in = false;
	*rss_kib = -1;
	flags[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line */
			in = lo == (unsigned long)p;
			continue;
		}
		if (!in)
			continue;
		if (!strncmp(line, "Rss:", 4))
			sscanf(line + 4, "%ld", rss_kib);
		else if (!strncmp(line, "VmFlags:", 8))
			snprintf(flags, cap, "%s", line + 8);
	}
	fclose(f);
}

static void test_scattered_writes_stay_small(void **state)
{
	(void)state;
	const size_t len = 64 << 20;
	uint8_t *p = sparse_map(len);
	assert_non_null(p);
	assert_int_equal(p[len / 2], 0);
	for (size_t off = 0; off < len; off += 1 << 20)
		p[off + 4096] = 1; /* 64 writes, one per MiB */
	long rss;
	char flags[512];
	vma_of(p, &rss, flags, sizeof(flags));
	/* advised no huge pages ("nh"): with THP "always" each write would
	 * otherwise take 2 MiB (128 MiB for these 64) */
	assert_non_null(strstr(flags, " nh"));
	assert_true(rss >= 64 * 4 && rss <= 64 * 4 * 4);
	munmap(p, len);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scattered_writes_stay_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
