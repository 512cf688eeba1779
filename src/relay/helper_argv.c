/* helper_argv.c - the command line vmsh gives vmsh-helper in the guest
 * (format in relay.h; the helper's usage in guest-helper/vmsh-helper.c). */
#include "relay/relay.h"
#include "relay/term.h"
#include "vmsh/helper_proto.h" /* vmsh_plain_word */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool plain_word(const char *s, size_t max)
{
	return vmsh_plain_word(s, max);
}

static int add(char *buf, size_t cap, size_t *off, const char *s)
{
	size_t n = strlen(s) + 1;
	if (n > cap - *off) {
		errno = ENOSPC;
		return -1;
	}
	memcpy(buf + *off, s, n);
	*off += n;
	return 0;
}

int relay_helper_argv(const struct relay_opts *o, const char *self_path, const char *port, const char *serial,
		      char *buf, size_t cap)
{
	if (!o || !self_path || self_path[0] != '/' || !plain_word(port, 127) || !plain_word(serial, 20) ||
	    (o->fstype && !plain_word(o->fstype, 31)) || !buf || cap > 0x7fffffff) {
		errno = EINVAL;
		return -1;
	}
	size_t off = 0;
	char num[32];
#define ADD(s)                                  \
	do {                                    \
		if (add(buf, cap, &off, (s)) < 0) \
			return -1;              \
	} while (0)
	ADD(self_path);
	ADD("--self");
	ADD(self_path);
	ADD("--port");
	ADD(port);
	ADD("--disk");
	ADD(serial);
	if (o->target > 0) {
		snprintf(num, sizeof(num), "%d", (int)o->target);
		ADD("--target");
		ADD(num);
	}
	if (relay_wants_pty(o)) {
		unsigned rows = 24, cols = 80;
		if (term_size(0, &rows, &cols) < 0 && term_size(1, &rows, &cols) < 0)
			rows = 24, cols = 80;
		snprintf(num, sizeof(num), "%ux%u", rows, cols);
		ADD("--pty");
		ADD(num);
		const char *term = o->term ? o->term : getenv("TERM");
		if (term && plain_word(term, 64)) {
			ADD("--term");
			ADD(term);
		}
	} else {
		ADD("--pipe");
	}
	if (o->fstype) {
		ADD("--fstype");
		ADD(o->fstype);
	}
	if (o->image_rw)
		ADD("--rw");
	if (o->guest_root)
		ADD("--guest-root");
	ADD("--");
	if (o->cmd && o->cmd[0]) {
		for (char *const *a = o->cmd; *a; a++)
			ADD(*a);
	} else {
		ADD("/bin/sh");
	}
#undef ADD
	return (int)off;
}
