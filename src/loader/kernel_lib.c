/* kernel_lib.c - loading, entering and removing the kernel library (see
 * kernel_lib.h). */
#include "loader/kernel_lib.h"

#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/escape.h"
#include "common/log.h"
#include "common/procfs.h"
#include "common/remote_mem.h"
#include "tracer/tracer.h"

#define MSR_KERNEL_GS_BASE 0xc0000102

extern const uint8_t vmsh_guest_lib_start[], vmsh_guest_lib_end[];

#define PAGE 4096u
#define BORROW_STACK_SIZE 16384 /* guest-lib/vmsh_lib.c vmsh_borrow_stack */
/* The stub goes back by itself at once wherever it can (entry.S: every
 * register it changed, then iretq), so a borrow needs no second stop window;
 * vmsh puts the vCPU back itself only where the stub cannot (VMSH_RET_HOST),
 * or should the vCPU still spin in the stub after this long. */
#define BORROW_SELF_RETURN_WAIT_MS 1000

static int resolve_export(void *opaque, const char *name, uint64_t *addr)
{
	const struct guest_kernel *k = opaque;
	if (ksymtab_lookup(&k->ksyms, name, addr) == 0)
		return 0;
	/* renamed across versions */
	if (!strcmp(name, "_printk"))
		return ksymtab_lookup(&k->ksyms, "printk", addr);
	return -1;
}

/* A new slot for the library at the top of the guest-physical space below
 * gpa_limit, in a 1 GiB window clear of everything in the guest's own map
 * (RAM, PCI windows, reserved ranges such as AMD's HyperTransport hole); the
 * device register pages go into the same window right after it. */
static int add_slot(struct kernel_lib *kl, const struct iomem_entry *iomem, size_t n, const struct memslot_ids *ids,
		    uint64_t gpa_limit, struct vmsh_err *err)
{
	uint64_t high = gpa_limit;
	for (unsigned tries = 0; tries < 64; tries++) {
		uint64_t gpa = iomem_free_top(iomem, n, GIB, GIB, 1ULL << 32, high);
		if (!gpa)
			break;
		struct vmsh_err e = { 0 };
		if (kvm_slot_add(kl->vm, ids, NULL, 0, gpa, GIB, 1, kl->mem.remote, KLIB_MEM_SIZE, 0, &kl->slot, &e) == 0)
			return 0;
		if (e.errnum != ENOSPC) {
			*err = e;
			return -1;
		}
		high = gpa; /* taken by a slot the guest's map does not show: go below it */
	}
	return vmsh_error(err, ENOSPC, "no free guest-physical range for the library below %#llx",
			  (unsigned long long)gpa_limit);
}

/* A page-table root loaded on a vCPU right now (they are stopped), whose
 * kernel half maps the kernel image where vmsh found it: the root vmsh saw
 * when it first looked may belong to a process that has exited since, its
 * page reused for anything. 0 if none. */
static uint64_t live_kernel_root(struct kernel_lib *kl)
{
	const struct guest_kernel *k = kl->k;
	for (size_t i = 0; i < kl->vm->n_vcpus; i++) {
		struct vcpu_state st;
		struct vmsh_err e = { 0 };
		if (kvm_vcpu_get_state(kl->vm, &kl->vm->vcpus[i], &st, &e) < 0)
			continue;
		uint64_t root;
		if (kernel_root_of(k, st.sregs.cr3, &root) == 0)
			return root;
	}
	return 0;
}

/* The unused 1 GiB region in the table under root pt's top-level entry for
 * the kernel hole, and that entry. */
static int region_on(struct kernel_lib *kl, const struct pt_ctx *pt, struct vmsh_err *err)
{
	int rc = ptw_find_free_gib(pt, pt_canonical(KERNEL_HOLE_START, pt->levels),
				   pt_canonical(KERNEL_HOLE_END, pt->levels), &kl->region, err);
	unsigned shift = pt->levels == 5 ? 48 : 39;
	uint64_t idx = (kl->region.va >> shift) & 511;
	if (rc == 0 && pt->top && pt->top_gpa == pt->root) {
		kl->top_entry = pt->top[idx];
	} else if (rc == 0 && guest_mem_read(kl->gm, pt->root + 8 * idx, &kl->top_entry, 8) < 0) {
		rc = vmsh_error(err, EIO, "read the kernel's top-level page table at %#llx",
				(unsigned long long)pt->root);
	}
	return rc;
}

/* The unused 1 GiB region. The table it lies in is the kernel's own
 * (static, shared by every address space), so it stays valid once found.
 * The kernel's page tables as vmsh found them read the kernel half of
 * their root from a copy taken then (pt_pin_root): that half points at
 * those shared tables even if the root's process has exited since, so no
 * vCPU need be stopped. Without that copy: a live root, read while the
 * vCPUs are stopped. */
static int find_region(struct kernel_lib *kl, struct vmsh_err *err)
{
	const struct guest_kernel *k = kl->k;
	if (k->pt.top && k->pt.top_gpa == k->pt.root)
		return region_on(kl, &k->pt, err);
	if (kvm_vm_stop_vcpus(kl->vm, err) < 0)
		return -1;
	int rc;
	struct pt_ctx pt = pt_live(&k->pt, live_kernel_root(kl));
	if (!pt.root)
		rc = vmsh_error(err, ESRCH, "no vCPU is on page tables that map the kernel at %#llx any more",
				(unsigned long long)k->text_base);
	else
		rc = region_on(kl, &pt, err);
	tracer_resume_others(kl->vm->tr);
	return rc;
}

/* Where the one entry vmsh writes into the guest's tables lives. */
static uint64_t region_entry_addr(const struct kernel_lib *kl)
{
	return kl->region.table_gpa + 8ULL * kl->region.index;
}

/* Where the guest kernel itself can clear vmsh's entry (the library's
 * waiting thread does, as its very last store: entry.S): the entry's
 * address in the kernel's direct map, if the kernel's page tables as vmsh
 * pinned them map it there, writable. The base is page_offset_base as the
 * kernel exports it, or one of the fixed ones of kernels without KASLR of
 * their memory layout; 0 if none checks out (vmsh unlinks it then, in a
 * stop window). */
static uint64_t entry_kva(const struct kernel_lib *kl)
{
	static const uint64_t fixed[] = { 0xffff888000000000ULL, 0xff11000000000000ULL, 0xffff880000000000ULL };
	uint64_t base[4], va, gpa = region_entry_addr(kl);
	size_t n = 0;
	if (ksymtab_lookup(&kl->k->ksyms, "page_offset_base", &va) == 0 &&
	    kernel_read_virt(kl->gm, kl->k, va, &base[n], sizeof(base[n])) == 0)
		n++;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		base[n++] = fixed[i];
	for (size_t i = 0; i < n; i++) {
		struct pt_mapping m;
		va = base[i] + gpa;
		if (va >= base[i] && pt_translate(&kl->k->pt, va, &m) == 0 && m.pa + (va - m.va) == gpa &&
		    (m.flags & PTE_RW))
			return va;
	}
	return 0;
}

