/* elfcore.h - a guest's memory and vCPU state as an ELF64 core file (ET_CORE),
 * in the layout kdump, QEMU's dump-guest-memory and the reference use, which
 * crash and gdb open:
 *
 *   PT_NOTE   NT_PRSTATUS per vCPU ("CORE": general registers in
 *             user_regs_struct order, the thread id = vCPU index + 1), then a
 *             "VMCOREINFO" note (kdump's text: OSRELEASE=, KERNELOFFSET=, ...)
 *   PT_LOAD   one per guest RAM range: p_paddr = guest-physical address,
 *             p_vaddr = its address in the kernel's direct map (0 if unknown)
 *   PT_LOAD   optionally the kernel image mapping (_text...): p_vaddr = its
 *             kernel address, the same file bytes as the RAM range holding it
 *
 * The writer only formats: where the bytes come from is the caller's read
 * callback, so the same code serves a stopped VM, a live one and a snapshot. */
#ifndef VMSH_ELFCORE_H
#define VMSH_ELFCORE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct core_segment {
	uint64_t gpa, size;
	uint64_t vaddr; /* kernel direct-map address of gpa, 0 if unknown */
};

struct core_vcpu {
	int index;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
};

/* Read len bytes of guest-physical memory at gpa into buf: 0, or -1 with errno. */
typedef int (*core_read_fn)(void *opaque, uint64_t gpa, void *buf, size_t len);

struct core_opts {
	const struct core_segment *segs; /* sorted, non-overlapping, page-aligned */
	size_t n_segs;
	const struct core_vcpu *vcpus;
	size_t n_vcpus;
	const char *vmcoreinfo;          /* note text, or NULL */
	uint64_t ktext_vaddr, ktext_paddr, ktext_size; /* kernel image alias; size 0: none */
	core_read_fn read;
	void *opaque;
	/* called every 64 MiB and at the end (may be NULL) */
	void (*progress)(void *progress_opaque, uint64_t done, uint64_t total);
	void *progress_opaque;
};

struct core_stats {
	uint64_t file_size;   /* logical size of the core */
	uint64_t ram_bytes;   /* guest RAM covered */
	uint64_t zero_bytes;  /* of which were zero pages left as holes (seekable output only) */
};

/* Write the core to fd, from its current position, which must be 0 when fd
 * is seekable (zero pages then become holes; otherwise they are written). */
int core_write(int fd, const struct core_opts *o, struct core_stats *st, struct vmsh_err *err);

/* The header part alone (ELF header, program headers, notes), for tests and
 * for sizing: its length, or 0 when it does not fit in cap. */
size_t core_headers(const struct core_opts *o, uint8_t *buf, size_t cap);

#endif
