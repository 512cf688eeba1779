/* vm.c - open, read and close one running VM (see vm.h). */
#include "core/vm.h"

#include "core/kcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/procfs.h"
#include "guest/memmap.h"
#include "guest/pagetable.h"
#include "guest/ptwrite.h"

static int choose_vm_fd(pid_t pid, int want, const struct kvm_fds *f, struct vmsh_err *err)
{
	if (f->n_vms == 0)
		return vmsh_error_kind(err, VMSH_E_NOTKVM, 0,
				       "process %d has no KVM VM (no anon_inode:kvm-vm among its fds): not a hypervisor?",
				       pid);
	if (want >= 0) {
		for (size_t i = 0; i < f->n_vms; i++)
			if (f->vm_fds[i] == want)
				return want;
		return vmsh_error_kind(err, VMSH_E_USAGE, 0, "fd %d of process %d is not a KVM VM", want, pid);
	}
	if (f->n_vms > 1) {
		char list[128] = "";
		for (size_t i = 0; i < f->n_vms; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", i ? ", " : "", f->vm_fds[i]);
		return vmsh_error_kind(err, VMSH_E_AMBIGUOUS, 0,
				       "process %d has %zu KVM VMs (fds %s): choose one with --vm-fd", pid, f->n_vms,
				       list);
	}
	return f->vm_fds[0];
}

/* One registers window: the threads of vCPUs [0, n) held (only those
 * where they are known for sure, else every thread), each read, everyone
 * released. With `one`, reading stops at the first vCPU in 64-bit mode. */
static int vcpus_window(struct vm *vm, size_t n, bool one, bool *found, struct vmsh_err *err)
{
	struct vm_info *info = &vm->info;
	int seen_index = -1;
	uint64_t t0 = now_ns();
	if ((n == 1 ? kvm_vm_stop_vcpu(&vm->kvm, 0, err) : kvm_vm_stop_vcpus(&vm->kvm, err)) < 0)
		return -1;
	*found = false;
	for (size_t i = 0; i < n; i++) {
		struct vm_vcpu *v = &info->vcpus[i];
		struct vmsh_err e = { 0 };
		if (one && *found) {
			snprintf(v->error, sizeof(v->error), "not read (vCPU %d's registers were enough)", seen_index);
			continue;
		}
		v->ok = kvm_vcpu_get_state(&vm->kvm, &vm->kvm.vcpus[i], &v->st, &e) == 0;
		if (!v->ok)
			snprintf(v->error, sizeof(v->error), "%s", e.msg);
		if (v->ok && !info->guest_phys_bits &&
		    kvm_vcpu_phys_bits(&vm->kvm, &vm->kvm.vcpus[i], &info->guest_phys_bits, &e) < 0)
			log_verbose("vCPU %d: no CPUID: %s", v->index, e.msg);
		struct cpu_paging c = { .cr0 = v->st.sregs.cr0, .cr4 = v->st.sregs.cr4, .efer = v->st.sregs.efer };
		enum paging_mode pm = paging_mode_of(&c);
		if (v->ok && (pm == PAGING_4LEVEL || pm == PAGING_5LEVEL) && info->guest_phys_bits && !*found) {
			*found = true;
			seen_index = v->index;
		}
	}
	tracer_resume_others(&vm->tr);
	info->stopped_ns += now_ns() - t0;
	return 0;
}

/* The vCPUs' registers. With `one`, only up to the first vCPU in 64-bit
 * mode, all that finding the guest needs: vCPU 0 alone first (its thread
 * the only one held, where it is known), the others only if it is not in
 * 64-bit mode. Each vCPU's thread as the tracer knows it (checked in
 * KVM_RUN on that vCPU in a window, or seen asleep there). */
static int read_vcpus(struct vm *vm, bool one, struct vmsh_err *err)
{
	struct vm_info *info = &vm->info;
	size_t n = vm->kvm.n_vcpus;
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		info->vcpus[i].index = vm->kvm.vcpus[i].index;
		info->vcpus[i].fd = vm->kvm.vcpus[i].fd;
	}
	tracer_guess_vcpu_threads(&vm->tr);
	if (one && n > 1 && vcpus_window(vm, 1, true, &found, err) < 0)
		return -1;
	if (!found && vcpus_window(vm, n, one, &found, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < vm->tr.n_vcpu_threads; k++)
			if (vm->tr.vcpu_threads[k].fd == info->vcpus[i].fd)
				info->vcpus[i].tid = vm->tr.vcpu_threads[k].tid;
	return 0;
}

/* Slot ids, probed while the vCPUs run again (needs one readable vCPU). */
static void read_slots(struct vm *vm)
{
	struct vm_info *info = &vm->info;
	bool any = false;
	for (size_t i = 0; i < info->n_vcpus && !any; i++)
		any = info->vcpus[i].ok;
	if (!any)
		return;
	struct vmsh_err e = { 0 };
	if (kvm_memslot_ids(&vm->kvm, 0, &info->slots, &e) == 0)
		info->slots_ok = true;
	else
		snprintf(info->slots_error, sizeof(info->slots_error), "%s", e.msg);
}

static int cmp_vcpu(const void *a, const void *b)
{
	const struct kvm_vcpu_ref *x = a, *y = b;
	return (x->index > y->index) - (x->index < y->index);
}

static int open_vm(struct vm *vm, pid_t pid, int want_fd, bool one, struct vmsh_err *err)
{
	memset(vm, 0, sizeof(*vm));
	struct vm_info *info = &vm->info;
	vm->t_open = now_ns();
	info->pid = pid;
	guest_mem_init(&info->mem, pid);
	procfs_exe(pid, info->exe, sizeof(info->exe));

	struct kvm_fds f;
	if (kvm_fds_scan(pid, &f, err) < 0)
		return vmsh_err_prefix(err, "process %d", pid);
	int vm_fd = choose_vm_fd(pid, want_fd, &f, err);
	if (vm_fd < 0) {
		kvm_fds_free(&f);
		return -1;
	}
	info->vm_fd = vm_fd;
	qsort(f.vcpus, f.n_vcpus, sizeof(*f.vcpus), cmp_vcpu);

	vm->t_attach = now_ns();
	if (tracer_attach(&vm->tr, pid, err) < 0) {
		kvm_fds_free(&f);
		return -1;
	}
	int rc = kvm_vm_open(&vm->kvm, &vm->tr, vm_fd, &f, err);
	kvm_fds_free(&f);
	if (rc < 0) {
		tracer_close(&vm->tr);
		return -1;
	}
	vm->attached = true;
	info->seccomp_suspended = vm->tr.seccomp_suspended;
	info->inject_tid = vm->tr.main.tid;
	info->vcpus = calloc(vm->kvm.n_vcpus ? vm->kvm.n_vcpus : 1, sizeof(*info->vcpus));
	info->n_vcpus = vm->kvm.n_vcpus;
	if (!info->vcpus)
		rc = vmsh_error(err, ENOMEM, "vCPU table");
	if (rc == 0)
		rc = read_vcpus(vm, one, err);
	if (rc < 0) {
		vm_detach(vm);
		return -1;
	}
	read_slots(vm);
	return 0;
}

int vm_open(struct vm *vm, pid_t pid, int want_fd, struct vmsh_err *err)
{
	return open_vm(vm, pid, want_fd, false, err);
}

void vm_let_go(struct vm *vm)
{
	if (vm->attached)
		kvm_vm_release(&vm->kvm);
}

int vm_hold(struct vm *vm, struct vmsh_err *err)
{
	if (!vm->attached)
		return vmsh_error(err, EBADF, "the VM is closed");
	return kvm_vm_reacquire(&vm->kvm, err);
}

uint64_t vm_gpa_limit(const struct vm_info *info)
{
	unsigned bits = info->guest_phys_bits ? info->guest_phys_bits : 39;
	unsigned host = host_phys_bits();
	return 1ULL << (bits < host ? bits : host);
}

static void paging_of(const struct vm_vcpu *v, struct cpu_paging *c)
{
	c->cr0 = v->st.sregs.cr0;
	c->cr3 = v->st.sregs.cr3;
	c->cr4 = v->st.sregs.cr4;
	c->efer = v->st.sregs.efer;
	c->rip = v->st.regs.rip;
}

/* A guest-physical page the vCPU is certainly using: its page-table root, or
 * without paging the page it executes from. */
static uint64_t known_gpa(const struct vm_vcpu *v)
{
	struct cpu_paging c;
	paging_of(v, &c);
	if (paging_mode_of(&c) != PAGING_NONE)
		return c.cr3 & pt_phys_mask(52);
	return (v->st.sregs.cs.base + v->st.regs.rip) & ~0xfffULL;
}

static int plausible_cb(struct guest_mem *gm, void *opaque, struct memmap_evidence *ev)
{
	return kernel_paging_plausible(gm, opaque, ev);
}

/* The guest's own RAM map (/proc/iomem's source) replaces the provisional
 * one the page tables gave. */
static void read_iomem(struct vm_info *info)
{
	struct vmsh_err e = { 0 };
	int n = iomem_read(&info->mem, &info->kernel, info->iomem, sizeof(info->iomem) / sizeof(info->iomem[0]), &e);
	if (n <= 0) {
		snprintf(info->ram_error, sizeof(info->ram_error), "%s", e.msg[0] ? e.msg : "no entries");
		log_verbose("guest RAM map unavailable: %s", info->ram_error);
		return;
	}
	info->n_iomem = n;
	struct ram_range ram[64];
	size_t nr = iomem_system_ram(info->iomem, (size_t)n, ram, 64);
	if (nr && memmap_refine(&info->mem, ram, nr, &e) < 0)
		log_info("refining the memory map failed: %s", e.msg);
}

/* kernel_find, through what earlier runs learned about kernel builds
 * (core/kcache.h), and teaching it what this search found. */
static int find_kernel_cached(struct vm_info *info, const struct cpu_paging *c, struct vmsh_err *err)
{
	char dir[4096];
	const char *d = kcache_dir(dir, sizeof(dir));
	struct kernel_hint *hints = d ? calloc(KCACHE_MAX_FILES, sizeof(*hints)) : NULL, learned;
	size_t n = hints ? kcache_load(d, hints, KCACHE_MAX_FILES) : 0;
	int used = -1;
	int rc = kernel_find_hinted(&info->mem, c, hints, n, &info->kernel, &used, &learned, err);
	free(hints);
	info->kernel_cached = used >= 0;
	if (used >= 0)
		log_verbose("kernel: export tables read where %s says this build keeps them", d);
	else if (rc == 0 && d && learned.banner[0]) {
		struct vmsh_err e = { 0 };
		if (kcache_store(d, &learned, &e) < 0)
			log_verbose("kernel cache not written: %s", e.msg);
	}
	return rc;
}

static void find_kernel_from(struct vm_info *info, const struct vm_vcpu *v)
{
	struct vmsh_err e = { 0 };
	struct cpu_paging c;
	paging_of(v, &c);
	if (paging_mode_of(&c) != PAGING_4LEVEL && paging_mode_of(&c) != PAGING_5LEVEL) {
		snprintf(info->mem_error, sizeof(info->mem_error),
			 "vCPU %d does not use 64-bit paging (%s): guest memory cannot be located from its page tables",
			 v->index, paging_mode_name(paging_mode_of(&c)));
		snprintf(info->kernel_error, sizeof(info->kernel_error), "not a running 64-bit Linux kernel");
		return;
	}
	/* test hook: look for guest memory through another page-table root
	 * (the kernel's own, say, which the vCPU holds only at times) */
	const char *root = getenv("VMSH_TEST_BOOT_ROOT");
	if (root)
		c.cr3 = strtoull(root, NULL, 0);
	uint64_t t0 = now_ns();
	if (memmap_bootstrap(&info->mem, root ? c.cr3 & pt_phys_mask(52) : known_gpa(v), plausible_cb, &c, &e) < 0) {
		snprintf(info->mem_error, sizeof(info->mem_error), "%s", e.msg);
		snprintf(info->kernel_error, sizeof(info->kernel_error), "guest memory not located");
		return;
	}
	info->mem_ok = true;
	uint64_t t1 = now_ns();
	if (find_kernel_cached(info, &c, &e) < 0) {
		snprintf(info->kernel_error, sizeof(info->kernel_error), "%s", e.msg);
		info->kernel_ok = info->kernel.version[0] != '\0';
		return;
	}
	info->kernel_ok = info->ksyms_ok = true;
	/* where vmsh's kernel library would go: shows a region left behind */
	struct ptw_slot hole;
	if (ptw_find_free_gib(&info->kernel.pt, pt_canonical(KERNEL_HOLE_START, info->kernel.pt.levels),
			     pt_canonical(KERNEL_HOLE_END, info->kernel.pt.levels), &hole, &e) == 0)
		info->free_region = hole.va;
	uint64_t t2 = now_ns();
	read_iomem(info);
	log_verbose("guest found: memory map %.1f ms, kernel and symbols %.1f ms, RAM map %.1f ms",
		    (t1 - t0) / 1e6, (t2 - t1) / 1e6, (now_ns() - t2) / 1e6);
	log_memory("with the guest found");
}

/* The move probes of memmap_place_by_slots: does any slot of the VM consist
 * of exactly this memory? Probed at the kernel's page-table root, RAM every
 * kernel thread runs on. */
struct slot_probe {
	struct vm *vm;
	uint64_t probe_gpa;
};

static int slot_holds_cb(void *opaque, uint64_t hva, uint64_t size, struct vmsh_err *err)
{
	struct slot_probe *p = opaque;
	const struct memslot_ids *ids = &p->vm->info.slots;
	for (size_t i = 0; i < ids->n; i++) {
		int v = kvm_slot_is_memory(&p->vm->kvm, ids->ids[i], hva, size, p->probe_gpa, err);
		if (v != 0)
			return v;
	}
	return 0;
}

/* RAM the guest lists that no bootstrap mapping holds (DIMMs plugged in at
 * boot or later: each a mapping of its own) gets the host memory KVM has in
 * a slot for it, with the hypervisor held for the probes. */
static void place_by_slots(struct vm *vm)
{
	struct vm_info *info = &vm->info;
	bool need = false;
	for (size_t i = 0; i < info->mem.n && !need; i++)
		need = !info->mem.r[i].hva;
	if (!need || !vm->attached || !info->slots_ok || !info->kernel_ok || !info->mem.r[0].verified)
		return;
	uint64_t t0 = now_ns();
	struct vmsh_err e = { 0 };
	struct proc_map *maps = NULL;
	size_t n = 0;
	struct memmap_slot_report rep = { 0 };
	struct slot_probe p = { vm, info->kernel.pt.root & ~0xfffULL };
	int rc = vm_hold(vm, &e);
	if (rc == 0) {
		rc = procfs_read_maps(info->pid, &maps, &n, &e);
		if (rc == 0)
			rc = memmap_place_by_slots(&info->mem, maps, n, slot_holds_cb, &p, &rep, &e);
		free(maps);
		vm_let_go(vm);
	}
	if (rc < 0)
		log_info("placing RAM without a host address by the VM's memory slots failed: %s", e.msg);
	snprintf(info->slot_placing, sizeof(info->slot_placing),
		 "%u range(s) placed by memory slot, %u ambiguous, %u without a slot of their memory (%u probes, "
		 "%.1f ms)%s%s", rep.placed, rep.ambiguous, rep.unmatched, rep.probes, (now_ns() - t0) / 1e6,
		 rc < 0 ? ": " : "", rc < 0 ? e.msg : "");
	log_verbose("%s", info->slot_placing);
}

void vm_find_kernel(struct vm *vm)
{
	/* the vCPU most likely to be in the kernel: one in ring 0 */
	struct vm_info *info = &vm->info;
	const struct vm_vcpu *kv = NULL;
	for (size_t i = 0; i < info->n_vcpus; i++) {
		const struct vm_vcpu *v = &info->vcpus[i];
		if (!v->ok)
			continue;
		if (!kv || ((v->st.sregs.cs.selector & 3) == 0 && (kv->st.sregs.cs.selector & 3) != 0))
			kv = v;
	}
	log_verbose("hypervisor attached, registers and slots read: %.1f ms", (now_ns() - vm->t_open) / 1e6);
	if (kv)
		find_kernel_from(info, kv);
	place_by_slots(vm);
	info->total_ns = now_ns() - vm->t_open;
}

int vm_open_guest(struct vm *vm, pid_t pid, int vm_fd, bool all_vcpus, struct vmsh_err *err)
{
	if (open_vm(vm, pid, vm_fd, !all_vcpus, err) < 0)
		return -1;
	vm_let_go(vm);
	vm_find_kernel(vm);
	return 0;
}

int vm_need_kernel(const struct vm *vm, struct vmsh_err *err)
{
	const struct vm_info *info = &vm->info;
	if (!info->ksyms_ok)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, 0, "guest kernel not found: %s", info->kernel_error);
	if (!info->slots_ok)
		return vmsh_error(err, 0, "memory slots unknown: %s", info->slots_error);
	if (!info->mem_ok)
		return vmsh_error(err, 0, "guest memory unknown: %s", info->mem_error);
	/* Devices and the library's registers are placed, and guest buffers
	 * reached, only where the guest's own map and the hypervisor agree:
	 * without the map vmsh would stall the guest's drivers, not help */
	if (info->n_iomem <= 0)
		return vmsh_error(err, 0, "the guest's RAM map could not be read: %s", info->ram_error);
	return 0;
}

void vm_detach(struct vm *vm)
{
	if (!vm->attached)
		return;
	kvm_vm_close(&vm->kvm);
	vm->info.injected_syscalls = vm->tr.injected_syscalls;
	tracer_close(&vm->tr);
	vm->info.attached_ns = now_ns() - vm->t_attach;
	vm->attached = false;
}

void vm_close(struct vm *vm)
{
	vm_detach(vm);
	struct vm_info *info = &vm->info;
	free(info->vcpus);
	free(info->slots.ids);
	guest_mem_free(&info->mem);
	kernel_free(&info->kernel);
	memset(info, 0, sizeof(*info));
}