/* library image, then its page directory and page table, in the memfd */
static int link_library(struct kernel_lib *kl, struct vmsh_err *err)
{
	const struct guest_kernel *k = kl->k;
	if (find_region(kl, err) < 0)
		return -1;
	if (elf_rel_load(vmsh_guest_lib_start, vmsh_guest_lib_end - vmsh_guest_lib_start, kl->region.va,
			resolve_export, (void *)k, &kl->lib, err) < 0)
		return vmsh_err_prefix(err, "link the kernel library");
	size_t lib_size = kl->lib.size;
	if (lib_size + 2 * PAGE > KLIB_MEM_SIZE)
		return vmsh_error(err, EFBIG, "kernel library too large");
	uint64_t chan_va;
	uint64_t borrow_va, stack_va;
	if (elf_rel_symbol(&kl->lib, "vmsh_channel", &chan_va) < 0 ||
	    elf_rel_symbol(&kl->lib, "vmsh_borrow_entry", &kl->entry_va) < 0 ||
	    elf_rel_symbol(&kl->lib, "vmsh_borrow_spin", &kl->spin_lo) < 0 ||
	    elf_rel_symbol(&kl->lib, "vmsh_borrow_spin_end", &kl->spin_hi) < 0 ||
	    elf_rel_symbol(&kl->lib, "vmsh_borrow", &borrow_va) < 0 ||
	    elf_rel_symbol(&kl->lib, "vmsh_borrow_stack", &stack_va) < 0)
		return vmsh_error(err, ENOENT, "kernel library lacks one of its entry symbols");
	if (chan_va < kl->region.va || chan_va + sizeof(struct vmsh_channel) > kl->region.va + lib_size ||
	    borrow_va < kl->region.va || borrow_va + sizeof(struct vmsh_borrow) > kl->region.va + lib_size ||
	    stack_va < kl->region.va || stack_va + BORROW_STACK_SIZE > kl->region.va + lib_size)
		return vmsh_error(err, EINVAL, "kernel library symbols outside its image");
	memcpy(kl->mem.local, kl->lib.image, lib_size);
	kl->chan = (struct vmsh_channel *)(kl->mem.local + (chan_va - kl->region.va));
	kl->borrow = (struct vmsh_borrow *)(kl->mem.local + (borrow_va - kl->region.va));
	kl->stack_top = stack_va + BORROW_STACK_SIZE;
	if (kl->chan->magic != VMSH_CHANNEL_MAGIC)
		return vmsh_error(err, EINVAL, "kernel library channel not found");
	kl->chan->load_base = kl->region.va;

	uint64_t *pd = (uint64_t *)(kl->mem.local + lib_size);
	uint64_t(*pts)[512] = (uint64_t(*)[512])(kl->mem.local + lib_size + PAGE);
	uint64_t pd_gpa = kl->slot.gpa + lib_size, pts_gpa = pd_gpa + PAGE, entry;
	memset(pd, 0, 2 * PAGE);
	if (ptw_build_gib(pd, pd_gpa, pts, pts_gpa, 1, 0, kl->slot.gpa, kl->lib.rx_size, 0, &entry, err) < 0 ||
	    ptw_build_gib(pd, pd_gpa, pts, pts_gpa, 1, kl->lib.rx_size, kl->slot.gpa + kl->lib.rx_size,
			 lib_size - kl->lib.rx_size, PTE_RW | PTE_NX, &entry, err) < 0)
		return -1;
	/* the rest of the memory: data the library reads (the helper file) */
	kl->used = lib_size + 2 * PAGE;
	if (ptw_build_gib(pd, pd_gpa, pts, pts_gpa, 1, kl->used, kl->slot.gpa + kl->used, KLIB_MEM_SIZE - kl->used,
			 PTE_NX, &entry, err) < 0)
		return -1;
	/* The one write into the guest's own page tables, into a table found
	 * a moment ago: does it still lead to the kernel where vmsh found it?
	 * (A guest that restarted meanwhile has other contents there.) */
	struct pt_mapping text;
	if (pt_translate(&k->pt, k->text_base, &text) < 0 || text.pa != k->phys_base)
		return vmsh_error(err, EAGAIN, "the guest's kernel page tables changed (did it restart?): "
				  "the library was not linked");
	__sync_synchronize();
	if (guest_mem_write(kl->gm, region_entry_addr(kl), &entry, 8) < 0)
		return vmsh_error(err, errno, "link page tables at %#llx", (unsigned long long)kl->region.table_gpa);
	kl->region_entry = entry;
	kl->linked = true;
	kl->chan->unlink_entry = entry;
	kl->chan->unlink_va = entry_kva(kl);
	if (!kl->chan->unlink_va)
		log_verbose("kernel library: its page-table entry is not in the kernel's direct map as vmsh knows it: "
			    "vmsh unlinks it itself");
	/* what a later run needs if this one has to leave the library behind */
	kl->chan->rec = (struct vmsh_lib_record){
		.magic = VMSH_RECORD_MAGIC,
		.region_va = kl->region.va,
		.table_gpa = kl->region.table_gpa,
		.table_index = kl->region.index,
		.table_entry = entry,
		.slot_id = kl->slot.id,
		.slot_gpa = kl->slot.gpa,
		.slot_size = kl->slot.size,
		.hva = kl->mem.remote,
		.chan_off = chan_va - kl->region.va,
		.borrow_off = borrow_va - kl->region.va,
	};
	log_verbose("kernel library: %zu bytes at %#llx (gpa %#llx, slot %u), %u relocations",
		    lib_size, (unsigned long long)kl->region.va, (unsigned long long)kl->slot.gpa, kl->slot.id,
		    kl->lib.n_relocs);
	return 0;
}

/* The lock says "a live vmsh run owns this library" to later runs
 * (klib_reap_stale); it goes when we close it or die. It must be on an open
 * file description of our own: mem.fd is the hypervisor's (pidfd_getfd),
 * which its mapping keeps open forever. */
