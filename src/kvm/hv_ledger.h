/* hv_ledger.h - a record, kept inside the hypervisor, of the objects a vmsh
 * session created there: eventfds with their KVM registrations (ioeventfd,
 * irqfd), the devices' register slot and its memory. A session that dies
 * outright (SIGKILL) cannot undo them; a later vmsh run finds its ledger and
 * does (hv_ledger_reap). Until then the eventfds stay open in the
 * hypervisor and registered in KVM, which caps them (KVM takes at most 1000
 * devices per I/O bus, the hypervisor's own included).
 *
 * Trust: the ledger is one page of a memfd of its own ("vmsh-ledger") that
 * the hypervisor maps and that no memory slot ever holds - the guest can
 * neither read nor write it. What it names is still checked against the
 * hypervisor before anything is undone: each fd must be an eventfd there,
 * the slot id must hold exactly the recorded memory (KVM's answer), the
 * memory must be a vmsh memfd mapped at exactly the recorded place.
 *
 * Liveness: a session holds a lock (flock) on an open file description of
 * the ledger's memfd of its own, which the kernel drops when the process
 * dies: an unlocked ledger belongs to a dead session.
 *
 * Order: an object is recorded after it exists and forgotten before it is
 * destroyed, so the ledger never names an fd number or a mapping that might
 * since belong to someone else (a kill in between leaks the object instead). */
#ifndef VMSH_KVM_HV_LEDGER_H
#define VMSH_KVM_HV_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "kvm/hv_shared.h"
#include "kvm/kvm.h"

#define HV_LEDGER_MAGIC 0x72676c64686d7376ULL /* "vshmdlgr" */
/* Version 1 throughout: the area was added at the end (an older vmsh reads
 * the page without it; a page an older vmsh wrote has it all zero). */
#define HV_LEDGER_VERSION 1
#define HV_LEDGER_AREA 1024
#define HV_LEDGER_MAX_FDS 24
#define HV_LEDGER_NAME "vmsh-ledger"

struct hv_ledger_fd {
	int32_t fd;      /* the hypervisor's fd number, -1: free entry */
	uint32_t gsi;    /* irqfd: the line */
	uint8_t io_on;   /* registered as an ioeventfd at io_addr */
	uint8_t irq_on;  /* registered as an irqfd for gsi */
	uint8_t io_match, io_len;
	uint32_t pad;
	uint64_t io_addr, io_data;
};

struct hv_ledger_page {
	uint64_t magic;
	uint32_t version, pad;
	struct hv_ledger_fd fds[HV_LEDGER_MAX_FDS];
	struct {
		uint32_t on, id, flags;
		uint32_t pending; /* being added: KVM may hold it under an id not recorded yet */
		uint64_t gpa, size, hva;
	} slot;
	struct {
		uint64_t on, hva, size;
	} mem;
	/* the session's own record of its devices, for a later run to take
	 * them over (devices/adopt.h); all zero: none */
	uint8_t area[HV_LEDGER_AREA] __attribute__((aligned(8)));
};
_Static_assert(sizeof(struct hv_ledger_page) <= 4096, "the ledger is one page");

/* A dead session's ledger kept by a later run (locked) to take its devices
 * over: the ledger and the devices' register memory, mapped into vmsh. */
struct hv_ledger_dead {
	bool on;
	int fd;                      /* the ledger's memfd, locked */
	uint64_t remote;             /* the ledger's mapping in the hypervisor */
	struct hv_ledger_page *page; /* ours of it */
	uint8_t *regs;               /* ours of the register memory */
	uint64_t regs_gpa, regs_size;
};

struct hv_ledger {
	struct shared_mem mem; /* the ledger's own memfd */
	int lock_fd;
	bool open;
};

/* Create the ledger in the hypervisor, lock it and make vm record into it
 * (vm->ledger) from now on. */
int hv_ledger_open(struct kvm_vm *vm, struct hv_ledger *l, struct vmsh_err *err);
/* Stop recording. keep: something recorded stays in the hypervisor on
 * purpose (devices the guest still has): leave the ledger there, unlocked,
 * for a later run; else remove it. */
void hv_ledger_close(struct kvm_vm *vm, struct hv_ledger *l, bool keep);

/* The area of the open ledger where the session keeps its devices' state. */
void *hv_ledger_area(struct hv_ledger *l);

/* Recording, done by hv_shared.c for every eventfd and registration while a
 * ledger is open; slots and memory are recorded by whoever owns them (not
 * every slot of vmsh's is a session's: the kernel library has its own
 * record). No-ops without a ledger. */
void hv_ledger_eventfd(struct kvm_vm *vm, int64_t fd, bool open);
void hv_ledger_ioeventfd(struct kvm_vm *vm, int64_t fd, uint64_t addr, uint32_t len, bool match, uint64_t data,
			 bool on);
void hv_ledger_irqfd(struct kvm_vm *vm, int64_t fd, uint32_t gsi, bool on);
/* Before adding a slot on the recorded memory: from here until
 * hv_ledger_slot(on) a later run must not free that memory (a slot of an
 * id it cannot know may be using it). */
void hv_ledger_slot_pending(struct kvm_vm *vm, bool pending);
void hv_ledger_slot(struct kvm_vm *vm, const struct kvm_slot *s, bool on);
void hv_ledger_mem(struct kvm_vm *vm, const struct shared_mem *m, bool on);

/* Guest-physical ranges the caller knows to be in use by the guest: a dead
 * session's slot that overlaps one stays (the guest still has its devices:
 * never pulled from under it). */
typedef bool (*hv_range_busy_fn)(void *opaque, uint64_t gpa, uint64_t size);

/* Undo what dead sessions' ledgers name (tracer attached). probe_gpa: a
 * guest-physical address known to lie in guest RAM (for the slot probe).
 * *reaped: ledgers removed completely; *left: ledgers that keep something
 * (said why). adopt (may be NULL): the first left one whose devices are in
 * the guest and recorded in its area is kept for the caller to take over
 * (adopt->on), its register memory mapped into vmsh. */
int hv_ledger_reap(struct kvm_vm *vm, uint64_t probe_gpa, hv_range_busy_fn busy, void *opaque, unsigned *reaped,
		   unsigned *left, struct hv_ledger_dead *adopt, struct vmsh_err *err);
/* Done with a kept ledger: gone (its devices left the guest) - remove its
 * slot, memory and the ledger itself from the hypervisor (tracer attached);
 * else let it go as it is, for a later run. */
void hv_ledger_dead_end(struct kvm_vm *vm, struct hv_ledger_dead *d, uint64_t probe_gpa, bool gone);

#endif
