/* fuzz_kernel.c - finding the guest kernel in guest memory the fuzzer
 * writes: kernel_paging_plausible and kernel_find (kernel.c: page tables
 * from CR3 with PTI pairs, the image copy, banner, export table), then what
 * vmsh reads through the result - kernel_read_virt and the iomem_resource
 * tree walk (iomem_read, iomem.c). Guest memory is a struct guest_mem whose
 * one range is our RAM buffer (local mapping, as for shared guest RAM).
 *
 * Invariants: no crash or sanitizer report; a found kernel's image size is
 * bounded and its text base lies in the kernel map; iomem entries are
 * bounded in number and depth, with NUL-terminated printable names. Slow
 * paths are timeouts (-timeout).
 *
 * Input: u8 flags (1: 5-level paging), u32 CR3, u64 RIP, then the RAM image
 * from gpa 0. */
#include "fuzz.h"

#include "guest/iomem.h"
#include "guest/kernel.h"
#include "guest/memmap.h"

#define RAM (1u << 20)
#define MAX_IOMEM 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size };
	uint8_t flags = fz_u8(&f);
	struct cpu_paging c = {
		.cr0 = 1ULL << 31,
		.cr4 = (1ULL << 5) | (flags & 1 ? 1ULL << 12 : 0),
		.efer = 1ULL << 10,
	};
	c.cr3 = fz_u32(&f);
	c.rip = fz_u64(&f);
	size_t img_len;
	const uint8_t *img = fz_rest(&f, &img_len);
	struct fuzz_ram ram;
	fuzz_ram_reset(&ram, RAM, img, img_len);

	struct guest_mem gm;
	guest_mem_init(&gm, 0);
	struct guest_range r = { .gpa = 0, .size = RAM, .hva = 0x1000, .local = ram.buf, .kind = "System RAM" };
	if (guest_mem_add(&gm, &r) < 0)
		abort();
	struct memmap_evidence ev = { .above_limit = (1ULL << 32) + RAM, .hole_lo = RAM };
	if (kernel_paging_plausible(&gm, &c, &ev) == 1 && ev.high_end && (ev.high_end <= 1ULL << 32 || ev.high_end > ev.above_limit + (1ULL << 30)))
		abort(); /* a reference outside the window asked for */
	struct guest_kernel k;
	struct vmsh_err err = { 0 };
	int rc = kernel_find(&gm, &c, &k, &err);
	FUZZ_LOG("kernel_find %d: %s; %s, %llu symbols\n", rc, rc ? err.msg : "ok", k.version,
		 (unsigned long long)k.ksyms.n);
	if (rc == 0 || k.image) {
		FUZZ_CHECK(k.image_size <= (512ULL << 20), "image of %llu bytes", (unsigned long long)k.image_size);
		FUZZ_CHECK(k.text_base >= pt_canonical(KERNEL_MAP_START, k.pt.levels), "text base %#llx",
			   (unsigned long long)k.text_base);
		FUZZ_CHECK(memchr(k.version, 0, sizeof(k.version)) && memchr(k.banner, 0, sizeof(k.banner)),
			   "unterminated version/banner");
		uint8_t buf[256];
		(void)kernel_read_virt(&gm, &k, k.text_base, buf, sizeof(buf));
		(void)kernel_read_virt(&gm, &k, c.rip, buf, 3);
		if (rc == 0) {
			struct iomem_entry e[MAX_IOMEM];
			int n = iomem_read(&gm, &k, e, MAX_IOMEM, &err);
			FUZZ_CHECK(n <= MAX_IOMEM, "%d iomem entries", n);
			FUZZ_LOG("iomem: %d entries%s%s\n", n, n < 0 ? ": " : "", n < 0 ? err.msg : "");
			for (int i = 0; i < n; i++) {
				FUZZ_CHECK(e[i].depth >= 0 && e[i].depth < 5, "depth %d", e[i].depth);
				FUZZ_CHECK(memchr(e[i].name, 0, sizeof(e[i].name)), "unterminated name");
				for (const char *p = e[i].name; *p; p++)
					FUZZ_CHECK(*p >= ' ' && *p <= '~', "name byte %#x", (unsigned)(uint8_t)*p);
			}
			if (n > 0) {
				struct ram_range rr[MAX_IOMEM];
				(void)iomem_system_ram(e, (size_t)n, rr, MAX_IOMEM);
			}
		}
		kernel_free(&k);
	}
	guest_mem_free(&gm);
	return 0;
}
