/* ksymtab_dump.c - run vmsh's kernel finders on a vmlinux ELF file laid out
 * as it is in memory, and print what they find, for comparison with the
 * kernel's own System.map (tests/kernel/test_real_kernels.py).
 *
 * usage: ksymtab_dump [--kallsyms] VMLINUX
 *   ->  "banner <version>", "format <f>", then "<hex value> <name>" per
 *   symbol: of the export tables, or with --kallsyms of the kallsyms tables
 *   (the text base: the lowest kernel segment, where _text is linked) */
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest/kallsyms.h"
#include "guest/kernel.h"
#include "guest/ksymtab.h"

int main(int argc, char **argv)
{
	int kallsyms = argc == 3 && !strcmp(argv[1], "--kallsyms");
	if (argc != 2 && !kallsyms) {
		fprintf(stderr, "usage: %s [--kallsyms] VMLINUX\n", argv[0]);
		return 2;
	}
	argv += kallsyms;
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	const uint8_t *f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f == MAP_FAILED || st.st_size < (off_t)sizeof(Elf64_Ehdr) || memcmp(f, ELFMAG, SELFMAG)) {
		fprintf(stderr, "%s: not an ELF file\n", argv[1]);
		return 1;
	}
	const Elf64_Ehdr *eh = (const void *)f;
	const Elf64_Phdr *ph = (const void *)(f + eh->e_phoff);
	uint64_t lo = UINT64_MAX, hi = 0;
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_vaddr < KERNEL_MAP_START)
			continue;
		if (ph[i].p_vaddr < lo)
			lo = ph[i].p_vaddr;
		if (ph[i].p_vaddr + ph[i].p_memsz > hi)
			hi = ph[i].p_vaddr + ph[i].p_memsz;
	}
	if (lo >= hi || hi - lo > (1ULL << 30)) {
		fprintf(stderr, "%s: no kernel segments\n", argv[1]);
		return 1;
	}
	uint8_t *img = calloc(1, hi - lo);
	for (int i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD || ph[i].p_vaddr < KERNEL_MAP_START)
			continue;
		if (ph[i].p_offset + ph[i].p_filesz > (uint64_t)st.st_size)
			return 1;
		memcpy(img + (ph[i].p_vaddr - lo), f + ph[i].p_offset, ph[i].p_filesz);
	}
	char version[128], banner[512];
	if (kernel_parse_banner(img, hi - lo, version, sizeof(version), banner, sizeof(banner)) == 0)
		printf("banner %s\n", version);
	struct ksymtab ks;
	struct vmsh_err err = { 0 };
	if ((kallsyms ? kallsyms_parse(img, hi - lo, lo, lo, &ks, &err) : ksymtab_parse(img, hi - lo, lo, &ks, &err)) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	printf("format %s\ntables %zu\n", ksymtab_format_name(ks.format), ks.n_tables);
	for (size_t i = 0; i < ks.n; i++)
		printf("%016llx %s\n", (unsigned long long)ks.syms[i].value, ks.syms[i].name);
	ksymtab_free(&ks);
	free(img);
	return 0;
}
