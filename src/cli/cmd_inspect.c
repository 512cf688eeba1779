/* cmd_inspect.c - `vmsh inspect`: vCPUs, memory map, guest kernel and symbols
 * of a running VM, as text or JSON (format documented in README.md). */
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/escape.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "core/vm.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: vmsh inspect [-j] [-s NAME]... [--vm-fd FD] PID|NAME\n\n"
		"Attach to the hypervisor process, read every vCPU's registers (the VM is stopped only\n"
		"for that), find which memory slots it uses, detach, then read the guest's memory from\n"
		"outside: its memory map, the Linux kernel's version, KASLR base and exported symbols.\n\n"
		"options:\n"
		"  -j, --json        machine-readable output (see README.md for the format)\n"
		"  -s, --symbol NAME print the address of exported kernel symbol NAME (repeatable)\n"
		"      --vm-fd FD    the hypervisor's VM fd, when it has more than one VM\n"
		"  -h, --help        this help\n");
}

/* The --symbol names and what the guest kernel's table says of them. */
struct symbols {
	const char **symbols;
	size_t n_symbols;
	uint64_t *values;
	bool *found;
};

static void look_up(struct symbols *o, const struct vm_info *r)
{
	for (size_t i = 0; i < o->n_symbols; i++)
		o->found[i] = r->ksyms_ok && ksymtab_lookup(&r->kernel.ksyms, o->symbols[i], &o->values[i]) == 0;
}

static json_object *hex(uint64_t v)
{
	char b[24];
	snprintf(b, sizeof(b), "0x%" PRIx64, v);
	return json_object_new_string(b);
}

static int cpl_of(const struct vm_vcpu *v)
{
	return v->st.sregs.ss.dpl & 3;
}

static const char *paging_of_vcpu(const struct vm_vcpu *v)
{
	struct cpu_paging c = { .cr0 = v->st.sregs.cr0, .cr3 = v->st.sregs.cr3, .cr4 = v->st.sregs.cr4, .efer = v->st.sregs.efer };
	return paging_mode_name(paging_mode_of(&c));
}

