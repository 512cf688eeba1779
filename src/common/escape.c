/* escape.c - see escape.h. */
#include "common/escape.h"

#include <stdio.h>
#include <string.h>

static size_t piece(unsigned char c, char one[5])
{
	if (c < 0x20 || c >= 0x7f || c == '\\')
		return (size_t)snprintf(one, 5, "\\x%02x", c);
	one[0] = (char)c;
	one[1] = '\0';
	return 1;
}

size_t escape_guest_text(char *dst, size_t len, const char *src, size_t n)
{
	if (!len)
		return 0;
	char one[5];
	size_t total = 0;
	for (size_t i = 0; i < n && src[i]; i++)
		total += piece((unsigned char)src[i], one);
	/* all of it, or as much as leaves room for "..." */
	size_t room = total + 1 <= len ? len - 1 : (len >= 4 ? len - 4 : 0);
	size_t o = 0;
	for (size_t i = 0; i < n && src[i]; i++) {
		size_t k = piece((unsigned char)src[i], one);
		if (o + k > room)
			break;
		memcpy(dst + o, one, k);
		o += k;
	}
	if (total + 1 > len && len >= 4) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return o;
}
