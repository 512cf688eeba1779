/* test_parsers.c - the small text and register parsers: qemu -m/-name
 * (src/cli/vmlist.c), the kernel banner and paging mode (src/guest/kernel.c),
 * /proc/PID/maps lines (src/common/procfs.c), guest-RAM candidates
 * (src/guest/memmap.c) and KVM fd names (src/kvm/kvm_fds.c). */
#include "unit.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/vmlist.h"
#include "common/escape.h"
#include "common/procfs.h"
#include "guest/kernel.h"
#include "guest/memmap.h"
#include "kvm/kvm.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* ---------------- qemu -m ---------------- */

static void test_qemu_mem_plain_number_is_mib(void **state)
{
	(void)state;
	assert_int_equal(parse_qemu_mem("512"), 512 * MiB);
	assert_int_equal(parse_qemu_mem("1"), MiB);
	assert_int_equal(parse_qemu_mem("4096"), 4 * GiB);
}

static void test_qemu_mem_suffixes(void **state)
{
	(void)state;
	assert_int_equal(parse_qemu_mem("2G"), 2 * GiB);
	assert_int_equal(parse_qemu_mem("2g"), 2 * GiB);
	assert_int_equal(parse_qemu_mem("1024M"), GiB);
	assert_int_equal(parse_qemu_mem("262144K"), 256 * MiB);
	assert_int_equal(parse_qemu_mem("1T"), 1ULL << 40);
	assert_int_equal(parse_qemu_mem("1073741824B"), GiB);
	assert_int_equal(parse_qemu_mem("1.5G"), 3 * GiB / 2);
}

static void test_qemu_mem_key_value_form(void **state)
{
	(void)state;
	assert_int_equal(parse_qemu_mem("size=1G,slots=2,maxmem=4G"), GiB);
	assert_int_equal(parse_qemu_mem("slots=2,maxmem=4G,size=768M"), 768 * MiB);
	assert_int_equal(parse_qemu_mem("size=2048"), 2 * GiB);
	/* implied first key: "4G,..." is size=4G */
	assert_int_equal(parse_qemu_mem("4G,slots=2,maxmem=8G"), 4 * GiB);
	/* no size at all: unknown, not maxmem */
	assert_int_equal(parse_qemu_mem("slots=2,maxmem=4G"), 0);
}

static void test_qemu_mem_garbage_is_zero(void **state)
{
	(void)state;
	assert_int_equal(parse_qemu_mem("bogus"), 0);
	assert_int_equal(parse_qemu_mem(""), 0);
	assert_int_equal(parse_qemu_mem("size="), 0);
	assert_int_equal(parse_qemu_mem("0"), 0);
	assert_int_equal(parse_qemu_mem("-512"), 0);
	assert_int_equal(parse_qemu_mem("12Q"), 0);
	assert_int_equal(parse_qemu_mem("G"), 0);
}

/* Not sizes at all, or sizes past 2^64 bytes: "not understood" (0). The
 * double -> uint64_t conversion of NaN, infinity or anything >= 2^64 is
 * undefined behaviour in C; on x86-64/gcc "nan" gives 2^63 bytes. */
static void test_qemu_mem_non_finite_or_huge_is_zero(void **state)
{
	(void)state;
	const char *in[] = { "nan", "inf", "-nan", "infinity", "1e30", "1e19", "17179869184T" };
	uint64_t got[ARRAY_LEN(in)];
	for (size_t i = 0; i < ARRAY_LEN(in); i++) {
		got[i] = parse_qemu_mem(in[i]);
		if (got[i])
			print_message("parse_qemu_mem(\"%s\") = %" PRIu64 "\n", in[i], got[i]);
	}
	for (size_t i = 0; i < ARRAY_LEN(in); i++)
		assert_int_equal(got[i], 0);
}

/* ---------------- qemu -name ---------------- */

static const char *name_of(const char *arg)
{
	static char out[128];
	memset(out, 'X', sizeof(out));
	parse_qemu_name(arg, out, sizeof(out));
	return out;
}

static void test_qemu_name_plain_and_guest_key(void **state)
{
	(void)state;
	assert_string_equal(name_of("foo"), "foo");
	assert_string_equal(name_of("guest=foo,debug-threads=on"), "foo"); /* what libvirt passes */
	assert_string_equal(name_of("debug-threads=on,guest=bar"), "bar");
	assert_string_equal(name_of("foo,debug-threads=on"), "foo");
	assert_string_equal(name_of("foo,process=qemu-foo"), "foo");
	assert_string_equal(name_of("guest=web-01.example"), "web-01.example");
	assert_string_equal(name_of(""), "");
}

