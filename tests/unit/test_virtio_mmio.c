/* test_virtio_mmio.c - the virtio-mmio register file: the driver's normal
 * set-up sequence, every protocol violation a driver could commit, the
 * rendered read-only page, and random write sequences. */
#include "unit.h"

#include "devices/virtio_mmio.h"

struct calls {
	int driver_ok, reset, notify;
	unsigned last_queue;
};

static void on_ok(void *o) { ((struct calls *)o)->driver_ok++; }
static void on_reset(void *o) { ((struct calls *)o)->reset++; }
static void on_notify(void *o, unsigned q)
{
	((struct calls *)o)->notify++;
	((struct calls *)o)->last_queue = q;
}
static const struct vmmio_ops ops = { .driver_ok = on_ok, .reset = on_reset, .notify = on_notify };

#define W(off, v) vmmio_write(&d, (off), 4, (v))
#define R(off) vmmio_read(&d, (off), 4)

static void negotiate(struct vmmio_dev *dp, uint64_t features)
{
	struct vmmio_dev d;
	memcpy(&d, dp, sizeof(d));
	W(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	W(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	W(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	W(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	W(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	W(VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	W(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	memcpy(dp, &d, sizeof(d));
}

static void setup_queue(struct vmmio_dev *dp, unsigned qi, uint32_t num)
{
	struct vmmio_dev d;
	memcpy(&d, dp, sizeof(d));
	W(VIRTIO_MMIO_QUEUE_SEL, qi);
	W(VIRTIO_MMIO_QUEUE_NUM, num);
	W(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x10000);
	W(VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
	W(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x20000);
	W(VIRTIO_MMIO_QUEUE_USED_LOW, 0x30000);
	W(VIRTIO_MMIO_QUEUE_READY, 1);
	memcpy(dp, &d, sizeof(d));
}

#define FULL (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK)
#define V1 (1ULL << VIRTIO_F_VERSION_1)

static void test_identity_registers(void **state)
{
	(void)state;
	struct vmmio_dev d;
	vmmio_init(&d, 2, 1ULL << 6, 1, 256, &ops, NULL);
	assert_int_equal(R(VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
	assert_int_equal(R(VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(R(VIRTIO_MMIO_DEVICE_ID), 2);
	assert_int_equal(R(VIRTIO_MMIO_DEVICE_FEATURES), 1u << 6);
	W(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(R(VIRTIO_MMIO_DEVICE_FEATURES), 1u << (VIRTIO_F_VERSION_1 - 32));
	W(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
	assert_int_equal(R(VIRTIO_MMIO_DEVICE_FEATURES), 0);
	/* misaligned and short accesses read nothing */
	assert_int_equal(vmmio_read(&d, 2, 4), 0);
	assert_int_equal(vmmio_read(&d, 0, 2), 0);
}

static void test_driver_sets_the_device_up(void **state)
{
	(void)state;
	struct calls c = { 0 };
	struct vmmio_dev d;
	vmmio_init(&d, 2, (1ULL << VIRTIO_F_EVENT_IDX) | (1ULL << 9), 2, 256, &ops, &c);
	negotiate(&d, V1 | (1ULL << VIRTIO_F_EVENT_IDX));
	assert_int_equal(R(VIRTIO_MMIO_STATUS), FULL);
	assert_true(vmmio_feature(&d, VIRTIO_F_EVENT_IDX));
	assert_false(vmmio_feature(&d, 9));
	setup_queue(&d, 0, 128);
	setup_queue(&d, 1, 256);
	assert_int_equal(d.q[0].desc, 0x100010000ULL);
	assert_int_equal(d.q[0].num, 128);
	assert_true(d.q[1].ready);
	W(VIRTIO_MMIO_STATUS, FULL | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(c.driver_ok, 1);
	assert_int_equal(R(VIRTIO_MMIO_STATUS), FULL | VIRTIO_STATUS_DRIVER_OK);
	W(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	assert_int_equal(c.notify, 1);
	assert_int_equal(c.last_queue, 1);
	W(VIRTIO_MMIO_QUEUE_NOTIFY, 5); /* no such queue */
	assert_int_equal(c.notify, 1);
	vmmio_raise(&d, 1);
	assert_int_equal(R(VIRTIO_MMIO_INTERRUPT_STATUS), 1);
	W(VIRTIO_MMIO_INTERRUPT_ACK, 1);
	assert_int_equal(R(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	/* reset */
	W(VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(c.reset, 1);
	assert_int_equal(R(VIRTIO_MMIO_STATUS), 0);
	assert_false(d.q[0].ready);
	assert_int_equal(d.q[0].desc, 0);
	assert_int_equal(d.q[0].num_max, 256);
	assert_false(vmmio_feature(&d, VIRTIO_F_EVENT_IDX));
}

static void test_unoffered_or_legacy_features_are_refused(void **state)
{
	(void)state;
	struct vmmio_dev d;
	vmmio_init(&d, 2, 0, 1, 256, &ops, NULL);
	negotiate(&d, V1 | (1ULL << 3)); /* bit 3 not offered */
	assert_int_equal(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
	vmmio_init(&d, 2, 0, 1, 256, &ops, NULL);
	negotiate(&d, 0); /* legacy driver: no VERSION_1 */
	assert_int_equal(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
}

static void test_protocol_violations_ask_for_reset(void **state)
{
	(void)state;
	struct calls c = { 0 };
	struct vmmio_dev d;
	/* DRIVER_OK without FEATURES_OK */
	vmmio_init(&d, 2, 0, 1, 256, &ops, &c);
	W(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
	assert_true(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(c.driver_ok, 0);
	/* a queue size that is not a power of two, or above the maximum */
	vmmio_init(&d, 2, 0, 1, 256, &ops, &c);
	negotiate(&d, V1);
	setup_queue(&d, 0, 100);
	assert_false(d.q[0].ready);
	assert_true(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	vmmio_init(&d, 2, 0, 1, 256, &ops, &c);
	negotiate(&d, V1);
	setup_queue(&d, 0, 512);
	assert_false(d.q[0].ready);
	/* changing a queue while it is in use */
	vmmio_init(&d, 2, 0, 1, 256, &ops, &c);
	negotiate(&d, V1);
	setup_queue(&d, 0, 64);
	W(VIRTIO_MMIO_STATUS, FULL | VIRTIO_STATUS_DRIVER_OK);
	W(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
	assert_int_equal(d.q[0].desc, 0x100010000ULL);
	assert_true(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_true(R(VIRTIO_MMIO_INTERRUPT_STATUS) & 2); /* told through a config interrupt */
	/* features after FEATURES_OK */
	vmmio_init(&d, 2, 0, 1, 256, &ops, &c);
	negotiate(&d, V1);
	W(VIRTIO_MMIO_DRIVER_FEATURES, 0);
	assert_true(R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	/* a reset clears it */
	W(VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(R(VIRTIO_MMIO_STATUS), 0);
	/* queue selector past the last queue: reads 0, writes ignored */
	W(VIRTIO_MMIO_QUEUE_SEL, 99);
	assert_int_equal(R(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	W(VIRTIO_MMIO_QUEUE_READY, 1);
	W(VIRTIO_MMIO_QUEUE_NUM, 8);
}

static void test_rendered_page_matches_reads(void **state)
{
	(void)state;
	struct vmmio_dev d;
	vmmio_init(&d, 3, 1ULL << 0, 2, 128, &ops, NULL);
	d.q[1].num_max = 64;
	d.config_len = 12;
	for (int i = 0; i < 12; i++)
		d.config[i] = (uint8_t)(0xa0 + i);
	uint8_t page[4096];
	for (uint32_t sel = 0; sel < 3; sel++) {
		W(VIRTIO_MMIO_QUEUE_SEL, sel);
		vmmio_render(&d, page);
		for (uint32_t off = 0; off < 0x100; off += 4) {
			uint32_t v;
			memcpy(&v, page + off, 4);
			assert_int_equal(v, R(off));
		}
		uint32_t qmax;
		memcpy(&qmax, page + VIRTIO_MMIO_QUEUE_NUM_MAX, 4);
		assert_int_equal(qmax, sel == 0 ? 128 : sel == 1 ? 64 : 0);
	}
	assert_int_equal(page[0x100 + 5], 0xa5);
	assert_int_equal(vmmio_read(&d, 0x100 + 4, 2), 0xa5a4);
	assert_int_equal(vmmio_read(&d, 0x100 + 11, 2), 0); /* past the end */
	assert_int_equal(page[0x100 + 12], 0);
}

static void test_random_writes_never_break_invariants(void **state)
{
	(void)state;
	struct unit_rng rng = { 5 };
	static const uint32_t offs[] = {
		VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL,
		VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_NOTIFY,
		VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH,
		0x100, 0xffc, 0x3,
	};
	struct calls c = { 0 };
	struct vmmio_dev d;
	vmmio_init(&d, 2, 1ULL << 29, 2, 256, &ops, &c);
	for (int i = 0; i < 200000; i++) {
		uint32_t off = offs[unit_rand_below(&rng, ARRAY_LEN(offs))];
		uint32_t v = (uint32_t)unit_rand64(&rng);
		if (unit_rand_below(&rng, 2))
			v &= 0x1ff;
		vmmio_write(&d, off, unit_rand_below(&rng, 8) ? 4 : 1, v);
		uint32_t st = d.status;
		if ((st & VIRTIO_STATUS_DRIVER_OK) && !(st & VIRTIO_STATUS_NEEDS_RESET))
			assert_true(st & VIRTIO_STATUS_FEATURES_OK);
		for (unsigned q = 0; q < d.n_queues; q++)
			if (d.q[q].ready)
				assert_true(d.q[q].num && d.q[q].num <= d.q[q].num_max && !(d.q[q].num & (d.q[q].num - 1)));
		assert_int_equal(d.driver_features & ~d.device_features & (st & VIRTIO_STATUS_FEATURES_OK ? ~0ULL : 0), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity_registers),
		cmocka_unit_test(test_driver_sets_the_device_up),
		cmocka_unit_test(test_unoffered_or_legacy_features_are_refused),
		cmocka_unit_test(test_protocol_violations_ask_for_reset),
		cmocka_unit_test(test_rendered_page_matches_reads),
		cmocka_unit_test(test_random_writes_never_break_invariants),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
