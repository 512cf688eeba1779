/* inspect.c - attach, read vCPUs and slot ids, detach; then read the guest
 * from the outside while it runs (see inspect.h). */
#include "cli/inspect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/procfs.h"
#include "guest/memmap.h"
#include "guest/ptwrite.h"

static int choose_vm_fd(const struct inspect_opts *o, const struct kvm_fds *f, struct vmsh_err *err)
{
	if (f->n_vms == 0)
		return vmsh_error_kind(err, VMSH_E_NOTKVM, 0,
				       "process %d has no KVM VM (no anon_inode:kvm-vm among its fds): not a hypervisor?",
				       o->pid);
	if (o->vm_fd >= 0) {
		for (size_t i = 0; i < f->n_vms; i++)
			if (f->vm_fds[i] == o->vm_fd)
				return o->vm_fd;
		return vmsh_error_kind(err, VMSH_E_USAGE, 0, "fd %d of process %d is not a KVM VM", o->vm_fd, o->pid);
	}
	if (f->n_vms > 1) {
		char list[128] = "";
		for (size_t i = 0; i < f->n_vms; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", i ? ", " : "", f->vm_fds[i]);
		return vmsh_error_kind(err, VMSH_E_AMBIGUOUS, 0,
				       "process %d has %zu KVM VMs (fds %s): choose one with --vm-fd", o->pid, f->n_vms,
				       list);
	}
	return f->vm_fds[0];
}

/* The registers window: every thread of the hypervisor stopped, each vCPU
 * read from the injection thread, everyone released. */
static int read_vcpus(struct kvm_vm *vm, struct tracer *tr, struct inspect_result *res, struct vmsh_err *err)
{
	uint64_t t0 = now_ns();
	if (tracer_stop_others(tr, err) < 0)
		return -1;
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		struct inspect_vcpu *v = &res->vcpus[i];
		v->index = vm->vcpus[i].index;
		v->fd = vm->vcpus[i].fd;
		for (size_t k = 0; k < tr->n_others; k++)
			if (tr->others[k].in_kvm_run && tr->others[k].kvm_run_fd == v->fd)
				v->tid = tr->others[k].tid;
		struct vmsh_err e = { 0 };
		if (kvm_vcpu_get_state(vm, &vm->vcpus[i], &v->st, &e) == 0)
			v->ok = true;
		else
			snprintf(v->error, sizeof(v->error), "%s", e.msg);
		if (v->ok && !res->guest_phys_bits && kvm_vcpu_phys_bits(vm, &vm->vcpus[i], &res->guest_phys_bits, &e) < 0)
			log_verbose("vCPU %d: no CPUID: %s", v->index, e.msg);
	}
	tracer_resume_others(tr);
	res->stopped_ns += now_ns() - t0;
	return 0;
}

uint64_t inspect_gpa_limit(const struct inspect_result *res)
{
	unsigned bits = res->guest_phys_bits ? res->guest_phys_bits : 39;
	unsigned host = host_phys_bits();
	return 1ULL << (bits < host ? bits : host);
}

static int cmp_vcpu(const void *a, const void *b)
{
	const struct kvm_vcpu_ref *x = a, *y = b;
	return (x->index > y->index) - (x->index < y->index);
}

static void paging_of(const struct inspect_vcpu *v, struct cpu_paging *c)
{
	c->cr0 = v->st.sregs.cr0;
	c->cr3 = v->st.sregs.cr3;
	c->cr4 = v->st.sregs.cr4;
	c->efer = v->st.sregs.efer;
	c->rip = v->st.regs.rip;
}

/* A guest-physical page the vCPU is certainly using: its page-table root, or
 * without paging the page it executes from. */
static uint64_t known_gpa(const struct inspect_vcpu *v)
{
	struct cpu_paging c;
	paging_of(v, &c);
	if (paging_mode_of(&c) != PAGING_NONE)
		return c.cr3 & pt_phys_mask(52);
	return (v->st.sregs.cs.base + v->st.regs.rip) & ~0xfffULL;
}

static int plausible_cb(struct guest_mem *gm, void *opaque)
{
	return kernel_paging_plausible(gm, opaque);
}

static void analyse_guest(const struct inspect_opts *o, struct inspect_result *res, const struct inspect_vcpu *v)
{
	struct vmsh_err e = { 0 };
	struct cpu_paging c;
	paging_of(v, &c);
	if (paging_mode_of(&c) != PAGING_4LEVEL && paging_mode_of(&c) != PAGING_5LEVEL) {
		snprintf(res->mem_error, sizeof(res->mem_error),
			 "vCPU %d does not use 64-bit paging (%s): guest memory cannot be located from its page tables",
			 v->index, paging_mode_name(paging_mode_of(&c)));
		snprintf(res->kernel_error, sizeof(res->kernel_error), "not a running 64-bit Linux kernel");
		return;
	}
	if (memmap_bootstrap(&res->mem, known_gpa(v), plausible_cb, &c, &e) < 0) {
		snprintf(res->mem_error, sizeof(res->mem_error), "%s", e.msg);
		snprintf(res->kernel_error, sizeof(res->kernel_error), "guest memory not located");
		return;
	}
	res->mem_ok = true;
	if (kernel_find(&res->mem, &c, &res->kernel, &e) < 0) {
		snprintf(res->kernel_error, sizeof(res->kernel_error), "%s", e.msg);
		res->kernel_ok = res->kernel.version[0] != '\0';
		return;
	}
	res->kernel_ok = res->ksyms_ok = true;
	/* where vmsh's kernel library would go: shows a region left behind */
	struct pt_slot hole;
	struct vmsh_err e2 = { 0 };
	if (pt_find_free_gib(&res->kernel.pt, pt_canonical(KERNEL_HOLE_START, res->kernel.pt.levels),
			     pt_canonical(KERNEL_HOLE_END, res->kernel.pt.levels), &hole, &e2) == 0)
		res->free_region = hole.va;

	/* the guest's own RAM map replaces the provisional one */
	int n = iomem_read(&res->mem, &res->kernel, res->iomem, sizeof(res->iomem) / sizeof(res->iomem[0]), &e);
	if (n > 0) {
		res->n_iomem = n;
		struct ram_range ram[64];
		size_t nr = iomem_system_ram(res->iomem, (size_t)n, ram, 64);
		if (nr && memmap_refine(&res->mem, ram, nr, &e) < 0)
			log_info("refining the memory map failed: %s", e.msg);
	} else {
		log_verbose("guest RAM map unavailable: %s", e.msg);
	}
	for (size_t i = 0; i < o->n_symbols; i++)
		res->sym_found[i] = ksymtab_lookup(&res->kernel.ksyms, o->symbols[i], &res->sym_values[i]) == 0;
}

