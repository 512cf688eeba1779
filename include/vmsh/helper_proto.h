/* proto.h - the framing protocol between vmsh (host) and vmsh-helper (guest).
 *
 * Shared by both sides; plain C11, no dependencies beyond <stdint.h>.
 *
 * The virtio-console port is a reliable, ordered byte stream. On it, both
 * directions carry frames: an 8-byte header followed by `len` payload bytes.
 * Every multi-byte field, in the header and in payloads, is little-endian.
 *
 *   offset 0  u8  type      enum vmsh_frame_type
 *   offset 1  u8  flags     0 in version 1 (a receiver rejects anything else)
 *   offset 2  u16 reserved  0 in version 1 (a receiver rejects anything else)
 *   offset 4  u32 len       payload bytes, 0 .. VMSH_PROTO_MAX_PAYLOAD
 *
 * Everything that arrives is hostile input: a receiver checks the header with
 * vmsh_frame_check() before it trusts len or type, and the payload length of
 * fixed-size frames exactly. Any violation is a protocol error that ends the
 * session (the stream cannot be resynchronised).
 *
 * Conversation:
 *   guest: HELLO (first frame, always), then either ERROR (setup failed) or
 *          READY (the command runs), then STDOUT/STDERR data (STDERR may also
 *          carry setup warnings before READY), then EXIT or ERROR; then the
 *          helper exits.
 *   host:  STDIN data and STDIN_EOF, WINSIZE, SIGNAL at any time (the helper
 *          keeps what arrives before READY, bounded); DETACH to leave: the
 *          helper kills the command and exits without sending EXIT.
 *
 * Flow control for stdin: the host may have at most VMSH_STDIN_WINDOW bytes
 * of STDIN payload that the helper has not acknowledged (STDIN_ACK, sent
 * once the bytes went to the command, or were dropped because it closed its
 * stdin). So the helper can always take every frame off the port at once,
 * and control frames (SIGNAL, DETACH) are never stuck behind input that a
 * busy command does not read. A helper that would have to hold more treats
 * it as a protocol error.
 */
#ifndef VMSH_PROTO_H
#define VMSH_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Bumped on any incompatible change; a receiver refuses another version. */
#define VMSH_PROTO_VERSION 1

#define VMSH_FRAME_HDR_SIZE 8u
#define VMSH_PROTO_MAX_PAYLOAD (64u * 1024u)

enum vmsh_frame_type {
	/* host -> guest */
	VMSH_F_STDIN = 0x01,     /* bytes for the command's stdin (or the pty) */
	VMSH_F_STDIN_EOF = 0x02, /* len 0: no more stdin */
	VMSH_F_WINSIZE = 0x03,   /* len 4: u16 rows, u16 cols (pty mode) */
	VMSH_F_SIGNAL = 0x04,    /* len 4: u32 Linux signal number, sent to the command's process group */
	VMSH_F_DETACH = 0x05,    /* len 0: kill the command's process group, exit */

	/* guest -> host */
	VMSH_F_HELLO = 0x81,  /* len 4..260: u16 protocol version, u16 0, then the helper's version text */
	VMSH_F_READY = 0x82,  /* len 4: u32 pid of the command (as the helper sees it) */
	VMSH_F_STDOUT = 0x83, /* bytes the command wrote to stdout (or the pty) */
	VMSH_F_STDERR = 0x84, /* bytes the command wrote to stderr; helper warnings */
	VMSH_F_EXIT = 0x85,   /* len 4: u32 status, 0..255: exit code, or 128+signal */
	VMSH_F_ERROR = 0x86,  /* len 1..1024: UTF-8 message, no NUL; the helper exits after it */
	VMSH_F_STDIN_ACK = 0x87, /* len 4: u32 STDIN payload bytes consumed since the last ACK */
};

#define VMSH_STDIN_WINDOW (256u * 1024u)

#define VMSH_HELLO_MAX_LEN 260u
#define VMSH_ERROR_MAX_LEN 1024u

struct vmsh_frame_hdr {
	uint8_t type;
	uint8_t flags;
	uint16_t reserved;
	uint32_t len;
};

static inline uint16_t vmsh_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t vmsh_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void vmsh_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void vmsh_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* Write a header for a frame of `type` with `len` payload bytes into p[0..7]. */
static inline void vmsh_frame_put_hdr(uint8_t *p, uint8_t type, uint32_t len)
{
	p[0] = type;
	p[1] = 0;
	vmsh_put_le16(p + 2, 0);
	vmsh_put_le32(p + 4, len);
}

static inline void vmsh_frame_get_hdr(const uint8_t *p, struct vmsh_frame_hdr *h)
{
	h->type = p[0];
	h->flags = p[1];
	h->reserved = vmsh_get_le16(p + 2);
	h->len = vmsh_get_le32(p + 4);
}

/* Which direction a frame travels, for vmsh_frame_check(). */
enum vmsh_frame_dir {
	VMSH_TO_GUEST = 0,
	VMSH_TO_HOST = 1,
};

/* Validate a received header for the direction it arrived in: known type,
 * zero flags/reserved, and a length the type allows. Returns NULL if the
 * frame is acceptable, else a static description of what is wrong. */
static inline const char *vmsh_frame_check(const struct vmsh_frame_hdr *h, enum vmsh_frame_dir dir)
{
	if (h->len > VMSH_PROTO_MAX_PAYLOAD)
		return "frame longer than 64 KiB";
	if (h->flags || h->reserved)
		return "frame with non-zero flags or reserved field";
	uint32_t min = 0, max = VMSH_PROTO_MAX_PAYLOAD;
	if (dir == VMSH_TO_GUEST) {
		switch (h->type) {
		case VMSH_F_STDIN: break;
		case VMSH_F_STDIN_EOF:
		case VMSH_F_DETACH: max = 0; break;
		case VMSH_F_WINSIZE:
		case VMSH_F_SIGNAL: min = max = 4; break;
		default: return "unknown frame type";
		}
	} else {
		switch (h->type) {
		case VMSH_F_STDOUT:
		case VMSH_F_STDERR: break;
		case VMSH_F_HELLO: min = 4; max = VMSH_HELLO_MAX_LEN; break;
		case VMSH_F_READY:
		case VMSH_F_EXIT:
		case VMSH_F_STDIN_ACK: min = max = 4; break;
		case VMSH_F_ERROR: min = 1; max = VMSH_ERROR_MAX_LEN; break;
		default: return "unknown frame type";
		}
	}
	if (h->len < min || h->len > max)
		return "frame length does not fit its type";
	return 0;
}


/* A word both sides put on the helper's command line (port name, disk
 * serial, TERM, fstype): 1..max bytes of [A-Za-z0-9._+-]. */
static inline int vmsh_plain_word(const char *s, size_t max)
{
	size_t n = 0;
	if (!s)
		return 0;
	for (; n <= max && s[n]; n++) {
		char c = s[n];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '+' || c == '-'))
			return 0;
	}
	return n > 0 && n <= max;
}

#endif
