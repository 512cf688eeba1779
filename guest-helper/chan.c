/* chan.c - the helper's two ways to speak: frames on the port while the
 * helper sets up (before the relay loop takes over), and its diagnostic log. */
#include "common/clock.h"
#include "helper.h"
#include "vmsh/helper_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The log sink, chosen once at start: global because every step may log,
 * and it is set before anything else runs. */
static int log_fd = -1;

void helper_log_open(bool to_stderr)
{
	if (to_stderr) {
		log_fd = 2;
		return;
	}
	log_fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (log_fd < 0)
		log_fd = 2; /* /dev/null if fd 2 was closed (main reopens 0-2) */
}

void helper_log(const char *fmt, ...)
{
	char line[1024];
	int off = snprintf(line, sizeof(line), "%svmsh-helper: ", log_fd == 2 ? "" : "<3>");
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	size_t len = off + ((size_t)n < sizeof(line) - off - 1 ? (size_t)n : sizeof(line) - off - 2);
	line[len++] = '\n';
	if (log_fd >= 0 && write(log_fd, line, len) < 0) {
		/* nowhere left to complain */
	}
}


int chan_send(int fd, uint8_t type, const void *payload, uint32_t len, int timeout_ms, struct vmsh_err *err)
{
	if (len > VMSH_PROTO_MAX_PAYLOAD)
		return vmsh_error(err, EMSGSIZE, "frame of %u bytes", len);
	uint8_t hdr[VMSH_FRAME_HDR_SIZE];
	vmsh_frame_put_hdr(hdr, type, len);
	const uint8_t *parts[2] = { hdr, payload };
	size_t sizes[2] = { sizeof(hdr), len };
	int64_t t0 = now_ms();
	for (int i = 0; i < 2; i++) {
		size_t done = 0;
		while (done < sizes[i]) {
			ssize_t n = write(fd, parts[i] + done, sizes[i] - done);
			if (n > 0) {
				done += n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno != EAGAIN)
				return vmsh_error(err, errno, "write to the port");
			long left = timeout_ms - (now_ms() - t0);
			if (left <= 0)
				return vmsh_error(err, ETIMEDOUT, "write to the port: the host does not read");
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
				return vmsh_error(err, errno, "poll on the port");
			if ((p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLOUT)) {
				/* a virtio port whose host side is not (yet) open
				 * reports POLLHUP: wait for it without spinning */
				struct timespec step = { 0, 50 * 1000 * 1000 };
				nanosleep(&step, NULL);
			}
		}
	}
	return 0;
}

void chan_send_error(int fd, const char *msg)
{
	size_t len = strnlen(msg, VMSH_ERROR_MAX_LEN);
	if (len == 0) {
		msg = "unknown error";
		len = strlen(msg);
	}
	struct vmsh_err e;
	if (fd >= 0 && chan_send(fd, VMSH_F_ERROR, msg, (uint32_t)len, 5000, &e) < 0)
		helper_log("cannot report the error to the host: %s", e.msg);
}
