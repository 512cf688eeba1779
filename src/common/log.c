/* log.c - diagnostic output (see log.h). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/escape.h"
#include "common/procfs.h"

static int current_level = LOG_NORMAL;

void log_set_level(int level)
{
	current_level = level;
}

int log_level(void)
{
	return current_level;
}

void log_msg(int level, const char *fmt, ...)
{
	if (level > current_level)
		return;
	/* messages carry guest text (queue errors, names): escaped */
	char raw[1024], safe[ESC_SIZE(256)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vmsh: %s\n", esc_str(safe, sizeof(safe), raw));
}

/* The "FIELD: N kB" value of a /proc file, -1 if absent. */
static long status_kib(const char *path, const char *field)
{
	char *text;
	size_t len;
	if (procfs_read_file(path, &text, &len, NULL) < 0)
		return -1;
	long v = -1;
	size_t n = strlen(field);
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, field, n) && l[n] == ':') {
			sscanf(l + n + 1, "%ld", &v);
			break;
		}
	free(text);
	return v;
}

void log_memory(const char *when)
{
	if (LOG_DEBUG > current_level)
		return;
	log_msg(LOG_DEBUG, "memory %s: %.1f MiB resident (%.1f MiB in huge pages), peak %.1f MiB", when,
		status_kib("/proc/self/status", "VmRSS") / 1024.0,
		status_kib("/proc/self/smaps_rollup", "AnonHugePages") / 1024.0,
		status_kib("/proc/self/status", "VmHWM") / 1024.0);
}