static int lock_library(struct kernel_lib *kl, struct vmsh_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", kl->mem.fd);
	kl->lock_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (kl->lock_fd < 0)
		return vmsh_error(err, errno, "open the library's memory for its lock");
	if (flock(kl->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return vmsh_error(err, errno, "lock the library's memory");
	return 0;
}

static void unlock_library(struct kernel_lib *kl)
{
	if (kl->lock_fd >= 0)
		close(kl->lock_fd);
	kl->lock_fd = -1;
}

int klib_load(struct kernel_lib *kl, struct kvm_vm *vm, struct guest_mem *gm, const struct guest_kernel *k,
	      const struct iomem_entry *iomem, size_t n_iomem, const struct memslot_ids *ids, uint64_t gpa_limit,
	      struct vmsh_err *err)
{
	memset(kl, 0, sizeof(*kl));
	kl->vm = vm;
	kl->gm = gm;
	kl->k = k;
	kl->mem.fd = -1;
	kl->entered_vcpu = -1;
	kl->lock_fd = -1;
	if (shared_mem_create(vm, KLIB_MEM_SIZE, &kl->mem, err) < 0 || lock_library(kl, err) < 0 ||
	    add_slot(kl, iomem, n_iomem, ids, gpa_limit, err) < 0 || link_library(kl, err) < 0) {
		klib_unload(kl);
		return vmsh_err_prefix(err, "load the kernel library");
	}
	return 0;
}

/* Does this page-table root map the library? The kernel's own does; a
 * process's (kernel half, or an idle vCPU lazily still on the last
 * process's) shares its top-level entry for the library's region. */
static bool maps_library(struct kernel_lib *kl, uint64_t cr3)
{
	const struct pt_ctx *pt = &kl->k->pt;
	uint64_t root = pt_root_from_cr3(cr3, pt->phys_mask);
	unsigned shift = pt->levels == 5 ? 48 : 39;
	uint64_t idx = (kl->region.va >> shift) & 511, mine;
	if (guest_mem_read(kl->gm, root + 8 * idx, &mine, 8) < 0)
		return false;
	/* compared with the entry of the kernel's root as vmsh pinned it when
	 * it found the kernel (find_region), not read through that root now
	 * (its process may be gone); the same table, whatever the accessed bit
	 * the CPU sets in each copy */
	return pte_same_target(mine, kl->top_entry, pt->phys_mask);
}

int klib_mapped(struct kernel_lib *kl)
{
	uint64_t cur;
	if (!kl->linked)
		return 0;
	if (guest_mem_read(kl->gm, region_entry_addr(kl), &cur, 8) < 0)
		return -1;
	return pte_same_target(cur, kl->region_entry, kl->k->pt.phys_mask);
}

int klib_require_mapped(struct kernel_lib *kl, struct vmsh_err *err)
{
	int mapped = klib_mapped(kl);
	if (mapped > 0)
		return 0;
	if (mapped < 0)
		return vmsh_error(err, EIO, "cannot read the guest's page-table entry for the kernel library");
	return vmsh_error(err, ENXIO, "the guest no longer maps vmsh's kernel library at %#llx (it restarted?)",
			  (unsigned long long)kl->region.va);
}

/* What borrow_classify needs of vCPU i (the vCPUs are stopped). */
static int read_view(struct kernel_lib *kl, size_t i, struct borrow_view *v, struct vmsh_err *err)
{
	struct kvm_vm *vm = kl->vm;
	const struct kvm_vcpu_ref *c = &vm->vcpus[i];
	struct vcpu_state st;
	memset(v, 0, sizeof(*v));
	if (kvm_vcpu_get_state(vm, c, &st, err) < 0 || kvm_vcpu_get_mp_state(vm, c, &v->mp_state, err) < 0 ||
	    kvm_vcpu_get_events(vm, c, &v->ev, err) < 0)
		return -1;
	v->regs = st.regs;
	v->sregs = st.sregs;
	v->in_kvm_run = tracer_vcpu_thread(vm->tr, c->fd) != NULL;
	v->cr3_maps_lib = maps_library(kl, st.sregs.cr3);
	v->pti_cr3_maps_lib = !v->cr3_maps_lib && maps_library(kl, st.sregs.cr3 & ~BORROW_PTI_CR3_BITS);
	if ((st.sregs.ss.dpl & 3) == 3 && kvm_vcpu_get_msr(vm, c, MSR_KERNEL_GS_BASE, &v->kernel_gs, err) < 0)
		return -1;
	return 0;
}

/* Send vCPU i into the stub (borrow_plan), keeping vmsh's own copy of its
 * state; on failure it is left as it was. */
static int borrow_apply(struct kernel_lib *kl, size_t i, const struct borrow_view *v, enum borrow_kind kind,
			struct vmsh_err *err)
{
	struct kvm_vm *vm = kl->vm;
	const struct kvm_vcpu_ref *c = &vm->vcpus[i];
	struct borrow_plan p;
	borrow_plan(v, kind, kl->entry_va, kl->stack_top, 0, &p);
	*kl->borrow = p.saved;
	kl->chan->state = VMSH_LIB_LOADED;
	__sync_synchronize();
	kl->saved_regs = v->regs;
	kl->saved_sregs = v->sregs;
	kl->saved_sregs_changed = p.sregs_changed;
	kl->self_return = p.saved.ret_mode != VMSH_RET_HOST;
	kl->went_back_itself = false;
	/* Each write leaves a state the vCPU may run in should vmsh die
	 * before the next (SIGKILL): runnable first (a halted vCPU just wakes
	 * up early, as from any interrupt; sent to the stub while still halted
	 * with interrupts off, nothing would ever wake it); then the registers
	 * (a kernel-mode vCPU is then in the stub, which returns by itself);
	 * the kernel segments last (between the two, a user-mode vCPU would
	 * fetch the stub in user mode: a fault that costs that process a
	 * SIGSEGV, where the other order would run user code in kernel mode). */
	if (v->mp_state != KVM_MP_STATE_RUNNABLE && kvm_vcpu_set_mp_state(vm, c, KVM_MP_STATE_RUNNABLE, err) < 0)
		return -1;
	if (kvm_vcpu_set_regs(vm, c, &p.regs, err) < 0)
		return -1; /* left runnable: an early wake-up */
	if (p.sregs_changed && kvm_vcpu_set_sregs(vm, c, &p.sregs, err) < 0) {
		kvm_vcpu_set_regs(vm, c, &v->regs, NULL);
		return -1;
	}
	kl->entered_vcpu = c->index;
	kl->borrow_kind = kind;
	return 0;
}

static void note_reason(char *buf, size_t len, int vcpu, const char *why)
{
	size_t n = strlen(buf);
	if (n + 1 < len)
		snprintf(buf + n, len - n, "%svCPU %d %s", n ? "; " : "", vcpu, why);
}

/* The previous irq_work still queued or running in the guest? (5.10+:
 * flags at +8, IRQ_WORK_PENDING 1, IRQ_WORK_BUSY 2) */
static bool irq_work_busy(const struct kernel_lib *kl)
{
	return (((const volatile struct vmsh_borrow *)kl->borrow)->irq_work[1] & 3) != 0;
}

static const struct kvm_vcpu_ref *vcpu_by_index(struct kvm_vm *vm, int index)
{
	for (size_t i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpus[i].index == index)
			return &vm->vcpus[i];
	return NULL;
}

/* The stub marks itself gone back a few instructions before its iretq;
 * vmsh rewrites the state those instructions read only once the vCPU it
 * last lent is out of the library (the vCPUs stopped). Its work done is
 * proof enough, and costs the stopped guest no ioctl: the work item is
 * queued by the irq_work, which that vCPU runs only once its iretq has
 * turned interrupts on (a guest that fakes "done" only misleads itself).
 * 1 out (or never lent), 0 still inside, -1 cannot tell. */
static int stub_left(struct kernel_lib *kl)
{
	if (!kl->went_back_itself || klib_done(kl))
		return 1;
	const struct kvm_vcpu_ref *c = vcpu_by_index(kl->vm, kl->entered_vcpu);
	struct kvm_regs r;
	struct vmsh_err e = { 0 };
	if (!c)
		return 1; /* that vCPU is gone */
	if (kvm_vcpu_get_regs(kl->vm, c, &r, &e) < 0)
		return -1;
	if (r.rip >= kl->region.va && r.rip < kl->region.va + GIB)
		return 0;
	/* in an NMI handler (NMIs masked until its iretq), the handler may
	 * have interrupted the stub's last instructions: look again later */
	struct kvm_vcpu_events ev;
	if (kvm_vcpu_get_events(kl->vm, c, &ev, &e) < 0)
		return -1;
	if (ev.nmi.masked)
		return 0;
	kl->went_back_itself = false; /* out for good: the stub is not re-entered without vmsh */
	return 1;
}

/* In one stop-the-world window: find a vCPU that may be borrowed
 * (borrow_classify; a halted one first, then one in user mode, then one in
 * the kernel) and send it to the stub. 1 if done, 0 if none may be now
 * (kl->not_enterable says why; ENOENT in *err if waiting cannot help), -1
 * on error. The library's own entry is checked in the same window: a guest
 * that rebooted may have the same top-level entry (no physical KASLR, or
 * the same draw) but not ours below it, and a vCPU sent to the stub would
 * fault. */
static int try_enter(struct kernel_lib *kl, struct vmsh_err *err)
{
	struct kvm_vm *vm = kl->vm;
	if (irq_work_busy(kl))
		return vmsh_error(err, EBUSY, "the library's previous interrupt work has not finished in the guest");
	if (kvm_vm_stop_vcpus(vm, err) < 0)
		return -1;
	if (klib_require_mapped(kl, err) < 0) {
		tracer_resume_others(vm->tr);
		return -1;
	}
	int back = stub_left(kl);
	if (back <= 0) {
		tracer_resume_others(vm->tr);
		if (back < 0)
			return vmsh_error(err, EIO, "cannot read the registers of vCPU %d", kl->entered_vcpu);
		snprintf(kl->not_enterable, sizeof(kl->not_enterable),
			 "vCPU %d is still on its way back from the library's stub", kl->entered_vcpu);
		return 0;
	}
	struct borrow_view best;
	enum borrow_kind best_kind = BORROW_NONE;
	size_t best_i = 0;
	bool any_transient = false;
	kl->not_enterable[0] = '\0';
	for (size_t i = 0; i < vm->n_vcpus && best_kind != BORROW_HALTED; i++) {
		struct borrow_view v;
		struct vmsh_err e = { 0 };
		char why[160];
		bool transient = true;
		enum borrow_kind k;
		if (read_view(kl, i, &v, &e) < 0) {
			snprintf(why, sizeof(why), "unreadable (%.120s)", e.msg);
			k = BORROW_NONE;
		} else {
			k = borrow_classify(&v, &transient, why, sizeof(why));
		}
		if (k == BORROW_NONE) {
			note_reason(kl->not_enterable, sizeof(kl->not_enterable), vm->vcpus[i].index, why);
			any_transient |= transient;
		} else if (k > best_kind) {
			best = v;
			best_kind = k;
			best_i = i;
		}
	}
	int rc = 0;
	if (best_kind != BORROW_NONE)
		rc = borrow_apply(kl, best_i, &best, best_kind, err) < 0 ? -1 : 1;
	tracer_resume_others(vm->tr);
	if (rc == 0 && !any_transient)
		return vmsh_error(err, ENOENT, "no vCPU can be lent to the library: %s", kl->not_enterable);
	return rc;
}

static bool in_spin(const struct kernel_lib *kl, uint64_t rip)
{
	return rip >= kl->spin_lo && rip < kl->spin_hi;
}

/* Put the borrowed vCPU back exactly as vmsh saved it (it is stopped in
 * the stub's spin loop). */
static int borrow_restore(struct kernel_lib *kl, const struct kvm_vcpu_ref *c, struct vmsh_err *err)
{
	struct kvm_vm *vm = kl->vm;
	/* the order matters should vmsh die in between (see borrow_apply):
	 * segments back first (the stub then faults in user mode: SIGSEGV for
	 * that process, not user code run in kernel mode), then the registers;
	 * a halted vCPU is not put back to sleep: it wakes up early instead */
	if (kl->saved_sregs_changed && kvm_vcpu_set_sregs(vm, c, &kl->saved_sregs, err) < 0)
		return -1;
	if (kvm_vcpu_set_regs(vm, c, &kl->saved_regs, err) < 0)
		return -1;
	return 0;
}

/* Wait until the vCPU is back where it was: the stub went back by itself
 * (it does at once where it can), or it spins there and vmsh stops it and
 * puts it back (where the stub cannot, or it still spins after
 * BORROW_SELF_RETURN_WAIT_MS). Whether the stub may go back is vmsh's own
 * plan (kl->self_return), never the guest-writable copy. */
static int borrow_finish(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err)
{
	struct kvm_vm *vm = kl->vm;
	const struct kvm_vcpu_ref *c = vcpu_by_index(vm, kl->entered_vcpu);
	volatile struct vmsh_borrow *b = kl->borrow;
	uint64_t t0 = now_ns(), rip = 0;
	uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000ULL;
	uint64_t put_back_from = kl->self_return ? t0 + BORROW_SELF_RETURN_WAIT_MS * 1000000ULL : t0;
	if (!c)
		return vmsh_error(err, ENOENT, "the borrowed vCPU %d is gone", kl->entered_vcpu);
	for (;;) {
		unsigned long long st = b->state;
		if (st == VMSH_BORROW_SELF_RETURNED && kl->self_return) {
			kl->went_back_itself = true;
			return 0;
		}
		if (st == VMSH_BORROW_SPINNING && now_ns() >= put_back_from) {
			if (kvm_vm_stop_vcpus(vm, err) < 0)
				return -1;
			struct kvm_regs r;
			int rc = kvm_vcpu_get_regs(vm, c, &r, err);
			if (rc == 0) {
				rip = r.rip;
				if (b->state == VMSH_BORROW_SPINNING && in_spin(kl, r.rip)) {
					rc = borrow_restore(kl, c, err);
					if (rc == 0)
						b->state = VMSH_BORROW_RESTORED;
					tracer_resume_others(vm->tr);
					if (rc < 0)
						log_info("vCPU %d could not be put back from the library's stub: %s", c->index,
							  err->msg);
					return rc == 0 ? 1 : -1;
				}
			}
			tracer_resume_others(vm->tr);
			if (rc < 0)
				return -1;
		}
		if (now_ns() > deadline)
			return vmsh_error(err, ETIMEDOUT,
					  "vCPU %d did not come back from the library's entry stub within %u ms (state %llu, rip %#llx)",
					  c->index, timeout_ms, st, (unsigned long long)rip);
		usleep(200);
	}
}

int klib_add_file(struct kernel_lib *kl, const void *data, size_t len, struct vmsh_err *err)
{
	size_t off = (kl->used + 15) & ~(size_t)15;
	if (len > KLIB_MEM_SIZE || off + len > KLIB_MEM_SIZE)
		return vmsh_error(err, EFBIG, "%zu bytes do not fit into the library's memory (%zu free)", len,
				  KLIB_MEM_SIZE - off);
	memcpy(kl->mem.local + off, data, len);
	kl->chan->helper_va = kl->region.va + off;
	kl->chan->helper_len = len;
	kl->used = off + len;
	return klib_helper_name(kl->chan->helper_path, sizeof(kl->chan->helper_path), err);
}

int klib_helper_name(char *out, size_t cap, struct vmsh_err *err)
{
	/* The library creates the helper's file (O_EXCL) in /dev, /run or /tmp
	 * under the name vmsh proposes here. A fixed name let any guest user
	 * block it by creating that file in /tmp first; a random one cannot be
	 * guessed before the file exists (and /tmp's sticky bit keeps others
	 * from replacing it after). */
	uint8_t r[8];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return vmsh_error(err, errno, "random name for the helper's file");
	if (cap < sizeof(".vmsh-helper-") + 2 * sizeof(r))
		return vmsh_error(err, ENAMETOOLONG, "helper name");
	int n = snprintf(out, cap, ".vmsh-helper-");
	for (size_t i = 0; i < sizeof(r); i++)
		n += snprintf(out + n, cap - (size_t)n, "%02x", r[i]);
	return 0;
}

/* Guest data: copy once (the guest may change it while we read), bounded,
 * and escape it. */
static const char *guest_string(const volatile char *src, size_t n, char *buf, size_t len)
{
	char snap[256];
	if (n > sizeof(snap))
		n = sizeof(snap);
	for (size_t i = 0; i < n; i++)
		snap[i] = src[i];
	esc_bytes(buf, len, snap, n);
	return buf;
}

const char *klib_where(const struct kernel_lib *kl, char *buf, size_t len)
{
	const volatile struct vmsh_channel *c = kl->chan;
	if (!c) {
		snprintf(buf, len, "(library gone)");
		return buf;
	}
	switch (c->state & 0xff) {
	case VMSH_LIB_LOADED:
		snprintf(buf, len, "%s", kl->entered_vcpu >= 0 ? "not entered yet (the borrowed vCPU has not run since)"
								: "not entered");
		return buf;
	case VMSH_LIB_ENTERED:
		if (!c->where_seq) {
			snprintf(buf, len, "queued, its work item has not started");
			return buf;
		}
		break;
	default:
		break;
	}
	return guest_string(c->where, sizeof(c->where), buf, len);
}

const char *klib_message(const struct kernel_lib *kl, char *buf, size_t len)
{
	return guest_string(kl->chan->message, sizeof(kl->chan->message), buf, len);
}

void klib_log_progress(struct kernel_lib *kl)
{
	volatile struct vmsh_channel *c = kl->chan;
	unsigned long long seq = c->where_seq;
	if (seq == kl->seen_seq || log_level() < LOG_VERBOSE)
		return;
	kl->seen_seq = seq;
	char w[VMSH_WHERE_LEN * 4 + 8];
	log_verbose("kernel library: %s (%.0f ms after entry)", klib_where(kl, w, sizeof(w)),
		    (now_ns() - kl->start_ns) / 1e6);
}

bool klib_done(const struct kernel_lib *kl)
{
	return (((volatile struct vmsh_channel *)kl->chan)->state & 0xff) == VMSH_LIB_DONE;
}

int klib_enter(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err)
{
	if (klib_start(kl, timeout_ms, err) < 0)
		return -1;
	return klib_wait(kl, timeout_ms + 5000, err);
}

int klib_start(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err)
{
	uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)timeout_ms * 1000000ULL;
	int rc;
	kl->enter_attempts = 0;
	kl->start_ns = t0;
	while ((rc = try_enter(kl, err)) == 0) {
		kl->enter_attempts++;
		log_debug("no vCPU to lend to the library now: %s", kl->not_enterable);
		if (now_ns() > deadline)
			return vmsh_error(err, EBUSY, "no vCPU could be lent to the library within %u ms (%u tries): %s",
					  timeout_ms, kl->enter_attempts, kl->not_enterable);
		/* each try is a stop window: after the first two, give a guest
		 * that keeps its interrupts off (an interrupt handler, a
		 * spinlock) a few ms to get out before stopping it again */
		sleep_ms(kl->enter_attempts < 2 ? 1 : 4);
	}
	if (rc < 0)
		return vmsh_err_prefix(err, "enter the kernel library");
	kl->enter_ns = now_ns() - t0;
	/* tests: die with a vCPU in the stub (its own way back must work) */
	if (getenv("VMSH_TEST_DIE_IN_BORROW"))
		raise(SIGKILL);
	if (borrow_finish(kl, timeout_ms, err) < 0)
		return vmsh_err_prefix(err, "enter the kernel library");
	kl->borrow_ns = now_ns() - t0 - kl->enter_ns;
	static const char *const kinds[] = { "", "running kernel code", "running user code", "halted" };
	log_verbose("kernel library: entered through vCPU %d (%s) after %u tries, %.1f ms; vCPU back %s after %.1f ms",
		    kl->entered_vcpu, kinds[kl->borrow_kind], kl->enter_attempts + 1, kl->enter_ns / 1e6,
		    kl->went_back_itself ? "by itself" : "(put back by vmsh)", kl->borrow_ns / 1e6);
	return 0;
}

int klib_wait(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	volatile struct vmsh_channel *c = kl->chan;
	char w[VMSH_WHERE_LEN * 4 + 8];
	while ((c->state & 0xff) != VMSH_LIB_DONE) {
		klib_log_progress(kl);
		if (now_ns() > deadline)
			return vmsh_error(err, ETIMEDOUT, "the kernel library did not report back within %u ms; it is %s",
					  timeout_ms, klib_where(kl, w, sizeof(w)));
		sleep_ms(1);
	}
	klib_log_progress(kl);
	kl->done_ns = now_ns() - kl->start_ns;
	long long error = c->error;
	if (error) {
		char m[256 * 4 + 8];
		/* an errno from the guest: only a plausible one becomes ours */
		return vmsh_error(err, error < 0 && error > -4096 ? (int)-error : EPROTO,
				  "kernel library failed at step %llu: %s", (unsigned long long)c->step,
				  klib_message(kl, m, sizeof(m)));
	}
	return 0;
}

/* Nothing of the library's is running or queued in the guest: its work has
 * finished, its irq_work is done, no vCPU is (or may still be sent) in the
 * stub. */
static bool lib_quiet(const struct kernel_lib *kl)
{
	unsigned long long b = ((const volatile struct vmsh_borrow *)kl->borrow)->state;
	return (kl->chan->state & 0xff) == VMSH_LIB_DONE && !irq_work_busy(kl) && b != VMSH_BORROW_RUNNING &&
	       b != VMSH_BORROW_SPINNING && ((const volatile struct vmsh_channel *)kl->chan)->waiter != VMSH_WAITER_MAGIC;
}

bool klib_waiting(const struct kernel_lib *kl)
{
	return kl->chan && klib_done(kl) && ((const volatile struct vmsh_channel *)kl->chan)->waiter == VMSH_WAITER_MAGIC;
}

void klib_wake(struct kernel_lib *kl)
{
	volatile struct vmsh_channel *c = kl->chan;
	kl->start_ns = now_ns();
	kl->woke_waiter = true;
	c->state = VMSH_LIB_ENTERED; /* the thread marks DONE once it has finished */
	__sync_synchronize();
	c->waiter_cmd = VMSH_WAITER_RUN;
	log_verbose("kernel library: its waiting thread does the work (no vCPU borrowed)");
}

/* The waiting thread said it takes vmsh's entry out of the guest's table
 * itself (self_unlink, written before its DONE): that store is its very
 * last act, a few instructions after DONE (entry.S), so only once the entry
 * no longer holds vmsh's value has nothing of the library anything left to
 * run. 1 gone, 0 not promised, -1 promised but still there after `ms` (its
 * thread preempted in between, or the guest never lets it run: the library
 * must stay). */
static int wait_self_unlink(struct kernel_lib *kl, unsigned ms)
{
	const volatile struct vmsh_channel *c = kl->chan;
	if (!kl->woke_waiter || c->self_unlink != 1 || !klib_done(kl))
		return 0;
	for (unsigned i = 0;; i++) {
		if (klib_mapped(kl) == 0)
			return 1;
		if (i == ms)
			return -1;
		sleep_ms(1);
	}
}

/* Is any vCPU executing in [lo, hi)? With every vCPU stopped; their
 * instruction pointers are all it takes. (-1: cannot tell) */
static int rip_inside(struct kvm_vm *vm, uint64_t lo, uint64_t hi)
{
	int inside = 0;
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		struct kvm_regs r;
		struct vmsh_err e = { 0 };
		if (kvm_vcpu_get_regs(vm, &vm->vcpus[i], &r, &e) < 0)
			inside = inside ? inside : -1;
		else if (r.rip >= lo && r.rip < hi)
			inside = 1;
	}
	return inside;
}

