/* fuzz_procfs.c - the parsers of what other users control on the host:
 * /proc/PID/maps lines (procfs_parse_map_line; paths are file names anyone
 * can choose) and the hypervisor's command line as `vmsh list` reads it
 * (vmlist.c: -name and -m, qemu's option syntax). vmlist.c is included so
 * that its static info_from_cmdline and largest_candidate run as they are;
 * procfs_cmdline and procfs_read_maps are wrapped (-Wl,--wrap) to answer
 * with the fuzzed text instead of reading /proc.
 *
 * Invariants: every string result is NUL-terminated inside its buffer;
 * memory sizes are 0 or plausible; no crash.
 *
 * Input: u8 mode (0: maps text, 1: command line, NUL-separated, 2: a -m
 * value, 3: a -name value with a small output buffer), then the text. */
#include "fuzz.h"

#include "../../src/cli/vmlist.c"

/* The text of the current input (one at a time). */
static const uint8_t *cur;
static size_t cur_len;

int __wrap_procfs_cmdline(pid_t pid, char **bufp, char ***argvp, struct vmsh_err *err);
int __wrap_procfs_cmdline(pid_t pid, char **bufp, char ***argvp, struct vmsh_err *err)
{
	/* as procfs_cmdline splits /proc/PID/cmdline (which ends with a NUL) */
	char *buf = malloc(cur_len + 1);
	if (!buf)
		abort();
	memcpy(buf, cur, cur_len);
	buf[cur_len] = '\0';
	int argc = 0;
	for (size_t i = 0; i < cur_len; i++)
		argc += buf[i] == '\0';
	char **argv = calloc(argc + 1, sizeof(*argv));
	if (!argv)
		abort();
	int k = 0;
	for (size_t i = 0; i < cur_len && k < argc; k++) {
		argv[k] = buf + i;
		i += strlen(buf + i) + 1;
	}
	*bufp = buf;
	*argvp = argv;
	return argc;
}

int __wrap_procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err);
int __wrap_procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err)
{
	char *text = strndup((const char *)cur, cur_len);
	size_t cap = 16, cnt = 0;
	struct proc_map *v = malloc(cap * sizeof(*v));
	if (!text || !v)
		abort();
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		if (cnt == cap && !(v = realloc(v, (cap *= 2) * sizeof(*v))))
			abort();
		if (procfs_parse_map_line(line, &v[cnt]) == 0) {
			const struct proc_map *m = &v[cnt];
			FUZZ_CHECK(memchr(m->perms, 0, sizeof(m->perms)) && memchr(m->path, 0, sizeof(m->path)),
				   "unterminated perms/path");
			(void)memmap_is_candidate(m);
			cnt++;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	*maps = v;
	*n = cnt;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t mode = fz_u8(&f) % 4;
	cur = fz_rest(&f, &cur_len);
	struct vm_entry vi;
	memset(&vi, 0, sizeof(vi));
	switch (mode) {
	case 0:
		(void)largest_candidate(0);
		break;
	case 1:
		info_from_cmdline(0, &vi);
		FUZZ_CHECK(memchr(vi.name, 0, sizeof(vi.name)), "unterminated name");
		break;
	case 2:
	case 3: {
		char *s = strndup((const char *)cur, cur_len);
		if (!s)
			abort();
		if (mode == 2) {
			(void)parse_qemu_mem(s);
		} else {
			size_t len = 1 + (cur_len ? cur[0] % 16 : 0);
			char *out = malloc(len); /* exact size: ASan sees overruns */
			if (!out)
				abort();
			parse_qemu_name(s, out, len);
			FUZZ_CHECK(memchr(out, 0, len), "unterminated name");
			free(out);
		}
		free(s);
		break;
	}
	}
	return 0;
}
