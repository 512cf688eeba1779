/* driver.c - a plain main() for the fuzz targets, so that they build with
 * any compiler (gcc + ASan/UBSan in make check-fuzz) and replay inputs
 * without libFuzzer: every argument is a file or a directory of files (not
 * recursive), each file is one input. Arguments starting with '-' are
 * ignored, so libFuzzer-style command lines work too.
 *
 * FUZZ_TIMEOUT (seconds, default 25) bounds each input, like libFuzzer's
 * -timeout: a slow path is a failure too. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static const char *current; /* for the timeout message */

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "driver: timeout on input ";
	if (write(2, msg, sizeof(msg) - 1) < 0 || write(2, current, strlen(current)) < 0 || write(2, "\n", 1) < 0) {
		/* nothing more to say */
	}
	_exit(70);
}

static int run_file(const char *path, unsigned timeout)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "driver: %s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 4096, len = 0;
	uint8_t *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			uint8_t *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
			}
			buf = nb;
		}
	}
	fclose(f);
	if (!buf) {
		fprintf(stderr, "driver: %s: out of memory\n", path);
		return -1;
	}
	/* an exact-size copy, so ASan sees reads past the input's end */
	uint8_t *in = malloc(len ? len : 1);
	memcpy(in, buf, len);
	free(buf);
	current = path;
	alarm(timeout);
	LLVMFuzzerTestOneInput(in, len);
	alarm(0);
	free(in);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	unsigned timeout = 25;
	const char *t = getenv("FUZZ_TIMEOUT");
	if (t && atoi(t) > 0)
		timeout = (unsigned)atoi(t);
	signal(SIGALRM, on_alarm);
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	unsigned long done = 0;
	int bad = 0;
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "driver: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			bad |= run_file(argv[i], timeout) < 0;
			done++;
			continue;
		}
		/* sorted, so that a failing replay is reproducible in order */
		DIR *d = opendir(argv[i]);
		if (!d) {
			fprintf(stderr, "driver: %s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		char **names = NULL;
		size_t n = 0;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.' || !strcmp(e->d_name, "README") || !strcmp(e->d_name, "README.md"))
				continue;
			char *p;
			if (asprintf(&p, "%s/%s", argv[i], e->d_name) < 0)
				abort();
			if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) {
				free(p);
				continue;
			}
			names = realloc(names, (n + 1) * sizeof(*names));
			if (!names)
				abort();
			names[n++] = p;
		}
		closedir(d);
		qsort(names, n, sizeof(*names), cmp_str);
		for (size_t k = 0; k < n; k++) {
			bad |= run_file(names[k], timeout) < 0;
			done++;
			free(names[k]);
		}
		free(names);
	}
	fprintf(stderr, "driver: %s: %lu inputs replayed\n", argv[0], done);
	return bad;
}
