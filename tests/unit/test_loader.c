/* test_loader.c - the relocatable ELF loader, on objects gcc really built
 * (tests/unit/loader_sample.c: large code model, and small with -fpie): the loaded
 * image is executed here to prove every relocation was applied right. */
#include "unit.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader/elf_rel.h"

#ifndef LOADER_SAMPLE_DIR
#error "LOADER_SAMPLE_DIR must name the directory with the sample objects"
#endif

long host_counter;
static long host_add(long a, long b)
{
	return a + b;
}

struct file {
	uint8_t *data;
	size_t len;
};

static struct file read_sample(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", LOADER_SAMPLE_DIR, name);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	struct file f = { .data = malloc(st.st_size), .len = (size_t)st.st_size };
	assert_int_equal(read(fd, f.data, f.len), (ssize_t)f.len);
	close(fd);
	return f;
}

static int resolve_host(void *opaque, const char *name, uint64_t *addr)
{
	(void)opaque;
	if (!strcmp(name, "host_add"))
		*addr = (uint64_t)(uintptr_t)host_add;
	else if (!strcmp(name, "host_counter"))
		*addr = (uint64_t)(uintptr_t)&host_counter;
	else
		return -1;
	return 0;
}

static long host_optional_impl(long x)
{
	return x * 3;
}

static int resolve_with_optional(void *opaque, const char *name, uint64_t *addr)
{
	if (!strcmp(name, "host_optional")) {
		*addr = (uint64_t)(uintptr_t)host_optional_impl;
		return 0;
	}
	return resolve_host(opaque, name, addr);
}

static int resolve_nothing(void *opaque, const char *name, uint64_t *addr)
{
	(void)opaque, (void)name, (void)addr;
	return -1;
}

