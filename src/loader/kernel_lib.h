/* kernel_lib.h - putting vmsh's kernel library into a running guest kernel,
 * entering it once, and taking every trace of it out again.
 *
 * load:   a memfd mapped by the hypervisor (and by vmsh) becomes a new KVM
 *         memory slot at a guest-physical range nothing uses; the library is
 *         linked against the guest's exports for an unused 1 GiB region of
 *         kernel address space, and its page tables are linked into the
 *         guest's with one entry (ptwrite.h).
 * enter:  a vCPU stopped where it could take an interrupt is lent to the
 *         entry stub, which queues an irq_work, and put back exactly as it
 *         was (vcpu_borrow.h); the irq_work queues a work item, which runs in
 *         a kernel worker and reports through the shared channel. Once the
 *         devices are registered, the library's waiting thread takes later
 *         work (the removal) on vmsh's word in the channel: no second
 *         borrow, no stop of the guest (klib_waiting, klib_wake).
 * unload: the page-table entry (cleared by the waiting thread itself as
 *         its last store where it can, else by vmsh in a stop window that
 *         finds no vCPU inside the library), the slot and the mapping go
 *         away again; anything less certain leaves the library mapped (a
 *         leak until the guest restarts, never a crash).
 * The hypervisor must be attached (tracer) for the whole time. */
#ifndef VMSH_KERNEL_LIB_H
#define VMSH_KERNEL_LIB_H

#include <stdbool.h>
#include <stdint.h>

#include "vmsh/channel.h"
#include "guest/iomem.h"
#include "guest/kernel.h"
#include "guest/ptwrite.h"
#include "kvm/kvm.h"
#include "kvm/hv_shared.h"
#include "loader/elf_rel.h"
#include "loader/vcpu_borrow.h"

#define KLIB_MEM_SIZE (2u << 20)

struct kernel_lib {
	struct kvm_vm *vm;
	struct guest_mem *gm;
	const struct guest_kernel *k;

	struct shared_mem mem;   /* the library, its page tables, the channel */
	struct kvm_slot slot;
	struct ptw_slot region;
	uint64_t top_entry;      /* the top-level entry over region, as in every address space */
	uint64_t region_entry;   /* the entry vmsh wrote into the guest's table (host copy) */
	bool linked;
	struct loaded_lib lib;
	struct vmsh_channel *chan; /* inside mem */
	uint64_t entry_va;

	size_t used;             /* bytes of mem in use (library, page tables, files) */
	int entered_vcpu;        /* index, -1 before entry */
	unsigned enter_attempts;
	/* the borrowed vCPU (vcpu_borrow.h): the library's copy of its state,
	 * the stub's spin loop, its stack; vmsh's own copy to put it back */
	struct vmsh_borrow *borrow; /* inside mem */
	uint64_t spin_lo, spin_hi, stack_top;
	enum borrow_kind borrow_kind;
	struct kvm_regs saved_regs;
	struct kvm_sregs saved_sregs;
	bool saved_sregs_changed;
	bool self_return;        /* the stub goes back by itself (vmsh's plan: ret_mode not VMSH_RET_HOST) */
	bool went_back_itself;   /* ... and did */
	bool woke_waiter;        /* the last work went to the library's waiting thread (klib_wake) */
	uint64_t borrow_ns;      /* from sending the vCPU to the stub to having it back */
	char not_enterable[512]; /* why no vCPU could be borrowed (last try) */
	uint64_t start_ns, enter_ns, done_ns;
	unsigned long long seen_seq; /* last chan->where_seq logged */
	int lock_fd;             /* a description of mem's memfd of our own, flock'ed while we run */
};

/* Load the library into a new slot below gpa_limit (the guest's physical
 * address width: vm_gpa_limit, core/vm.h) and link it into the kernel's tables. */
int klib_load(struct kernel_lib *kl, struct kvm_vm *vm, struct guest_mem *gm, const struct guest_kernel *k,
	      const struct iomem_entry *iomem, size_t n_iomem, const struct memslot_ids *ids, uint64_t gpa_limit,
	      struct vmsh_err *err);
/* Borrow a vCPU (vcpu_borrow.h; retrying for up to timeout_ms while none
 * may be), then wait up to timeout_ms for the library to report done. The
 * work does what kl->chan->op says (set it before). */
int klib_enter(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err);
/* The two halves of klib_enter: send a vCPU into the library; wait for the
 * work to finish (and report its error). */
int klib_start(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err);
int klib_wait(struct kernel_lib *kl, unsigned timeout_ms, struct vmsh_err *err);
bool klib_done(const struct kernel_lib *kl);
/* Is the library's waiting thread there (vmsh/channel.h, VMSH_WAITER_MAGIC;
 * its set-up work done)? Then klib_wake hands it the work chan->op says
 * (set it before), with no vCPU borrowed and no stop of the guest; the
 * thread ends after it, and takes vmsh's page-table entry out itself
 * where vmsh could tell it where that is (klib_unload then writes nothing). */
