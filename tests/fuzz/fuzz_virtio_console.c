/* fuzz_virtio_console.c - the virtio-console device (virtio_console.c) over
 * a guest RAM image the fuzzer writes: its four queues, the control
 * messages the guest sends (DEVICE_READY, PORT_READY, PORT_OPEN, junk), the
 * port's data, interleaved with what the host side does (write and read
 * bytes, connect/disconnect, resize) and with the driver publishing more
 * entries or resetting the device.
 *
 * Invariants: no crash or sanitizer report; the host-side buffers never
 * hold more than their capacity; bytes the host reads never exceed what the
 * guest could have sent; a failing vcon_process means a broken queue;
 * everything ends (vcon_process is called a bounded number of times).
 *
 * Input: a 64-byte header, then the RAM image from gpa 0.
 *   4 x { u8 log2 size (mod 10; 9: queue absent), u16 desc/16, u16 avail/2, u16 used/4 }  28 bytes
 *   u8 flags (1: EVENT_IDX)
 *   8 x { u8 op, u16 arg }                                                            24 bytes
 *   pad to 64 */
#include "fuzz.h"

#include "devices/virtio_console.h"

#define RAM (256u << 10)
#define HDR 64
#define OPS 8

struct qspec {
	uint8_t log2;
	uint64_t desc, avail, used;
};

static void init_queues(struct virtqueue vq[VCON_NUM_QUEUES], struct virtqueue *vqs[VCON_NUM_QUEUES],
			const struct qspec *qs, const struct vq_mem *mem, bool event_idx)
{
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++) {
		vqs[q] = NULL;
		if (qs[q].log2 > 8)
			continue;
		if (vq_init(&vq[q], mem, (uint16_t)(1u << qs[q].log2), qs[q].desc, qs[q].avail, qs[q].used,
			    event_idx) == 0)
			vqs[q] = &vq[q];
		else
			vq_free(&vq[q]);
	}
}

static void free_queues(struct virtqueue *vqs[VCON_NUM_QUEUES])
{
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
		if (vqs[q])
			vq_free(vqs[q]);
}

static void check(const struct vcon *v)
{
	FUZZ_CHECK(vcon_host_pending(v) <= VCON_BUF_BYTES && vcon_host_unsent(v) <= VCON_BUF_BYTES,
		   "buffers over capacity: pending %zu unsent %zu", vcon_host_pending(v), vcon_host_unsent(v));
	FUZZ_CHECK(v->ctrl_len <= VCON_CTRL_PENDING, "%u control messages pending", v->ctrl_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	struct qspec qs[VCON_NUM_QUEUES];
	for (unsigned q = 0; q < VCON_NUM_QUEUES; q++) {
		qs[q].log2 = fz_u8(&f) % 10;
		qs[q].desc = 16ULL * fz_u16(&f);
		qs[q].avail = 2ULL * fz_u16(&f);
		qs[q].used = 4ULL * fz_u16(&f);
	}
	bool event_idx = fz_u8(&f) & 1;
	struct {
		uint8_t op;
		uint16_t arg;
	} ops[OPS];
	for (unsigned i = 0; i < OPS; i++) {
		ops[i].op = fz_u8(&f);
		ops[i].arg = fz_u16(&f);
	}
	uint8_t pad[HDR - 28 - 1 - 3 * OPS];
	fz_bytes(&f, pad, sizeof(pad));
	size_t img_len;
	const uint8_t *img = fz_rest(&f, &img_len);

	struct fuzz_ram ram;
	fuzz_ram_reset(&ram, RAM, img, img_len);
	struct vq_mem mem = { .read = fuzz_ram_read, .write = fuzz_ram_write, .opaque = &ram };

	struct vcon v;
	struct vmsh_err err = { 0 };
	if (vcon_init(&v, "vmsh-fuzz", &err) < 0)
		abort();
	struct virtqueue vq[VCON_NUM_QUEUES];
	struct virtqueue *vqs[VCON_NUM_QUEUES];
	init_queues(vq, vqs, qs, &mem, event_idx);

	static uint8_t buf[64u << 10];
	uint64_t host_read = 0, guest_could_send = 0;
	for (unsigned i = 0; i < OPS; i++) {
		uint16_t arg = ops[i].arg;
		switch (ops[i].op % 8) {
		case 0: /* a notification: serve everything (again while it asks for it) */
		default:
			for (int round = 0; round < 4; round++) {
				unsigned mask = 0;
				int rc = vcon_process(&v, vqs, &mask);
				bool any_broken = false;
				for (unsigned q = 0; q < VCON_NUM_QUEUES; q++)
					any_broken |= vqs[q] && vqs[q]->broken;
				FUZZ_CHECK(rc >= 0 || any_broken, "vcon_process failed with no broken queue");
				FUZZ_CHECK(mask < (1u << VCON_NUM_QUEUES), "notify mask %#x", mask);
				if (rc != 1)
					break;
			}
			/* whatever the port's transmit queue held is an upper bound */
			guest_could_send = UINT64_MAX;
			break;
		case 1:
			memset(buf, 'h', arg);
			FUZZ_CHECK(vcon_host_write(&v, buf, arg % sizeof(buf)) <= arg, "took more than offered");
			break;
		case 2: {
			size_t n = vcon_host_read(&v, buf, arg % sizeof(buf));
			FUZZ_CHECK(n <= arg % sizeof(buf), "read %zu into %u", n, arg);
			host_read += n;
			break;
		}
		case 3:
			(void)vcon_set_host_connected(&v, arg & 1);
			break;
		case 4:
			(void)vcon_set_size(&v, arg & 0xff, arg >> 8);
			break;
		case 5: /* the driver resets the device and sets the queues up again */
			free_queues(vqs);
			vcon_reset(&v);
			init_queues(vq, vqs, qs, &mem, event_idx);
			break;
		case 6: { /* the driver publishes more entries (the ring as it is) */
			unsigned q = arg & 3;
			if (vqs[q]) {
				uint16_t idx;
				if (fuzz_ram_read(&ram, vqs[q]->avail + 2, &idx, 2) == 0) {
					idx = (uint16_t)(idx + ((arg >> 2) & 0x1ff));
					fuzz_ram_write(&ram, vqs[q]->avail + 2, &idx, 2);
				}
			}
			break;
		}
		case 7: {
			uint8_t cfg[VCON_CONFIG_BYTES];
			FUZZ_CHECK(vcon_config(&v, cfg, sizeof(cfg)) <= sizeof(cfg), "config overflow");
			break;
		}
		}
		check(&v);
		FUZZ_CHECK(host_read <= guest_could_send, "host read %llu bytes the guest never sent",
			   (unsigned long long)host_read);
	}
	FUZZ_LOG("device_ready %d port_ready %d guest_connected %d, host read %llu, unsent %zu, ignored %u\n",
		 v.device_ready, v.port_ready, v.guest_connected, (unsigned long long)host_read, vcon_host_unsent(&v),
		 v.ignored);
	free_queues(vqs);
	vcon_free(&v);
	return 0;
}