/* Take vmsh's entry out of the guest's table, only if it is still there:
 * after a guest restart that page is the new kernel's, to be left alone.
 * The caller holds the vCPUs stopped. */
static void unlink_stopped(struct kernel_lib *kl)
{
	int mapped = klib_mapped(kl);
	uint64_t zero = 0, at = region_entry_addr(kl);
	if (mapped == 0)
		log_info("the guest no longer holds vmsh's page-table entry at %#llx (it restarted?): left as it is",
			 (unsigned long long)at);
	else if (mapped < 0)
		log_info("cannot read vmsh's page-table entry at %#llx: left as it is", (unsigned long long)at);
	else if (guest_mem_write(kl->gm, at, &zero, 8) < 0)
		log_info("unlinking the library's page tables failed: %s", strerror(errno));
}

/* Unlink the library's region, in the stop window that finds no vCPU
 * executing its code and its irq_work done (if `entered`: it ran), so
 * that none can enter it between the look and the unlink. Retried for up
 * to about 200 ms; false if it could not be (left linked: the caller
 * leaves the library mapped, a leak rather than a crash). */
static bool unlink_region(struct kernel_lib *kl, bool entered)
{
	struct kvm_vm *vm = kl->vm;
	uint64_t lo = kl->region.va, hi = kl->region.va + GIB;
	for (int tries = 0; tries <= 200; tries++) {
		struct vmsh_err e = { 0 };
		if (kvm_vm_stop_vcpus(vm, &e) < 0) {
			sleep_ms(1);
			continue;
		}
		if (!entered || (rip_inside(vm, lo, hi) == 0 && !irq_work_busy(kl))) {
			unlink_stopped(kl);
			tracer_resume_others(vm->tr);
			return true;
		}
		tracer_resume_others(vm->tr);
		sleep_ms(1);
	}
	log_info("a vCPU stayed inside the kernel library (or its irq_work ran, or the vCPUs could not be "
		 "stopped) for 200 ms");
	return false;
}

