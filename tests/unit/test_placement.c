/* test_placement.c - where vmsh puts its own guest-physical memory:
 * iomem_free_top picks the highest free, aligned window below the guest's
 * physical address width, so memory a hypervisor adds later right above RAM
 * (hotplugged DIMMs) never lands on vmsh's slot. */
#include "unit.h"

#include "guest/iomem.h"

#define GIB (1ULL << 30)

static struct iomem_entry ent(uint64_t start, uint64_t end, int depth)
{
	return (struct iomem_entry){ .start = start, .end = end, .depth = depth };
}

static void test_empty_map_gives_the_top_window(void **state)
{
	(void)state;
	assert_int_equal(iomem_free_top(NULL, 0, GIB, GIB, 4 * GIB, 1ULL << 40), (1ULL << 40) - GIB);
	/* a size smaller than the alignment still ends below the limit */
	assert_int_equal(iomem_free_top(NULL, 0, 2 << 20, GIB, 4 * GIB, 1ULL << 40), (1ULL << 40) - GIB);
}

static void test_entries_at_the_top_push_it_down(void **state)
{
	(void)state;
	/* qemu pc with AMD's HyperTransport hole reserved just below 1 TiB */
	struct iomem_entry e[] = {
		ent(0, 0x9ffff, 0),
		ent(0x100000, 0x1ffdffff, 0),
		ent(0xfd00000000ULL, 0xffffffffffULL, 0),
		ent(0x100000000ULL, 0x17fffffffULL, 0),
	};
	assert_int_equal(iomem_free_top(e, ARRAY_LEN(e), GIB, GIB, 4 * GIB, 1ULL << 40), 0xfd00000000ULL - GIB);
	/* a nested entry is covered by its parent, never consulted on its own */
	struct iomem_entry nested[] = { ent(0xff00000000ULL, 0xffffffffffULL, 1) };
	assert_int_equal(iomem_free_top(nested, 1, GIB, GIB, 4 * GIB, 1ULL << 40), (1ULL << 40) - GIB);
}

static void test_adjacent_entries_are_all_skipped(void **state)
{
	(void)state;
	/* unsorted, touching and overlapping entries covering [32 GiB, 64 GiB) */
	struct iomem_entry e[] = {
		ent(48 * GIB, 64 * GIB - 1, 0),
		ent(32 * GIB, 40 * GIB - 1, 0),
		ent(39 * GIB, 48 * GIB + 4096, 0),
	};
	assert_int_equal(iomem_free_top(e, ARRAY_LEN(e), GIB, GIB, 4 * GIB, 64 * GIB), 31 * GIB);
	/* an unaligned end: the window below must not touch it */
	struct iomem_entry f[] = { ent(10 * GIB + 4096, 64 * GIB - 1, 0) };
	assert_int_equal(iomem_free_top(f, 1, GIB, GIB, 4 * GIB, 64 * GIB), 9 * GIB);
}

static void test_no_room_is_zero(void **state)
{
	(void)state;
	struct iomem_entry all[] = { ent(0, UINT64_MAX, 0) };
	assert_int_equal(iomem_free_top(all, 1, GIB, GIB, 4 * GIB, 1ULL << 40), 0);
	struct iomem_entry low[] = { ent(4 * GIB, 8 * GIB - 1, 0) };
	assert_int_equal(iomem_free_top(low, 1, GIB, GIB, 4 * GIB, 8 * GIB), 0);
	/* limit below the size, zero or non-power-of-two alignment */
	assert_int_equal(iomem_free_top(NULL, 0, GIB, GIB, 0, GIB / 2), 0);
	assert_int_equal(iomem_free_top(NULL, 0, GIB, 0, 0, 1ULL << 40), 0);
	assert_int_equal(iomem_free_top(NULL, 0, GIB, 3 * GIB, 0, 1ULL << 40), 0);
}

/* random maps: the answer is free, aligned, inside the bounds, and no free
 * aligned window lies above it */
static void test_random_maps_agree_with_a_linear_scan(void **state)
{
	(void)state;
	struct unit_rng rng = { 77 };
	for (int round = 0; round < 2000; round++) {
		struct iomem_entry e[12];
		size_t n = unit_rand64(&rng) % ARRAY_LEN(e);
		for (size_t i = 0; i < n; i++) {
			uint64_t s = (unit_rand64(&rng) % 64) * GIB / 2 + (unit_rand64(&rng) % 3) * 4096;
			e[i] = ent(s, s + (unit_rand64(&rng) % 6 + 1) * GIB / 2 - 1, (int)(unit_rand64(&rng) % 2));
		}
		uint64_t got = iomem_free_top(e, n, GIB, GIB, 4 * GIB, 32 * GIB);
		uint64_t want = 0;
		for (uint64_t g = 31 * GIB; g >= 4 * GIB; g -= GIB)
			if (iomem_range_free(e, n, g, GIB)) {
				want = g;
				break;
			}
		assert_int_equal(got, want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_map_gives_the_top_window),
		cmocka_unit_test(test_entries_at_the_top_push_it_down),
		cmocka_unit_test(test_adjacent_entries_are_all_skipped),
		cmocka_unit_test(test_no_room_is_zero),
		cmocka_unit_test(test_random_maps_agree_with_a_linear_scan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
