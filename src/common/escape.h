/* escape.h - text vmsh did not write itself (from the guest: its kernel
 * banner, the library's messages, the helper's; from other users'
 * processes: VM names, executables, file names) made safe for a terminal:
 * printable ASCII stays, everything else becomes \n, \r, \t or \xHH, so no
 * escape sequence reaches the user's terminal. A backslash stays as it is:
 * escaping is idempotent, so text escaped where it enters vmsh can pass an
 * escaping printer again unchanged (at the price of "\x1b" typed by the
 * guest looking like an escaped ESC).
 * (The command output `vmsh attach` relays stays raw, as ssh does.) */
#ifndef VMSH_ESCAPE_H
#define VMSH_ESCAPE_H

#include <stddef.h>

/* Room for n source bytes, escaped, plus the NUL. */
#define ESC_SIZE(n) (4 * (n) + 1)

/* Escape src[0..len) up to its first NUL into dst (cap > 0 bytes, always
 * NUL-terminated, truncated before an escape that does not fit). Returns
 * dst. Reads no byte at or beyond src+len. */
char *esc_bytes(char *dst, size_t cap, const void *src, size_t len);
/* The same for a NUL-terminated string. */
char *esc_str(char *dst, size_t cap, const char *s);

#endif
