/* term.h - the caller's terminal while vmsh relays a guest command onto it:
 * raw mode and its undoing, the window size, and the detach key. */
#ifndef VMSH_TERM_H
#define VMSH_TERM_H

#include <stdbool.h>
#include <termios.h>

#include "common/err.h"

/* Save fd's settings in *saved and switch it to raw mode (no echo, no line
 * editing, no signals from keys, no output processing). */
int term_raw(int fd, struct termios *saved, struct vmsh_err *err);
/* Put back what term_raw saved; safe to call on any exit path. */
void term_restore(int fd, const struct termios *saved);
/* The window size of fd, or -1 if it is not a terminal or reports none. */
int term_size(int fd, unsigned *rows, unsigned *cols);

/* Parse a detach key: "none", "^]" / "^A" (caret notation, any case),
 * "ctrl-]" / "C-a", a single character, or a number ("29", "0x1d").
 * *key is the byte, or -1 for "none". */
int term_parse_escape(const char *s, int *key, struct vmsh_err *err);
/* Caret notation of a key for messages ("^]"); "none" for -1. */
const char *term_escape_name(int key, char buf[8]);

#endif
