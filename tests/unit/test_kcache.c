/* test_kcache.c - the files in which vmsh keeps kernel hints between runs
 * (src/core/kcache.c): round trip, what is refused, and files others could
 * have written are not read. */
#include "unit.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kcache.h"

static struct kernel_hint sample(void)
{
	struct kernel_hint h;
	memset(&h, 0, sizeof(h));
	snprintf(h.banner, sizeof(h.banner), "Linux version 6.1.0-27-amd64 (debian-kernel@lists.debian.org) #1 SMP");
	h.banner_off = 0x1161900;
	h.span_off = 0xf5a000;
	h.span_len = 0x6e000;
	h.format = KSYMTAB_PREL32_NS;
	h.n_syms = 10512;
	h.n_tables = 2;
	return h;
}

static void test_a_hint_survives_its_file_format(void **state)
{
	(void)state;
	struct kernel_hint h = sample(), back;
	char text[2048];
	assert_true(kcache_format(&h, text, sizeof(text)) > 0);
	assert_int_equal(kcache_parse(text, &back), 0);
	assert_memory_equal(&h, &back, sizeof(h));
}

static void test_implausible_files_are_refused(void **state)
{
	(void)state;
	struct kernel_hint h = sample(), back;
	char text[2048];
	h.span_len = KERNEL_HINT_MAX_SPAN + 1;
	assert_true(kcache_format(&h, text, sizeof(text)) > 0);
	assert_int_equal(kcache_parse(text, &back), -1);
	h = sample();
	h.n_tables = h.n_syms + 1;
	assert_true(kcache_format(&h, text, sizeof(text)) > 0);
	assert_int_equal(kcache_parse(text, &back), -1);
	h = sample();
	h.format = KSYMTAB_NONE;
	assert_true(kcache_format(&h, text, sizeof(text)) > 0);
	assert_int_equal(kcache_parse(text, &back), -1);
	h = sample();
	strcpy(h.banner, "two\nlines");
	assert_int_equal(kcache_format(&h, text, sizeof(text)), -1);
	assert_int_equal(kcache_parse("vmsh-kernel-hint 2\n", &back), -1);
	assert_int_equal(kcache_parse("", &back), -1);
}

static void test_stored_hints_load_and_foreign_writable_ones_do_not(void **state)
{
	(void)state;
	char base[] = "/tmp/vmsh-kcache-XXXXXX", dir[256], path[512];
	assert_non_null(mkdtemp(base));
	snprintf(dir, sizeof(dir), "%s/a/kernels", base);
	struct kernel_hint h = sample(), other = sample(), got[4];
	other.banner[14] = '5';
	struct vmsh_err err = { 0 };
	assert_int_equal(kcache_store(dir, &h, &err), 0);
	assert_int_equal(kcache_store(dir, &h, &err), 0); /* the same build: replaced, not doubled */
	assert_int_equal(kcache_store(dir, &other, &err), 0);
	assert_int_equal(kcache_load(dir, got, 4), 2);
	assert_int_equal(kcache_load(dir, got, 1), 1);
	/* a file anyone may write is not read */
	snprintf(path, sizeof(path), "%s/planted.hint", dir);
	FILE *f = fopen(path, "w");
	char text[2048];
	kcache_format(&h, text, sizeof(text));
	fputs(text, f);
	fclose(f);
	chmod(path, 0666);
	assert_int_equal(kcache_load(dir, got, 4), 2);
	chmod(path, 0600);
	assert_int_equal(kcache_load(dir, got, 4), 3);
	/* nor a directory anyone may write */
	chmod(dir, 0777);
	assert_int_equal(kcache_load(dir, got, 4), 0);
	chmod(dir, 0700);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	assert_int_equal(system(cmd), 0);
}

static void test_the_cache_can_be_turned_off(void **state)
{
	(void)state;
	char buf[256];
	setenv("VMSH_CACHE_DIR", "off", 1);
	assert_null(kcache_dir(buf, sizeof(buf)));
	setenv("VMSH_CACHE_DIR", "/x/y", 1);
	assert_string_equal(kcache_dir(buf, sizeof(buf)), "/x/y/kernels");
	unsetenv("VMSH_CACHE_DIR");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_hint_survives_its_file_format),
		cmocka_unit_test(test_implausible_files_are_refused),
		cmocka_unit_test(test_stored_hints_load_and_foreign_writable_ones_do_not),
		cmocka_unit_test(test_the_cache_can_be_turned_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
