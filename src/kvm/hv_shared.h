/* hv_shared.h - objects vmsh shares with the hypervisor: memory (a memfd the
 * hypervisor maps and vmsh maps too), memory slots on it, and eventfds KVM
 * signals or listens to. All are created inside the hypervisor by injected
 * syscalls and opened by vmsh through /proc/PID/fd, so both sides hold the
 * same object. */
#ifndef VMSH_KVM_HV_SHARED_H
#define VMSH_KVM_HV_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvm/kvm.h"

struct shared_mem {
	int fd;          /* vmsh's fd */
	uint8_t *local;  /* vmsh's mapping */
	uint64_t remote; /* the hypervisor's mapping (its fd is closed again) */
	size_t size;
};

/* A memfd named "vmsh" (the name shows in the hypervisor's maps as
 * /memfd:vmsh; _named: another name, for memory no slot may ever hold). */
int shared_mem_create(struct kvm_vm *vm, size_t size, struct shared_mem *m, struct vmsh_err *err);
int shared_mem_create_named(struct kvm_vm *vm, size_t size, const char *name, struct shared_mem *m,
			    struct vmsh_err *err);
void shared_mem_destroy(struct kvm_vm *vm, struct shared_mem *m);

struct kvm_slot {
	uint32_t id;
	uint64_t gpa, size, hva;
	uint32_t flags;
	bool added;
};

/* Add a slot for [hva, hva+size) at the first gpa from `gpa` on (in steps of
 * `step`, at most `tries`) that KVM accepts, with the highest slot id in
 * neither `used` nor `taken` (n_taken ids) and free in KVM (see shared.c
 * for why the highest). */
int kvm_slot_add(struct kvm_vm *vm, const struct memslot_ids *used, const uint32_t *taken, size_t n_taken,
		 uint64_t gpa, uint64_t step, unsigned tries, uint64_t hva, uint64_t size, uint32_t flags,
		 struct kvm_slot *s, struct vmsh_err *err);
void kvm_slot_remove(struct kvm_vm *vm, struct kvm_slot *s);

struct kvm_eventfd {
	int local;      /* vmsh's fd */
	int64_t remote; /* the hypervisor's, open until kvm_eventfd_close */
};

int kvm_eventfd_create(struct kvm_vm *vm, struct kvm_eventfd *e, struct vmsh_err *err);
void kvm_eventfd_close(struct kvm_vm *vm, struct kvm_eventfd *e);
/* KVM_IOEVENTFD on guest-physical MMIO [gpa, gpa+len) (len 0: any length),
 * with datamatch if `match`. */
int kvm_ioeventfd(struct kvm_vm *vm, const struct kvm_eventfd *e, uint64_t gpa, uint32_t len, bool match,
		  uint64_t data, bool deassign, struct vmsh_err *err);
int kvm_irqfd(struct kvm_vm *vm, const struct kvm_eventfd *e, uint32_t gsi, bool deassign, struct vmsh_err *err);

#endif