static void leave_mapped(struct kernel_lib *kl, const char *why);

void klib_abandon(struct kernel_lib *kl)
{
	leave_mapped(kl, "the guest still uses the kernel library");
}

static void leave_mapped(struct kernel_lib *kl, const char *why)
{
	log_info("%s: leaving it mapped at %#llx (slot %u) until the VM restarts", why,
		 (unsigned long long)kl->region.va, kl->slot.id);
	kl->mem.remote = 0; /* stays mapped in the hypervisor, under the slot */
	shared_mem_destroy(kl->vm, &kl->mem);
	unlock_library(kl);
	elf_rel_free(&kl->lib);
	kl->linked = false;
	kl->chan = NULL;
}

void klib_unload(struct kernel_lib *kl)
{
	bool entered = kl->linked && kl->entered_vcpu >= 0 && kl->chan;
	/* (A guest that restarted no longer maps the library: nothing of it can
	 * run there, whatever its state says.) */
	int self = entered ? wait_self_unlink(kl, 5000) : 0;
	if (self < 0 && klib_mapped(kl) != 0) {
		leave_mapped(kl, "the kernel library's thread has not taken it out of the guest's page tables");
		return;
	}
	/* A work item that was queued but has not finished would run our code
	 * after we took it away: leave everything mapped then (a leak, not a
	 * crash) and say so. */
	if (entered && self == 0 && !lib_quiet(kl) && klib_mapped(kl) != 0) {
		leave_mapped(kl, "the kernel library's work has not finished");
		return;
	}
	if (self > 0)
		log_verbose("kernel library: unlinked from the guest's page tables by its own thread");
	else if (kl->linked && !unlink_region(kl, entered)) {
		leave_mapped(kl, "the kernel library could not be unlinked safely");
		return;
	}
	kl->linked = false;
	kvm_slot_remove(kl->vm, &kl->slot);
	shared_mem_destroy(kl->vm, &kl->mem);
	unlock_library(kl);
	kl->chan = NULL;
	elf_rel_free(&kl->lib);
}

