/* remote_mem.h - another process's memory, read and written without
 * stopping it (process_vm_readv/writev): the hypervisor's, and through its
 * mappings the guest's. Next to procfs.h, which says where that memory is. */
#ifndef VMSH_REMOTE_MEM_H
#define VMSH_REMOTE_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Bytes transferred (possibly fewer than len at the end of a mapping), or
 * -1 with errno. */
ssize_t remote_read(pid_t pid, uint64_t addr, void *buf, size_t len);
ssize_t remote_write(pid_t pid, uint64_t addr, const void *buf, size_t len);
/* Several pieces in one call: local[i] from/to remote[i], n of each (at most
 * IOV_MAX). The pieces are transferred in array order, each complete before
 * the next begins (process_vm_readv(2)), so a later piece is never seen
 * before an earlier one. Bytes transferred, or -1 with errno. */
ssize_t remote_readv(pid_t pid, const struct iovec *local, const struct iovec *remote, size_t n);
ssize_t remote_writev(pid_t pid, const struct iovec *local, const struct iovec *remote, size_t n);

#endif
