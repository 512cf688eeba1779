/* console_socket.c - the console port on a unix socket (see
 * console_socket.h). */
#include "cli/console_socket.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int console_socket_listen(const char *path, struct vmsh_err *err)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(a.sun_path))
		return vmsh_error(err, ENAMETOOLONG, "socket path %s", path);
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vmsh_error(err, errno, "socket");
	unlink(path);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
		vmsh_error(err, errno, "listen on %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* Copy what is readable on `from` to `to` (blocking write). 0 on EOF. */
static int shuttle(int from, int to)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof(buf));
	if (n <= 0)
		return n < 0 && errno == EINTR ? 1 : 0;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return 0;
		}
		off += w;
	}
	return 1;
}

int console_socket_serve(int stop_fd, int lfd, int con_fd, struct vmsh_err *err)
{
	int client = -1;
	for (;;) {
		struct pollfd p[4] = { { stop_fd, POLLIN, 0 }, { lfd, POLLIN, 0 }, { client, POLLIN, 0 },
				       { client >= 0 ? con_fd : -1, POLLIN, 0 } };
		if (poll(p, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			if (client >= 0)
				close(client);
			return vmsh_error(err, errno, "poll");
		}
		if (p[0].revents)
			break;
		if (p[1].revents && client < 0)
			client = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (p[2].revents && !shuttle(client, con_fd)) {
			close(client);
			client = -1;
			continue;
		}
		if (p[3].revents && !shuttle(con_fd, client)) {
			close(client);
			client = -1;
		}
	}
	if (client >= 0)
		close(client);
	return 0;
}

void console_socket_unlink(const char *path, int lfd)
{
	(void)lfd;
	unlink(path);
}
