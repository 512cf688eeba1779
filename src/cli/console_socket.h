/* console_socket.h - `vmsh serve --console-socket PATH`: the console port's
 * bytes to and from one client at a time of a unix socket. */
#ifndef VMSH_CONSOLE_SOCKET_H
#define VMSH_CONSOLE_SOCKET_H

#include "common/err.h"

/* A listening socket at path. Returns the fd or -1. */
int console_socket_listen(const char *path, struct vmsh_err *err);
/* Shuttle bytes between con_fd (the console port) and one client at a time
 * of lfd (-1: none) until stop_fd becomes readable (not read here): 0, or
 * -1 on an error. */
int console_socket_serve(int stop_fd, int lfd, int con_fd, struct vmsh_err *err);
/* Remove the socket again. */
void console_socket_unlink(const char *path, int lfd);

#endif
