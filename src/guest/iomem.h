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
size_t iomem_system_ram(const struct iomem_entry *e, size_t n, struct ram_range *out, size_t max);

#endif
