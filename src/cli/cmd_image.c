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
#include "vmsh/helper_proto.h" /* vmsh_plain_word */

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
	fprintf(out, "usage: vmsh image build [--size MIB] [-F] DIR IMAGE\n"
		     "       vmsh image build --package NAME[,NAME...]... [--from-dir DIR] [--suite SUITE]\n"
		     "                        [--mirror URL] [--size MIB] [-F] IMAGE\n\n"
		     "Make IMAGE, an ext4 file system for `vmsh attach -f IMAGE`: with the contents of DIR, or\n"
		     "with Debian packages and everything they depend on (mmdebstrap, the essential set plus\n"
		     "NAMEs, from SUITE of the mirror), with DIR's files on top. Commands run with the image\n"
		     "as their root, so it should hold what they need: static binaries, binaries with their\n"
		     "libraries, or packages. The directories the helper mounts on (var/lib/vmsh, proc, sys,\n"
		     "dev, tmp, run) are added to the image (DIR is only read). An existing IMAGE is replaced\n"
		     "only with --force, and only once the new one is complete; a failed build leaves nothing.\n"
		     "Needs mke2fs and debugfs (e2fsprogs), and mmdebstrap for --package.\n\n"
		     "options:\n"
		     "      --package NAMES  Debian packages to install (repeatable, comma-separated)\n"
		     "      --from-dir DIR   files copied over the packages' tree\n"
		     "      --suite SUITE    the Debian release (default: this host's, else bookworm)\n"
		     "      --mirror URL     the Debian mirror, e.g. a local one for offline builds (default:\n"
		     "                       $VMSH_DEBIAN_MIRROR, else http://deb.debian.org/debian)\n"
		     "      --size MIB       the file system's size (default: the contents and a quarter more,\n"
		     "                       4 KiB per file, 16 MiB)\n"
		     "  -F, --force          replace an existing IMAGE\n"
		     "  -h, --help           this help\n");
}

/* The Debian package that has the program. */
static const char *package_of(const char *prog)
{
	if (!strcmp(prog, "mke2fs") || !strcmp(prog, "debugfs"))
		return "e2fsprogs";
	if (!strcmp(prog, "sh"))
		return "dash";
	return prog; /* mmdebstrap, tar */
}

static int run(char *const argv[], const char *what)
{
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
	if (rc) {
		fprintf(stderr, "vmsh image: cannot run %s: %s (install %s)\n", argv[0], strerror(rc), package_of(argv[0]));
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

/* rm -rf, for the package tree (nftw: depth first, never across a link) */
static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	remove(path);
	return 0;
}

/* The host's Debian release (VERSION_CODENAME of /etc/os-release), else bookworm. */
static void host_suite(char *out, size_t cap)
{
	snprintf(out, cap, "bookworm");
	FILE *f = fopen("/etc/os-release", "re");
	if (!f)
		return;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VERSION_CODENAME=", 17))
			continue;
		line[strcspn(line, "\n")] = '\0';
		size_t l = strlen(line + 17);
		if (l && l < cap && vmsh_plain_word(line + 17, 63))
			memcpy(out, line + 17, l + 1);
	}
	fclose(f);
}

struct build_opts {
	uint64_t size_mib;
	bool force;
	char packages[4096]; /* comma-separated, "" for a DIR build */
	const char *from_dir, *suite, *mirror;
};

/* The packages and their dependencies installed into tmp/root (mmdebstrap,
 * essential variant, in root mode as root, else in a user namespace), with
 * from_dir's files copied on top. 0, or -1 after saying why. */
static int package_tree(const struct build_opts *b, const char *root)
{
	char include[4200], suite[64];
	snprintf(include, sizeof(include), "--include=%s", b->packages);
	if (b->suite)
		snprintf(suite, sizeof(suite), "%s", b->suite);
	else
		host_suite(suite, sizeof(suite));
	const char *mirror = b->mirror ? b->mirror : getenv("VMSH_DEBIAN_MIRROR");
	char *args[] = { "mmdebstrap", "--quiet", "--variant=essential",
			 geteuid() == 0 ? "--mode=root" : "--mode=unshare", include, "--format=directory", suite,
			 (char *)root, (char *)(mirror ? mirror : "http://deb.debian.org/debian"), NULL };
	if (run(args, "mmdebstrap (the packages and their dependencies)") < 0)
		return -1;
	if (b->from_dir) {
		/* tar, not cp: DIR's bin/ lands in the tree's /bin, a symlink to
		 * usr/bin since Debian merged /usr */
		char *cp[] = { "sh", "-c", "tar -C \"$1\" -cf - . | tar -C \"$2\" --keep-directory-symlink -xpf -", "sh",
			       (char *)b->from_dir, (char *)root, NULL };
		if (run(cp, "copying --from-dir") < 0)
			return -1;
	}
	return 0;
}

