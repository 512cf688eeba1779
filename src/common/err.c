/* err.c - the error object (see err.h). */
#include "common/err.h"

#include <stdio.h>
#include <string.h>

static int verror(struct vmsh_err *err, int kind, int errnum, const char *fmt, va_list ap)
{
	if (!err)
		return -1;
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (n < 0)
		n = 0;
	if (errnum && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errnum));
	err->errnum = errnum;
	err->kind = kind;
	return -1;
}

int vmsh_error(struct vmsh_err *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror(err, VMSH_E_GENERIC, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int vmsh_error_kind(struct vmsh_err *err, int kind, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verror(err, kind, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int vmsh_err_prefix(struct vmsh_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char old[sizeof(err->msg)];
	memcpy(old, err->msg, sizeof(old));
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n + 2 < sizeof(err->msg)) {
		size_t room = sizeof(err->msg) - n;
		memcpy(err->msg + n, ": ", 2);
		size_t l = strnlen(old, room - 3);
		memcpy(err->msg + n + 2, old, l);
		err->msg[n + 2 + l] = '\0';
	}
	return -1;
}

void vmsh_err_clear(struct vmsh_err *err)
{
	err->errnum = 0;
	err->kind = 0;
	err->msg[0] = '\0';
}
