/* test_helper_name.c - the name of the helper's file in the guest
 * (src/loader/kernel_lib.c klib_add_file): proposed by vmsh, random, so
 * that a guest user cannot block attach by creating it in /tmp first. */
#include "unit.h"

#include "loader/kernel_lib.h"

static bool name_ok(const char *s)
{
	if (strncmp(s, ".vmsh-helper-", 13) || strlen(s) < 13 + 16 || strlen(s) >= 40)
		return false;
	for (const char *p = s + 13; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

static void test_each_attach_proposes_a_fresh_unguessable_name(void **state)
{
	(void)state;
	struct kernel_lib kl;
	memset(&kl, 0, sizeof(kl));
	kl.mem.local = calloc(1, KLIB_MEM_SIZE);
	kl.chan = calloc(1, sizeof(*kl.chan));
	kl.region.va = 0xffffff8000000000ULL;
	struct vmsh_err err = { 0 };
	assert_int_equal(klib_add_file(&kl, "\x7f" "ELF", 4, &err), 0);
	char first[sizeof(kl.chan->helper_path)];
	memcpy(first, kl.chan->helper_path, sizeof(first));
	assert_true(name_ok(first));
	kl.used = 0;
	assert_int_equal(klib_add_file(&kl, "\x7f" "ELF", 4, &err), 0);
	assert_true(name_ok(kl.chan->helper_path));
	assert_string_not_equal(first, kl.chan->helper_path);
	free(kl.mem.local);
	free(kl.chan);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_attach_proposes_a_fresh_unguessable_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
