/* err.h - the error object every fallible vmsh function fills.
 *
 * Convention (after crun): a fallible function returns a negative value and
 * fills *err with errno and a message naming the object it failed on.
 * Callers add context on the way up with vmsh_err_prefix(); main() prints
 * one line. */
#ifndef VMSH_ERR_H
#define VMSH_ERR_H

#include <stdarg.h>

struct vmsh_err {
	int errnum;      /* errno of the first failure, 0 if none */
	int kind;        /* enum vmsh_err_kind, for exit codes and tests */
	char msg[1024];
};

enum vmsh_err_kind {
	VMSH_E_GENERIC = 0,
	VMSH_E_NOPROC,     /* no such process */
	VMSH_E_NOTKVM,     /* process has no KVM VM */
	VMSH_E_AMBIGUOUS,  /* several VMs, choose one */
	VMSH_E_PERM,       /* missing privileges */
	VMSH_E_NOKERNEL,   /* guest kernel not found */
	VMSH_E_USAGE,      /* bad command line */
};

/* Fill err with strerror(errnum) appended (if errnum != 0); returns -1. */
int vmsh_error(struct vmsh_err *err, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Same, with an error kind. */
int vmsh_error_kind(struct vmsh_err *err, int kind, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Prepend "context: " to the message already in err; returns -1. */
int vmsh_err_prefix(struct vmsh_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void vmsh_err_clear(struct vmsh_err *err);

#endif
