/* fuzz_relay_host.c - vmsh's side of the helper protocol (relay/relay.c):
 * the frames the guest helper sends (guest-controlled), parsed by
 * process_rx as they arrive in pieces of any size, with our stdout/stderr
 * taking the output at whatever pace the fuzzer chooses (partial writes,
 * EAGAIN, EPIPE).
 *
 * relay.c is included so that its static parser runs as it is; write() and
 * poll() in it are replaced by shims (macros, defined after the system
 * headers), so nothing reaches our real fds 1 and 2.
 *
 * Invariants: the receive buffer indices stay ordered and in bounds; a
 * frame that is not complete always has room to complete (no stall); output
 * bytes written never exceed the output payload received; the helper's
 * version is printable; the session ends on the first protocol error.
 *
 * Input: u8 flags (1: stdout regular file, 2: stderr regular file),
 * u32 stdin bytes sent (for STDIN_ACK), u16 seed of the write schedule,
 * then chunks: u16 length (mod 8193) + bytes, until the input ends. */
#include "fuzz.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static ssize_t fuzz_write(int fd, const void *buf, size_t len);
static int fuzz_poll(struct pollfd *fds, nfds_t n, int timeout);
#define write fuzz_write
#define poll fuzz_poll
#include "../../src/relay/relay.c"
#undef write
#undef poll

/* The write schedule: a small PRNG seeded from the input decides what each
 * write and poll of fd 1/2 does. */
static struct {
	uint32_t s;
	uint64_t written[3];
} W;

static uint32_t next(void)
{
	W.s = W.s * 1103515245u + 12345u;
	return W.s >> 16;
}

static ssize_t fuzz_write(int fd, const void *buf, size_t len)
{
	FUZZ_CHECK(fd == 1 || fd == 2, "write to fd %d", fd);
	switch (next() % 8) {
	case 0:
		errno = EAGAIN;
		return -1;
	case 1:
		if (next() % 16 == 0) {
			errno = EPIPE;
			return -1;
		}
		/* fall through */
	case 2: {
		size_t n = 1 + next() % (len ? len : 1);
		n = n < len ? n : len;
		W.written[fd] += n;
		return (ssize_t)n;
	}
	default:
		W.written[fd] += len;
		return (ssize_t)len;
	}
}

static int fuzz_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	for (nfds_t i = 0; i < n; i++)
		fds[i].revents = next() % 4 ? fds[i].events : 0;
	return next() % 4 ? 1 : 0;
}

static void check(const struct relay *R, uint64_t payload_out, bool live)
{
	FUZZ_CHECK(R->rx_start <= R->rx_end && R->rx_end <= RX_CAP, "rx %zu..%zu", R->rx_start, R->rx_end);
	FUZZ_CHECK(!live || R->out_fd >= 0 || R->rx_start + FRAME_MAX <= RX_CAP,
		   "a frame at %zu cannot complete in a buffer of %u", R->rx_start, (unsigned)RX_CAP);
	FUZZ_CHECK(W.written[1] + W.written[2] <= payload_out, "wrote %llu bytes of %llu output",
		   (unsigned long long)(W.written[1] + W.written[2]), (unsigned long long)payload_out);
	for (const char *p = R->r->helper_version; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p < 0x7f, "version byte %#x", (unsigned)(uint8_t)*p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t flags = fz_u8(&f);
	uint32_t sent = fz_u32(&f);
	memset(&W, 0, sizeof(W));
	W.s = fz_u16(&f);

	struct relay_opts o;
	relay_opts_init(&o);
	o.mode = RELAY_PIPE;
	struct relay_result r = { .outcome = RELAY_LOCAL_ERROR };
	struct vmsh_err err = { 0 };
	static uint8_t rx[RX_CAP], txbuf[FRAME_MAX];
	struct relay R = {
		.chan = -1, .o = &o, .r = &r, .err = &err, .sigfd = -1, .stdin_open = true, .out_fd = -1,
		.first_forward_ms = -1, .data = txbuf, .rx = rx, .stdin_sent = sent,
	};
	R.out_regular[1] = flags & 1;
	R.out_regular[2] = flags & 2;

	/* what the output frames can carry at most: every byte received */
	uint64_t received = 0;
	int rc = 0;
	while (fz_left(&f) && rc == 0) {
		size_t want = fz_u16(&f) % 8193, room = RX_CAP - R.rx_end;
		size_t n = want < room ? want : room;
		n = n < fz_left(&f) ? n : fz_left(&f);
		fz_bytes(&f, R.rx + R.rx_end, n);
		R.rx_end += n;
		received += n;
		/* the loop calls process_rx again while output is pending */
		for (int round = 0; round < 4 && rc == 0; round++) {
			rc = process_rx(&R);
			check(&R, received, rc == 0);
			if (R.out_fd < 0)
				break;
		}
	}
	if (rc < 0)
		FUZZ_CHECK(R.done || R.detaching, "process_rx failed without ending the session");
	return 0;
}
