/* fuzz_relay_helper.c - the in-guest helper's side of the protocol
 * (guest-helper/pump.c): the frames vmsh sends (STDIN, STDIN_EOF, WINSIZE,
 * SIGNAL, DETACH) arriving in pieces of any size, in pipe and pty mode,
 * with the command taking its stdin at whatever pace the fuzzer chooses.
 * vmsh is trusted by the helper, but a broken or old host must not make
 * the helper signal the wrong processes or overrun its buffers.
 *
 * pump.c is included (its parser is static); the calls that would touch
 * real processes and fds (write, kill, ioctl, tcgetattr, tcgetpgrp) are
 * replaced by shims through macros defined after the system headers.
 *
 * Invariants: buffers stay in bounds; a signal only ever goes to the
 * command's process group (never -1, 0 or our own group) with a number in
 * 1..64; STDIN_ACK never acknowledges more than arrived.
 *
 * Input: u8 flags (1: pty mode, 2: the command has exited), u16 seed of
 * the schedule, then chunks: u16 length (mod 8193) + bytes. */
#include "fuzz.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define CMD_PID 4242
#define CMD_FD 1000  /* the command's stdin pipe or pty master (never a real fd here) */
#define PORT_FD 1001 /* the virtio port */

static ssize_t fuzz_write(int fd, const void *buf, size_t len);
static int fuzz_kill(pid_t pid, int sig);
static int fuzz_ioctl(int fd, unsigned long req, ...);
static int fuzz_tcgetattr(int fd, struct termios *t);
static pid_t fuzz_tcgetpgrp(int fd);
#define write fuzz_write
#define kill fuzz_kill
#define ioctl fuzz_ioctl
#define tcgetattr fuzz_tcgetattr
#define tcgetpgrp fuzz_tcgetpgrp
#include "../../guest-helper/pump.c"
#undef write
#undef kill
#undef ioctl
#undef tcgetattr
#undef tcgetpgrp

/* pump_run's neighbours in the helper (spawn.c), never called here */
bool spawn_reap(struct child *c)
{
	return c->exited;
}

static struct {
	uint32_t s;
	uint64_t acked, fed;
	uint8_t hdr[VMSH_FRAME_HDR_SIZE + 4];
	size_t hdr_len;  /* bytes of the current host-bound frame's header (+ ack payload) seen */
	uint32_t skip;   /* payload bytes of the current frame still to skip */
	pid_t fg;
} S;

static uint32_t next(void)
{
	S.s = S.s * 1103515245u + 12345u;
	return S.s >> 16;
}

/* Host-bound frames: count what STDIN_ACK acknowledges. */
static void port_bytes(const uint8_t *p, size_t len)
{
	while (len) {
		if (S.skip) {
			size_t k = len < S.skip ? len : S.skip;
			S.skip -= k, p += k, len -= k;
			continue;
		}
		S.hdr[S.hdr_len++] = *p++;
		len--;
		if (S.hdr_len < VMSH_FRAME_HDR_SIZE)
			continue;
		struct vmsh_frame_hdr h;
		vmsh_frame_get_hdr(S.hdr, &h);
		FUZZ_CHECK(!vmsh_frame_check(&h, VMSH_TO_HOST), "the helper sent a bad frame");
		if (h.type == VMSH_F_STDIN_ACK) {
			if (S.hdr_len < VMSH_FRAME_HDR_SIZE + 4)
				continue;
			S.acked += vmsh_get_le32(S.hdr + VMSH_FRAME_HDR_SIZE);
			FUZZ_CHECK(S.acked <= S.fed, "acknowledged %llu of %llu bytes", (unsigned long long)S.acked,
				   (unsigned long long)S.fed);
			S.hdr_len = 0;
			continue;
		}
		S.skip = h.len;
		S.hdr_len = 0;
	}
}

static ssize_t fuzz_write(int fd, const void *buf, size_t len)
{
	if (fd == PORT_FD) {
		port_bytes(buf, len);
		return (ssize_t)len;
	}
	FUZZ_CHECK(fd == CMD_FD, "write to fd %d", fd);
	switch (next() % 8) {
	case 0:
		errno = EAGAIN;
		return -1;
	case 1:
		errno = next() % 2 ? EPIPE : EIO;
		return -1;
	case 2: { /* a partial write */
		size_t n = 1 + next() % (len ? len : 1);
		return (ssize_t)(n < len ? n : len);
	}
	default:
		return (ssize_t)len;
	}
}

static int fuzz_kill(pid_t pid, int sig)
{
	FUZZ_CHECK(pid < -1 && pid != -getpgrp(), "kill(%d, %d)", (int)pid, sig);
	FUZZ_CHECK(sig >= 1 && sig <= 64, "signal %d", sig);
	return 0;
}

static int fuzz_ioctl(int fd, unsigned long req, ...)
{
	FUZZ_CHECK(fd == CMD_FD, "ioctl on fd %d", fd);
	return 0;
}

static int fuzz_tcgetattr(int fd, struct termios *t)
{
	memset(t, 0, sizeof(*t));
	t->c_cc[VEOF] = 4;
	return 0;
}

static pid_t fuzz_tcgetpgrp(int fd)
{
	return S.fg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t flags = fz_u8(&f);
	memset(&S, 0, sizeof(S));
	S.s = fz_u16(&f);
	/* the terminal's foreground group: the command's, a job's, none, or ours */
	pid_t fgs[] = { CMD_PID, CMD_PID + 7, 0, 1, -1, getpgrp() };
	S.fg = fgs[S.s % 6];
	bool pty = flags & 1;
	struct child c = {
		.pid = CMD_PID, .master = pty ? CMD_FD : -1, .in_fd = pty ? -1 : CMD_FD, .out_fd = -1, .err_fd = -1,
		.exited = flags & 2,
	};
	static uint8_t tx[TX_CAP], rx[RX_CAP], in[IN_CAP];
	struct pump p = {
		.port = PORT_FD, .c = &c, .pty = pty,
		.tx = { .p = tx, .cap = TX_CAP }, .rx = { .p = rx, .cap = RX_CAP }, .in = { .p = in, .cap = IN_CAP },
		.out_open = true, .err_open = !pty,
	};
	struct vmsh_err err = { 0 };
	while (fz_left(&f)) {
		/* read_port: as much as the receive buffer has room for */
		size_t want = fz_u16(&f) % 8193;
		if (!buf_make_tail(&p.rx, 1))
			break; /* full: the host would block (the loop stops reading) */
		size_t room = p.rx.cap - p.rx.end, n = want < room ? want : room;
		n = n < fz_left(&f) ? n : fz_left(&f);
		fz_bytes(&f, p.rx.p + p.rx.end, n);
		p.rx.end += n;
		S.fed += n;
		int r = process_rx(&p, &err);
		FUZZ_CHECK(p.rx.start <= p.rx.end && p.rx.end <= p.rx.cap && p.in.end <= p.in.cap &&
				   p.tx.end <= p.tx.cap, "buffer indices");
		if (r != 0)
			break; /* protocol error or DETACH: the helper ends */
		feed_input(&p);
		ack_input(&p);
		(void)flush_tx(&p);
	}
	return 0;
}
