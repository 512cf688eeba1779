/* cmd_image.c - `vmsh image build DIR IMAGE`: a tools image for `vmsh attach
 * -f` from a directory (an ext4 file system made by mke2fs -d, sized to fit,
 * owned by root, with the directories the in-guest helper mounts on added
 * inside the image). DIR is only read; IMAGE appears complete or not at all. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common/num.h"

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
	fprintf(out, "usage: vmsh image build [--size MIB] [-F] DIR IMAGE\n\n"
		     "Make IMAGE, an ext4 file system with the contents of DIR, for `vmsh attach -f IMAGE`.\n"
		     "Commands run with the image as their root (read-only), so DIR should hold what they\n"
		     "need: static binaries, or binaries with their libraries. The directories the helper\n"
		     "mounts on (var/lib/vmsh, proc, sys, dev, tmp, run) are added to the image (DIR is\n"
		     "only read). An existing IMAGE is replaced only with --force, and only once the new\n"
		     "one is complete. Needs mke2fs and debugfs (e2fsprogs).\n\n"
		     "options:\n"
		     "      --size MIB  the file system's size (default: the contents and a quarter more,\n"
		     "                  4 KiB per file, 16 MiB)\n"
		     "  -F, --force     replace an existing IMAGE\n"
		     "  -h, --help      this help\n");
}

static int run(char *const argv[], const char *what)
{
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		fprintf(stderr, "vmsh image: cannot run %s: %s (install e2fsprogs)\n", argv[0], strerror(rc));
		return -1;
	}
	int wst;
	while (waitpid(pid, &wst, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (!WIFEXITED(wst) || WEXITSTATUS(wst)) {
		fprintf(stderr, "vmsh image: %s failed\n", what);
		return -1;
	}
	return 0;
}

/* The helper's mount points, made inside the image (debugfs), never in DIR;
 * "mkdir" of one that DIR already has fails harmlessly. */
static int add_mount_points(const char *image)
{
	static const char *const dirs[] = { "var", "var/lib", "var/lib/vmsh", "proc", "sys", "dev", "tmp", "run" };
	char cmds[512] = "";
	size_t len = 0;
	for (size_t k = 0; k < sizeof(dirs) / sizeof(dirs[0]); k++)
		len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "mkdir /%s\n", dirs[k]);
	char script[] = "/tmp/vmsh-image-XXXXXX";
	int fd = mkstemp(script);
	if (fd < 0 || write(fd, cmds, len) != (ssize_t)len) {
		fprintf(stderr, "vmsh image: temporary file: %s\n", strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(script);
		}
		return -1;
	}
	close(fd);
	char *args[] = { "debugfs", "-w", "-f", script, (char *)image, NULL };
	/* debugfs prints its commands and the harmless "exists" errors: quiet */
	int saved = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY);
	if (null >= 0) {
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		close(null);
	}
	int rc = run(args, "debugfs");
	if (saved >= 0) {
		dup2(saved, STDOUT_FILENO);
		close(saved);
	}
	if (saved_err >= 0) {
		dup2(saved_err, STDERR_FILENO);
		close(saved_err);
	}
	unlink(script);
	if (rc < 0)
		fprintf(stderr, "vmsh image: adding the mount points failed\n");
	return rc;
}

int cmd_image(int argc, char **argv)
{
	uint64_t size_mib = 0;
	bool force = false;
	int i = 1;
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || strcmp(argv[i++], "build")) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--force") || !strcmp(argv[i], "-F")) {
			force = true;
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (parse_u64(argv[++i], 1, 1ULL << 24, &size_mib) < 0) {
				fprintf(stderr, "vmsh image: --size %s: want a whole number of MiB, 1 to 16777216\n",
					argv[i]);
				return EXIT_VMSH_USAGE;
			}
		} else {
			usage(stderr);
			return EXIT_VMSH_USAGE;
		}
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
	if (!force && lstat(out, &st) == 0) {
		fprintf(stderr, "vmsh image: %s exists (--force replaces it once the new image is complete)\n", out);
		return EXIT_VMSH_FAILED;
	}
	tree_bytes = 0;
	tree_files = 0;
	if (nftw(dir, add_entry, 64, FTW_PHYS) < 0) {
		fprintf(stderr, "vmsh image: reading %s: %s\n", dir, strerror(errno));
		return EXIT_VMSH_FAILED;
	}
	if (!size_mib) /* contents, inodes and journal, with room to spare */
		size_mib = ((tree_bytes * 5 / 4 + tree_files * 4096ULL) >> 20) + 16;
	/* a temporary file next to IMAGE, renamed over it at the end */
	char tmp[4200];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", out) >= (int)sizeof(tmp)) {
		fprintf(stderr, "vmsh image: %s: name too long\n", out);
		return EXIT_VMSH_USAGE;
	}
	int fd = mkstemp(tmp);
	if (fd < 0) {
		fprintf(stderr, "vmsh image: cannot create a file next to %s: %s\n", out, strerror(errno));
		return EXIT_VMSH_FAILED;
	}
	fchmod(fd, 0644);
	close(fd);
	char size[32];
	snprintf(size, sizeof(size), "%lluM", (unsigned long long)size_mib);
	char *args[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-L", "vmsh-image", "-E", "root_owner=0:0",
			 "-d", (char *)dir, tmp, size, NULL };
	if (run(args, "mke2fs") < 0 || add_mount_points(tmp) < 0 || rename(tmp, out) < 0) {
		fprintf(stderr, "vmsh image: %s not written\n", out);
		unlink(tmp);
		return EXIT_VMSH_FAILED;
	}
	printf("%s: ext4, %llu MiB, %lu entries from %s\n", out, (unsigned long long)size_mib, tree_files, dir);
	return 0;
}