bool klib_waiting(const struct kernel_lib *kl);
void klib_wake(struct kernel_lib *kl);
/* Does the guest still map the library where vmsh linked it (its table
 * entry holds the value vmsh wrote)? 0 once the guest has dropped it: a
 * guest that restarted has a new kernel that never knew the library or its
 * devices. -1 if it cannot be read. klib_start refuses to enter then
 * (ENXIO), and klib_unload writes nothing into the guest. */
int klib_mapped(struct kernel_lib *kl);
/* 0 if the guest still maps the library, else -1 and why in *err (ENXIO:
 * no longer mapped, EIO: unreadable): the check before vmsh asks the
 * library for anything. */
int klib_require_mapped(struct kernel_lib *kl, struct vmsh_err *err);
/* A fresh random name for the helper's file in the guest (exposed for unit
 * tests; klib_add_file proposes one to the library). */
int klib_helper_name(char *out, size_t cap, struct vmsh_err *err);
/* The step the library's work reports it is in ("waiting for
 * request_module(virtio_mmio)"), or what vmsh knows when it reported none
 * yet: guest text, bounded and escaped into buf. */
const char *klib_where(const struct kernel_lib *kl, char *buf, size_t len);
/* The library's last error message, escaped into buf. */
const char *klib_message(const struct kernel_lib *kl, char *buf, size_t len);
/* -v: log the step when it changed since the last call. */
void klib_log_progress(struct kernel_lib *kl);
/* Copy a file (the in-guest helper) into the library's memory, where the
 * library finds it (chan->helper_va/len). */
int klib_add_file(struct kernel_lib *kl, const void *data, size_t len, struct vmsh_err *err);
/* Leave the library where it is (the guest still uses it), free only
 * vmsh's side. */
void klib_abandon(struct kernel_lib *kl);
/* Find the kernel libraries earlier vmsh runs had to leave in this guest
 * (their work had not finished when they ended) and remove those whose work
 * has finished since; say why for the others. Everything the earlier run
 * recorded in the library's memory is guest-writable: it is only acted on
 * once the hypervisor's mapping, KVM's slot and the guest's page-table
 * entry agree with it. known_gpa: a guest-physical address in guest RAM.
 * Call it before klib_load. */
int klib_reap_stale(struct kvm_vm *vm, struct guest_mem *gm, const struct guest_kernel *k,
		    const struct memslot_ids *ids, uint64_t known_gpa, unsigned *removed, unsigned *left);
/* The device work (klib_work.c): the helper's command line (NUL-separated
 * arguments after argv[0]) for VMSH_OP_DEVICES_ADD; */
int klib_set_helper_args(struct kernel_lib *kl, const char *args, size_t len, unsigned argc, struct vmsh_err *err);
/* Modules the library loads by name for the helper's mounts (at most
 * VMSH_MAX_MODULES plain words). */
int klib_set_modules(struct kernel_lib *kl, const char *const *names, size_t n, struct vmsh_err *err);
/* ask for op on the devices whose register pages are at dev_gpa (NULL:
 * those of the last request) and enter the library (klib_start), or, for
 * the removal, hand it to the library's waiting thread (klib_wake); */
int klib_request(struct kernel_lib *kl, enum vmsh_lib_op op, const uint64_t *dev_gpa, size_t n_devs,
		 unsigned timeout_ms, struct vmsh_err *err);
/* wait until the work reaches phase: timeout_ms per step it reports, ten
 * times that in all; if interruptible, EINTR when a terminating signal is
 * pending (the set-up; never the removal, which a repeated signal must not
 * cut short); */
int klib_wait_phase(struct kernel_lib *kl, enum vmsh_lib_phase phase, unsigned timeout_ms, bool interruptible,
		    struct vmsh_err *err);
/* let the work waiting in VMSH_PHASE_WAIT_HOST go on, or give up; */
void klib_go(struct kernel_lib *kl, enum vmsh_lib_go go);
/* the interrupt line it chose (valid from VMSH_PHASE_WAIT_HOST), checked; */
int klib_irq_line(const struct kernel_lib *kl, size_t dev, uint32_t *gsi, uint32_t *irq, struct vmsh_err *err);
/* Devices an earlier run killed outright left in the guest (their register
 * pages): the next VMSH_OP_DEVICES_ADD unregisters them first. */
int klib_set_dead(struct kernel_lib *kl, const uint64_t *gpa, size_t n, struct vmsh_err *err);
/* How many of those the library says are gone from the guest (its word,
 * at most VMSH_MAX_DEVS). */
unsigned klib_dead_removed(const struct kernel_lib *kl);
/* Whether it registered anything the guest may use. */
bool klib_registered_any(const struct kernel_lib *kl);
/* Undo klib_load; safe after a partial load. */
void klib_unload(struct kernel_lib *kl);

#endif
