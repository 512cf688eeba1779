/* guestmem.h - guest-physical memory as ranges of the hypervisor's address
 * space, read with process_vm_readv while the guest keeps running. */
#ifndef VMSH_GUESTMEM_H
#define VMSH_GUESTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct guest_range {
	uint64_t gpa, size;
	uint64_t hva;          /* 0 if unknown */
	char backing[256];     /* /proc/PID/maps path of the host mapping, "[anon]" */
	bool shared;           /* MAP_SHARED backing (memfd, file, hugetlbfs) */
	bool verified;         /* host address confirmed by guest content, or by KVM (by_slot) */
	bool by_slot;          /* placed because KVM has a memory slot of exactly that memory */
	const char *kind;      /* "System RAM" or what the guest calls it */
	uint8_t *local;        /* vmsh's own mapping of it (shared backings only), or NULL */
};

struct guest_mem {
	pid_t pid;
	struct guest_range *r;
	size_t n, cap;
	uint64_t reads, bytes_read; /* statistics */
	uint64_t remote_calls;       /* process_vm_readv/writev made */
	uint64_t remote_bytes;       /* and the bytes they moved, either way */
	/* While memmap_bootstrap tests a candidate mapping, reads may use
	 * ranges not verified yet (content checks need them); writes never. */
	bool probing;
	struct { void *base; size_t len; } *maps; /* vmsh's mappings of shared backings */
	size_t n_maps;
};

void guest_mem_init(struct guest_mem *gm, pid_t pid);
void guest_mem_free(struct guest_mem *gm);
int guest_mem_add(struct guest_mem *gm, const struct guest_range *r);
void guest_mem_clear(struct guest_mem *gm);
/* Range containing gpa with a known and verified host address (or, while
 * probing, any known one), or NULL. Unverified ranges are never used. */
const struct guest_range *guest_mem_find(const struct guest_mem *gm, uint64_t gpa);
/* Read len bytes at gpa (may span ranges). 0 on success, -1 if any part is
 * outside known memory or unreadable. */
int guest_mem_read(struct guest_mem *gm, uint64_t gpa, void *buf, size_t len);
/* Write len bytes at gpa (same rules as guest_mem_read). */
int guest_mem_write(struct guest_mem *gm, uint64_t gpa, const void *buf, size_t len);
/* One piece of a vectored access: len bytes at gpa, from or into buf. */
struct guest_iov {
	uint64_t gpa;
	void *buf;
	size_t len;
};
/* Read or write n pieces (same rules as guest_mem_read/write) in array
 * order: each piece is complete before the next begins, so the guest never
 * sees a later piece before an earlier one (a ring entry before its index).
 * Pieces in process memory go in as few process_vm_readv/writev calls as
 * possible (one for up to GUEST_IOV_BATCH of them: a block request's 126
 * data segments and its completion). -1 if any piece is
 * refused; the pieces before it may have been transferred. */
#define GUEST_IOV_BATCH 136
int guest_mem_readv(struct guest_mem *gm, const struct guest_iov *v, size_t n);
int guest_mem_writev(struct guest_mem *gm, const struct guest_iov *v, size_t n);
/* Does [gpa, gpa+len) lie in verified ranges (readable and writable by the
 * rules above)? A table lookup, no access: a range whose host memory went
 * away still fails at the access itself. */
bool guest_mem_contains(const struct guest_mem *gm, uint64_t gpa, uint64_t len);
/* Map the ranges whose host memory is a shared mapping (memfd, file,
 * hugetlbfs) into vmsh too (through /proc/PID/map_files), so that reads and
 * writes there are plain copies. Ranges that cannot be mapped keep using
 * process_vm_readv/writev. Returns how many ranges were mapped. */
size_t guest_mem_map_shared(struct guest_mem *gm);
/* vmsh's pointer to [gpa, gpa+len) if one mapped range holds all of it. */
uint8_t *guest_mem_ptr(const struct guest_mem *gm, uint64_t gpa, size_t len);
/* Does vmsh map every verified range itself (shared backings: an access is
 * a copy, no syscall)? False with no verified range. */
bool guest_mem_all_local(const struct guest_mem *gm);
/* pagetable.h's read callback over a struct guest_mem. */
int guest_mem_read_page(void *gm, uint64_t gpa, uint64_t page[512]);

#endif
