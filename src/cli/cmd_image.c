/* cmd_image.c - `vmsh image build DIR IMAGE`: a tools image for `vmsh attach
 * -f` from a directory (an ext4 file system made by mke2fs -d, sized to fit,
 * owned by root, with the directories the in-guest helper mounts on). */
#include <errno.h>
#include <ftw.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/commands.h"

extern char **environ;

static uint64_t tree_bytes;
static unsigned long tree_files;

/* nftw has no user pointer: the totals live here for the one walk */
static int add_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)path;
	(void)flag;
	(void)f;
	tree_bytes += ((uint64_t)st->st_size + 4095) & ~4095ULL;
	tree_files++;
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh image build [--size MIB] DIR IMAGE\n\n"
		     "Make IMAGE, an ext4 file system with the contents of DIR, for `vmsh attach -f IMAGE`.\n"
		     "Commands run with the image as their root (read-only), so DIR should hold what they\n"
		     "need: static binaries, or binaries with their libraries. The directories the helper\n"
		     "mounts on (var/lib/vmsh, proc, sys, dev, tmp, run) are added. Needs mke2fs (e2fsprogs).\n");
}

int cmd_image(int argc, char **argv)
{
	unsigned long size_mib = 0;
	int i = 1;
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || strcmp(argv[i++], "build")) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	if (i + 1 < argc && !strcmp(argv[i], "--size")) {
		size_mib = strtoul(argv[i + 1], NULL, 10);
		i += 2;
	}
	if (argc - i != 2) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	const char *dir = argv[i], *out = argv[i + 1];
	struct stat st;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "vmsh image: %s is not a directory\n", dir);
		return EXIT_VMSH_USAGE;
	}
	static const char *const mounts[] = { "var/lib/vmsh", "proc", "sys", "dev", "tmp", "run" };
	for (size_t k = 0; k < sizeof(mounts) / sizeof(mounts[0]); k++) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", dir, mounts[k]);
		if (stat(p, &st) == 0)
			continue;
		char cmd[4200];
		snprintf(cmd, sizeof(cmd), "%s", p);
		for (char *c = cmd + strlen(dir) + 1; *c; c++)
			if (*c == '/') {
				*c = '\0';
				mkdir(cmd, 0755);
				*c = '/';
			}
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			fprintf(stderr, "vmsh image: cannot add %s to %s: %s\n", mounts[k], dir, strerror(errno));
			return EXIT_VMSH_FAILED;
		}
	}
	tree_bytes = 0;
	tree_files = 0;
	if (nftw(dir, add_entry, 64, FTW_PHYS) < 0) {
		fprintf(stderr, "vmsh image: reading %s: %s\n", dir, strerror(errno));
		return EXIT_VMSH_FAILED;
	}
	if (!size_mib) /* contents, inodes and journal, with room to spare */
		size_mib = (unsigned long)((tree_bytes * 5 / 4 + tree_files * 4096ULL) >> 20) + 16;
	char size[32];
	snprintf(size, sizeof(size), "%luM", size_mib);
	char *args[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-L", "vmsh-image", "-E", "root_owner=0:0",
			 "-d", (char *)dir, (char *)out, size, NULL };
	pid_t pid;
	int rc = posix_spawnp(&pid, "mke2fs", NULL, NULL, args, environ);
	if (rc) {
		fprintf(stderr, "vmsh image: cannot run mke2fs: %s (install e2fsprogs)\n", strerror(rc));
		return EXIT_VMSH_FAILED;
	}
	int wst;
	while (waitpid(pid, &wst, 0) < 0)
		if (errno != EINTR)
			return EXIT_VMSH_FAILED;
	if (!WIFEXITED(wst) || WEXITSTATUS(wst)) {
		fprintf(stderr, "vmsh image: mke2fs failed\n");
		unlink(out);
		return EXIT_VMSH_FAILED;
	}
	printf("%s: ext4, %lu MiB, %lu entries from %s\n", out, size_mib, tree_files, dir);
	return 0;
}
