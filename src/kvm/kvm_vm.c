/* kvm_vm.c - KVM ioctls run inside the hypervisor, with their arguments
 * staged in the tracer's scratch area there. */
#include <cpuid.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "common/log.h"
#include "common/remote_mem.h"
#include "kvm/kvm.h"

int kvm_vm_open(struct kvm_vm *vm, struct tracer *tr, int vm_fd, const struct kvm_fds *fds, struct vmsh_err *err)
{
	memset(vm, 0, sizeof(*vm));
	vm->tr = tr;
	vm->pid = tr->pid;
	vm->vm_fd = vm_fd;

	/* vCPUs of this VM: with several VMs in one process, a vCPU belongs to
	 * the VM whose fd is the closest lower fd number (creation order). */
	vm->vcpus = calloc(fds->n_vcpus ? fds->n_vcpus : 1, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return vmsh_error(err, ENOMEM, "open VM");
	for (size_t i = 0; i < fds->n_vcpus; i++) {
		int owner = -1;
		for (size_t k = 0; k < fds->n_vms; k++)
			if (fds->vm_fds[k] < fds->vcpus[i].fd && fds->vm_fds[k] > owner)
				owner = fds->vm_fds[k];
		if (owner == vm_fd || fds->n_vms == 1)
			vm->vcpus[vm->n_vcpus++] = fds->vcpus[i];
	}

	vm->scratch = tr->main.scratch;
	vm->scratch_size = TRACER_SCRATCH_SIZE;
	return 0;
}

void kvm_vm_close(struct kvm_vm *vm)
{
	free(vm->vcpus);
	vm->vcpus = NULL;
}

void kvm_vm_release(struct kvm_vm *vm)
{
	tracer_detach(vm->tr);
	vm->scratch = 0;
}

int kvm_vm_reacquire(struct kvm_vm *vm, struct vmsh_err *err)
{
	if (vm->tr->attached)
		return 0;
	if (tracer_reattach(vm->tr, err) < 0)
		return -1;
	vm->scratch = vm->tr->main.scratch;
	return 0;
}

int kvm_ioctl(struct kvm_vm *vm, int fd, unsigned long req, void *arg, size_t len, int64_t *ret, struct vmsh_err *err)
{
	if (len > vm->scratch_size)
		return vmsh_error(err, E2BIG, "ioctl %#lx argument too large", req);
	if (len && remote_write(vm->pid, vm->scratch, arg, len) != (ssize_t)len)
		return vmsh_error(err, errno, "stage ioctl argument in hypervisor");
	uint64_t args[6] = { (uint64_t)fd, req, len ? vm->scratch : 0, 0, 0, 0 };
	if (tracer_syscall(vm->tr, SYS_ioctl, args, ret, err) < 0)
		return -1;
	if (len && *ret >= 0 && remote_read(vm->pid, vm->scratch, arg, len) != (ssize_t)len)
		return vmsh_error(err, errno, "read ioctl result from hypervisor");
	return 0;
}

int kvm_vcpu_ioctl(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, unsigned long req, void *arg, size_t len,
		   int64_t *ret, struct vmsh_err *err)
{
	struct inj_thread *th = tracer_vcpu_thread(vm->tr, vcpu->fd);
	if (!th || tracer_prepare_thread(vm->tr, th, NULL) < 0)
		return kvm_ioctl(vm, vcpu->fd, req, arg, len, ret, err); /* not seen in KVM_RUN: any thread */
	if (len > TRACER_SCRATCH_SIZE)
		return vmsh_error(err, E2BIG, "ioctl %#lx argument too large", req);
	if (len && remote_write(vm->pid, th->scratch, arg, len) != (ssize_t)len)
		return vmsh_error(err, errno, "stage ioctl argument in hypervisor");
	uint64_t args[6] = { (uint64_t)vcpu->fd, req, len ? th->scratch : 0, 0, 0, 0 };
	if (tracer_syscall_in(vm->tr, th, SYS_ioctl, args, ret, err) < 0)
		return -1;
	if (len && *ret >= 0 && remote_read(vm->pid, th->scratch, arg, len) != (ssize_t)len)
		return vmsh_error(err, errno, "read ioctl result from hypervisor");
	return 0;
}

int kvm_ioctl_val(struct kvm_vm *vm, int fd, unsigned long req, uint64_t val, int64_t *ret, struct vmsh_err *err)
{
	uint64_t args[6] = { (uint64_t)fd, req, val, 0, 0, 0 };
	return tracer_syscall(vm->tr, SYS_ioctl, args, ret, err);
}

int kvm_vcpu_get_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct vcpu_state *st, struct vmsh_err *err)
{
	int64_t ret;
	memset(st, 0, sizeof(*st));
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_REGS, &st->regs, sizeof(st->regs), &ret, err) < 0)
		return -1;
	if (ret < 0)
		return vmsh_error(err, (int)-ret, "KVM_GET_REGS on vCPU %d", vcpu->index);
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_SREGS, &st->sregs, sizeof(st->sregs), &ret, err) < 0)
		return -1;
	if (ret < 0)
		return vmsh_error(err, (int)-ret, "KVM_GET_SREGS on vCPU %d", vcpu->index);
	return 0;
}

/* Room for every CPUID leaf a VMM sets (qemu: about 60), within the
 * injection scratch area. */
#define CPUID_ENTRIES_MAX 160

