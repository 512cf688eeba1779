/* term.c - the caller's terminal: raw mode, window size, the detach key. */
#include "relay/term.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int term_raw(int fd, struct termios *saved, struct vmsh_err *err)
{
	if (tcgetattr(fd, saved) < 0)
		return vmsh_error(err, errno, "read the terminal's settings");
	struct termios t = *saved;
	cfmakeraw(&t);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSADRAIN, &t) < 0)
		return vmsh_error(err, errno, "switch the terminal to raw mode");
	return 0;
}

void term_restore(int fd, const struct termios *saved)
{
	/* EINTR: a signal is pending (it waits on our signalfd): try again */
	for (int i = 0; i < 3 && tcsetattr(fd, TCSADRAIN, saved) < 0 && errno == EINTR; i++)
		;
}

int term_size(int fd, unsigned *rows, unsigned *cols)
{
	struct winsize ws;
	if (ioctl(fd, TIOCGWINSZ, &ws) < 0 || !ws.ws_row || !ws.ws_col)
		return -1;
	*rows = ws.ws_row;
	*cols = ws.ws_col;
	return 0;
}

static int ctrl_of(int c)
{
	c = toupper(c);
	if (c == '?')
		return 0x7f;
	if (c >= '@' && c <= '_')
		return c - '@';
	return -1;
}

int term_parse_escape(const char *s, int *key, struct vmsh_err *err)
{
	int k = -2;
	size_t n = strlen(s);
	if (!strcmp(s, "none"))
		k = -1;
	else if (n == 2 && s[0] == '^')
		k = ctrl_of((unsigned char)s[1]);
	else if ((n == 6 && !strncasecmp(s, "ctrl-", 5)) || (n == 3 && !strncasecmp(s, "c-", 2)))
		k = ctrl_of((unsigned char)s[n - 1]);
	else if (n == 1 && !isdigit((unsigned char)s[0]))
		k = (unsigned char)s[0];
	else if (n > 0) {
		char *end;
		errno = 0;
		long v = strtol(s, &end, 0);
		if (!errno && !*end && v >= 0 && v <= 255)
			k = (int)v;
	}
	if (k < -1)
		return vmsh_error_kind(err, VMSH_E_USAGE, 0,
				       "bad escape key '%s' (use e.g. '^]', 'ctrl-a', a character, or 'none')", s);
	*key = k;
	return 0;
}

const char *term_escape_name(int key, char buf[8])
{
	if (key < 0)
		snprintf(buf, 8, "none");
	else if (key < 0x20)
		snprintf(buf, 8, "^%c", key + '@');
	else if (key == 0x7f)
		snprintf(buf, 8, "^?");
	else if (key < 0x7f)
		snprintf(buf, 8, "%c", key);
	else
		snprintf(buf, 8, "0x%02x", key & 0xff);
	return buf;
}
