/* virtio_console.h - a virtio-console device (virtio 1.x section 5.3), device
 * side, with VIRTIO_CONSOLE_F_MULTIPORT and exactly one port: port 0, a plain
 * named port. Linux makes it the raw character device /dev/vportNp0 whose
 * sysfs `name` is the name given here. It is never announced as a console
 * port: Linux would turn that into an hvc tty and refuse open() on vportNp0.
 *
 * Queues: 0 port 0 receiveq (host -> guest bytes), 1 port 0 transmitq
 * (guest -> host bytes), 2 control receiveq (host -> guest control), 3 control
 * transmitq (guest -> host control).
 *
 * The handshake, as Linux's drivers/char/virtio_console.c does it: the driver
 * fills the control receiveq and sends DEVICE_READY 1; the device answers
 * PORT_ADD for port 0; the driver fills the port's receiveq and sends
 * PORT_READY 1; the device answers PORT_NAME (name and NUL after the header)
 * and PORT_OPEN 1 (host connected). A guest process opening/closing the port
 * makes the driver send PORT_OPEN 1/0 (guest_connected).
 *
 * Linux behaviour this relies on:
 *   - the driver busy-waits (a vCPU spinning) until each control message it
 *     sent is used: run vcon_process promptly on control transmitq notifies;
 *   - reads return EOF and writes block while host_connected is 0, so the
 *     device keeps it 1 while it serves (vcon_set_host_connected);
 *   - bytes arriving while no guest process has the port open are dropped
 *     by the driver, so host bytes are held until guest_connected;
 *   - with MULTIPORT, Linux reads cols/rows from config never (config_intr
 *     ignores them) and takes RESIZE only for console ports: the window size
 *     in config is offered for other drivers; a Linux guest must learn it
 *     in-band.
 *
 * Everything from the guest is hostile: chains with the wrong buffer
 * directions or unreadable memory mark their queue broken, control messages
 * that are short, for unknown ports or unknown events are used and ignored
 * (counted), every loop is bounded, and vmsh never crashes. */
#ifndef VMSH_VIRTIO_CONSOLE_H
#define VMSH_VIRTIO_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/virtqueue.h"

#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_CONSOLE_F_SIZE 0
#define VIRTIO_CONSOLE_F_MULTIPORT 1

enum {
	VCON_Q_RX = 0,      /* port 0 receiveq: host -> guest bytes */
	VCON_Q_TX = 1,      /* port 0 transmitq: guest -> host bytes */
	VCON_Q_CTRL_RX = 2, /* control receiveq (c_ivq): host -> guest control */
	VCON_Q_CTRL_TX = 3, /* control transmitq (c_ovq): guest -> host control */
	VCON_NUM_QUEUES = 4,
};

/* struct virtio_console_control.event */
enum {
	VIRTIO_CONSOLE_DEVICE_READY = 0,
	VIRTIO_CONSOLE_PORT_ADD = 1,
	VIRTIO_CONSOLE_PORT_REMOVE = 2,
	VIRTIO_CONSOLE_PORT_READY = 3,
	VIRTIO_CONSOLE_CONSOLE_PORT = 4,
	VIRTIO_CONSOLE_RESIZE = 5,
	VIRTIO_CONSOLE_PORT_OPEN = 6,
	VIRTIO_CONSOLE_PORT_NAME = 7,
};

/* A control message header; PORT_NAME's name follows it in the same buffer. */
struct virtio_console_control {
	uint32_t id; /* port number */
	uint16_t event;
	uint16_t value;
};

#define VCON_CONFIG_BYTES 12        /* struct virtio_console_config */
#define VCON_NAME_MAX 64            /* port name bytes, without the NUL */
#define VCON_BUF_BYTES (256u << 10) /* each direction's host-side buffer */
#define VCON_CTRL_PENDING 8         /* control messages waiting for a buffer */
#define VCON_BUDGET 1024            /* chains per queue per vcon_process */

