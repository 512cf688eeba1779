/* relay.c - vmsh's end of the conversation with vmsh-helper (see relay.h
 * for the behaviour, include/vmsh/helper_proto.h for the frames).
 *
 * One poll loop, no threads, fixed buffers:
 *  - to the guest, one frame is on its way at a time; at each frame boundary
 *    control frames (DETACH, SIGNAL, WINSIZE) go before the next stdin frame.
 *    stdin is read only when the stdin frame slot is free and the helper
 *    has acknowledged enough of what we sent (the stdin window, vmsh/helper_proto.h):
 *    back-pressure reaches the writer of our stdin, and the helper can
 *    always read our control frames, however busy its command is.
 *  - from the guest, frames are parsed in a buffer of two maximal frames;
 *    an output frame is written to fd 1/2 in pieces the fd has room for,
 *    and the channel is read only while the buffer has room: back-pressure
 *    reaches the helper.
 *  - signals come through a signalfd (blocked for the duration), so every
 *    exit path goes through the one cleanup that restores the terminal. */
#include "relay/relay.h"
#include "common/escape.h"
#include "common/log.h"
#include "relay/term.h"
#include "vmsh/helper_proto.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX (VMSH_FRAME_HDR_SIZE + VMSH_PROTO_MAX_PAYLOAD)
#define RX_CAP (2 * FRAME_MAX)
#define OUT_CHUNK 4096        /* what a writable pipe or tty surely takes without blocking */
#define DETACH_FLUSH_MS 1000  /* how long we try to get DETACH out before leaving anyway */
#define SIGNAL_REPEAT_MS 500  /* the same ^C seen twice (terminal + forwarding parent) is one */
#define MAX_QUEUED_SIGNALS 8

struct relay {
	int chan;
	bool is_sock;
	const struct relay_opts *o;
	struct relay_result *r;
	bool pty;  /* the command runs on a pty in the guest */
	bool raw;  /* our stdin is a terminal we put in raw mode */
	int sigfd;
	struct vmsh_err *err;
	bool vm_gone; /* the hypervisor exited (o->gone_fd) */

	/* to the guest */
	uint8_t *data;       /* the next STDIN or STDIN_EOF frame */
	size_t data_len;     /* 0: slot free */
	uint8_t ctl[16];     /* a control frame on its way */
	const uint8_t *tx;   /* the frame on its way: data or ctl */
	size_t tx_len, tx_off;
	bool stdin_open;
	uint64_t stdin_sent;  /* STDIN payload bytes queued for the helper */
	uint64_t stdin_acked; /* ... and acknowledged by it (STDIN_ACK) */
	bool detaching;      /* leaving: only DETACH (and what is on its way) still goes out */
	bool detach_sent;
	long detach_deadline;
	int sigq[MAX_QUEUED_SIGNALS];
	int nsig;
	bool want_winsize;
	unsigned rows, cols;
	long first_forward_ms; /* pipe mode: when we forwarded a signal, -1 if never */

	/* from the guest */
	uint8_t *rx;
	size_t rx_start, rx_end;
	int out_fd;           /* the output frame at rx_start goes to this fd; -1: none */
	size_t out_off;
	bool out_regular[3];  /* fd 1/2 is a regular file: write whole frames */
	bool broken[3];       /* writing fd 1/2 failed: drop its output */
	bool sigpipe_sent;
	bool hello;
	bool done;            /* EXIT or ERROR arrived */
	bool chan_eof;        /* the channel closed for reading */
	bool tx_dead;         /* the channel failed for writing */
};

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void relay_opts_init(struct relay_opts *o)
{
	*o = (struct relay_opts){
		.mode = RELAY_AUTO,
		.escape = RELAY_ESCAPE_DEFAULT,
		.start_timeout_ms = 60000,
		.forward_signals = true,
		.gone_fd = -1,
	};
}

bool relay_wants_pty(const struct relay_opts *o)
{
	return o->mode == RELAY_PTY || (o->mode == RELAY_AUTO && isatty(0) && isatty(1));
}

const char *relay_outcome_name(enum relay_outcome o)
{
	switch (o) {
	case RELAY_EXITED: return "exited";
	case RELAY_DISCONNECTED: return "disconnected";
	case RELAY_SIGNALED: return "signaled";
	case RELAY_GUEST_ERROR: return "guest error";
	case RELAY_LOST: return "connection lost";
	case RELAY_PROTOCOL: return "protocol error";
	case RELAY_TIMEOUT: return "timeout";
	case RELAY_LOCAL_ERROR: return "local error";
	}
	return "?";
}