/* IMAGE from the tree at dir: sized, made under a temporary name next to
 * IMAGE, the mount points added, renamed over IMAGE at the end. */
static int image_from_tree(const struct build_opts *b, const char *dir, const char *out)
{
	tree_bytes = 0;
	tree_files = 0;
	if (nftw(dir, add_entry, 64, FTW_PHYS) < 0) {
		fprintf(stderr, "vmsh image: reading %s: %s\n", dir, strerror(errno));
		return EXIT_VMSH_FAILED;
	}
	uint64_t size_mib = b->size_mib;
	if (!size_mib) /* contents, inodes and journal, with room to spare */
		size_mib = ((tree_bytes * 5 / 4 + tree_files * 4096ULL) >> 20) + 16;
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
	printf("%s: ext4, %llu MiB, %lu entries from %s\n", out, (unsigned long long)size_mib, tree_files,
	       b->packages[0] ? b->packages : dir);
	return 0;
}

static int add_packages(struct build_opts *b, const char *list)
{
	size_t used = strlen(b->packages);
	for (const char *p = list; *p; p++)
		if (!(*p == ',' || *p == '-' || *p == '.' || *p == '+' || *p == ':' || *p == '=' ||
		      (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) {
			fprintf(stderr, "vmsh image: --package %s: not a Debian package name\n", list);
			return -1;
		}
	if (!list[0] || used + 1 + strlen(list) >= sizeof(b->packages)) {
		fprintf(stderr, "vmsh image: --package: %s\n", list[0] ? "too many packages" : "empty");
		return -1;
	}
	snprintf(b->packages + used, sizeof(b->packages) - used, "%s%s", used ? "," : "", list);
	return 0;
}

int cmd_image(int argc, char **argv)
{
	struct build_opts b = { 0 };
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
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(o, "--force") || !strcmp(o, "-F")) {
			b.force = true;
			continue;
		}
		if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!v || (strcmp(o, "--size") && strcmp(o, "--package") && strcmp(o, "--from-dir") &&
			   strcmp(o, "--suite") && strcmp(o, "--mirror"))) {
			usage(stderr);
			return EXIT_VMSH_USAGE;
		}
		i++;
		if (!strcmp(o, "--size") && parse_u64(v, 1, 1ULL << 24, &b.size_mib) < 0) {
			fprintf(stderr, "vmsh image: --size %s: want a whole number of MiB, 1 to 16777216\n", v);
			return EXIT_VMSH_USAGE;
		}
		if (!strcmp(o, "--package") && add_packages(&b, v) < 0)
			return EXIT_VMSH_USAGE;
		if (!strcmp(o, "--from-dir"))
			b.from_dir = v;
		if (!strcmp(o, "--suite")) {
			if (!vmsh_plain_word(v, 63)) {
				fprintf(stderr, "vmsh image: --suite %s: not a release name\n", v);
				return EXIT_VMSH_USAGE;
			}
			b.suite = v;
		}
		if (!strcmp(o, "--mirror"))
			b.mirror = v;
	}
	bool packages = b.packages[0] != '\0';
	if (argc - i != (packages ? 1 : 2) || (!packages && (b.from_dir || b.suite || b.mirror))) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	const char *dir = packages ? b.from_dir : argv[i], *out = argv[argc - 1];
	struct stat st;
	if (dir && (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "vmsh image: %s is not a directory\n", dir);
		return EXIT_VMSH_USAGE;
	}
	if (!b.force && lstat(out, &st) == 0) {
		fprintf(stderr, "vmsh image: %s exists (--force replaces it once the new image is complete)\n", out);
		return EXIT_VMSH_FAILED;
	}
	if (!packages)
		return image_from_tree(&b, dir, out);
	/* the packages' tree in a scratch directory, removed whatever happens */
	const char *tmpdir = getenv("TMPDIR");
	char work[4200], root[4300];
	snprintf(work, sizeof(work), "%s/vmsh-image-XXXXXX", tmpdir && tmpdir[0] == '/' ? tmpdir : "/var/tmp");
	if (!mkdtemp(work)) {
		fprintf(stderr, "vmsh image: scratch directory %s: %s\n", work, strerror(errno));
		return EXIT_VMSH_FAILED;
	}
	snprintf(root, sizeof(root), "%s/root", work);
	int rc = package_tree(&b, root) < 0 ? EXIT_VMSH_FAILED : image_from_tree(&b, root, out);
	if (rc)
		fprintf(stderr, "vmsh image: %s not written\n", out);
	/* never across a mount point: a failed mmdebstrap may leave /proc or /dev mounted in the tree */
	nftw(work, remove_entry, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	return rc;
}
