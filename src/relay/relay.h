/* relay.h - vmsh's end of the conversation with vmsh-helper in the guest:
 * the caller's terminal or pipes on one side, the framed byte stream of
 * include/vmsh/helper_proto.h (carried by the virtio console) on the other.
 *
 * Interactive (the command runs on a pty in the guest) when stdin and stdout
 * are terminals, unless the options say otherwise: stdin goes raw, the window
 * size follows SIGWINCH, an escape key disconnects (the command is hung up,
 * as when an ssh connection drops). Pipe mode otherwise:
 * stdin -> the command's stdin, EOF included; its stdout and stderr -> our
 * fds 1 and 2, apart and binary-safe; SIGINT/SIGTERM/SIGHUP are forwarded
 * to the command (a second one, later than 500 ms, gives up and disconnects).
 *
 * Whatever ends the relay (exit, disconnect, error, a signal to vmsh), the
 * terminal is restored before relay_run returns. */
#ifndef VMSH_RELAY_H
#define VMSH_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

enum relay_mode {
	RELAY_AUTO = 0, /* pty when stdin and stdout are terminals, else pipes */
	RELAY_PTY,
	RELAY_PIPE,
};

#define RELAY_ESCAPE_DEFAULT 0x1d /* Ctrl-] */
#define RELAY_ESCAPE_NONE (-1)

struct relay_opts {
	enum relay_mode mode;
	int escape;           /* byte that disconnects (raw terminal only), or RELAY_ESCAPE_NONE */
	const char *term;     /* TERM for the command; NULL: our $TERM */
	const char *fstype;   /* the image's filesystem; NULL: the helper's default (ext4) */
	bool image_rw;        /* the image read-write as / (else read-only under an overlay in guest memory) */
	bool guest_root;      /* the command in the guest's own root, not the image */
	pid_t target;         /* guest process whose namespaces to join; 0: the helper's default (1) */
	char *const *cmd;     /* NULL-terminated command; NULL or empty: /bin/sh */
	int start_timeout_ms; /* how long the helper may take to send HELLO and READY; 0: no limit */
	bool forward_signals; /* pipe mode: forward SIGINT/SIGTERM/SIGHUP to the command */
	int gone_fd;          /* readable once the VM is gone (the hypervisor's pidfd); -1: none */
};

/* Defaults: AUTO, Ctrl-], 60 s start timeout, signals forwarded. */
void relay_opts_init(struct relay_opts *o);

/* Whether relay_run will ask for a pty (the mode, or AUTO: isatty(0) and isatty(1)). */
bool relay_wants_pty(const struct relay_opts *o);

enum relay_outcome {
	RELAY_EXITED,      /* the command exited: status */
	RELAY_DISCONNECTED, /* the escape key, or our terminal hung up: the helper hung the command up */
	RELAY_SIGNALED,    /* vmsh got a terminating signal (signo): the helper was told to leave */
	RELAY_GUEST_ERROR, /* the helper reported an error (in err, prefixed "guest: ") */
	RELAY_LOST,        /* the channel closed before EXIT */
	RELAY_PROTOCOL,    /* the helper sent something invalid (in err) */
	RELAY_TIMEOUT,     /* the helper did not start the command within start_timeout_ms */
	RELAY_LOCAL_ERROR, /* something failed here (in err) */
};

struct relay_result {
	enum relay_outcome outcome;
	int status;              /* RELAY_EXITED: 0..255, 128+N if killed by signal N */
	int signo;               /* RELAY_SIGNALED */
	bool ready;              /* the helper started the command */
	pid_t pid;               /* the command's pid as the helper saw it, once ready */
	bool output_lost;        /* writing to our stdout/stderr failed; output was dropped */
	char helper_version[64]; /* from HELLO, made printable */
};

/* Relay until the command exits or something else ends the session.
 * chan_fd: a connected stream socket (any fd that poll()s works; sockets
 * are used with MSG_DONTWAIT, so its flags are left alone). Returns 0 for
 * RELAY_EXITED and RELAY_DISCONNECTED, -1 with err filled otherwise; r is
 * always filled. */
int relay_run(int chan_fd, const struct relay_opts *o, struct relay_result *r, struct vmsh_err *err);

/* The exit status vmsh should give: the command's for RELAY_EXITED, 129
 * (128 + SIGHUP: the command was hung up) for a disconnect, 128+N for a
 * signal, 125 (vmsh failed) for the rest. */
int relay_exit_code(const struct relay_result *r);
const char *relay_outcome_name(enum relay_outcome o);

/* Build the helper's argv for the kernel library (implemented in helper_argv.c).
 *
 * Format: the arguments one after the other, each terminated by a NUL byte,
 * argv[0] first (= self_path); no extra terminator, so the count of NULs in
 * the returned length is argc:
 *
 *   SELF \0 --self \0 SELF \0 --port \0 PORT \0 --disk \0 SERIAL \0
 *   [--target \0 PID \0]                       o->target > 0
 *   --pty \0 ROWSxCOLS \0 [--term \0 TERM \0]  relay_wants_pty(o): size of
 *                                              our terminal (24x80 if none),
 *                                              TERM if plain ([A-Za-z0-9._+-], <= 64)
 *   | --pipe \0
 *   [--fstype \0 TYPE \0]                      o->fstype set
 *   -- \0 CMD \0 ARG \0 ...                    o->cmd, or /bin/sh
 *
 * self_path must be absolute; port (<= 127) and serial (<= 20 bytes, the
 * virtio-blk ID size) must be plain words as above. Returns the number of
 * bytes used, or -1 with errno EINVAL (bad input) or ENOSPC (cap too small). */
int relay_helper_argv(const struct relay_opts *o, const char *self_path, const char *port, const char *serial,
		      char *buf, size_t cap);

#endif
