/* procfs.c - reading another process's /proc entries (see procfs.h). */
#include "common/procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

int procfs_read_file(const char *path, char **out, size_t *len, struct vmsh_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno, "open '%s'", path);
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return vmsh_error(err, ENOMEM, "read '%s'", path);
	for (;;) {
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return vmsh_error(err, ENOMEM, "read '%s'", path);
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + n, cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			return vmsh_error(err, e, "read '%s'", path);
		}
		if (r == 0)
			break;
		n += r;
	}
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

/* The numeric entries of a /proc directory (tasks, fds), sorted. */
static int numeric_entries(const char *path, int **out, size_t *n, struct vmsh_err *err)
{
	DIR *d = opendir(path);
	if (!d)
		return vmsh_error(err, errno, "open '%s'", path);
	size_t cap = 16, cnt = 0;
	int *v = malloc(cap * sizeof(*v));
	struct dirent *de;
	while (v && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		if (array_reserve(&v, &cap, cnt, sizeof(*v)) < 0)
			break;
		v[cnt++] = atoi(de->d_name);
	}
	closedir(d);
	if (!v)
		return vmsh_error(err, ENOMEM, "list '%s'", path);
	qsort(v, cnt, sizeof(*v), cmp_int);
	*out = v;
	*n = cnt;
	return 0;
}

int procfs_list_tasks(pid_t pid, pid_t **tids, size_t *n, struct vmsh_err *err)
{
	_Static_assert(sizeof(pid_t) == sizeof(int), "pid_t is an int");
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	return numeric_entries(path, (int **)tids, n, err);
}

int procfs_list_fds(pid_t pid, struct proc_fd **fds, size_t *n, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	int *nums;
	size_t cnt;
	if (numeric_entries(path, &nums, &cnt, err) < 0)
		return -1;
	struct proc_fd *v = calloc(cnt ? cnt : 1, sizeof(*v));
	if (!v) {
		free(nums);
		return vmsh_error(err, ENOMEM, "list '%s'", path);
	}
	size_t k = 0;
	for (size_t i = 0; i < cnt; i++) {
		char lpath[96];
		snprintf(lpath, sizeof(lpath), "%s/%d", path, nums[i]);
		ssize_t l = readlink(lpath, v[k].target, sizeof(v[k].target) - 1);
		if (l < 0)
			continue; /* fd closed meanwhile */
		v[k].target[l] = '\0';
		v[k].fd = nums[i];
		k++;
	}
	free(nums);
	*fds = v;
	*n = k;
	return 0;
}

int procfs_parse_map_line(const char *line, struct proc_map *m)
{
	unsigned long long start, end, off, inode;
	unsigned major, minor;
	char perms[8];
	int pos = 0;
	memset(m, 0, sizeof(*m));
	if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &off, &major, &minor, &inode, &pos) <
	    7)
		return -1;
	m->start = start;
	m->end = end;
	m->offset = off;
	m->dev = ((uint64_t)major << 32) | minor;
	m->inode = inode;
	snprintf(m->perms, sizeof(m->perms), "%.4s", perms);
	if (pos > 0) {
		const char *p = line + pos;
		while (*p == ' ')
			p++;
		size_t l = strcspn(p, "\n");
		if (l >= sizeof(m->path))
			l = sizeof(m->path) - 1;
		memcpy(m->path, p, l);
		m->path[l] = '\0';
	}
	return 0;
}

int procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	_cleanup_free_ char *buf = NULL;
	if (procfs_read_file(path, &buf, NULL, err) < 0)
		return -1;
	size_t cap = 64, cnt = 0;
	struct proc_map *v = malloc(cap * sizeof(*v));
	if (!v)
		return vmsh_error(err, ENOMEM, "parse '%s'", path);
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (array_reserve(&v, &cap, cnt, sizeof(*v)) < 0)
			return vmsh_error(err, ENOMEM, "parse '%s'", path);
		if (procfs_parse_map_line(line, &v[cnt]) == 0)
			cnt++;
		line = nl ? nl + 1 : NULL;
	}
	*maps = v;
	*n = cnt;
	return 0;
}

