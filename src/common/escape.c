/* escape.c - terminal-safe text (see escape.h). */
#include "common/escape.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

char *esc_bytes(char *dst, size_t cap, const void *src, size_t len)
{
	const uint8_t *p = src;
	size_t o = 0;
	for (size_t i = 0; i < len && p[i]; i++) {
		char e[5];
		uint8_t ch = p[i];
		if (ch >= 0x20 && ch < 0x7f)
			e[0] = (char)ch, e[1] = '\0';
		else if (ch == '\n')
			memcpy(e, "\\n", 3);
		else if (ch == '\r')
			memcpy(e, "\\r", 3);
		else if (ch == '\t')
			memcpy(e, "\\t", 3);
		else
			snprintf(e, sizeof(e), "\\x%02x", ch);
		size_t n = strlen(e);
		if (o + n >= cap)
			break;
		memcpy(dst + o, e, n);
		o += n;
	}
	dst[o] = '\0';
	return dst;
}

char *esc_str(char *dst, size_t cap, const char *s)
{
	return esc_bytes(dst, cap, s, s ? strlen(s) : 0);
}
