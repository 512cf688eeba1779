/* log.c - diagnostic output (see log.h). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

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