int kvm_vcpu_phys_bits(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, unsigned *bits, struct vmsh_err *err)
{
	_Alignas(struct kvm_cpuid2) uint8_t buf[sizeof(struct kvm_cpuid2) +
						CPUID_ENTRIES_MAX * sizeof(struct kvm_cpuid_entry2)];
	_Static_assert(sizeof(buf) <= TRACER_SCRATCH_SIZE, "CPUID buffer must fit the scratch area");
	struct kvm_cpuid2 *c = (struct kvm_cpuid2 *)buf;
	int64_t ret;
	memset(buf, 0, sizeof(buf));
	c->nent = CPUID_ENTRIES_MAX;
	*bits = 0;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_CPUID2, buf, sizeof(buf), &ret, err) < 0)
		return -1;
	if (ret < 0)
		return vmsh_error(err, (int)-ret, "KVM_GET_CPUID2 on vCPU %d", vcpu->index);
	uint32_t n = c->nent < CPUID_ENTRIES_MAX ? c->nent : CPUID_ENTRIES_MAX;
	for (uint32_t i = 0; i < n; i++) {
		unsigned b = c->entries[i].eax & 0xff;
		/* x86-64 defines 36..52 bits; anything else is not a width */
		if (c->entries[i].function == 0x80000008 && b >= 32 && b <= 52)
			*bits = b;
	}
	return 0;
}

unsigned host_phys_bits(void)
{
	unsigned a, b, c, d;
	if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000008 && __get_cpuid(0x80000008, &a, &b, &c, &d) &&
	    (a & 0xff) >= 32 && (a & 0xff) <= 52)
		return a & 0xff;
	return 36;
}

int kvm_vcpu_set_regs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, const struct kvm_regs *regs,
		      struct vmsh_err *err)
{
	struct kvm_regs r = *regs;
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_SET_REGS, &r, sizeof(r), &ret, err) < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_SET_REGS on vCPU %d", vcpu->index) : 0;
}

int kvm_vcpu_get_regs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct kvm_regs *regs, struct vmsh_err *err)
{
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_REGS, regs, sizeof(*regs), &ret, err) < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_GET_REGS on vCPU %d", vcpu->index) : 0;
}

int kvm_vcpu_set_sregs(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, const struct kvm_sregs *sregs,
		       struct vmsh_err *err)
{
	struct kvm_sregs s = *sregs;
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_SET_SREGS, &s, sizeof(s), &ret, err) < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_SET_SREGS on vCPU %d", vcpu->index) : 0;
}

int kvm_vcpu_get_events(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, struct kvm_vcpu_events *ev,
			struct vmsh_err *err)
{
	int64_t ret;
	memset(ev, 0, sizeof(*ev));
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_VCPU_EVENTS, ev, sizeof(*ev), &ret, err) < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_GET_VCPU_EVENTS on vCPU %d", vcpu->index) : 0;
}

int kvm_vcpu_get_msr(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t index, uint64_t *value,
		     struct vmsh_err *err)
{
	_Alignas(struct kvm_msrs) uint8_t buf[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	struct kvm_msrs *m = (struct kvm_msrs *)buf;
	memset(buf, 0, sizeof(buf));
	m->nmsrs = 1;
	m->entries[0].index = index;
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_MSRS, buf, sizeof(buf), &ret, err) < 0)
		return -1;
	if (ret != 1)
		return vmsh_error(err, ret < 0 ? (int)-ret : EINVAL, "KVM_GET_MSRS(%#x) on vCPU %d", index, vcpu->index);
	*value = m->entries[0].data;
	return 0;
}

int kvm_vcpu_get_mp_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t *state, struct vmsh_err *err)
{
	struct kvm_mp_state mp = { 0 };
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_GET_MP_STATE, &mp, sizeof(mp), &ret, err) < 0)
		return -1;
	if (ret < 0)
		return vmsh_error(err, (int)-ret, "KVM_GET_MP_STATE on vCPU %d", vcpu->index);
	*state = mp.mp_state;
	return 0;
}

int kvm_vcpu_set_mp_state(struct kvm_vm *vm, const struct kvm_vcpu_ref *vcpu, uint32_t state, struct vmsh_err *err)
{
	struct kvm_mp_state mp = { .mp_state = state };
	int64_t ret;
	if (kvm_vcpu_ioctl(vm, vcpu, KVM_SET_MP_STATE, &mp, sizeof(mp), &ret, err) < 0)
		return -1;
	return ret < 0 ? vmsh_error(err, (int)-ret, "KVM_SET_MP_STATE on vCPU %d", vcpu->index) : 0;
}

int kvm_set_memory_region(struct kvm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size, uint64_t hva,
			  int64_t *ret, struct vmsh_err *err)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa, .memory_size = size, .userspace_addr = hva,
	};
	return kvm_ioctl(vm, vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r, sizeof(r), ret, err);
}

int kvm_vm_stop_vcpu(struct kvm_vm *vm, size_t i, struct vmsh_err *err)
{
	if (i >= vm->n_vcpus)
		return vmsh_error(err, EINVAL, "no vCPU %zu", i);
	return tracer_stop_vcpus(vm->tr, &vm->vcpus[i].fd, 1, err);
}

int kvm_vm_stop_vcpus(struct kvm_vm *vm, struct vmsh_err *err)
{
	int fds[TRACER_VCPU_THREADS];
	size_t n = vm->n_vcpus < TRACER_VCPU_THREADS ? vm->n_vcpus : 0;
	for (size_t i = 0; i < n; i++)
		fds[i] = vm->vcpus[i].fd;
	return tracer_stop_vcpus(vm->tr, fds, n, err);
}