static json_object *json_result(const struct symbols *o, const struct vm_info *r)
{
	json_object *root = json_head();
	json_object_object_add(root, "pid", json_object_new_int(r->pid));
	json_object_object_add(root, "exe", json_object_new_string(r->exe));
	json_object_object_add(root, "vm_fd", json_object_new_int(r->vm_fd));
	json_object_object_add(root, "seccomp_suspended", json_object_new_boolean(r->seccomp_suspended));

	json_object *t = json_object_new_object();
	json_object_object_add(t, "vcpus_stopped_us", json_object_new_int64((int64_t)(r->stopped_ns / 1000)));
	json_object_object_add(t, "hypervisor_held_us", json_object_new_int64((int64_t)(r->attached_ns / 1000)));
	json_object_object_add(t, "total_us", json_object_new_int64((int64_t)(r->total_ns / 1000)));
	json_object_object_add(t, "injected_syscalls", json_object_new_int64((int64_t)r->injected_syscalls));
	json_object_object_add(root, "timing", t);

	json_object *vcpus = json_object_new_array();
	for (size_t i = 0; i < r->n_vcpus; i++) {
		const struct vm_vcpu *v = &r->vcpus[i];
		json_object *j = json_object_new_object();
		json_object_object_add(j, "index", json_object_new_int(v->index));
		json_object_object_add(j, "fd", json_object_new_int(v->fd));
		json_object_object_add(j, "tid", v->tid ? json_object_new_int(v->tid) : NULL);
		if (!v->ok) {
			json_object_object_add(j, "error", json_object_new_string(v->error));
		} else {
			json_object_object_add(j, "rip", hex(v->st.regs.rip));
			json_object_object_add(j, "rsp", hex(v->st.regs.rsp));
			json_object_object_add(j, "rflags", hex(v->st.regs.rflags));
			json_object_object_add(j, "cr0", hex(v->st.sregs.cr0));
			json_object_object_add(j, "cr3", hex(v->st.sregs.cr3));
			json_object_object_add(j, "cr4", hex(v->st.sregs.cr4));
			json_object_object_add(j, "efer", hex(v->st.sregs.efer));
			json_object_object_add(j, "cpl", json_object_new_int(cpl_of(v)));
			json_object_object_add(j, "mode", json_object_new_string(cpl_of(v) ? "user" : "kernel"));
			json_object_object_add(j, "paging", json_object_new_string(paging_of_vcpu(v)));
		}
		json_object_array_add(vcpus, j);
	}
	json_object_object_add(root, "vcpus", vcpus);

	json_object_object_add(root, "guest_phys_bits",
			       r->guest_phys_bits ? json_object_new_int((int)r->guest_phys_bits) : NULL);

	json_object *ms = json_object_new_object();
	json_object_object_add(ms, "address_space", json_object_new_int(0));
	if (r->slots_ok) {
		json_object *ids = json_object_new_array();
		for (size_t i = 0; i < r->slots.n; i++)
			json_object_array_add(ids, json_object_new_int((int)r->slots.ids[i]));
		json_object_object_add(ms, "ids", ids);
		json_object_object_add(ms, "count", json_object_new_int((int)r->slots.n));
		json_object_object_add(ms, "limit", json_object_new_int((int)r->slots.limit));
		json_object_object_add(ms, "probes", json_object_new_int((int)r->slots.probes));
	} else {
		json_object_object_add(ms, "error", json_object_new_string(r->slots_error));
	}
	json_object_object_add(root, "memslots", ms);

	json_object *mem = json_object_new_object();
	json_object *ranges = json_object_new_array();
	for (size_t i = 0; i < r->mem.n; i++) {
		const struct guest_range *g = &r->mem.r[i];
		json_object *j = json_object_new_object();
		json_object_object_add(j, "gpa", hex(g->gpa));
		json_object_object_add(j, "size", hex(g->size));
		json_object_object_add(j, "hva", g->hva ? hex(g->hva) : NULL);
		json_object_object_add(j, "backing", json_object_new_string(g->backing));
		json_object_object_add(j, "shared", json_object_new_boolean(g->shared));
		json_object_object_add(j, "verified", json_object_new_boolean(g->verified));
		json_object_object_add(j, "by_slot", json_object_new_boolean(g->by_slot));
		json_object_object_add(j, "kind", json_object_new_string(g->kind ? g->kind : ""));
		json_object_array_add(ranges, j);
	}
	json_object_object_add(mem, "ranges", ranges);
	json_object_object_add(mem, "error", r->mem_ok ? NULL : json_object_new_string(r->mem_error));
	json_object_object_add(mem, "slot_placing",
			       r->slot_placing[0] ? json_object_new_string(r->slot_placing) : NULL);
	json_object *io = json_object_new_array();
	for (int i = 0; i < r->n_iomem; i++) {
		json_object *j = json_object_new_object();
		json_object_object_add(j, "start", hex(r->iomem[i].start));
		json_object_object_add(j, "end", hex(r->iomem[i].end));
		json_object_object_add(j, "name", json_object_new_string(r->iomem[i].name));
		json_object_object_add(j, "depth", json_object_new_int(r->iomem[i].depth));
		json_object_array_add(io, j);
	}
	json_object_object_add(mem, "guest_iomem", io);
	json_object_object_add(root, "memory", mem);

	json_object *k = json_object_new_object();
	json_object_object_add(k, "found", json_object_new_boolean(r->kernel_ok));
	if (r->kernel_ok) {
		const struct guest_kernel *gk = &r->kernel;
		json_object_object_add(k, "version", json_object_new_string(gk->version));
		json_object_object_add(k, "banner", json_object_new_string(gk->banner));
		json_object_object_add(k, "text_base", hex(gk->text_base));
		json_object_object_add(k, "kaslr_offset", hex(gk->text_base - KERNEL_DEFAULT_TEXT));
		json_object_object_add(k, "phys_base", hex(gk->phys_base));
		json_object_object_add(k, "image_size", hex(gk->image_size));
		json_object_object_add(k, "paging_levels", json_object_new_int(gk->pt.levels));
		json_object_object_add(k, "page_table_root", hex(gk->pt.root));
		json_object_object_add(k, "exported_symbols", json_object_new_int((int)gk->ksyms.n));
		json_object_object_add(k, "ksymtab_format", json_object_new_string(ksymtab_format_name(gk->ksyms.format)));
		json_object_object_add(k, "from_cache", json_object_new_boolean(r->kernel_cached));
		json_object_object_add(k, "free_region", r->free_region ? hex(r->free_region) : NULL);
	}
	json_object_object_add(k, "error", r->kernel_error[0] ? json_object_new_string(r->kernel_error) : NULL);
	json_object_object_add(root, "kernel", k);

	json_object *syms = json_object_new_object();
	for (size_t i = 0; i < o->n_symbols; i++)
		json_object_object_add(syms, o->symbols[i], o->found[i] ? hex(o->values[i]) : NULL);
	json_object_object_add(root, "symbols", syms);
	return root;
}

