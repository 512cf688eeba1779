/* console_socket.c - the console port on a unix socket (see
 * console_socket.h).
 *
 * Everything here is non-blocking: a client that stops reading (or a guest
 * that stops taking input) only fills a buffer, and the stop request
 * (SIGTERM through a signalfd) is seen at once. The listening socket is
 * watched only while nobody is connected: a second client waits in the
 * backlog instead of making poll() report it forever. */
#include "cli/console_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fill_addr(struct sockaddr_un *a, const char *path, struct vmsh_err *err)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return vmsh_error(err, ENAMETOOLONG, "socket path %s", path);
	strcpy(a->sun_path, path);
	return 0;
}

/* Something at path already: a socket nobody listens on any more (a
 * previous vmsh killed) is removed; anything else stays and is refused. */
static int clear_path(const char *path, const struct sockaddr_un *a, struct vmsh_err *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : vmsh_error(err, errno, "%s", path);
	if (!S_ISSOCK(st.st_mode))
		return vmsh_error(err, EEXIST, "%s exists and is not a socket: not replaced", path);
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return vmsh_error(err, errno, "socket");
	int live = connect(probe, (const struct sockaddr *)a, sizeof(*a)) == 0;
	close(probe);
	if (live)
		return vmsh_error(err, EADDRINUSE, "%s: another process listens there", path);
	if (unlink(path) < 0)
		return vmsh_error(err, errno, "remove the stale socket %s", path);
	return 0;
}

int console_socket_listen(const char *path, struct sock_file *f, struct vmsh_err *err)
{
	struct sockaddr_un a;
	if (fill_addr(&a, path, err) < 0 || clear_path(path, &a, err) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vmsh_error(err, errno, "socket");
	/* The console is root's terminal into the guest: the socket is created
	 * 0600 whatever the caller's umask (no window with wider rights). */
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	struct stat st;
	if (rc < 0 || listen(fd, 1) < 0 || lstat(path, &st) < 0) {
		vmsh_error(err, errno, "listen on %s", path);
		close(fd);
		return -1;
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	return fd;
}

void console_socket_unlink(const char *path, const struct sock_file *f)
{
	/* only our own socket: the path may have been replaced meanwhile */
	struct stat there;
	if (lstat(path, &there) == 0 && S_ISSOCK(there.st_mode) && there.st_ino == f->ino && there.st_dev == f->dev)
		unlink(path);
}

struct dir_buf {
	char buf[65536];
	size_t off, len;
};

/* Read into an empty buffer: 1 data or nothing yet, 0 EOF/error. */
static int fill(int fd, struct dir_buf *b)
{
	ssize_t n = read(fd, b->buf, sizeof(b->buf));
	if (n > 0) {
		b->off = 0;
		b->len = (size_t)n;
		return 1;
	}
	return n < 0 && (errno == EAGAIN || errno == EINTR);
}

/* Write what the buffer holds, as far as fd takes it: 1 ok, 0 error. */
static int drain(int fd, struct dir_buf *b)
{
	while (b->off < b->len) {
		ssize_t w = send(fd, b->buf + b->off, b->len - b->off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN || errno == EINTR;
		b->off += (size_t)w;
	}
	b->off = b->len = 0;
	return 1;
}

static bool pending(const struct dir_buf *b)
{
	return b->off < b->len;
}

struct shuttle {
	struct dir_buf to_guest, to_client;
	int client;
	bool con_eof; /* the console port's side is gone: nothing more to read */
};

static void drop_client(struct shuttle *sh)
{
	if (sh->client >= 0)
		close(sh->client);
	sh->client = -1;
	sh->to_client.off = sh->to_client.len = 0; /* its reader is gone */
}

/* One round of I/O after poll: p[2] is the client, p[3] the console port. */
static void step(struct shuttle *sh, const struct pollfd *pc, const struct pollfd *pg, int con_fd)
{
	bool lost = false;
	if (sh->client >= 0 && pc->revents) {
		if ((pc->revents & POLLOUT) && !drain(sh->client, &sh->to_client))
			lost = true;
		if (!lost && (pc->revents & (POLLIN | POLLHUP | POLLERR)) && !pending(&sh->to_guest) &&
		    !fill(sh->client, &sh->to_guest))
			lost = true;
	}
	if (pending(&sh->to_guest))
		drain(con_fd, &sh->to_guest); /* the guest side never goes away before us */
	if (!lost && sh->client >= 0 && (pg->revents & (POLLIN | POLLHUP)) && !pending(&sh->to_client) &&
	    !fill(con_fd, &sh->to_client)) {
		sh->con_eof = true;
		lost = true;
	}
	if (!lost && sh->client >= 0 && pending(&sh->to_client) && !drain(sh->client, &sh->to_client))
		lost = true;
	if (lost)
		drop_client(sh);
}

int console_socket_serve(int stop_fd, int gone_fd, int lfd, int con_fd, struct vmsh_err *err)
{
	struct shuttle *sh = calloc(1, sizeof(*sh));
	if (!sh)
		return vmsh_error(err, ENOMEM, "console socket");
	sh->client = -1;
	if (con_fd < 0) /* no console port (serve --no-console): no client either */
		lfd = -1;
	int fl = con_fd < 0 ? 0 : fcntl(con_fd, F_GETFL);
	if (fl < 0 || (con_fd >= 0 && fcntl(con_fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		free(sh);
		return vmsh_error(err, errno, "console socket");
	}
	int rc = 0;
	for (;;) {
		short cev = (short)((pending(&sh->to_guest) ? 0 : POLLIN) | (pending(&sh->to_client) ? POLLOUT : 0));
		short gev = (short)((sh->client >= 0 && !sh->con_eof && !pending(&sh->to_client) ? POLLIN : 0) |
				    (pending(&sh->to_guest) ? POLLOUT : 0));
		struct pollfd p[5] = {
			{ stop_fd, POLLIN, 0 },
			{ sh->client < 0 ? lfd : -1, POLLIN, 0 },
			{ sh->client, cev, 0 },
			{ gev ? con_fd : -1, gev, 0 },
			{ gone_fd, POLLIN, 0 },
		};
		if (poll(p, 5, -1) < 0) {
			if (errno == EINTR)
				continue;
			rc = vmsh_error(err, errno, "poll");
			break;
		}
		if (p[0].revents)
			break;
		if (p[4].revents) {
			rc = 1;
			break;
		}
		if (p[1].revents && sh->client < 0) {
			sh->client = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			sh->to_client.off = sh->to_client.len = 0;
		}
		step(sh, &p[2], &p[3], con_fd);
	}
	drop_client(sh);
	free(sh);
	if (con_fd >= 0)
		fcntl(con_fd, F_SETFL, fl);
	return rc;
}
