/* fuzz_memmap.c - the guest's memory map as vmsh builds it: the guest's own
 * list of RAM ranges (iomem_resource, guest-controlled: iomem_system_ram),
 * matched to the hypervisor's mappings (memmap_refine, which reads
 * /proc/PID/maps - here a fuzzed list, through -Wl,--wrap), then guest
 * memory reads and writes through the result (guestmem.c, process_vm_readv
 * on ourselves).
 *
 * The setup is a scaled-down hypervisor: a guest-RAM mapping M that backs
 * KVM slot A at gpa 0 and, optionally, slot B (the "above 4 GiB" part, qemu
 * pc style) with its upper part; optionally a second mapping M2 backing its
 * own slot (Firecracker style, one mapping per region); and decoy read-write
 * mappings that back no slot (thread stacks, heap). M and M2 are real memory
 * of this process; the decoys lie in a PROT_NONE reservation, so a stray
 * access faults instead of corrupting us.
 *
 * The invariant (DESIGN.md section 5, issue 9 item 1): every host range in
 * the resulting map lies inside a slot-backed mapping, ranges neither wrap
 * nor overlap. Reads and writes at fuzzed addresses then must stay there
 * too (they do if the map is right: guestmem only uses the map).
 *
 * Input: a setup header, iomem entries, then read/write operations. */
#include "fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

#include "common/procfs.h"
#include "guest/iomem.h"
#include "guest/memmap.h"

#define PAGE 4096ULL
#define UNIT (64ULL << 10) /* memmap_is_candidate's minimum size */
#define POOL (4ULL << 20)
#define DECOY_SPAN (4ULL << 20)
#define MAX_DECOYS 3
#define MAX_ENTRIES 32
#define MAX_OPS 16

struct slot {
	uint64_t gpa, size, hva;
};

/* The fuzzed hypervisor. procfs_read_maps has no context argument, so
 * the wrapper reads the current setup from here (one input at a time). */
static struct setup {
	struct proc_map maps[2 + MAX_DECOYS + 2];
	size_t n_maps;
	struct slot slots[3];
	size_t n_slots;
	uint64_t backed_start[2], backed_end[2]; /* M, M2 */
	size_t n_backed;
} S;

int __real_procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err);
int __wrap_procfs_read_maps(pid_t pid, struct proc_map **maps, size_t *n, struct vmsh_err *err)
{
	(void)pid;
	(void)err;
	*maps = malloc(sizeof(S.maps));
	if (!*maps)
		abort();
	memcpy(*maps, S.maps, S.n_maps * sizeof(S.maps[0]));
	*n = S.n_maps;
	return 0;
}

static uint8_t *pool, *reserve;

static void add_map(uint64_t start, uint64_t size, const char *perms, const char *path)
{
	struct proc_map *m = &S.maps[S.n_maps++];
	memset(m, 0, sizeof(*m));
	m->start = start;
	m->end = start + size;
	snprintf(m->perms, sizeof(m->perms), "%s", perms);
	snprintf(m->path, sizeof(m->path), "%s", path);
}

static int cmp_map(const void *a, const void *b)
{
	const struct proc_map *x = a, *y = b;
	return (x->start > y->start) - (x->start < y->start);
}

/* Is [hva, hva+size) inside one slot-backed mapping? */
static bool backed(uint64_t hva, uint64_t size)
{
	for (size_t i = 0; i < S.n_backed; i++)
		if (hva >= S.backed_start[i] && hva <= S.backed_end[i] && size <= S.backed_end[i] - hva)
			return true;
	return false;
}

static void check_map(const struct guest_mem *gm)
{
	for (size_t i = 0; i < gm->n; i++) {
		const struct guest_range *r = &gm->r[i];
		FUZZ_CHECK(r->size > 0 && r->size - 1 <= UINT64_MAX - r->gpa,
			   "range %zu: gpa %#llx size %#llx wraps", i, (unsigned long long)r->gpa,
			   (unsigned long long)r->size);
		if (i > 0)
			FUZZ_CHECK(gm->r[i - 1].gpa + gm->r[i - 1].size <= r->gpa, "ranges %zu and %zu overlap",
				   i - 1, i);
		if (!r->hva)
			continue;
		FUZZ_CHECK(backed(r->hva, r->size),
			   "range %zu: gpa %#llx size %#llx -> host %#llx (%s) is not inside a slot-backed mapping "
			   "(M %#llx+%#llx, M2 %#llx+%#llx)",
			   i, (unsigned long long)r->gpa, (unsigned long long)r->size, (unsigned long long)r->hva,
			   r->backing, (unsigned long long)S.backed_start[0],
			   (unsigned long long)(S.backed_end[0] - S.backed_start[0]),
			   (unsigned long long)(S.n_backed > 1 ? S.backed_start[1] : 0),
			   (unsigned long long)(S.n_backed > 1 ? S.backed_end[1] - S.backed_start[1] : 0));
	}
}