/* Load at a fresh RWX mapping of this process and run sample_entry. */
static void load_and_run(const char *object)
{
	struct file f = read_sample(object);
	/* a mapping near this binary so 32-bit relative references reach it */
	size_t room = 1 << 20;
	void *hint = (void *)(((uintptr_t)host_add & ~0xfffffUL) + (64UL << 20));
	uint8_t *where = mmap(hint, room, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(where != MAP_FAILED);
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	int rc = elf_rel_load(f.data, f.len, (uint64_t)(uintptr_t)where, resolve_host, NULL, &lib, &err);
	if (rc)
		print_message("%s\n", err.msg);
	assert_int_equal(rc, 0);
	assert_true(lib.size <= room && lib.rx_size > 0 && lib.rx_size < lib.size);
	assert_int_equal(lib.rx_size % 4096, 0);
	assert_int_equal(lib.n_imports, 0);
	assert_true(lib.n_relocs >= 4);
	memcpy(where, lib.image, lib.size);
	uint64_t entry, get_bss, greeting;
	assert_int_equal(elf_rel_symbol(&lib, "sample_entry", &entry), 0);
	assert_int_equal(elf_rel_symbol(&lib, "sample_get_bss", &get_bss), 0);
	assert_int_equal(elf_rel_symbol(&lib, "greeting", &greeting), 0);
	assert_int_equal(elf_rel_symbol(&lib, "table", &entry) == 0, 0); /* static: not exported */
	assert_int_equal(elf_rel_symbol(&lib, "sample_entry", &entry), 0);
	/* writable data lives after the read+execute part */
	assert_true(greeting >= lib.base + lib.rx_size);
	long (*fn)(long) = (long (*)(long))(uintptr_t)entry;
	long (*bss)(void) = (long (*)(void))(uintptr_t)get_bss;
	host_counter = 0;
	assert_int_equal(fn(2), 30 + 2 + 'e');
	assert_int_equal(fn(7), 40 + 7 + 'e');
	assert_int_equal(host_counter, 2);
	assert_int_equal(bss(), 7);
	elf_rel_free(&lib);
	munmap(where, room);
	free(f.data);
}

static void test_large_model_object_runs(void **state)
{
	(void)state;
	load_and_run("loader_sample_large.o");
}

static void test_small_model_object_runs(void **state)
{
	(void)state;
	load_and_run("loader_sample_small.o");
}

/* A weak import the kernel lacks is 0 (the library checks before calling:
 * __request_module in a kernel without modules); one it has is linked. */
static void test_weak_import(void **state)
{
	(void)state;
	struct file f = read_sample("loader_sample_large.o");
	for (int have = 0; have < 2; have++) {
		size_t room = 1 << 20;
		uint8_t *where = mmap(NULL, room, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(where != MAP_FAILED);
		struct loaded_lib lib;
		struct vmsh_err err = { 0 };
		assert_int_equal(elf_rel_load(f.data, f.len, (uint64_t)(uintptr_t)where,
					      have ? resolve_with_optional : resolve_host, NULL, &lib, &err), 0);
		memcpy(where, lib.image, lib.size);
		uint64_t opt;
		assert_int_equal(elf_rel_symbol(&lib, "sample_optional", &opt), 0);
		long (*fn)(long) = (long (*)(long))(uintptr_t)opt;
		assert_int_equal(fn(5), have ? 15 : -1);
		elf_rel_free(&lib);
		munmap(where, room);
	}
	free(f.data);
}

static void test_missing_imports_are_all_named(void **state)
{
	(void)state;
	struct file f = read_sample("loader_sample_large.o");
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	assert_int_equal(elf_rel_load(f.data, f.len, 0xffffff8000000000ULL, resolve_nothing, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "does not export"));
	assert_non_null(strstr(err.msg, "host_add"));
	assert_non_null(strstr(err.msg, "host_counter"));
	assert_null(lib.image);
	free(f.data);
}

static void test_pc32_out_of_reach_is_refused(void **state)
{
	(void)state;
	/* small model, -fpie: references are 32-bit relative; a base 64 GiB away from the
	 * imports cannot reach them */
	struct file f = read_sample("loader_sample_small.o");
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	uint64_t far = (((uint64_t)(uintptr_t)host_add) + (64ULL << 30)) & ~0xfffULL;
	assert_int_equal(elf_rel_load(f.data, f.len, far, resolve_host, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "reach"));
	free(f.data);
}

static void test_malformed_objects_are_refused(void **state)
{
	(void)state;
	struct file f = read_sample("loader_sample_large.o");
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	/* every truncation */
	for (size_t cut = 0; cut < f.len; cut += (cut < 128 ? 1 : 97)) {
		uint8_t *copy = malloc(cut ? cut : 1);
		memcpy(copy, f.data, cut);
		int rc = elf_rel_load(copy, cut, 0x100000, resolve_host, NULL, &lib, &err);
		if (rc == 0)
			elf_rel_free(&lib);
		free(copy);
	}
	/* wrong machine, wrong type, bad section table offset, wrong base */
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f.data;
	uint16_t machine = eh->e_machine;
	eh->e_machine = EM_AARCH64;
	assert_int_equal(elf_rel_load(f.data, f.len, 0x100000, resolve_host, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "x86-64"));
	eh->e_machine = machine;
	eh->e_type = ET_EXEC;
	assert_int_equal(elf_rel_load(f.data, f.len, 0x100000, resolve_host, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "relocatable"));
	eh->e_type = ET_REL;
	uint64_t shoff = eh->e_shoff;
	eh->e_shoff = f.len - 8;
	assert_int_equal(elf_rel_load(f.data, f.len, 0x100000, resolve_host, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "section header"));
	eh->e_shoff = shoff;
	assert_int_equal(elf_rel_load(f.data, f.len, 0x100010, resolve_host, NULL, &lib, &err), -1);
	assert_non_null(strstr(err.msg, "page aligned"));
	/* random corruption of the section headers never crashes */
	uint64_t seed = 42;
	uint8_t *copy = malloc(f.len);
	for (int round = 0; round < 300; round++) {
		memcpy(copy, f.data, f.len);
		for (int k = 0; k < 8; k++) {
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			size_t at = shoff + (seed >> 33) % (f.len - shoff);
			copy[at] = (uint8_t)(seed >> 24);
		}
		if (elf_rel_load(copy, f.len, 0x100000, resolve_host, NULL, &lib, &err) == 0)
			elf_rel_free(&lib);
	}
	free(copy);
	free(f.data);
}

/* Found by fuzz_elf_rel: a section of type SHT_NULL is not checked against
 * the file (it has no contents), but with SHF_ALLOC it was placed and
 * "copied" from the file anyway - a read far past the end of the object. */
static void test_null_section_with_alloc_flag_is_not_copied(void **state)
{
	(void)state;
	struct file f = read_sample("loader_sample_large.o");
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f.data;
	Elf64_Shdr *sh = (Elf64_Shdr *)(f.data + eh->e_shoff);
	assert_int_equal(sh[0].sh_type, SHT_NULL);
	sh[0].sh_flags = SHF_ALLOC;
	sh[0].sh_size = 14u << 20;
	sh[0].sh_offset = 0;
	struct loaded_lib lib;
	struct vmsh_err err = { 0 };
	if (elf_rel_load(f.data, f.len, 0xffffffffc0000000ULL, resolve_host, NULL, &lib, &err) == 0) {
		assert_true(lib.size < (1u << 20)); /* the null section took no room */
		elf_rel_free(&lib);
	}
	free(f.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_large_model_object_runs),
		cmocka_unit_test(test_small_model_object_runs),
		cmocka_unit_test(test_missing_imports_are_all_named),
		cmocka_unit_test(test_weak_import),
		cmocka_unit_test(test_pc32_out_of_reach_is_refused),
		cmocka_unit_test(test_malformed_objects_are_refused),
		cmocka_unit_test(test_null_section_with_alloc_flag_is_not_copied),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
