/* console_dev.h - the virtio-console device kind: a vdev whose one named
 * port (virtio_console.h) is connected to a stream socket on the host. */
#ifndef VMSH_CONSOLE_DEV_H
#define VMSH_CONSOLE_DEV_H

#include "devices/server.h"
#include "devices/vdev.h"
#include "devices/virtio_console.h"

#define CONSOLE_QUEUE_SIZE 256
#define CONSOLE_OUT_BYTES (64u << 10)

struct console_dev {
	struct vdev dev;
	struct vcon v;
	int fd;                 /* host side: bytes to and from the port */
	struct dev_server *srv;
	uint32_t events;        /* what we watch fd for */
	bool host_eof;
	uint8_t out[CONSOLE_OUT_BYTES]; /* from the guest, not yet written to fd */
	size_t out_off, out_len;
	uint64_t to_guest, from_guest; /* bytes */
};

int console_dev_init(struct console_dev *c, const char *port_name, int fd, const struct vq_mem *mem, uint8_t *page,
		     uint64_t gpa, struct vmsh_err *err);
/* Serve fd from the server's thread. */
int console_dev_watch(struct console_dev *c, struct dev_server *srv, struct vmsh_err *err);
/* Put a size into config space (VIRTIO_CONSOLE_F_SIZE) and raise the
 * config interrupt. vmsh attach does not call it: the terminal's size
 * reaches the command's pty through the helper protocol (relay/relay.h);
 * the virtio_mmio fuzz target drives it to keep the config-change path
 * exercised. */
void console_dev_set_size(struct console_dev *c, uint16_t cols, uint16_t rows);
void console_dev_destroy(struct console_dev *c);

#endif
