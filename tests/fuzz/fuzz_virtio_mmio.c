/* fuzz_virtio_mmio.c - a whole vmsh device as the guest's driver sees it:
 * the virtio-mmio register file (virtio_mmio.c) driven by fuzzed register
 * accesses, through vdev.c, with the block (blk_dev.c) or console
 * (console_dev.c) device behind it serving its queues from a guest RAM image
 * when kicked. The rendered register page must always be what vmmio_read
 * answers, and no access sequence may crash vmsh.
 *
 * Input: u8 device (bit 0: console, bit 1: read-only disk), u8 number of
 * accesses (mod 97), then the accesses, 8 bytes each:
 *   u8 what (0-3 write, 4 read, 5 kick, 6 interrupt ack, 7 block: an odd-sized write;
 *   console: value bits 0-1 say: window size, host bytes arrive, the driver publishes more)
 *   u8 size (mod 9), u16 offset (mod 4096), u32 value
 * then the RAM image from gpa 0. */
#include "fuzz.h"

#include <sys/socket.h>
#include <unistd.h>

#include "devices/blk_dev.h"
#include "devices/console_dev.h"

#define RAM (128u << 10)
#define MAX_ACCESSES 96
#define SECTORS 16

static uint8_t disk_bytes[SECTORS * BLK_SECTOR];

static int dread(void *o, uint64_t off, void *b, size_t len)
{
	FUZZ_CHECK(off <= sizeof(disk_bytes) && len <= sizeof(disk_bytes) - off, "disk read outside");
	memcpy(b, disk_bytes + off, len);
	return 0;
}

static int dwrite(void *o, uint64_t off, const void *b, size_t len)
{
	const struct blk_disk *disk = o;
	FUZZ_CHECK(!disk->read_only, "write to a read-only disk");
	FUZZ_CHECK(off <= sizeof(disk_bytes) && len <= sizeof(disk_bytes) - off, "disk write outside");
	memcpy(disk_bytes + off, b, len);
	return 0;
}

static int dflush(void *o)
{
	return 0;
}

static int dzero(void *o, uint64_t off, uint64_t len)
{
	const struct blk_disk *disk = o;
	FUZZ_CHECK(!disk->read_only, "discard/write-zeroes on a read-only disk");
	FUZZ_CHECK(off <= sizeof(disk_bytes) && len <= sizeof(disk_bytes) - off, "discard/write-zeroes outside");
	memset(disk_bytes + off, 0, len);
	return 0;
}

/* The page the guest reads must be what the register file says. */
static void check_page(const struct vdev *d)
{
	for (uint32_t off = 0; off < VIRTIO_MMIO_CONFIG; off += 4) {
		uint32_t v;
		memcpy(&v, d->page + off, 4);
		FUZZ_CHECK(v == vmmio_read(&d->regs, off, 4), "page at %#x says %#x, register %#x", off, v,
			   vmmio_read(&d->regs, off, 4));
	}
	FUZZ_CHECK(!(d->regs.interrupt_status & ~3u), "interrupt status %#x", d->regs.interrupt_status);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		FUZZ_CHECK(!d->vq_live[i] || d->driver_ok, "queue %u live without DRIVER_OK", i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t kind = fz_u8(&f);
	unsigned n = fz_u8(&f) % (MAX_ACCESSES + 1);
	struct {
		uint8_t what, size;
		uint16_t off;
		uint32_t val;
	} acc[MAX_ACCESSES];
	for (unsigned i = 0; i < n; i++) {
		acc[i].what = fz_u8(&f);
		acc[i].size = fz_u8(&f) % 9;
		acc[i].off = fz_u16(&f) % 4096;
		acc[i].val = fz_u32(&f);
	}
	size_t img_len;
	const uint8_t *img = fz_rest(&f, &img_len);
	struct fuzz_ram ram;
	fuzz_ram_reset(&ram, RAM, img, img_len);
	struct vq_mem mem = { .read = fuzz_ram_read, .write = fuzz_ram_write, .ptr = fuzz_ram_ptr, .opaque = &ram };

	static uint8_t page[4096];
	struct blk_disk disk = {
		.sectors = SECTORS,
		.read_only = kind & 2,
		.id = "fuzz",
		.be = { .read = dread, .write = dwrite, .flush = dflush, .discard = dzero, .write_zeroes = dzero },
	};
	disk.be.opaque = &disk;
	/* the console's host end: a socket pair, drained after each kick */
	static struct console_dev con;
	int sp[2] = { -1, -1 };
	struct vdev *d;
	if (kind & 1) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) < 0)
			abort();
		struct vmsh_err err = { 0 };
		if (console_dev_init(&con, "vmsh-fuzz", sp[0], &mem, page, 0xd0000000, &err) < 0)
			abort();
		d = &con.dev;
	} else {
		static struct vdev blk;
		blk_dev_init(&blk, &disk, &mem, page, 0xd0000000);
		d = &blk;
	}
	check_page(d);

	for (unsigned i = 0; i < n; i++) {
		uint8_t buf[8] = { 0 };
		memcpy(buf, &acc[i].val, 4);
		switch (acc[i].what % 8) {
		case 0: case 1: case 2: case 3:
			vdev_mmio(d, acc[i].off & ~3u, true, buf, 4);
			break;
		case 4:
			vdev_mmio(d, acc[i].off, false, buf, acc[i].size);
			break;
		case 5:
			vdev_kick(d, acc[i].val);
			if (sp[1] >= 0) {
				static uint8_t sink[65536];
				while (recv(sp[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
					;
			}
			break;
		case 6:
			vdev_acked(d);
			break;
		case 7:
			if (!(kind & 1)) { /* an odd-sized write: ignored, must not change anything */
				vdev_mmio(d, acc[i].off, true, buf, acc[i].size);
				break;
			}
			switch (acc[i].val & 3) {
			case 0:
			case 3:
				console_dev_set_size(&con, (acc[i].val >> 2) & 0x3fff, acc[i].val >> 16);
				break;
			case 1: { /* host bytes arrive (what on_fd does with the socket's) */
				static uint8_t hb[65536];
				size_t len = (acc[i].val >> 2) % sizeof(hb);
				memset(hb, 'k', len);
				pthread_mutex_lock(&d->lock);
				vcon_host_write(&con.v, hb, len);
				pthread_mutex_unlock(&d->lock);
				vdev_kick(d, ~0u);
				break;
			}
			case 2: { /* the driver publishes more entries on a queue (the ring as it is) */
				unsigned q = (acc[i].val >> 2) & 3;
				uint16_t idx;
				if (fuzz_ram_read(&ram, d->regs.q[q].avail + 2, &idx, 2) == 0) {
					idx = (uint16_t)(idx + ((acc[i].val >> 4) & 0x1ff));
					fuzz_ram_write(&ram, d->regs.q[q].avail + 2, &idx, 2);
				}
				break;
			}
			}
			break;
		}
		check_page(d);
	}
	FUZZ_LOG("status %#x driver_ok %d interrupts %u%s\n", d->regs.status, d->driver_ok, d->interrupts, d->regs.why);
	if (kind & 1)
		FUZZ_LOG("console: port_ready %d guest_connected %d, to guest unsent %zu, from guest %llu\n",
			 con.v.port_ready, con.v.guest_connected, vcon_host_unsent(&con.v),
			 (unsigned long long)con.from_guest);
	if (kind & 1) {
		console_dev_destroy(&con);
		close(sp[0]);
		close(sp[1]);
	} else {
		vdev_destroy(d);
	}
	return 0;
}
