/* console_socket.h - `vmsh serve --console-socket PATH`: the console port's
 * bytes to and from one client at a time of a unix socket. */
#ifndef VMSH_CONSOLE_SOCKET_H
#define VMSH_CONSOLE_SOCKET_H

#include <sys/types.h>

#include "common/err.h"

/* The file the socket was bound to: removed at the end only if it is
 * still this one. */
struct sock_file {
	dev_t dev;
	ino_t ino;
};

/* A listening socket at path, mode 0600; an existing file there is
 * replaced only if it is a socket nobody listens on. Returns the fd or -1. */
int console_socket_listen(const char *path, struct sock_file *f, struct vmsh_err *err);
/* Shuttle bytes between con_fd (the console port, -1: none) and one client
 * at a time of lfd (-1: none) until stop_fd becomes readable (not read here): 0; or
 * until gone_fd (the hypervisor's pidfd, -1: none) does: 1; -1 on an error. */
int console_socket_serve(int stop_fd, int gone_fd, int lfd, int con_fd, struct vmsh_err *err);
/* Remove the socket file again, unless someone replaced it meanwhile. */
void console_socket_unlink(const char *path, const struct sock_file *f);

#endif