int relay_exit_code(const struct relay_result *r)
{
	switch (r->outcome) {
	case RELAY_EXITED: return r->status;
	case RELAY_DISCONNECTED: return 128 + SIGHUP;
	case RELAY_SIGNALED: return 128 + r->signo;
	default: return 125;
	}
}

static void start_detach(struct relay *R, enum relay_outcome why, int signo)
{
	if (R->detaching)
		return;
	R->detaching = true;
	R->detach_deadline = now_ms() + DETACH_FLUSH_MS;
	R->r->outcome = why;
	R->r->signo = signo;
}

static void queue_signal(struct relay *R, int sig)
{
	if (R->nsig < MAX_QUEUED_SIGNALS)
		R->sigq[R->nsig++] = sig;
}

/* --- to the guest -------------------------------------------------------- */

/* At a frame boundary: choose the next frame to send. */
static void pick_next_tx(struct relay *R)
{
	if (R->tx)
		return;
	if (R->detaching) {
		if (!R->detach_sent) {
			vmsh_frame_put_hdr(R->ctl, VMSH_F_DETACH, 0);
			R->tx = R->ctl, R->tx_len = VMSH_FRAME_HDR_SIZE, R->tx_off = 0;
			R->detach_sent = true;
		}
		return;
	}
	if (R->nsig) {
		vmsh_frame_put_hdr(R->ctl, VMSH_F_SIGNAL, 4);
		vmsh_put_le32(R->ctl + VMSH_FRAME_HDR_SIZE, (uint32_t)R->sigq[0]);
		memmove(R->sigq, R->sigq + 1, --R->nsig * sizeof(R->sigq[0]));
		R->tx = R->ctl, R->tx_len = VMSH_FRAME_HDR_SIZE + 4, R->tx_off = 0;
	} else if (R->want_winsize) {
		vmsh_frame_put_hdr(R->ctl, VMSH_F_WINSIZE, 4);
		vmsh_put_le16(R->ctl + VMSH_FRAME_HDR_SIZE, (uint16_t)R->rows);
		vmsh_put_le16(R->ctl + VMSH_FRAME_HDR_SIZE + 2, (uint16_t)R->cols);
		R->want_winsize = false;
		R->tx = R->ctl, R->tx_len = VMSH_FRAME_HDR_SIZE + 4, R->tx_off = 0;
	} else if (R->data_len) {
		R->tx = R->data, R->tx_len = R->data_len, R->tx_off = 0;
	}
}

/* Returns -1 if the channel is gone. */
static int send_tx(struct relay *R)
{
	while (R->tx) {
		size_t left = R->tx_len - R->tx_off;
		ssize_t n = R->is_sock ? send(R->chan, R->tx + R->tx_off, left, MSG_DONTWAIT | MSG_NOSIGNAL)
				       : write(R->chan, R->tx + R->tx_off, left < OUT_CHUNK ? left : OUT_CHUNK);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n <= 0)
			return -1;
		R->tx_off += n;
		if (R->tx_off < R->tx_len) {
			if (!R->is_sock)
				return 0; /* poll again before the next piece */
			continue;
		}
		if (R->tx == R->data)
			R->data_len = 0;
		R->tx = NULL;
		pick_next_tx(R);
	}
	return 0;
}

static void read_stdin(struct relay *R)
{
	uint8_t *p = R->data + VMSH_FRAME_HDR_SIZE;
	size_t window = VMSH_STDIN_WINDOW - (size_t)(R->stdin_sent - R->stdin_acked);
	ssize_t n = read(0, p, window < VMSH_PROTO_MAX_PAYLOAD ? window : VMSH_PROTO_MAX_PAYLOAD);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		R->stdin_open = false;
		if (R->raw) { /* our terminal hung up: nobody is left to type */
			start_detach(R, RELAY_DISCONNECTED, 0);
			return;
		}
		vmsh_frame_put_hdr(R->data, VMSH_F_STDIN_EOF, 0);
		R->data_len = VMSH_FRAME_HDR_SIZE;
		return;
	}
	if (R->raw && R->o->escape >= 0) {
		uint8_t *esc = memchr(p, R->o->escape, n);
		if (esc) {
			n = esc - p;
			start_detach(R, RELAY_DISCONNECTED, 0);
		}
	}
	if (n > 0 && !R->detaching) {
		vmsh_frame_put_hdr(R->data, VMSH_F_STDIN, (uint32_t)n);
		R->data_len = VMSH_FRAME_HDR_SIZE + n;
		R->stdin_sent += n;
	}
}