/* A VM name leads to root's or the caller's own processes only. */
static void test_vm_name_owner_rule(void **state)
{
	(void)state;
	assert_true(vm_name_owner_ok(0, 0, NULL));       /* root's VM, root */
	assert_true(vm_name_owner_ok(1000, 1000, NULL)); /* own VM */
	assert_true(vm_name_owner_ok(0, 1000, NULL));    /* root's VM, for a user */
	assert_false(vm_name_owner_ok(1000, 0, NULL));   /* root, a user's VM */
	assert_false(vm_name_owner_ok(1001, 1000, NULL));
	assert_true(vm_name_owner_ok(1000, 0, "1000"));  /* sudo by its owner */
	assert_false(vm_name_owner_ok(1000, 0, "1001"));
	assert_false(vm_name_owner_ok(1000, 0, ""));
	assert_false(vm_name_owner_ok(1000, 0, "1000x"));
	assert_false(vm_name_owner_ok(65534, 0, "-1"));
}

/* libvirt's record of a domain vouches for its name only if nobody but
 * root can have written it. */
static void test_libvirt_record(void **state)
{
	(void)state;
	char dir[] = "/tmp/vmsh-lv-XXXXXX";
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0);
	char path[256], link[256];
	snprintf(path, sizeof(path), "%s/dom.pid", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("4242\n", f);
	fclose(f);
	assert_int_equal(chmod(path, 0644), 0);
	bool root = geteuid() == 0;
	assert_int_equal(vm_libvirt_pid(dir, "dom"), root ? 4242 : 0);
	assert_int_equal(vm_libvirt_pid(dir, "other"), 0);
	assert_int_equal(vm_libvirt_pid(dir, "../dom"), 0);
	assert_int_equal(vm_libvirt_pid(dir, ""), 0);
	assert_int_equal(chmod(path, 0666), 0); /* anyone could have written it */
	assert_int_equal(vm_libvirt_pid(dir, "dom"), 0);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(chmod(dir, 0777), 0);  /* anyone could have put it there */
	assert_int_equal(vm_libvirt_pid(dir, "dom"), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	snprintf(link, sizeof(link), "%s/sym.pid", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(vm_libvirt_pid(dir, "sym"), 0);
	f = fopen(path, "w");
	fputs("42x\n", f);
	fclose(f);
	assert_int_equal(vm_libvirt_pid(dir, "dom"), 0);
	unlink(link);
	unlink(path);
	rmdir(dir);
}

static void test_qemu_name_truncates_to_buffer(void **state)
{
	(void)state;
	char out[4];
	memset(out, 'X', sizeof(out));
	parse_qemu_name("guest=abcdef", out, sizeof(out));
	assert_string_equal(out, "abc");
	char one[1] = { 'X' };
	parse_qemu_name("abc", one, sizeof(one));
	assert_int_equal(one[0], '\0');
}

/* qemu's -name is "[guest=]name[,process=name][,debug-threads=on|off]":
 * with no guest key and a first element that is itself key=value there is no
 * name, and ",," is an escaped comma inside the name. */
static void test_qemu_name_without_guest_key(void **state)
{
	(void)state;
	char a[128], b[128], c[128];
	parse_qemu_name("debug-threads=on", a, sizeof(a));
	parse_qemu_name("process=qemu-vm1,debug-threads=on", b, sizeof(b));
	parse_qemu_name("my,,vm", c, sizeof(c));
	assert_string_equal(a, "");
	assert_string_equal(b, "");
	assert_string_equal(c, "my,vm");
}

/* ---------------- kernel banner ---------------- */

#define BANNER                                                                                          \
	"Linux version 6.1.0-27-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, " \
	"GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)"

/* Build junk + decoys + banner + "\n" + junk in an exact-size allocation. */
static uint8_t *banner_image(size_t *len, size_t *banner_at)
{
	static const char decoy1[] = "Linux version %s (%s@%s) (%s) %s\n";
	static const char decoy2[] = "\0Linux version \0Linux version  6\0Linux version\n7";
	size_t n = 4096 + sizeof(decoy1) + sizeof(decoy2) + sizeof(BANNER) + 4096;
	uint8_t *b = malloc(n);
	assert_non_null(b);
	struct unit_rng r = { 42 };
	unit_rand_fill(&r, b, n);
	size_t at = 1000;
	memcpy(b + at, decoy1, sizeof(decoy1) - 1);
	at += sizeof(decoy1) - 1;
	memcpy(b + at, decoy2, sizeof(decoy2) - 1);
	at = 4096 + 200;
	memcpy(b + at, BANNER "\n", sizeof(BANNER));
	*len = n;
	*banner_at = at;
	return b;
}

static void test_banner_found_in_junk_after_decoys(void **state)
{
	(void)state;
	size_t len, at;
	uint8_t *img = banner_image(&len, &at);
	char version[128], banner[512];
	assert_int_equal(kernel_parse_banner(img, len, version, sizeof(version), banner, sizeof(banner)), 0);
	assert_string_equal(version, "6.1.0-27-amd64");
	assert_string_equal(banner, BANNER);
	free(img);
}

static void test_banner_nul_terminated_and_truncated(void **state)
{
	(void)state;
	/* NUL instead of newline ends the banner too */
	static const char s[] = "xx\0Linux version 5.10.0-33-cloud-amd64 (x) #1 SMP Debian\0yy";
	char version[128], banner[512];
	assert_int_equal(kernel_parse_banner((const uint8_t *)s, sizeof(s), version, sizeof(version), banner,
					     sizeof(banner)),
			 0);
	assert_string_equal(version, "5.10.0-33-cloud-amd64");
	assert_string_equal(banner, "Linux version 5.10.0-33-cloud-amd64 (x) #1 SMP Debian");
	/* small output buffers truncate, still terminated */
	char v8[8], b16[16];
	assert_int_equal(kernel_parse_banner((const uint8_t *)s, sizeof(s), v8, sizeof(v8), b16, sizeof(b16)), 0);
	assert_string_equal(v8, "5.10.0-");
	assert_string_equal(b16, "Linux version 5");
}

static void test_banner_at_end_of_buffer(void **state)
{
	(void)state;
	/* the buffer ends inside the banner: no read past it (exact allocation) */
	static const char s[] = "junk Linux version 6.12.9+bpo-amd64 (debian";
	size_t n = sizeof(s) - 1;
	uint8_t *b = malloc(n);
	assert_non_null(b);
	memcpy(b, s, n);
	char version[128], banner[512];
	assert_int_equal(kernel_parse_banner(b, n, version, sizeof(version), banner, sizeof(banner)), 0);
	assert_string_equal(version, "6.12.9+bpo-amd64");
	assert_string_equal(banner, "Linux version 6.12.9+bpo-amd64 (debian");
	/* ends right after "Linux version " */
	assert_int_equal(kernel_parse_banner(b, 19, version, sizeof(version), banner, sizeof(banner)), -1);
	free(b);
}

static void test_banner_missing(void **state)
{
	(void)state;
	static const char s[] = "Linux version %s\nLinux Version 6.1\nlinux version 6.1\nLinux version x.y";
	char version[16] = "untouched", banner[16] = "untouched";
	assert_int_equal(kernel_parse_banner((const uint8_t *)s, sizeof(s) - 1, version, sizeof(version), banner,
					     sizeof(banner)),
			 -1);
	assert_int_equal(kernel_parse_banner((const uint8_t *)s, 0, version, sizeof(version), banner, sizeof(banner)),
			 -1);
}

/* ---------------- /proc/PID/maps lines ---------------- */

static void test_maps_line_anonymous(void **state)
{
	(void)state;
	struct proc_map m;
	assert_int_equal(procfs_parse_map_line("7f3c8c000000-7f3cac000000 rw-p 00000000 00:00 0 \n", &m), 0);
	assert_int_equal(m.start, 0x7f3c8c000000ULL);
	assert_int_equal(m.end, 0x7f3cac000000ULL);
	assert_string_equal(m.perms, "rw-p");
	assert_int_equal(m.offset, 0);
	assert_int_equal(m.inode, 0);
	assert_string_equal(m.path, "");
	/* also without the trailing space and newline */
	assert_int_equal(procfs_parse_map_line("7f3c8c000000-7f3cac000000 rw-p 00000000 00:00 0", &m), 0);
	assert_string_equal(m.path, "");
	assert_int_equal(m.end - m.start, 512 * MiB);
}

static void test_maps_line_file_with_spaces(void **state)
{
	(void)state;
	struct proc_map m;
	assert_int_equal(procfs_parse_map_line("7f0000000000-7f0040000000 rw-s 00200000 fd:01 1835049                    "
					       "/var/lib/vm images/guest one.raw\n",
					       &m),
			 0);
	assert_int_equal(m.start, 0x7f0000000000ULL);
	assert_int_equal(m.end, 0x7f0040000000ULL);
	assert_string_equal(m.perms, "rw-s");
	assert_int_equal(m.offset, 0x200000);
	assert_int_equal(m.dev, (0xfdULL << 32) | 1); /* the same inode on another device is another file */
	assert_int_equal(m.inode, 1835049);
	assert_string_equal(m.path, "/var/lib/vm images/guest one.raw");
}

static void test_maps_line_memfd_deleted(void **state)
{
	(void)state;
	struct proc_map m;
	assert_int_equal(procfs_parse_map_line("7fd2c0000000-7fd340000000 rw-s 00000000 00:01 2052                       "
					       "/memfd:pc.ram (deleted)\n",
					       &m),
			 0);
	assert_string_equal(m.perms, "rw-s");
	assert_int_equal(m.inode, 2052);
	assert_string_equal(m.path, "/memfd:pc.ram (deleted)");
	assert_int_equal(m.end - m.start, 2 * GiB);
}

static void test_maps_line_stack_and_short_addresses(void **state)
{
	(void)state;
	struct proc_map m;
	assert_int_equal(procfs_parse_map_line("7ffc95b06000-7ffc95b27000 rw-p 00000000 00:00 0                          "
					       "[stack]\n",
					       &m),
			 0);
	assert_string_equal(m.path, "[stack]");
	assert_int_equal(m.start, 0x7ffc95b06000ULL);
	/* 32-bit style 8-digit addresses, execute-only mapping */
	assert_int_equal(procfs_parse_map_line("00400000-00452000 --xp 00001000 103:02 42 /usr/bin/qemu\n", &m), 0);
	assert_int_equal(m.start, 0x400000);
	assert_string_equal(m.perms, "--xp");
	assert_int_equal(m.offset, 0x1000);
	assert_string_equal(m.path, "/usr/bin/qemu");
	/* a very long path is cut to the buffer, terminated */
	char line[600];
	int n = snprintf(line, sizeof(line), "1000-2000 r--p 00000000 00:00 7 /");
	memset(line + n, 'a', 400);
	line[n + 400] = '\0';
	assert_int_equal(procfs_parse_map_line(line, &m), 0);
	assert_int_equal(strlen(m.path), sizeof(m.path) - 1);
	assert_int_equal(m.path[0], '/');
}

static void test_maps_line_malformed(void **state)
{
	(void)state;
	struct proc_map m;
	assert_int_equal(procfs_parse_map_line("", &m), -1);
	assert_int_equal(procfs_parse_map_line("hello world", &m), -1);
	assert_int_equal(procfs_parse_map_line("7f00-7f10 rw-p", &m), -1);
	assert_int_equal(procfs_parse_map_line("7f00-7f10 rw-p 0 00:00", &m), -1);
}

/* Our own maps, read back: an anonymous mapping and a memfd one. */
static void test_maps_of_self(void **state)
{
	(void)state;
	size_t sz = 2 * MiB;
	/* between PROT_NONE guards, so the kernel cannot merge it with a neighbour */
	uint8_t *area = mmap(NULL, 3 * sz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(area != MAP_FAILED);
	void *anon = mmap(area + sz, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	assert_true(anon == area + sz);
	int fd = memfd_create("pc.ram", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)sz), 0);
	void *shared = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(shared != MAP_FAILED);
	close(fd);

	struct proc_map *maps;
	size_t n;
	struct vmsh_err err = { 0 };
	assert_int_equal(procfs_read_maps(getpid(), &maps, &n, &err), 0);
	const struct proc_map *a = NULL, *s = NULL, *stack = NULL;
	for (size_t i = 0; i < n; i++) {
		if (maps[i].start == (uintptr_t)anon)
			a = &maps[i];
		if (maps[i].start == (uintptr_t)shared)
			s = &maps[i];
		if (!strcmp(maps[i].path, "[stack]"))
			stack = &maps[i];
	}
	assert_non_null(a);
	assert_non_null(s);
	assert_non_null(stack);
	assert_string_equal(a->perms, "rw-p");
	assert_int_equal(a->end - a->start, sz);
	assert_string_equal(s->perms, "rw-s");
	assert_string_equal(s->path, "/memfd:pc.ram (deleted)");
	assert_true(memmap_is_candidate(s));
	assert_false(memmap_is_candidate(stack));
	free(maps);
	munmap(area, 3 * sz);
	munmap(shared, sz);
}

/* ---------------- guest RAM candidates ---------------- */

static struct proc_map pmap(uint64_t start, uint64_t size, const char *perms, const char *path)
{
	struct proc_map m;
	memset(&m, 0, sizeof(m));
	m.start = start;
	m.end = start + size;
	snprintf(m.perms, sizeof(m.perms), "%s", perms);
	snprintf(m.path, sizeof(m.path), "%s", path);
	return m;
}

static void test_candidate_rules(void **state)
{
	(void)state;
	struct proc_map m;
	m = pmap(0x7f0000000000ULL, 512 * MiB, "rw-p", "");
	assert_int_equal(memmap_is_candidate(&m), 1);
	m = pmap(0x7f0000000000ULL, 2 * GiB, "rw-s", "/memfd:pc.ram (deleted)");
	assert_int_equal(memmap_is_candidate(&m), 1);
	m = pmap(0x7f0000000000ULL, GiB, "rw-s", "/dev/hugepages/qemu_back_mem.pc.ram.Xyz (deleted)");
	assert_int_equal(memmap_is_candidate(&m), 1);
	m = pmap(0x7f0000000000ULL, 512 * MiB, "r-xp", "");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7f0000000000ULL, 512 * MiB, "r--p", "");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7f0000000000ULL, 512 * MiB, "-w-p", "");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7f0000000000ULL, 512 * MiB, "---p", ""); /* guard / reserved */
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7ffc00000000ULL, 8 * MiB, "rw-p", "[stack]");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7ffc00000000ULL, 8 * MiB, "rw-p", "[stack:1234]");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7ffc00000000ULL, 1 * MiB, "rw-p", "[vvar]");
	assert_int_equal(memmap_is_candidate(&m), 0);
	/* small: below 64 KiB */
	m = pmap(0x7f0000000000ULL, 60 << 10, "rw-p", "");
	assert_int_equal(memmap_is_candidate(&m), 0);
	m = pmap(0x7f0000000000ULL, 64 << 10, "rw-p", "");
	assert_int_equal(memmap_is_candidate(&m), 1);
	m = pmap(0x7f0000000000ULL, 0, "rw-p", "");
	assert_int_equal(memmap_is_candidate(&m), 0);
}

