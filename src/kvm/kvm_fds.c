/* kvm_fds.c - finding a process's KVM VM and vCPU fds in /proc/PID/fd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/procfs.h"
#include "kvm/kvm.h"

int kvm_fd_kind(const char *target, int *idx)
{
	if (strcmp(target, "anon_inode:kvm-vm") == 0)
		return 1;
	const char *p = "anon_inode:kvm-vcpu:";
	if (strncmp(target, p, strlen(p)) == 0) {
		const char *num = target + strlen(p);
		if (*num < '0' || *num > '9')
			return 0;
		char *end;
		long v = strtol(num, &end, 10);
		if (*end || v < 0 || v > 1 << 20)
			return 0;
		*idx = (int)v;
		return 2;
	}
	return 0;
}

int kvm_fds_scan(pid_t pid, struct kvm_fds *out, struct vmsh_err *err)
{
	memset(out, 0, sizeof(*out));
	struct proc_fd *fds;
	size_t n;
	if (procfs_list_fds(pid, &fds, &n, err) < 0) {
		if (err && err->errnum == ENOENT)
			err->kind = VMSH_E_NOPROC;
		if (err && (err->errnum == EACCES || err->errnum == EPERM))
			err->kind = VMSH_E_PERM;
		return -1;
	}
	out->vcpus = calloc(n ? n : 1, sizeof(*out->vcpus));
	if (!out->vcpus) {
		free(fds);
		return vmsh_error(err, ENOMEM, "scan fds");
	}
	for (size_t i = 0; i < n; i++) {
		int idx;
		switch (kvm_fd_kind(fds[i].target, &idx)) {
		case 1:
			if (out->n_vms < sizeof(out->vm_fds) / sizeof(out->vm_fds[0]))
				out->vm_fds[out->n_vms++] = fds[i].fd;
			break;
		case 2:
			out->vcpus[out->n_vcpus++] = (struct kvm_vcpu_ref){ .index = idx, .fd = fds[i].fd };
			break;
		}
	}
	free(fds);
	return 0;
}

void kvm_fds_free(struct kvm_fds *f)
{
	free(f->vcpus);
	f->vcpus = NULL;
	f->n_vcpus = 0;
}