static void on_signal(struct relay *R, int sig)
{
	switch (sig) {
	case SIGWINCH:
		if (R->pty && (term_size(0, &R->rows, &R->cols) == 0 || term_size(1, &R->rows, &R->cols) == 0))
			R->want_winsize = true;
		return;
	case SIGPIPE: /* the failed write reports it */
		return;
	case SIGINT:
	case SIGTERM:
	case SIGHUP:
		if (!R->raw && R->o->forward_signals && R->r->ready) {
			long t = now_ms();
			if (R->first_forward_ms < 0) {
				R->first_forward_ms = t;
				queue_signal(R, sig);
				return;
			}
			if (t - R->first_forward_ms < SIGNAL_REPEAT_MS)
				return; /* the same one, delivered twice */
		}
		break;
	}
	start_detach(R, RELAY_SIGNALED, sig);
}

static void read_signals(struct relay *R)
{
	struct signalfd_siginfo si;
	while (read(R->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		on_signal(R, (int)si.ssi_signo);
}

/* --- from the guest ------------------------------------------------------ */

/* Write (more of) the output frame at rx_start. Returns true when done. */
static bool write_output(struct relay *R)
{
	const uint8_t *f = R->rx + R->rx_start;
	size_t len = vmsh_get_le32(f + 4);
	const uint8_t *p = f + VMSH_FRAME_HDR_SIZE;
	int fd = R->out_fd;
	size_t chunk = R->out_regular[fd] ? VMSH_PROTO_MAX_PAYLOAD : OUT_CHUNK;
	while (R->out_off < len) {
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		if (!R->out_regular[fd] && (poll(&pf, 1, 0) <= 0 || !(pf.revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))))
			return false;
		size_t left = len - R->out_off;
		ssize_t n = write(fd, p + R->out_off, left < chunk ? left : chunk);
		if (n > 0) {
			R->out_off += n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return false;
		/* the reader is gone (EPIPE) or the disk full: drop this fd's output */
		R->broken[fd] = true;
		R->r->output_lost = true;
		if (fd == 1 && errno == EPIPE && !R->sigpipe_sent) {
			/* as in a local pipeline: the writer gets SIGPIPE */
			queue_signal(R, SIGPIPE);
			R->sigpipe_sent = true;
		}
		return true;
	}
	return true;
}

static int protocol_error(struct relay *R, const char *what, const struct vmsh_frame_hdr *h)
{
	vmsh_error(R->err, 0, "protocol error from the guest helper: %s (frame type 0x%02x, length %u)", what,
		   h->type, h->len);
	start_detach(R, RELAY_PROTOCOL, 0);
	return -1;
}

/* Act on the frames in rx. Returns -1 when the relay must end (R->r says why). */
static int process_rx(struct relay *R)
{
	for (;;) {
		if (R->out_fd >= 0) {
			if (!write_output(R))
				break;
			R->rx_start += VMSH_FRAME_HDR_SIZE + vmsh_get_le32(R->rx + R->rx_start + 4);
			R->out_fd = -1;
		}
		size_t avail = R->rx_end - R->rx_start;
		if (avail < VMSH_FRAME_HDR_SIZE)
			break;
		const uint8_t *f = R->rx + R->rx_start;
		struct vmsh_frame_hdr h;
		vmsh_frame_get_hdr(f, &h);
		const char *bad = vmsh_frame_check(&h, VMSH_TO_HOST);
		if (bad)
			return protocol_error(R, bad, &h);
		if (!R->hello && h.type != VMSH_F_HELLO)
			return protocol_error(R, "the first frame is not HELLO", &h);
		if (avail < VMSH_FRAME_HDR_SIZE + h.len)
			break;
		const uint8_t *pl = f + VMSH_FRAME_HDR_SIZE;
		switch (h.type) {
		case VMSH_F_HELLO:
			if (R->hello)
				return protocol_error(R, "a second HELLO", &h);
			if (vmsh_get_le16(pl) != VMSH_PROTO_VERSION) {
				vmsh_error(R->err, 0, "the guest helper speaks protocol version %u, this vmsh %u",
					   vmsh_get_le16(pl), VMSH_PROTO_VERSION);
				start_detach(R, RELAY_PROTOCOL, 0);
				return -1;
			}
			/* guest text: escaped before anyone shows it */
			esc_bytes(R->r->helper_version, sizeof(R->r->helper_version), pl + 4, h.len - 4);
			R->hello = true;
			log_verbose("relay: the guest helper is up");
			break;
		case VMSH_F_READY:
			if (R->r->ready)
				return protocol_error(R, "a second READY", &h);
			R->r->ready = true;
			R->r->pid = (pid_t)vmsh_get_le32(pl);
			log_verbose("relay: the command runs in the guest (pid %d)", (int)R->r->pid);
			break;
		case VMSH_F_STDOUT:
		case VMSH_F_STDERR: {
			int fd = h.type == VMSH_F_STDOUT ? 1 : 2;
			if (h.len && !R->broken[fd]) {
				R->out_fd = fd;
				R->out_off = 0;
				continue; /* written (maybe in pieces) at the top of the loop */
			}
			break;
		}
		case VMSH_F_STDIN_ACK: {
			uint32_t n = vmsh_get_le32(pl);
			if (n > R->stdin_sent - R->stdin_acked)
				return protocol_error(R, "acknowledges more stdin than was sent", &h);
			R->stdin_acked += n;
			break;
		}
		case VMSH_F_EXIT: {
			uint32_t st = vmsh_get_le32(pl);
			if (st > 255)
				return protocol_error(R, "exit status above 255", &h);
			R->r->outcome = RELAY_EXITED;
			R->r->status = (int)st;
			R->done = true;
			return -1;
		}
		case VMSH_F_ERROR: {
			char msg[ESC_SIZE(VMSH_ERROR_MAX_LEN)];
			esc_bytes(msg, sizeof(msg), pl, h.len);
			vmsh_error(R->err, 0, "guest: %s", msg);
			R->r->outcome = RELAY_GUEST_ERROR;
			R->done = true; /* the helper exits by itself */
			return -1;
		}
		}
		R->rx_start += VMSH_FRAME_HDR_SIZE + h.len;
	}
	if (R->rx_start == R->rx_end) {
		R->rx_start = R->rx_end = 0;
	} else if (RX_CAP - R->rx_end < FRAME_MAX) { /* out_off is relative to the frame: moving is fine */
		memmove(R->rx, R->rx + R->rx_start, R->rx_end - R->rx_start);
		R->rx_end -= R->rx_start;
		R->rx_start = 0;
	}
	return 0;
}

/* Returns -1 if the channel closed. */
static int read_chan(struct relay *R)
{
	size_t room = RX_CAP - R->rx_end;
	if (!room)
		return 0;
	ssize_t n = R->is_sock ? recv(R->chan, R->rx + R->rx_end, room, MSG_DONTWAIT)
			       : read(R->chan, R->rx + R->rx_end, room);
	if (n > 0) {
		R->rx_end += n;
		return 0;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -1;
}

/* --- the loop ------------------------------------------------------------ */

static bool stdin_wanted(const struct relay *R)
{
	return R->stdin_open && !R->data_len && !R->detaching && !R->tx_dead &&
	       R->stdin_sent - R->stdin_acked < VMSH_STDIN_WINDOW;
}

static void relay_loop(struct relay *R)
{
	long start = now_ms();
	for (;;) {
		pick_next_tx(R);
		if (R->done || (R->detaching && ((R->detach_sent && !R->tx) || R->tx_dead)))
			return;
		if (R->chan_eof && R->out_fd < 0) {
			/* everything that arrived is handled, and no EXIT among it */
			if (!R->detaching)
				R->r->outcome = RELAY_LOST;
			return;
		}
		long now = now_ms();
		int timeout = -1;
		if (R->detaching) {
			if (now >= R->detach_deadline)
				return; /* the helper does not read: leave anyway */
			timeout = (int)(R->detach_deadline - now);
		} else if (!R->r->ready && R->o->start_timeout_ms > 0) {
			long left = start + R->o->start_timeout_ms - now;
			if (left <= 0) {
				vmsh_error(R->err, 0, "the guest helper did not %s within %d ms",
					   R->hello ? "start the command" : "answer", R->o->start_timeout_ms);
				start_detach(R, RELAY_TIMEOUT, 0);
				continue;
			}
			timeout = (int)left;
		}

		/* 0 channel, 1 signals, 2 stdin, 3 output fd, 4 the VM gone */
		bool want_in = !R->detaching && !R->chan_eof && R->rx_end < RX_CAP;
		bool want_out = R->tx && !R->tx_dead;
		struct pollfd fds[5] = {
			{ .fd = R->chan, .events = (want_out ? POLLOUT : 0) | (want_in ? POLLIN : 0) },
			{ .fd = R->sigfd, .events = POLLIN },
			{ .fd = stdin_wanted(R) ? 0 : -1, .events = POLLIN },
			{ .fd = R->out_fd >= 0 && !R->detaching ? R->out_fd : -1, .events = POLLOUT },
			{ .fd = R->o->gone_fd, .events = POLLIN },
		};
		if (!fds[0].events)
			fds[0].fd = -1;
		int n = poll(fds, 5, timeout);
		if (n < 0 && errno != EINTR) {
			vmsh_error(R->err, errno, "poll");
			R->r->outcome = RELAY_LOCAL_ERROR;
			return;
		}
		if (n <= 0)
			continue;

		if (fds[4].revents) {
			/* no helper, no devices, nobody to tell: just go */
			vmsh_error(R->err, ESRCH, "the VM is gone (its hypervisor exited)");
			R->r->outcome = RELAY_LOST;
			R->vm_gone = true;
			return;
		}
		if (fds[1].revents)
			read_signals(R);
		if (want_out && fds[0].revents && send_tx(R) < 0)
			R->tx_dead = true; /* the helper is gone; read what it left */
		if (want_in && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && read_chan(R) < 0)
			R->chan_eof = true;
		if (!R->detaching && process_rx(R) < 0 && !R->detaching)
			return;
		if (fds[2].revents && stdin_wanted(R))
			read_stdin(R);
		pick_next_tx(R);
		if (R->tx && !R->tx_dead && send_tx(R) < 0) /* at once: saves a poll round per frame */
			R->tx_dead = true;
	}
}

int relay_run(int chan_fd, const struct relay_opts *o, struct relay_result *r, struct vmsh_err *err)
{
	*r = (struct relay_result){ .outcome = RELAY_LOCAL_ERROR };
	struct vmsh_err local_err;
	if (!err)
		err = &local_err;
	vmsh_err_clear(err);
	struct relay R = {
		.chan = chan_fd,
		.o = o,
		.r = r,
		.err = err,
		.sigfd = -1,
		.stdin_open = true,
		.out_fd = -1,
		.first_forward_ms = -1,
	};
	int st_type;
	socklen_t st_len = sizeof(st_type);
	R.is_sock = getsockopt(chan_fd, SOL_SOCKET, SO_TYPE, &st_type, &st_len) == 0;
	for (int fd = 1; fd <= 2; fd++) {
		struct stat st;
		R.out_regular[fd] = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	}
	R.pty = relay_wants_pty(o);

	/* Signals wait on a signalfd: every way out passes the cleanup below. */
	sigset_t set, old_mask;
	sigemptyset(&set);
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGPIPE };
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	if (pthread_sigmask(SIG_BLOCK, &set, &old_mask) != 0) {
		vmsh_error(err, 0, "block signals");
		return -1;
	}
	struct termios saved;
	R.data = malloc(FRAME_MAX);
	R.rx = malloc(RX_CAP);
	R.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (!R.data || !R.rx || R.sigfd < 0) {
		vmsh_error(err, errno, "set up the relay");
		goto out;
	}
	if (R.pty && isatty(0)) {
		if (term_raw(0, &saved, err) < 0)
			goto out;
		R.raw = true;
	}
	if (R.pty && (term_size(0, &R.rows, &R.cols) == 0 || term_size(1, &R.rows, &R.cols) == 0))
		R.want_winsize = true; /* it may have changed since the helper's --pty */

	relay_loop(&R);

	switch (r->outcome) {
	case RELAY_SIGNALED:
		vmsh_error(err, 0, "interrupted by signal %d (%s)", r->signo, strsignal(r->signo));
		break;
	case RELAY_LOST:
		if (!R.vm_gone)
			vmsh_error(err, 0, "the connection to the guest helper was lost%s",
				   r->ready ? "" : " before the command started");
		break;
	default:
		break;
	}
out:
	if (R.raw)
		term_restore(0, &saved);
	if (R.sigfd >= 0)
		close(R.sigfd);
	/* a SIGPIPE from a failed write to our stdout is consumed, not fatal */
	sigset_t pipe_set;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	struct timespec zero = { 0, 0 };
	while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
	free(R.data);
	free(R.rx);
	return r->outcome == RELAY_EXITED || r->outcome == RELAY_DISCONNECTED ? 0 : -1;
}
