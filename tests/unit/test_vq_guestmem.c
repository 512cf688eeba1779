/* test_vq_guestmem.c - the devices' memory access on a guest memory map
 * (src/devices/vq_guestmem.c): vectored accesses keep their pieces together,
 * one process_vm_readv/writev for a whole request where guest memory is
 * another process's (here: this process's own, reached the same way). */
#include "unit.h"

#include <sys/mman.h>
#include <unistd.h>

#include "devices/vq_guestmem.h"

#define PAGES 160
#define GPA 0x100000ULL

static void test_a_request_is_one_call(void **state)
{
	(void)state;
	uint8_t *ram = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(ram != MAP_FAILED);
	struct guest_mem gm;
	guest_mem_init(&gm, getpid());
	struct guest_range r = { .gpa = GPA, .size = PAGES * 4096, .hva = (uintptr_t)ram, .verified = true };
	assert_int_equal(guest_mem_add(&gm, &r), 0);
	struct vq_mem mem;
	vq_mem_of_guest(&mem, &gm);

	/* 126 data pages, every other guest page (not contiguous), then a
	 * status byte, a used entry and an index: what a completed 504 KiB
	 * read writes */
	static uint8_t data[126][4096];
	struct vq_iov v[130];
	for (size_t i = 0; i < 126; i++) {
		memset(data[i], (int)(i + 1), 4096);
		v[i] = (struct vq_iov){ GPA + (i % 80) * 2 * 4096 + (i >= 80 ? 4096 : 0), data[i], 4096 };
	}
	uint8_t status = 0;
	uint64_t used = 0x1234;
	uint16_t idx = 7;
	v[126] = (struct vq_iov){ GPA + 159 * 4096, &status, 1 };
	v[127] = (struct vq_iov){ GPA + 159 * 4096 + 8, &used, 8 };
	v[128] = (struct vq_iov){ GPA + 159 * 4096 + 2, &idx, 2 };
	uint64_t calls = gm.remote_calls, bytes = gm.remote_bytes;
	assert_int_equal(mem.writev(mem.opaque, v, 129), 0);
	assert_int_equal(gm.remote_calls - calls, 1);
	/* the bytes moved are counted (the bench's bytes copied per byte served) */
	assert_int_equal(gm.remote_bytes - bytes, 126 * 4096 + 1 + 8 + 2);
	for (size_t i = 0; i < 126; i++)
		assert_int_equal(ram[(i % 80) * 2 * 4096 + (i >= 80 ? 4096 : 0) + 100], (uint8_t)(i + 1));
	assert_memory_equal(ram + 159 * 4096 + 8, &used, 8);
	/* and read back the same way */
	static uint8_t back[126][4096];
	for (size_t i = 0; i < 126; i++)
		v[i].buf = back[i];
	calls = gm.remote_calls;
	bytes = gm.remote_bytes;
	assert_int_equal(mem.readv(mem.opaque, v, 126), 0);
	assert_int_equal(gm.remote_calls - calls, 1);
	assert_int_equal(gm.remote_bytes - bytes, 126 * 4096);
	assert_memory_equal(back, data, sizeof(data));
	/* a piece outside guest memory: refused */
	struct vq_iov bad = { GPA + PAGES * 4096, &status, 1 };
	assert_int_equal(mem.writev(mem.opaque, &bad, 1), -1);
	guest_mem_free(&gm);
	munmap(ram, PAGES * 4096);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_request_is_one_call),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