static const char *const names[] = { "System RAM", "Reserved", "PCI Bus 0000:00", "ACPI Tables" };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!pool) {
		pool = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		reserve = mmap(NULL, MAX_DECOYS * DECOY_SPAN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			       0);
		if (pool == MAP_FAILED || reserve == MAP_FAILED)
			abort();
	}
	struct fz f = { data, size };
	memset(&S, 0, sizeof(S));

	/* the hypervisor */
	uint8_t flags = fz_u8(&f);
	uint64_t msize = UNIT * (1 + fz_u8(&f) % 16);          /* M: up to 1 MiB */
	uint64_t low = (msize * fz_u8(&f) / 256) & ~(PAGE - 1); /* slot A's part of M */
	bool high = (flags & 1) && low > 0 && low < msize;
	if (!high)
		low = msize;
	uint64_t m = (uint64_t)(uintptr_t)pool;
	S.slots[S.n_slots++] = (struct slot){ 0, low, m };
	uint64_t top = low;
	if (high) {
		uint64_t hgpa = low + PAGE * fz_u16(&f); /* the hole below it (qemu: PCI) */
		S.slots[S.n_slots++] = (struct slot){ hgpa, msize - low, m + low };
		top = hgpa + msize - low;
	}
	add_map(m, msize, "rw-p", "");
	S.backed_start[S.n_backed] = m;
	S.backed_end[S.n_backed++] = m + msize;
	if (flags & 2) {
		uint64_t m2size = UNIT * (1 + fz_u8(&f) % 16);
		uint64_t m2 = m + (2ULL << 20);
		uint64_t g2 = top + PAGE * fz_u16(&f);
		S.slots[S.n_slots++] = (struct slot){ g2, m2size, m2 };
		add_map(m2, m2size, "rw-p", "/memfd:ram2 (deleted)");
		S.backed_start[S.n_backed] = m2;
		S.backed_end[S.n_backed++] = m2 + m2size;
	}
	unsigned decoys = (flags >> 2) % (MAX_DECOYS + 1);
	for (unsigned i = 0; i < decoys; i++) {
		/* read-write, big enough to look like RAM, backing no slot */
		uint64_t dsize = UNIT * (1 + fz_u8(&f) % 64);
		add_map((uint64_t)(uintptr_t)reserve + i * DECOY_SPAN, dsize, "rw-p", i == 1 ? "[heap]" : "");
	}
	add_map(0x7ffff7000000ULL, 0x21000, "rw-p", "[stack]");
	qsort(S.maps, S.n_maps, sizeof(S.maps[0]), cmp_map);

	/* the guest's iomem list */
	struct iomem_entry e[MAX_ENTRIES];
	size_t ne = fz_u8(&f) % (MAX_ENTRIES + 1);
	for (size_t i = 0; i < ne; i++) {
		uint8_t k = fz_u8(&f);
		e[i].start = fz_u64(&f);
		e[i].end = fz_u64(&f);
		e[i].depth = (k >> 2) & 3;
		snprintf(e[i].name, sizeof(e[i].name), "%s", names[k & 3]);
	}
	struct ram_range ram[MAX_ENTRIES];
	size_t nr = iomem_system_ram(e, ne, ram, MAX_ENTRIES);
	uint64_t probe = fz_u64(&f);
	(void)iomem_range_free(e, ne, probe & ~(PAGE - 1), PAGE * (1 + (probe & 0xf)));

	/* memmap_bootstrap's result: gpa 0 at the start of M, confirmed by
	 * content; or M split at the 4 GiB hole (the rest of M from 4 GiB up);
	 * or (bit 1) split the other way round: M's first part from 4 GiB up,
	 * the rest from 0 (two slots' mappings merged) */
	struct guest_mem gm;
	guest_mem_init(&gm, getpid());
	uint8_t sel = fz_u8(&f);
	uint64_t split = sel & 1 ? PAGE * (1 + fz_u16(&f) % (msize / PAGE)) : msize;
	bool rotated = (sel & 2) && split < msize;
	struct guest_range boot[2] = {
		{ .gpa = 0, .size = split, .hva = rotated ? m + (msize - split) : m, .verified = true, .kind = "provisional" },
		{ .gpa = 1ULL << 32, .size = msize - split, .hva = rotated ? m : m + split, .verified = true,
		  .kind = "provisional" },
	};
	for (int i = 0; i < 2; i++) {
		snprintf(boot[i].backing, sizeof(boot[i].backing), "[anon]");
		if (boot[i].size && guest_mem_add(&gm, &boot[i]) < 0)
			abort();
	}
	struct vmsh_err err = { 0 };
	if (nr && memmap_refine(&gm, ram, nr, &err) == 0) {
		check_map(&gm);
		/* guest memory access through the map */
		static uint8_t buf[2 * UNIT];
		for (unsigned i = 0; i < MAX_OPS && fz_left(&f); i++) {
			uint8_t op = fz_u8(&f);
			uint64_t gpa = fz_u64(&f);
			size_t len = fz_u16(&f) % sizeof(buf);
			if (op & 1) {
				memset(buf, op, len);
				(void)guest_mem_write(&gm, gpa, buf, len);
			} else if (guest_mem_read(&gm, gpa, buf, len) == 0 && len > 0) {
				const struct guest_range *r = guest_mem_find(&gm, gpa);
				FUZZ_CHECK(r != NULL, "read at %#llx succeeded outside the map", (unsigned long long)gpa);
			}
			(void)guest_mem_ptr(&gm, gpa, len);
		}
	}
	guest_mem_free(&gm);
	return 0;
}