/* "dc" as a whole word of a VmFlags line */
static bool has_flag(const char *flags, const char *want)
{
	size_t l = strlen(want);
	for (const char *p = flags; (p = strstr(p, want)); p += l)
		if ((p == flags || p[-1] == ' ') && (p[l] == ' ' || p[l] == '\0' || p[l] == '\n'))
			return true;
	return false;
}

int procfs_parse_smaps(const char *text, struct proc_vma **vmas, size_t *n, struct vmsh_err *err)
{
	size_t cap = 64, cnt = 0;
	struct proc_vma *v = malloc(cap * sizeof(*v));
	if (!v)
		return vmsh_error(err, ENOMEM, "parse smaps");
	bool open_vma = false;
	for (const char *line = text; line && *line;) {
		const char *nl = strchr(line, '\n');
		struct proc_map m;
		unsigned long long kb;
		if (procfs_parse_map_line(line, &m) == 0 && m.end > m.start) {
			if (array_reserve(&v, &cap, cnt, sizeof(*v)) < 0) {
				free(v);
				return vmsh_error(err, ENOMEM, "parse smaps");
			}
			v[cnt++] = (struct proc_vma){ .start = m.start, .end = m.end, .shared = m.perms[3] == 's' };
			open_vma = true;
		} else if (open_vma && sscanf(line, "Rss: %llu kB", &kb) == 1 && kb <= (v[cnt - 1].end - v[cnt - 1].start) >> 10) {
			v[cnt - 1].rss = kb << 10;
		} else if (open_vma && !strncmp(line, "VmFlags:", 8)) {
			size_t l = nl ? (size_t)(nl - line) : strlen(line);
			char flags[256];
			snprintf(flags, sizeof(flags), "%.*s", (int)(l < sizeof(flags) ? l : sizeof(flags) - 1), line + 8);
			v[cnt - 1].dontfork = has_flag(flags, "dc");
			v[cnt - 1].shared = v[cnt - 1].shared || has_flag(flags, "sh");
			v[cnt - 1].hugetlb = has_flag(flags, "ht");
		}
		line = nl ? nl + 1 : NULL;
	}
	*vmas = v;
	*n = cnt;
	return 0;
}

int procfs_read_smaps(pid_t pid, struct proc_vma **vmas, size_t *n, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	_cleanup_free_ char *buf = NULL;
	if (procfs_read_file(path, &buf, NULL, err) < 0)
		return -1;
	return procfs_parse_smaps(buf, vmas, n, err);
}

int procfs_task_flags(pid_t pid, pid_t tid, unsigned long *flags)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	_cleanup_free_ char *buf = NULL;
	if (procfs_read_file(path, &buf, NULL, NULL) < 0)
		return -1;
	/* comm may contain spaces and parentheses: skip to the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* fields after comm: state(3) ppid pgrp session tty_nr tpgid flags(9) */
	unsigned long f;
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %lu", &f) != 1)
		return -1;
	*flags = f;
	return 0;
}

int procfs_exe(pid_t pid, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	ssize_t l = readlink(path, buf, len - 1);
	if (l < 0) {
		buf[0] = '\0';
		return -1;
	}
	buf[l] = '\0';
	return 0;
}

int procfs_cmdline(pid_t pid, char **bufp, char ***argvp, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
	char *buf;
	size_t len;
	if (procfs_read_file(path, &buf, &len, err) < 0)
		return -1;
	int argc = 0;
	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\0')
			argc++;
	char **argv = calloc(argc + 1, sizeof(*argv));
	if (!argv) {
		free(buf);
		return vmsh_error(err, ENOMEM, "parse '%s'", path);
	}
	int k = 0;
	for (size_t i = 0; i < len && k < argc; k++) {
		argv[k] = buf + i;
		i += strlen(buf + i) + 1;
	}
	*bufp = buf;
	*argvp = argv;
	return argc;
}
