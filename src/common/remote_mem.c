/* remote_mem.c - reading and writing another process's memory (see remote_mem.h). */
#include <sys/uio.h>

#include "common/remote_mem.h"

ssize_t remote_read(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
	return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

ssize_t remote_write(pid_t pid, uint64_t addr, const void *buf, size_t len)
{
	struct iovec local = { .iov_base = (void *)buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = len };
	return process_vm_writev(pid, &local, 1, &remote, 1, 0);
}

ssize_t remote_readv(pid_t pid, const struct iovec *local, const struct iovec *remote, size_t n)
{
	return process_vm_readv(pid, local, n, remote, n, 0);
}

ssize_t remote_writev(pid_t pid, const struct iovec *local, const struct iovec *remote, size_t n)
{
	return process_vm_writev(pid, local, n, remote, n, 0);
}
