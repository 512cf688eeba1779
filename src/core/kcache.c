/* kcache.c - see kcache.h. */
#include "core/kcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define KCACHE_MAGIC "vmsh-kernel-hint 1\n"
#define KCACHE_FILE_MAX 2048

const char *kcache_dir(char *buf, size_t len)
{
	const char *env = getenv("VMSH_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	int n;
	if (env && !strcmp(env, "off"))
		return NULL;
	if (env && *env)
		n = snprintf(buf, len, "%s/kernels", env);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/var/cache/vmsh/kernels");
	else if (xdg && *xdg == '/')
		n = snprintf(buf, len, "%s/vmsh/kernels", xdg);
	else if (home && *home == '/')
		n = snprintf(buf, len, "%s/.cache/vmsh/kernels", home);
	else
		return NULL;
	return n > 0 && (size_t)n < len ? buf : NULL;
}

int kcache_format(const struct kernel_hint *h, char *buf, size_t len)
{
	if (strchr(h->banner, '\n') || strnlen(h->banner, sizeof(h->banner)) >= sizeof(h->banner))
		return -1;
	int n = snprintf(buf, len,
			 KCACHE_MAGIC "banner_off %llx\nspan_off %llx\nspan_len %llx\nformat %d\nsymbols %llu\n"
				      "tables %llu\nbanner %s\n",
			 (unsigned long long)h->banner_off, (unsigned long long)h->span_off,
			 (unsigned long long)h->span_len, (int)h->format, (unsigned long long)h->n_syms,
			 (unsigned long long)h->n_tables, h->banner);
	return n > 0 && (size_t)n < len ? n : -1;
}

int kcache_parse(const char *text, struct kernel_hint *h)
{
	memset(h, 0, sizeof(*h));
	if (strncmp(text, KCACHE_MAGIC, strlen(KCACHE_MAGIC)))
		return -1;
	unsigned long long bo, so, sl, ns, nt;
	int fmt, used = 0;
	if (sscanf(text + strlen(KCACHE_MAGIC),
		   "banner_off %llx\nspan_off %llx\nspan_len %llx\nformat %d\nsymbols %llu\ntables %llu\nbanner %n", &bo,
		   &so, &sl, &fmt, &ns, &nt, &used) != 6 ||
	    !used)
		return -1;
	const char *b = text + strlen(KCACHE_MAGIC) + used, *end = strchr(b, '\n');
	size_t bl = end ? (size_t)(end - b) : 0;
	if (!bl || bl >= sizeof(h->banner) || fmt <= KSYMTAB_NONE || fmt > KSYMTAB_PREL32_NS || !sl ||
	    sl > KERNEL_HINT_MAX_SPAN || !ns || ns > KSYMTAB_MAX_SYMS || !nt || nt > ns)
		return -1;
	memcpy(h->banner, b, bl);
	h->banner_off = bo;
	h->span_off = so;
	h->span_len = sl;
	h->format = (enum ksymtab_format)fmt;
	h->n_syms = ns;
	h->n_tables = nt;
	return 0;
}

static int read_hint(int dfd, const char *name, struct kernel_hint *h)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	char buf[KCACHE_FILE_MAX + 1];
	ssize_t n = -1;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022) &&
	    st.st_size <= KCACHE_FILE_MAX)
		n = read(fd, buf, KCACHE_FILE_MAX);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return kcache_parse(buf, h);
}

size_t kcache_load(const char *dir, struct kernel_hint *out, size_t max)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	struct stat st;
	if (fstat(dfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
		log_verbose("kernel cache %s: not vmsh's own or writable by others: not used", dir);
		close(dfd);
		return 0;
	}
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	size_t n = 0;
	struct dirent *e;
	for (unsigned seen = 0; n < max && seen < 4 * KCACHE_MAX_FILES && (e = readdir(d)); seen++) {
		size_t l = strlen(e->d_name);
		if (l < 6 || strcmp(e->d_name + l - 5, ".hint"))
			continue;
		if (read_hint(dirfd(d), e->d_name, &out[n]) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static int mkdirs(const char *dir)
{
	char p[4096];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -1;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	return mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* A name for the build: FNV-1a of its banner. */
static unsigned long long banner_hash(const char *b)
{
	unsigned long long h = 1469598103934665603ULL;
	for (; *b; b++)
		h = (h ^ (unsigned char)*b) * 1099511628211ULL;
	return h;
}

int kcache_store(const char *dir, const struct kernel_hint *h, struct vmsh_err *err)
{
	char text[KCACHE_FILE_MAX], path[4200], tmp[4300];
	int n = kcache_format(h, text, sizeof(text));
	if (n < 0)
		return vmsh_error(err, EINVAL, "kernel hint not storable");
	if (mkdirs(dir) < 0)
		return vmsh_error(err, errno, "create %s", dir);
	snprintf(path, sizeof(path), "%s/%016llx.hint", dir, banner_hash(h->banner));
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return vmsh_error(err, errno, "create %s", tmp);
	bool ok = write(fd, text, (size_t)n) == n;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return vmsh_error(err, e ? e : EIO, "write %s", path);
	}
	return 0;
}
