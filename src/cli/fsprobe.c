/* fsprobe.c - an image's file system from its superblock (see fsprobe.h). */
#include "cli/fsprobe.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
	const char *type;
	size_t off;
	const char *magic;
	size_t len;
} magics[] = {
	/* 4-byte magics at 0 first: compressed data after them may hold
	 * anything at ext's 2-byte magic offset (mke2fs clears the start) */
	{ "squashfs", 0, "hsqs", 4 },                /* 0x73717368, little endian */
	{ "xfs", 0, "XFSB", 4 },
	{ "erofs", 1024, "\xe2\xe1\xf5\xe0", 4 },   /* 0xE0F5E1E2 */
	{ "ext4", 1024 + 56, "\x53\xef", 2 },       /* s_magic 0xEF53 (ext2, ext3, ext4) */
	{ "btrfs", 65536 + 64, "_BHRfS_M", 8 },
	{ "iso9660", 32768 + 1, "CD001", 5 },
};

const char *fs_probe_buf(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++)
		if (magics[i].off + magics[i].len <= len && !memcmp(buf + magics[i].off, magics[i].magic, magics[i].len))
			return magics[i].type;
	return NULL;
}

const char *fs_module(const char *fstype)
{
	return strcmp(fstype, "iso9660") ? fstype : "isofs";
}

const char *fs_probe_fd(int fd)
{
	uint8_t *buf = calloc(1, FS_PROBE_LEN);
	if (!buf)
		return NULL;
	size_t got = 0;
	while (got < FS_PROBE_LEN) {
		ssize_t n = pread(fd, buf + got, FS_PROBE_LEN - got, (off_t)got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	const char *t = fs_probe_buf(buf, got);
	free(buf);
	return t;
}
