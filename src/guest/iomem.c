/* iomem.c - reading the guest's iomem_resource tree (see iomem.h).
 *
 * struct resource on 64-bit: start, end, name, flags, [desc since 4.6],
 * parent, sibling, child. start/end/name are at 0/8/16 in every version; the
 * link offsets are detected on the root itself (its parent is NULL and its
 * first child points back to it). */
#include "guest/iomem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define RES_START 0
#define RES_END 8
#define RES_NAME 16
#define RES_SIZE 64

struct res_layout {
	unsigned parent, sibling, child;
};

static const struct res_layout layouts[] = {
	{ 40, 48, 56 }, /* with desc (4.6+) */
	{ 32, 40, 48 }, /* without desc */
};

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static int read_res(struct guest_mem *gm, const struct guest_kernel *k, uint64_t va, uint8_t buf[RES_SIZE])
{
	return kernel_read_virt(gm, k, va, buf, RES_SIZE);
}

/* The layout whose links hold on the root and its first child; NULL with
 * the reason in why (what a failure needs to be understood: a root or a
 * child that cannot be read, and where its translation led). */
static const struct res_layout *detect_layout(struct guest_mem *gm, const struct guest_kernel *k, uint64_t root_va,
					      char *why, size_t cap)
{
	uint8_t root[RES_SIZE], child[RES_SIZE];
	snprintf(why, cap, "no layout fits");
	if (read_res(gm, k, root_va, root) < 0) {
		snprintf(why, cap, "the root is not readable");
		return NULL;
	}
	for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
		const struct res_layout *l = &layouts[i];
		uint64_t c = rd64(root + l->child);
		if (rd64(root + l->parent) != 0 || c == 0)
			continue;
		int rc = read_res(gm, k, c, child);
		if (rc == 0 && rd64(child + l->parent) == root_va)
			return l;
		struct pt_mapping m = { 0 };
		int tr = pt_translate(&k->pt, c, &m);
		uint64_t pa = m.pa + (c - m.va);
		snprintf(why, cap, "its first child %#llx %s (parent %#llx; %s %#llx%s)", (unsigned long long)c,
			 rc ? "is not readable" : "does not point back", rc ? 0ULL : (unsigned long long)rd64(child + l->parent),
			 tr ? "no translation, root" : "physical", tr ? (unsigned long long)k->pt.root : (unsigned long long)pa,
			 tr || guest_mem_find(gm, pa) ? "" : ", not in the memory map");
	}
	return NULL;
}

int iomem_read(struct guest_mem *gm, const struct guest_kernel *k, struct iomem_entry *out, size_t max,
	       struct vmsh_err *err)
{
	uint64_t root_va;
	if (ksymtab_lookup(&k->ksyms, "iomem_resource", &root_va) < 0)
		return vmsh_error(err, ENOENT, "iomem_resource is not exported by the guest kernel");
	char why[200];
	const struct res_layout *l = detect_layout(gm, k, root_va, why, sizeof(why));
	if (!l)
		return vmsh_error(err, EINVAL, "iomem_resource at %#llx does not look like a resource tree: %s",
				  (unsigned long long)root_va, why);
	/* iterative pre-order walk, bounded in entries and depth */
	uint64_t stack[5];
	int depth = 0;
	size_t n = 0;
	uint8_t r[RES_SIZE];
	if (read_res(gm, k, root_va, r) < 0)
		return vmsh_error(err, EFAULT, "read iomem_resource");
	uint64_t cur = rd64(r + l->child);
	stack[0] = root_va;
	unsigned steps = 0;
	while (cur && n < max && steps++ < 100000) {
		if (read_res(gm, k, cur, r) < 0)
			break;
		struct iomem_entry *e = &out[n++];
		e->start = rd64(r + RES_START);
		e->end = rd64(r + RES_END);
		e->depth = depth;
		e->name[0] = '\0';
		uint64_t name_va = rd64(r + RES_NAME);
		if (name_va && kernel_read_virt(gm, k, name_va, e->name, sizeof(e->name) - 1) < 0)
			strcpy(e->name, "?");
		e->name[sizeof(e->name) - 1] = '\0';
		for (size_t i = 0; e->name[i]; i++)
			if (e->name[i] < ' ' || e->name[i] > '~') {
				e->name[i] = '\0';
				break;
			}
		uint64_t child = rd64(r + l->child);
		if (child && depth + 1 < (int)(sizeof(stack) / sizeof(stack[0]))) {
			stack[++depth] = cur;
			cur = child;
			continue;
		}
		/* next sibling, or climb up */
		uint64_t sib = rd64(r + l->sibling);
		while (!sib && depth > 0) {
			uint64_t up = stack[depth--];
			if (read_res(gm, k, up, r) < 0)
				return (int)n;
			sib = rd64(r + l->sibling);
		}
		cur = sib;
	}
	return (int)n;
}

size_t iomem_system_ram(const struct iomem_entry *e, size_t n, struct ram_range *out, size_t max)
{
	/* The guest writes this tree: a real kernel keeps top-level resources
	 * sorted and disjoint (request_resource refuses conflicts), so an entry
	 * that starts below the end of the previous one, or whose end wraps,
	 * is forged and dropped rather than merged (merging an entry that lies
	 * below the previous one used to give a size near 2^64). */
	size_t k = 0;
	uint64_t last_end = 0; /* inclusive end of the last entry taken, as the guest gave it */
	for (size_t i = 0; i < n; i++) {
		if (e[i].depth != 0 || strcmp(e[i].name, "System RAM") != 0 || e[i].end < e[i].start)
			continue;
		if (e[i].end >= UINT64_MAX - 0xfffULL)
			continue; /* rounding up would wrap */
		if (k > 0 && e[i].start <= last_end)
			continue; /* unsorted or overlapping */
		/* whole pages: a range ending mid-page (0x9fc00) still has its
		 * page backed, and reads must reach the last byte */
		uint64_t s = e[i].start & ~0xfffULL;
		uint64_t end = (e[i].end + 0x1000) & ~0xfffULL;
		last_end = e[i].end;
		if (k > 0 && out[k - 1].gpa + out[k - 1].size >= s) {
			out[k - 1].size = end - out[k - 1].gpa; /* touching after rounding */
			continue;
		}
		if (k == max)
			break;
		out[k++] = (struct ram_range){ .gpa = s, .size = end - s };
	}
	return k;
}

bool iomem_range_free(const struct iomem_entry *e, size_t n, uint64_t gpa, uint64_t size)
{
	for (size_t i = 0; i < n; i++)
		if (e[i].depth == 0 && e[i].start < gpa + size && gpa <= e[i].end)
			return false;
	return true;
}

uint64_t iomem_free_top(const struct iomem_entry *e, size_t n, uint64_t size, uint64_t align, uint64_t low,
			uint64_t high)
{
	if (!size || !align || (align & (align - 1)) || high < size)
		return 0;
	uint64_t gpa = (high - size) & ~(align - 1);
	/* each round moves below the start of at least one entry for good, so
	 * n + 1 rounds decide */
	for (size_t round = 0; round <= n; round++) {
		if (gpa < low)
			return 0;
		bool clash = false;
		uint64_t lowest = UINT64_MAX;
		for (size_t i = 0; i < n; i++)
			if (e[i].depth == 0 && e[i].start < gpa + size && gpa <= e[i].end) {
				clash = true;
				if (e[i].start < lowest)
					lowest = e[i].start;
			}
		if (!clash)
			return gpa;
		if (lowest < size)
			return 0;
		gpa = (lowest - size) & ~(align - 1);
	}
	return 0;
}
