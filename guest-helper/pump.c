/* pump.c - the helper's relay loop: frames from the host go to the
 * command's stdin (or pty), control frames act on it; its output goes back
 * as STDOUT/STDERR frames; when it exits, what it left in the pipes is
 * drained and EXIT is sent.
 *
 * Back-pressure, never unbounded buffering: three fixed buffers (frames to
 * the host, bytes from the host, bytes for the command's stdin). The
 * command's output is read only while the host-bound buffer has room. The
 * stdin queue holds the whole stdin window (vmsh/helper_proto.h): the host never sends
 * more than we acknowledged, so every frame can be taken off the port at
 * once, and SIGNAL or DETACH act even while the command reads no input. */
#include "common/clock.h"
#include "helper.h"
#include "vmsh/helper_proto.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX (VMSH_FRAME_HDR_SIZE + VMSH_PROTO_MAX_PAYLOAD)
#define TX_CAP (4 * FRAME_MAX)
#define RX_CAP (2 * FRAME_MAX)
#define IN_CAP (VMSH_STDIN_WINDOW + 16) /* + the VEOF byte a pty's STDIN_EOF adds */
#define ACK_BATCH (32 * 1024)            /* acknowledge stdin in batches (or when the queue empties) */
#define READ_MIN 4096     /* read the command's output only with this much room */
#define IDLE_MS 100       /* after the command exited: output quiet this long = drained */
#define DRAIN_MS 2000     /* ... or at most this long (background jobs may keep writing) */
#define FLUSH_MS 30000    /* how long the host may take to read our last frames */

/* A linear byte buffer: data lives in p[start, end). */
struct buf {
	uint8_t *p;
	size_t start, end, cap;
};

static size_t buf_len(const struct buf *b)
{
	return b->end - b->start;
}

static size_t buf_room(const struct buf *b)
{
	return b->cap - buf_len(b);
}

/* Make `need` contiguous bytes free at the end, if the buffer has them. */
static bool buf_make_tail(struct buf *b, size_t need)
{
	if (b->cap - b->end >= need)
		return true;
	if (buf_room(b) < need)
		return false;
	memmove(b->p, b->p + b->start, buf_len(b));
	b->end -= b->start;
	b->start = 0;
	return true;
}

static void buf_consume(struct buf *b, size_t n)
{
	b->start += n;
	if (b->start == b->end)
		b->start = b->end = 0;
}

static bool buf_append(struct buf *b, const void *d, size_t n)
{
	if (!buf_make_tail(b, n))
		return false;
	memcpy(b->p + b->end, d, n);
	b->end += n;
	return true;
}

struct pump {
	int port;
	struct child *c;
	bool pty;
	struct buf tx, rx, in;
	bool in_eof;    /* STDIN_EOF received (pipe mode: close stdin once the queue is empty) */
	bool in_gone;   /* the command's stdin is closed: drop further input */
	uint32_t unacked; /* stdin bytes consumed but not yet acknowledged */
	bool out_open;  /* stdout pipe, or the pty's output side */
	bool err_open;  /* stderr pipe */
};

static bool frame_append(struct buf *b, uint8_t type, const void *payload, uint32_t len)
{
	if (!buf_make_tail(b, VMSH_FRAME_HDR_SIZE + len))
		return false;
	vmsh_frame_put_hdr(b->p + b->end, type, len);
	if (len)
		memcpy(b->p + b->end + VMSH_FRAME_HDR_SIZE, payload, len);
	b->end += VMSH_FRAME_HDR_SIZE + len;
	return true;
}

static void signal_command(struct pump *p, int sig)
{
	if (p->c->exited)
		return;
	pid_t group = p->c->pid;
	if (p->pty) { /* what the user sees running: the terminal's foreground job */
		pid_t fg = tcgetpgrp(p->c->master);
		if (fg > 1 && fg != getpgrp())
			group = fg;
	}
	/* Between fork and its setsid() the command is not a group leader yet:
	 * the group does not exist, so the signal goes to the command itself
	 * (held until it unblocks signals, or kills it before its exec). */
	if (kill(-group, sig) < 0 && errno == ESRCH && group == p->c->pid)
		kill(group, sig);
}

