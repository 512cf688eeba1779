/* escape.h - making text that came from the guest safe to print. */
#ifndef VMSH_ESCAPE_H
#define VMSH_ESCAPE_H

#include <stddef.h>

/* Copy at most `n` bytes of `src` (up to its first NUL) into `dst` (`len`
 * bytes, always NUL-terminated) with control characters, backslash and
 * non-ASCII bytes written as \xNN: a hostile guest cannot move the cursor,
 * change the terminal's state or overflow anything. Returns strlen(dst); an
 * escape that does not fit is left out whole, and "..." marks the cut. */
size_t escape_guest_text(char *dst, size_t len, const char *src, size_t n);

#endif
