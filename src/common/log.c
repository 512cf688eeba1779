/* log.c - diagnostic output (see log.h). */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>

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
	va_list ap;
	va_start(ap, fmt);
	fputs("vmsh: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}