static void close_input(struct pump *p)
{
	p->in_gone = true;
	p->unacked += buf_len(&p->in);
	p->in.start = p->in.end = 0;
	if (p->c->in_fd >= 0) {
		close(p->c->in_fd);
		p->c->in_fd = -1;
	}
}

/* Act on the complete frames in rx. Returns 1 on DETACH, -1 on a protocol
 * error, 0 otherwise. */
static int process_rx(struct pump *p, struct vmsh_err *err)
{
	while (buf_len(&p->rx) >= VMSH_FRAME_HDR_SIZE) {
		const uint8_t *f = p->rx.p + p->rx.start;
		struct vmsh_frame_hdr h;
		vmsh_frame_get_hdr(f, &h);
		const char *bad = vmsh_frame_check(&h, VMSH_TO_GUEST);
		if (bad)
			return vmsh_error(err, 0, "protocol error from the host: %s (type 0x%02x, length %u)", bad,
					  h.type, h.len);
		if (buf_len(&p->rx) < VMSH_FRAME_HDR_SIZE + h.len)
			break;
		const uint8_t *pl = f + VMSH_FRAME_HDR_SIZE;
		switch (h.type) {
		case VMSH_F_STDIN:
			if (p->in_gone || (p->in_eof && !p->pty))
				p->unacked += h.len; /* dropped: consumed all the same */
			else if (!buf_append(&p->in, pl, h.len))
				return vmsh_error(err, 0, "protocol error from the host: more stdin than the window allows");
			break;
		case VMSH_F_STDIN_EOF:
			if (p->pty) { /* a terminal has no EOF: type the EOF character */
				struct termios t;
				uint8_t veof = 4;
				if (tcgetattr(p->c->master, &t) == 0 && t.c_cc[VEOF])
					veof = t.c_cc[VEOF];
				if (!p->in_gone && !buf_append(&p->in, &veof, 1))
					return vmsh_error(err, 0, "protocol error from the host: more stdin than the window allows");
			} else {
				p->in_eof = true;
			}
			break;
		case VMSH_F_WINSIZE: {
			struct winsize ws = { .ws_row = vmsh_get_le16(pl), .ws_col = vmsh_get_le16(pl + 2) };
			if (p->pty && ws.ws_row && ws.ws_col && p->c->master >= 0)
				ioctl(p->c->master, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH */
			break;
		}
		case VMSH_F_SIGNAL: {
			uint32_t sig = vmsh_get_le32(pl);
			if (sig < 1 || sig > 64)
				return vmsh_error(err, 0, "protocol error from the host: signal %u", sig);
			signal_command(p, (int)sig);
			break;
		}
		case VMSH_F_DETACH:
			return 1;
		}
		buf_consume(&p->rx, VMSH_FRAME_HDR_SIZE + h.len);
	}
	return 0;
}

/* Move the stdin queue into the command. */
static void feed_input(struct pump *p)
{
	int fd = p->pty ? p->c->master : p->c->in_fd;
	while (fd >= 0 && buf_len(&p->in)) {
		ssize_t n = write(fd, p->in.p + p->in.start, buf_len(&p->in));
		if (n > 0) {
			buf_consume(&p->in, n);
			p->unacked += n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		/* EPIPE, EIO: the command no longer reads; what is queued counts as consumed */
		if (p->pty) {
			p->in_gone = true;
			p->unacked += buf_len(&p->in);
			p->in.start = p->in.end = 0;
		} else {
			close_input(p);
		}
		return;
	}
	if (!p->pty && p->in_eof && !p->in_gone && !buf_len(&p->in))
		close_input(p);
}

/* Give the host its stdin window back. */
static void ack_input(struct pump *p)
{
	if (!p->unacked || (p->unacked < ACK_BATCH && buf_len(&p->in)))
		return;
	uint8_t n[4];
	vmsh_put_le32(n, p->unacked);
	if (frame_append(&p->tx, VMSH_F_STDIN_ACK, n, sizeof(n)))
		p->unacked = 0; /* else: the next round, once the host has read some */
}

/* Read one chunk of the command's output into a frame. Returns true if data came. */
static bool read_output(struct pump *p, int fd, uint8_t type, bool *open)
{
	if (!buf_make_tail(&p->tx, VMSH_FRAME_HDR_SIZE + READ_MIN))
		return false;
	size_t room = p->tx.cap - p->tx.end - VMSH_FRAME_HDR_SIZE;
	if (room > VMSH_PROTO_MAX_PAYLOAD)
		room = VMSH_PROTO_MAX_PAYLOAD;
	ssize_t n = read(fd, p->tx.p + p->tx.end + VMSH_FRAME_HDR_SIZE, room);
	if (n > 0) {
		vmsh_frame_put_hdr(p->tx.p + p->tx.end, type, (uint32_t)n);
		p->tx.end += VMSH_FRAME_HDR_SIZE + n;
		return true;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	*open = false; /* EOF; EIO on a pty master: every slave fd is closed */
	return false;
}

/* Returns -1 if the host is gone. */
static int flush_tx(struct pump *p)
{
	while (buf_len(&p->tx)) {
		ssize_t n = write(p->port, p->tx.p + p->tx.start, buf_len(&p->tx));
		if (n > 0) {
			buf_consume(&p->tx, n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		return -1;
	}
	return 0;
}

/* Returns -1 if the host is gone. */
static int read_port(struct pump *p)
{
	if (!buf_make_tail(&p->rx, 1))
		return 0;
	ssize_t n = read(p->port, p->rx.p + p->rx.end, p->rx.cap - p->rx.end);
	if (n > 0) {
		p->rx.end += n;
		return 0;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -1;
}

/* Returns a termination signal's number, or 0. */
static int read_signals(struct pump *p, int sigfd)
{
	struct signalfd_siginfo si;
	int term = 0;
	while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			spawn_reap(p->c);
		else
			term = (int)si.ssi_signo;
	}
	spawn_reap(p->c); /* a SIGCHLD may have merged with an earlier one */
	return term;
}

enum pump_end pump_run(int port, struct child *c, bool pty, int sigfd, int *term_sig, struct vmsh_err *err)
{
	struct pump p = {
		.port = port,
		.c = c,
		.pty = pty,
		.tx = { .p = malloc(TX_CAP), .cap = TX_CAP },
		.rx = { .p = malloc(RX_CAP), .cap = RX_CAP },
		.in = { .p = malloc(IN_CAP), .cap = IN_CAP },
		.out_open = true,
		.err_open = !pty,
	};
	enum pump_end end = PUMP_FAILED;
	*term_sig = 0;
	if (!p.tx.p || !p.rx.p || !p.in.p) {
		vmsh_error(err, ENOMEM, "relay buffers");
		goto out;
	}

	long exited_at = -1, finish_at = -1;
	bool finishing = false, idle = false;
	for (;;) {
		if (!finishing) {
			int r = process_rx(&p, err);
			if (r < 0)
				goto out;
			if (r > 0) {
				end = PUMP_DETACHED;
				goto out;
			}
			feed_input(&p);
			ack_input(&p);
		}
		if (c->exited && exited_at < 0)
			exited_at = now_ms();
		if (c->exited && !finishing &&
		    ((!p.out_open && !p.err_open) || idle || now_ms() - exited_at >= DRAIN_MS)) {
			uint8_t st[4];
			vmsh_put_le32(st, (uint32_t)c->status);
			if (!frame_append(&p.tx, VMSH_F_EXIT, st, sizeof(st)))
				goto next_round; /* tx full: flush first */
			finishing = true;
			finish_at = now_ms();
		}
		if (finishing && !buf_len(&p.tx)) {
			end = PUMP_EXITED;
			goto out;
		}
	next_round:;
		/* 0 port, 1 signals, 2 output (stdout / pty), 3 stderr, 4 stdin pipe */
		struct pollfd fds[5];
		for (int i = 0; i < 5; i++)
			fds[i] = (struct pollfd){ .fd = -1 };
		bool out_room = !finishing && buf_room(&p.tx) >= VMSH_FRAME_HDR_SIZE + READ_MIN;
		fds[0].fd = port;
		fds[0].events = (buf_len(&p.tx) ? POLLOUT : 0) | (!finishing && buf_room(&p.rx) ? POLLIN : 0);
		fds[1].fd = sigfd;
		fds[1].events = POLLIN;
		if (pty) {
			fds[2].fd = c->master;
			fds[2].events = (out_room && p.out_open ? POLLIN : 0) | (buf_len(&p.in) && !p.in_gone ? POLLOUT : 0);
			if (!fds[2].events)
				fds[2].fd = -1;
		} else {
			if (out_room && p.out_open)
				fds[2] = (struct pollfd){ .fd = c->out_fd, .events = POLLIN };
			if (out_room && p.err_open)
				fds[3] = (struct pollfd){ .fd = c->err_fd, .events = POLLIN };
			if (buf_len(&p.in) && c->in_fd >= 0)
				fds[4] = (struct pollfd){ .fd = c->in_fd, .events = POLLOUT };
		}
		int timeout = -1;
		if (finishing)
			timeout = (int)(FLUSH_MS - (now_ms() - finish_at));
		else if (c->exited)
			timeout = IDLE_MS;
		if (timeout < -1 || (finishing && timeout <= 0)) {
			vmsh_error(err, ETIMEDOUT, "the host does not read the command's last output");
			end = PUMP_HOST_GONE;
			goto out;
		}
		int n = poll(fds, 5, timeout);
		if (n < 0 && errno != EINTR) {
			vmsh_error(err, errno, "poll");
			goto out;
		}
		if (n == 0 && c->exited)
			idle = true;
		if (n <= 0)
			continue;

		if (fds[1].revents) {
			int sig = read_signals(&p, sigfd);
			if (sig) {
				*term_sig = sig;
				vmsh_error(err, 0, "vmsh-helper terminated by signal %d", sig);
				goto out;
			}
		}
		if ((fds[0].revents & POLLOUT) || ((fds[0].revents & (POLLHUP | POLLERR)) && buf_len(&p.tx))) {
			if (flush_tx(&p) < 0) {
				end = PUMP_HOST_GONE;
				goto out;
			}
		}
		if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && (fds[0].events & POLLIN)) {
			if (read_port(&p) < 0) {
				end = PUMP_HOST_GONE;
				goto out;
			}
		} else if ((fds[0].revents & (POLLHUP | POLLERR)) && !buf_len(&p.tx)) {
			/* hung up while we had nothing to read it for (a virtio port
			 * reports POLLHUP once the host side is closed) */
			end = PUMP_HOST_GONE;
			goto out;
		}
		bool got = false;
		if (fds[2].revents & (POLLIN | POLLHUP | POLLERR) && p.out_open)
			got |= read_output(&p, pty ? c->master : c->out_fd, VMSH_F_STDOUT, &p.out_open);
		if (fds[3].revents && p.err_open)
			got |= read_output(&p, c->err_fd, VMSH_F_STDERR, &p.err_open);
		if (got)
			idle = false;
		/* try to send at once: saves a poll round per frame */
		if (buf_len(&p.tx) && flush_tx(&p) < 0) {
			end = PUMP_HOST_GONE;
			goto out;
		}
	}
out:
	free(p.tx.p);
	free(p.rx.p);
	free(p.in.p);
	return end;
}