/* Text the guest wrote (banner, version, messages quoting it) or another
 * user chose (the executable's and mappings' file names): escaped. A few
 * buffers in turn, enough for one printf. */
static const char *safe(const char *s)
{
	static char ring[4][ESC_SIZE(1024)];
	static unsigned k;
	char *b = ring[k++ % 4];
	return esc_str(b, sizeof(ring[0]), s);
}

static void print_text(const struct symbols *o, const struct vm_info *r)
{
	printf("process %d (%s), VM fd %d\n", r->pid, safe(r->exe), r->vm_fd);
	printf("vCPUs stopped %.3f ms of %.1f ms total (hypervisor thread held %.1f ms, %llu injected syscalls)\n",
	       r->stopped_ns / 1e6, r->total_ns / 1e6, r->attached_ns / 1e6, (unsigned long long)r->injected_syscalls);
	printf("\nvCPUs:\n");
	for (size_t i = 0; i < r->n_vcpus; i++) {
		const struct vm_vcpu *v = &r->vcpus[i];
		if (!v->ok) {
			printf("  %d: %s\n", v->index, safe(v->error));
			continue;
		}
		printf("  %d: rip %016llx rsp %016llx %s (cpl %d) paging %s\n", v->index,
		       (unsigned long long)v->st.regs.rip, (unsigned long long)v->st.regs.rsp,
		       cpl_of(v) ? "user" : "kernel", cpl_of(v), paging_of_vcpu(v));
		printf("     cr0 %llx cr3 %llx cr4 %llx efer %llx%s\n", (unsigned long long)v->st.sregs.cr0,
		       (unsigned long long)v->st.sregs.cr3, (unsigned long long)v->st.sregs.cr4,
		       (unsigned long long)v->st.sregs.efer, v->tid ? "" : "");
	}
	if (r->guest_phys_bits)
		printf("  guest physical address width %u bits (the vCPUs' CPUID)\n", r->guest_phys_bits);
	printf("\nmemory slots (address space 0): ");
	if (r->slots_ok) {
		printf("%zu in use:", r->slots.n);
		for (size_t i = 0; i < r->slots.n; i++)
			printf(" %u", r->slots.ids[i]);
		printf("\n");
	} else {
		printf("unknown: %s\n", safe(r->slots_error));
	}
	printf("\nguest memory:\n");
	if (!r->mem_ok)
		printf("  unknown: %s\n", safe(r->mem_error));
	for (size_t i = 0; i < r->mem.n; i++) {
		const struct guest_range *g = &r->mem.r[i];
		printf("  %012llx-%012llx %8llu MiB  ", (unsigned long long)g->gpa,
		       (unsigned long long)(g->gpa + g->size - 1), (unsigned long long)(g->size >> 20));
		if (g->hva)
			printf("host %llx %s%s", (unsigned long long)g->hva, safe(g->backing),
			       g->by_slot ? " (a memory slot of exactly it)" : g->verified ? "" : " (unverified)");
		else
			printf("host address unknown");
		printf("  [%s]\n", g->kind ? safe(g->kind) : "");
	}
	if (r->slot_placing[0])
		printf("  beyond the bootstrap mapping: %s\n", safe(r->slot_placing));
	printf("\nguest kernel: ");
	if (!r->kernel_ok) {
		printf("not found: %s\n", safe(r->kernel_error));
		return;
	}
	const struct guest_kernel *k = &r->kernel;
	printf("Linux %s\n  %s\n", safe(k->version), safe(k->banner));
	printf("  text base %llx (KASLR offset %llx), physical %llx, %s paging\n", (unsigned long long)k->text_base,
	       (unsigned long long)(k->text_base - KERNEL_DEFAULT_TEXT), (unsigned long long)k->phys_base,
	       k->pt.levels == 5 ? "5-level" : "4-level");
	if (r->ksyms_ok)
		if (k->ksyms.format == KSYMTAB_KALLSYMS)
			printf("  no export tables (built without modules?): %zu global symbols from kallsyms\n",
			       k->ksyms.n);
		else
			printf("  %zu exported symbols (%s)\n", k->ksyms.n, ksymtab_format_name(k->ksyms.format));
	else
		printf("  exported symbols: %s\n", safe(r->kernel_error));
	for (size_t i = 0; i < o->n_symbols; i++) {
		if (o->found[i])
			printf("  %016llx %s\n", (unsigned long long)o->values[i], safe(o->symbols[i]));
		else
			printf("  %16s %s (not exported)\n", "-", safe(o->symbols[i]));
	}
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, 0, 'j' },
		VM_FD_OPTION,
		{ "symbol", required_argument, 0, 's' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct vm_target t = { .vm_fd = -1 };
	_cleanup_free_ const char **syms = calloc((size_t)argc + 1, sizeof(*syms));
	_cleanup_free_ uint64_t *values = calloc((size_t)argc + 1, sizeof(*values));
	_cleanup_free_ bool *found = calloc((size_t)argc + 1, sizeof(*found));
	struct symbols o = { .symbols = syms, .values = values, .found = found };
	int json = 0, c;
	if (!syms || !values || !found)
		return EXIT_VMSH_FAILED;
	optind = 1;
	while ((c = getopt_long(argc, argv, "js:h" VM_FD_OPTSTRING, opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case OPT_VM_FD:
			if (vm_option("inspect", c, optarg, &t) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case 's': syms[o.n_symbols++] = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	int rc = vm_target_resolve("inspect", argv[optind], &t);
	if (rc)
		return rc;
	/* registers and slot ids with the hypervisor held, the rest read from
	 * the outside once it is let go */
	struct vmsh_err err = { 0 };
	struct vm vm;
	if (vm_open(&vm, t.pid, t.vm_fd, &err) < 0) {
		rc = report_error("inspect", &err);
		vm_close(&vm);
		return rc;
	}
	vm_let_go(&vm);
	vm_find_kernel(&vm); /* takes the hypervisor again only for slot probes */
	vm_detach(&vm);
	look_up(&o, &vm.info);
	if (json) {
		json_object *j = json_result(&o, &vm.info);
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(j);
	} else {
		print_text(&o, &vm.info);
	}
	if (!vm.info.kernel_ok) {
		fprintf(stderr, "vmsh inspect: guest kernel not found: %s\n", safe(vm.info.kernel_error));
		rc = EXIT_VMSH_NOKERNEL;
	}
	vm_close(&vm);
	return rc;
}