/* ---- libraries earlier runs had to leave behind ---- */

/* Where the guest's page tables keep the entry for the 1 GiB region at va
 * (the PDPT entry), following the kernel's root. 0 if not reachable. */
static uint64_t region_entry_gpa(struct guest_mem *gm, const struct pt_ctx *pt, uint64_t va)
{
	uint64_t table = pt->root;
	for (int level = pt->levels; level > 3; level--) {
		unsigned shift = 12 + 9 * (unsigned)(level - 1);
		uint64_t e;
		if (guest_mem_read(gm, table + 8 * ((va >> shift) & 511), &e, 8) < 0 || !(e & PTE_PRESENT) || (e & PTE_PS))
			return 0;
		table = e & pt->phys_mask & ~0xfffULL;
	}
	return table + 8 * ((va >> 30) & 511);
}

/* Is any vCPU executing in [lo, hi)? (-1: cannot tell) */
static int vcpu_inside(struct kvm_vm *vm, uint64_t lo, uint64_t hi)
{
	struct vmsh_err e = { 0 };
	if (kvm_vm_stop_vcpus(vm, &e) < 0)
		return -1;
	int inside = rip_inside(vm, lo, hi);
	tracer_resume_others(vm->tr);
	return inside;
}

static bool id_used(const struct memslot_ids *ids, unsigned long long id)
{
	for (size_t i = 0; i < ids->n; i++)
		if (ids->ids[i] == id)
			return true;
	return false;
}