/* A bounded FIFO of bytes. */
struct vcon_fifo {
	uint8_t *data;
	size_t cap, head, len;
};

struct vcon {
	char name[VCON_NAME_MAX + 1];
	uint16_t cols, rows;

	/* protocol state (read it, don't write it), cleared by vcon_reset */
	bool device_ready;    /* the driver sent DEVICE_READY 1 */
	bool port_added;      /* PORT_ADD for port 0 reached the driver */
	bool port_ready;      /* the driver sent PORT_READY 1: port 0 is set up */
	bool guest_connected; /* a guest process has the port open */
	unsigned ignored;     /* guest control messages ignored (malformed/unknown) */
	struct {
		uint16_t event, value;
	} ctrl[VCON_CTRL_PENDING]; /* control messages to send, in order */
	unsigned ctrl_head, ctrl_len;
	bool tx_partial;      /* a transmit chain was taken in part: */
	uint16_t tx_head;     /* its head */
	uint64_t tx_done;     /* and the bytes already taken */

	/* host side, kept across resets */
	bool host_connected;  /* what PORT_OPEN tells the driver (starts 1) */
	struct vcon_fifo to_guest, from_guest;
};

/* Set up port 0 named port_name (1..VCON_NAME_MAX printable bytes, no '/'
 * or space) with empty buffers and host_connected 1. */
int vcon_init(struct vcon *v, const char *port_name, struct vmsh_err *err);
void vcon_free(struct vcon *v);
/* The driver reset the device (the caller drops its queues): protocol state
 * goes, the bytes in both buffers and host_connected stay. */
void vcon_reset(struct vcon *v);

/* Device feature bits (the transport adds its own). */
uint64_t vcon_features(void);
/* Fill struct virtio_console_config {u16 cols, rows; u32 max_nr_ports = 1;
 * u32 emerg_wr = 0}; returns its length. */
size_t vcon_config(const struct vcon *v, uint8_t *cfg, size_t cap);
/* New window size; true if it changed (the caller renders the config again
 * and raises a config-change interrupt). */
bool vcon_set_size(struct vcon *v, uint16_t cols, uint16_t rows);
/* Tell the driver whether the host end is open (PORT_OPEN 1/0, sent once the
 * port is ready). 0 tells the guest's reader EOF: it is held back until the
 * bytes written before it were delivered. -1 if too many control messages
 * are already waiting for the driver's buffers (state unchanged). */
int vcon_set_host_connected(struct vcon *v, bool connected);

/* Host -> guest: queue bytes for the guest; returns how many were taken. */
size_t vcon_host_write(struct vcon *v, const void *buf, size_t len);
/* Room left for vcon_host_write. */
size_t vcon_host_space(const struct vcon *v);
/* Bytes written but not yet delivered to the guest. */
size_t vcon_host_unsent(const struct vcon *v);
/* Guest -> host: take up to cap bytes the guest sent; returns how many. */
size_t vcon_host_read(struct vcon *v, void *buf, size_t cap);
/* Bytes waiting for vcon_host_read. */
size_t vcon_host_pending(const struct vcon *v);

/* Serve all queues: run it when any queue was notified, and after host bytes
 * were written or read. vqs[VCON_Q_*] may be NULL (not set up yet: skipped).
 * Takes guest control messages and answers them, takes guest bytes as far as
 * the host buffer has room (the rest stays in the ring, to be taken by a
 * later call), gives host bytes to the guest's receive buffers, and sets bit
 * q in *notify_mask when the driver wants an interrupt for queue q.
 * Returns 0; 1 if it stopped at VCON_BUDGET chains on a queue with more to
 * do (call again); -1 if a queue is broken (its why says why: the caller
 * asks the driver for a reset). */
int vcon_process(struct vcon *v, struct virtqueue *const vqs[VCON_NUM_QUEUES], unsigned *notify_mask);

#endif