/* ---------------- KVM fd names ---------------- */

static void test_kvm_fd_kind(void **state)
{
	(void)state;
	int idx = -1;
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vm", &idx), 1);
	assert_int_equal(idx, -1);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:3", &idx), 2);
	assert_int_equal(idx, 3);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:0", &idx), 2);
	assert_int_equal(idx, 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:255", &idx), 2);
	assert_int_equal(idx, 255);

	idx = -1;
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:x", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:3x", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:-1", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu:99999999999", &idx), 0);
	assert_int_equal(idx, -1);
	assert_int_equal(kvm_fd_kind("/dev/kvm", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vm-stats", &idx), 0);      /* KVM_GET_STATS_FD */
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vcpu-stats:0", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-vm ", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:[kvm-gmem]", &idx), 0);
	assert_int_equal(kvm_fd_kind("anon_inode:kvm-device", &idx), 0);
	assert_int_equal(kvm_fd_kind("socket:[12345]", &idx), 0);
	assert_int_equal(kvm_fd_kind("", &idx), 0);
	assert_int_equal(idx, -1);
}

/* The kernel always names vCPU fds "kvm-vcpu:%d"; an empty index is not one. */
static void test_kvm_fd_kind_empty_index(void **state)
{
	(void)state;
	int idx = -1;
	int kind = kvm_fd_kind("anon_inode:kvm-vcpu:", &idx);
	assert_int_equal(kind, 0);
	assert_int_equal(idx, -1);
}

/* ---------------- paging mode ---------------- */

#define CR0_PE 0x1ULL
#define CR0_ET 0x10ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define CR4_LA57 0x1000ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

static enum paging_mode mode(uint64_t cr0, uint64_t cr4, uint64_t efer)
{
	struct cpu_paging c = { .cr0 = cr0, .cr4 = cr4, .efer = efer, .cr3 = 0x1000, .rip = 0xfff0 };
	return paging_mode_of(&c);
}

static void test_paging_mode_of(void **state)
{
	(void)state;
	/* reset state: real mode */
	assert_int_equal(mode(0x60000010ULL, 0, 0), PAGING_NONE);
	/* protected mode without paging, even with PAE/LME set up already */
	assert_int_equal(mode(CR0_PE | CR0_ET, CR4_PAE, EFER_LME), PAGING_NONE);
	/* 32-bit paging */
	assert_int_equal(mode(CR0_PG | CR0_PE | CR0_ET, 0x10 /* PSE */, 0), PAGING_32);
	/* PAE (LME set but not yet active counts as PAE) */
	assert_int_equal(mode(CR0_PG | CR0_PE | CR0_ET, CR4_PAE, 0), PAGING_PAE);
	assert_int_equal(mode(CR0_PG | CR0_PE | CR0_ET, CR4_PAE, EFER_LME), PAGING_PAE);
	/* Linux x86-64: CR0 0x80050033, CR4 0x3506f0 / 0x3526f0, EFER 0xd01 */
	assert_int_equal(mode(0x80050033ULL, 0x3506f0ULL, 0xd01ULL), PAGING_4LEVEL);
	assert_int_equal(mode(0x80050033ULL, 0x3506f0ULL | CR4_LA57, 0xd01ULL), PAGING_5LEVEL);
	/* LA57 without long mode is still PAE */
	assert_int_equal(mode(CR0_PG | CR0_PE, CR4_PAE | CR4_LA57, 0), PAGING_PAE);

	assert_string_equal(paging_mode_name(PAGING_NONE), "none");
	assert_string_equal(paging_mode_name(PAGING_32), "32-bit");
	assert_string_equal(paging_mode_name(PAGING_PAE), "pae");
	assert_string_equal(paging_mode_name(PAGING_4LEVEL), "4-level");
	assert_string_equal(paging_mode_name(PAGING_5LEVEL), "5-level");
}

static void test_kernel_paging_ctx_from_registers(void **state)
{
	(void)state;
	struct guest_mem gm;
	guest_mem_init(&gm, getpid());
	struct pt_ctx pt;
	struct cpu_paging c = { .cr0 = 0x80050033ULL, .cr4 = 0x3506f0ULL, .efer = 0xd01ULL,
				.cr3 = (1ULL << 63) | 0x10a2e000ULL | 0x803 /* PCID */ };
	assert_int_equal(kernel_paging_ctx(&gm, &c, &pt), 0);
	assert_int_equal(pt.levels, 4);
	assert_int_equal(pt.root, 0x10a2e000ULL);
	assert_ptr_equal(pt.opaque, &gm);
	c.cr4 |= CR4_LA57;
	assert_int_equal(kernel_paging_ctx(&gm, &c, &pt), 0);
	assert_int_equal(pt.levels, 5);
	c.efer = 0;
	assert_int_equal(kernel_paging_ctx(&gm, &c, &pt), -1);
	c.cr0 = 0x10;
	assert_int_equal(kernel_paging_ctx(&gm, &c, &pt), -1);
	guest_mem_free(&gm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qemu_mem_plain_number_is_mib),
		cmocka_unit_test(test_qemu_mem_suffixes),
		cmocka_unit_test(test_qemu_mem_key_value_form),
		cmocka_unit_test(test_qemu_mem_garbage_is_zero),
		cmocka_unit_test(test_qemu_mem_non_finite_or_huge_is_zero),
		cmocka_unit_test(test_qemu_name_plain_and_guest_key),
		cmocka_unit_test(test_qemu_name_truncates_to_buffer),
		cmocka_unit_test(test_qemu_name_without_guest_key),
		cmocka_unit_test(test_banner_found_in_junk_after_decoys),
		cmocka_unit_test(test_banner_nul_terminated_and_truncated),
		cmocka_unit_test(test_banner_at_end_of_buffer),
		cmocka_unit_test(test_banner_missing),
		cmocka_unit_test(test_maps_line_anonymous),
		cmocka_unit_test(test_maps_line_file_with_spaces),
		cmocka_unit_test(test_maps_line_memfd_deleted),
		cmocka_unit_test(test_maps_line_stack_and_short_addresses),
		cmocka_unit_test(test_maps_line_malformed),
		cmocka_unit_test(test_maps_of_self),
		cmocka_unit_test(test_candidate_rules),
		cmocka_unit_test(test_vm_name_owner_rule),
		cmocka_unit_test(test_libvirt_record),
		cmocka_unit_test(test_kvm_fd_kind),
		cmocka_unit_test(test_kvm_fd_kind_empty_index),
		cmocka_unit_test(test_paging_mode_of),
		cmocka_unit_test(test_kernel_paging_ctx_from_registers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