/* Is slot id in use? From the probe's list, or - an id between the low
 * ids and the top ones it probed (below a run of free ids: a killed run's
 * slot under later sessions that ended) - from a probe of that id. */
static bool slot_in_use(struct kvm_vm *vm, const struct memslot_ids *ids, unsigned long long id)
{
	if (id_used(ids, id))
		return true;
	if (id >= 0x10000 || memslot_ids_cover(ids, (uint32_t)id))
		return false;
	struct vmsh_err e = { 0 };
	return kvm_memslot_id_used(vm, 0, (uint32_t)id, &e) == 1;
}

/* Ask the waiting thread of an earlier run's library (channel at `at` in
 * the hypervisor; vmsh's entry at guest-physical `loc`, holding `entry`) to
 * end, and wait for its end: it sleeps in steps of VMSH_WAITER_POLL_MS. Its
 * end is its last store: the entry cleared where it said it clears it
 * (self_unlink), else the state DONE (from ENTERED, written here first).
 * Only state, waiter and self_unlink are read (guest data, compared only). */
static int end_waiter(struct kvm_vm *vm, struct guest_mem *gm, uint64_t at, uint64_t loc, uint64_t entry,
		      uint64_t phys_mask)
{
	unsigned long long entered = VMSH_LIB_ENTERED, cmd = VMSH_WAITER_EXIT;
	if (remote_write(vm->pid, at + offsetof(struct vmsh_channel, state), &entered, 8) != 8 ||
	    remote_write(vm->pid, at + offsetof(struct vmsh_channel, waiter_cmd), &cmd, 8) != 8)
		return -1;
	for (int i = 0; i < 2000; i++) {
		unsigned long long state, waiter, self;
		uint64_t cur;
		sleep_ms(1);
		if (remote_read(vm->pid, at + offsetof(struct vmsh_channel, state), &state, 8) != 8 ||
		    remote_read(vm->pid, at + offsetof(struct vmsh_channel, waiter), &waiter, 8) != 8 ||
		    remote_read(vm->pid, at + offsetof(struct vmsh_channel, self_unlink), &self, 8) != 8 ||
		    guest_mem_read(gm, loc, &cur, 8) < 0)
			return -1;
		if ((state & 0xff) != VMSH_LIB_DONE || waiter == VMSH_WAITER_MAGIC)
			continue;
		if (self == 1 && pte_same_target(cur, entry, phys_mask))
			continue; /* its last store, a few instructions after DONE, is still to come */
		log_info("the thread of an earlier vmsh run's kernel library ended when asked");
		return 0;
	}
	return -1;
}

/* One candidate mapping of the hypervisor: is it an earlier library, and can
 * it go? Returns 1 removed, 0 not a library (or not ours to judge), -1 left
 * in place (said why). */
