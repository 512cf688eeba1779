/* log.c - diagnostic output (see log.h). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/escape.h"

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

static long status_kib(const char *path, const char *field)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[128];
	long v = -1;
	size_t n = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, n) && line[n] == ':') {
			sscanf(line + n + 1, "%ld", &v);
			break;
		}
	fclose(f);
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
