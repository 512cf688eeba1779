/* fsprobe.h - which file system an image holds, from its superblock (on the
 * host, before anything touches the guest): the type the guest's mount(2)
 * is given. */
#ifndef VMSH_CLI_FSPROBE_H
#define VMSH_CLI_FSPROBE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes from the start of an image that fs_probe_buf needs (btrfs keeps
 * its superblock at 64 KiB). */
#define FS_PROBE_LEN (65536 + 4096)

/* "ext4" (for ext2/3/4), "squashfs", "erofs", "xfs", "btrfs", "iso9660", or
 * NULL if buf (the first len bytes of the image) holds none of them. */
const char *fs_probe_buf(const uint8_t *buf, size_t len);
/* The same for an open file or block device. */
const char *fs_probe_fd(int fd);

/* The kernel module of a type fs_probe_buf names ("isofs" for iso9660). */
const char *fs_module(const char *fstype);

/* The types fs_probe knows, for messages. */
#define FS_PROBE_KNOWN "ext2/3/4, squashfs, erofs, xfs, btrfs, iso9660"

#endif
