/* iomem.h - the guest kernel's own map of physical memory (iomem_resource,
 * what /proc/iomem prints), read from guest memory. */
#ifndef VMSH_IOMEM_H
#define VMSH_IOMEM_H

#include "guest/kernel.h"
#include "guest/memmap.h"

struct iomem_entry {
	uint64_t start, end; /* inclusive end, as the kernel keeps it */
	char name[48];
	int depth;
};

/* Walk the resource tree (bounded: max entries, depth 4). Entries in tree
 * order. Returns the number of entries or -1. */
int iomem_read(struct guest_mem *gm, const struct guest_kernel *k, struct iomem_entry *out, size_t max,
	       struct vmsh_err *err);
/* Top-level "System RAM" entries, widened to whole pages. */
/* Is [gpa, gpa+size) clear of everything in the guest's own map (RAM, PCI
 * windows, reserved ranges such as AMD's HyperTransport hole)? */
bool iomem_range_free(const struct iomem_entry *e, size_t n, uint64_t gpa, uint64_t size);
/* The highest gpa, a multiple of align (a power of two), with [gpa, gpa+size)
 * inside [low, high) and clear of every top-level entry of the guest's map;
 * 0 when there is none.  Placing vmsh's memory at the top of the guest's
 * physical address space keeps it away from where hypervisors add memory
 * later (hotplugged DIMMs start right above RAM). */
uint64_t iomem_free_top(const struct iomem_entry *e, size_t n, uint64_t size, uint64_t align, uint64_t low,
			uint64_t high);
size_t iomem_system_ram(const struct iomem_entry *e, size_t n, struct ram_range *out, size_t max);

#endif