/* The guest as seen from the vCPU most likely to be in the kernel. */
static void analyse(const struct inspect_opts *o, struct inspect_result *res)
{
	const struct inspect_vcpu *kv = NULL;
	for (size_t i = 0; i < res->n_vcpus; i++) {
		const struct inspect_vcpu *v = &res->vcpus[i];
		if (!v->ok)
			continue;
		if (!kv || ((v->st.sregs.cs.selector & 3) == 0 && (kv->st.sregs.cs.selector & 3) != 0))
			kv = v;
	}
	if (kv)
		analyse_guest(o, res, kv);
}

int inspect_vm(const struct inspect_opts *o, struct inspect_result *res, struct vmsh_err *err)
{
	memset(res, 0, sizeof(*res));
	uint64_t t_start = now_ns();
	res->pid = o->pid;
	guest_mem_init(&res->mem, o->pid);
	res->sym_values = calloc(o->n_symbols + 1, sizeof(*res->sym_values));
	res->sym_found = calloc(o->n_symbols + 1, sizeof(*res->sym_found));
	if (!res->sym_values || !res->sym_found)
		return vmsh_error(err, ENOMEM, "inspect");
	procfs_exe(o->pid, res->exe, sizeof(res->exe));

	struct kvm_fds f;
	if (kvm_fds_scan(o->pid, &f, err) < 0)
		return vmsh_err_prefix(err, "process %d", o->pid);
	int vm_fd = choose_vm_fd(o, &f, err);
	if (vm_fd < 0) {
		kvm_fds_free(&f);
		return -1;
	}
	res->vm_fd = vm_fd;
	qsort(f.vcpus, f.n_vcpus, sizeof(*f.vcpus), cmp_vcpu);

	struct tracer tr;
	uint64_t t_attach = now_ns();
	if (tracer_attach(&tr, o->pid, err) < 0) {
		kvm_fds_free(&f);
		return -1;
	}
	struct kvm_vm vm;
	int rc = kvm_vm_open(&vm, &tr, vm_fd, &f, err);
	kvm_fds_free(&f);
	if (rc < 0) {
		tracer_close(&tr);
		return -1;
	}
	res->seccomp_suspended = tr.seccomp_suspended;
	res->inject_tid = tr.main.tid;
	res->vcpus = calloc(vm.n_vcpus ? vm.n_vcpus : 1, sizeof(*res->vcpus));
	res->n_vcpus = vm.n_vcpus;
	if (!res->vcpus)
		rc = vmsh_error(err, ENOMEM, "inspect");
	if (rc == 0)
		rc = read_vcpus(&vm, &tr, res, err);

	/* slot ids, probed while the vCPUs run again */
	const struct inspect_vcpu *ref = NULL;
	for (size_t i = 0; rc == 0 && i < res->n_vcpus && !ref; i++)
		if (res->vcpus[i].ok)
			ref = &res->vcpus[i];
	if (ref) {
		struct vmsh_err e = { 0 };
		if (kvm_memslot_ids(&vm, 0, &res->slots, &e) == 0)
			res->slots_ok = true;
		else
			snprintf(res->slots_error, sizeof(res->slots_error), "%s", e.msg);
	}
	/* Inspect reads the guest after letting the hypervisor go; a command
	 * that acts on the guest (o->while_attached) needs it found first. */
	if (rc == 0 && o->while_attached) {
		/* Finding the kernel parses guest data (bounded, but up to a
		 * second): the hypervisor runs untraced meanwhile. */
		kvm_vm_release(&vm);
		analyse(o, res);
		rc = kvm_vm_reacquire(&vm, err);
		if (rc == 0)
			rc = o->while_attached(&vm, res, o->opaque, err);
	}
	kvm_vm_close(&vm);
	res->injected_syscalls = tr.injected_syscalls;
	tracer_close(&tr);
	res->attached_ns = now_ns() - t_attach;
	if (rc < 0)
		return -1;
	if (!o->while_attached)
		analyse(o, res);
	res->total_ns = now_ns() - t_start;
	return 0;
}

void inspect_result_free(struct inspect_result *res)
{
	free(res->vcpus);
	free(res->slots.ids);
	guest_mem_free(&res->mem);
	kernel_free(&res->kernel);
	free(res->sym_values);
	free(res->sym_found);
}
