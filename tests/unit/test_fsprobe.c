/* test_fsprobe.c - an image's file system from its superblock: real images
 * made by the Debian tools where the host has them (mke2fs always), and
 * each magic planted in an otherwise empty buffer. */
#include "unit.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/fsprobe.h"

static uint8_t *blank(void)
{
	uint8_t *b = calloc(1, FS_PROBE_LEN);
	assert_non_null(b);
	return b;
}

static void test_each_magic(void **state)
{
	uint8_t *b = blank();
	assert_null(fs_probe_buf(b, FS_PROBE_LEN));
	memcpy(b + 1080, "\x53\xef", 2);
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "ext4");
	memcpy(b, "hsqs", 4); /* squashfs wins: its data may hold anything at 1080 */
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "squashfs");
	free(b);
	b = blank();
	memcpy(b, "XFSB", 4);
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "xfs");
	free(b);
	b = blank();
	memcpy(b + 1024, "\xe2\xe1\xf5\xe0", 4);
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "erofs");
	free(b);
	b = blank();
	memcpy(b + 65536 + 64, "_BHRfS_M", 8);
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "btrfs");
	assert_null(fs_probe_buf(b, 65536 + 64 + 7)); /* a short image */
	free(b);
	b = blank();
	memcpy(b + 32769, "CD001", 5);
	assert_string_equal(fs_probe_buf(b, FS_PROBE_LEN), "iso9660");
	free(b);
}

static void test_real_ext4_image_and_a_short_file(void **state)
{
	char path[] = "/tmp/vmsh-fsprobe-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4 << 20), 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "mke2fs -q -F -t ext4 %s >/dev/null 2>&1", path);
	assert_int_equal(system(cmd), 0);
	assert_string_equal(fs_probe_fd(fd), "ext4");
	assert_int_equal(ftruncate(fd, 100), 0);
	assert_null(fs_probe_fd(fd));
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_magic),
		cmocka_unit_test(test_real_ext4_image_and_a_short_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