static int reap_one(struct kvm_vm *vm, struct guest_mem *gm, const struct guest_kernel *k,
		    const struct memslot_ids *ids, uint64_t known_gpa, const struct proc_map *m)
{
	/* the channel: page-aligned, with its magic, somewhere in the memory */
	struct vmsh_channel c;
	uint64_t off = 0;
	bool found = false;
	for (; off + sizeof(c) <= KLIB_MEM_SIZE; off += PAGE) {
		uint64_t magic;
		if (remote_read(vm->pid, m->start + off, &magic, 8) != 8)
			return 0;
		if (magic == VMSH_CHANNEL_MAGIC && remote_read(vm->pid, m->start + off, &c, sizeof(c)) == (ssize_t)sizeof(c)) {
			found = true;
			break;
		}
	}
	if (!found)
		return 0;
	/* A vmsh run that is still attached (another session on this VM) holds
	 * the lock on its library's memory: never take that one away. */
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)vm->pid, (unsigned long long)m->start,
		 (unsigned long long)m->end);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_info("cannot open the memory of an earlier vmsh kernel library (%s): left alone", strerror(errno));
		return -1;
	}
	bool live = flock(fd, LOCK_EX | LOCK_NB) < 0;
	close(fd); /* the lock, if we got it, goes with it: we only asked */
	if (live) {
		log_verbose("the kernel library at %#llx in the hypervisor belongs to a vmsh run that is still attached",
			    (unsigned long long)m->start);
		return 0;
	}
	/* Everything in it is guest-writable: claims, checked below against
	 * the hypervisor's own mapping, KVM and the guest's page tables. */
	const struct vmsh_lib_record *r = &c.rec;
	if (r->magic != VMSH_RECORD_MAGIC || r->hva != m->start || r->chan_off != off || r->slot_size != KLIB_MEM_SIZE ||
	    r->region_va < KERNEL_HOLE_START || r->region_va >= KERNEL_HOLE_END || (r->region_va & (GIB - 1)) ||
	    r->table_index >= 512 || (r->table_gpa & 0xfff) || r->slot_id >= 0x10000 || !slot_in_use(vm, ids, r->slot_id)) {
		log_info("a mapping at %#llx in the hypervisor looks like an earlier vmsh kernel library but its record "
			 "does not check out: left alone", (unsigned long long)m->start);
		return -1;
	}
	char w[VMSH_WHERE_LEN * 4 + 8];
	esc_bytes(w, sizeof(w), c.where, sizeof(c.where));
	unsigned state = (unsigned)(c.state & 0xff);
	/* a vCPU that run sent to the entry stub may not have run it yet, or
	 * its irq_work may be pending: that is work too */
	struct vmsh_borrow b;
	if (r->borrow_off > KLIB_MEM_SIZE - sizeof(b) || (r->borrow_off & 7) ||
	    remote_read(vm->pid, m->start + r->borrow_off, &b, sizeof(b)) != (ssize_t)sizeof(b)) {
		log_info("an earlier vmsh kernel library at %#llx has no readable entry state: left alone",
			 (unsigned long long)m->start);
		return -1;
	}
	if (b.state == VMSH_BORROW_RUNNING || b.state == VMSH_BORROW_SPINNING || (b.irq_work[1] & 3)) {
		log_info("an earlier vmsh run's kernel library at %#llx (slot %llu) still has a vCPU in its entry stub or "
			 "an interrupt work queued: it stays; a later vmsh run removes it",
			 (unsigned long long)r->region_va, r->slot_id);
		return -1;
	}
	/* its waiting thread, if it has one and it was not asked to work (it
	 * may have been asked to end by an earlier reaper, or its run was
	 * killed between the two words of klib_wake) */
	bool waiting = c.waiter == VMSH_WAITER_MAGIC && c.waiter_cmd != VMSH_WAITER_RUN;
	if (state == VMSH_LIB_ENTERED && !waiting) {
		log_info("an earlier vmsh run's kernel library at %#llx (slot %llu) is still at work (it is %s): it stays "
			 "until that finishes; a later vmsh run removes it then",
			 (unsigned long long)r->region_va, r->slot_id, c.where_seq ? w : "queued");
		return -1;
	}
	/* KVM: does slot id hold exactly this memory (address and size)? A
	 * request for that id with this memory at a range that overlaps guest
	 * RAM answers EEXIST if so (it would be a move, refused for the
	 * overlap) and EINVAL if the id holds other memory: no side effect
	 * either way. */
	struct vmsh_err e = { 0 };
	int holds = kvm_slot_holds(vm, (uint32_t)r->slot_id, 0, m->start, KLIB_MEM_SIZE, r->slot_gpa, known_gpa, &e);
	if (holds <= 0) {
		if (holds < 0)
			log_info("checking memory slot %llu of an earlier library: %s; left alone", r->slot_id, e.msg);
		else
			log_info("an earlier library's record names slot %llu, which holds other memory: left alone",
				 r->slot_id);
		return -1;
	}
	/* the guest's entry must still be the one that run wrote */
	uint64_t loc = region_entry_gpa(gm, &k->pt, r->region_va), cur = 0;
	bool linked = false;
	if (loc && loc == r->table_gpa + 8 * r->table_index && guest_mem_read(gm, loc, &cur, 8) == 0 &&
	    pte_same_target(cur, r->table_entry, k->pt.phys_mask)) {
		uint64_t target = cur & k->pt.phys_mask & ~0xfffULL;
		if (target < r->slot_gpa || target >= r->slot_gpa + r->slot_size) {
			log_info("the earlier library's page-table entry does not point into its slot: left alone");
			return -1;
		}
		linked = true;
	}
	/* A thread waiting in a library the guest still links sleeps with
	 * return addresses into it: it ends (and unlinks the library) first.
	 * Not linked any more: the guest restarted (no such thread), or the
	 * thread's last store is done. */
	if (waiting && linked) {
		if (end_waiter(vm, gm, m->start + off, loc, r->table_entry, k->pt.phys_mask) < 0) {
			log_info("an earlier vmsh run's kernel library at %#llx (slot %llu) has a thread that did not end "
				 "when asked: it stays; a later vmsh run removes it", (unsigned long long)r->region_va,
				 r->slot_id);
			return -1;
		}
		linked = guest_mem_read(gm, loc, &cur, 8) == 0 && pte_same_target(cur, r->table_entry, k->pt.phys_mask);
	}
	int in = vcpu_inside(vm, r->region_va, r->region_va + GIB);
	if (in != 0) {
		log_info("a vCPU %s inside the earlier library at %#llx: left alone", in > 0 ? "is" : "may be",
			 (unsigned long long)r->region_va);
		return -1;
	}
	if (linked) {
		uint64_t zero = 0;
		if (guest_mem_write(gm, loc, &zero, 8) < 0) {
			log_info("unlinking the earlier library's page tables failed: %s", strerror(errno));
			return -1;
		}
	}
	struct kvm_slot slot = { .id = (uint32_t)r->slot_id, .gpa = r->slot_gpa, .size = KLIB_MEM_SIZE,
				 .hva = m->start, .added = true };
	kvm_slot_remove(vm, &slot);
	struct shared_mem mem = { .fd = -1, .remote = m->start, .size = KLIB_MEM_SIZE };
	shared_mem_destroy(vm, &mem);
	log_info("removed the kernel library an earlier vmsh run left at %#llx (slot %llu; its work had %s)",
		 (unsigned long long)r->region_va, r->slot_id, state == VMSH_LIB_DONE ? "finished" : "not started");
	return 1;
}

int klib_reap_stale(struct kvm_vm *vm, struct guest_mem *gm, const struct guest_kernel *k,
		    const struct memslot_ids *ids, uint64_t known_gpa, unsigned *removed, unsigned *left)
{
	struct proc_map *maps = NULL;
	size_t n = 0;
	struct vmsh_err e = { 0 };
	*removed = *left = 0;
	if (procfs_read_maps(vm->pid, &maps, &n, &e) < 0)
		return -1;
	/* vmsh's memory in the hypervisor is a memfd named "vmsh" (shared.c) */
	for (size_t i = 0; i < n && i < 65536; i++) {
		if (maps[i].end - maps[i].start != KLIB_MEM_SIZE || !strstr(maps[i].path, "memfd:vmsh"))
			continue;
		int rc = reap_one(vm, gm, k, ids, known_gpa, &maps[i]);
		if (rc > 0)
			(*removed)++;
		else if (rc < 0)
			(*left)++;
	}
	free(maps);
	return 0;
}
