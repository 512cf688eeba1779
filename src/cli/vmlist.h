/* vmlist.h - the KVM VMs on this host, and resolving PID|NAME to one. */
#ifndef VMSH_VMLIST_H
#define VMSH_VMLIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct vm_entry {
	pid_t pid;
	uid_t uid;            /* real uid of the process: who started the VM */
	char exe[256];
	char name[128];       /* from the command line (qemu -name), "" if none */
	size_t n_vms;         /* VM fds in the process */
	size_t n_vcpus;
	uint64_t ram_bytes;   /* 0 if unknown */
	const char *ram_source; /* "cmdline" or "largest-mapping" */
};

/* Describe one process (without stopping it). 0 if it has a KVM VM, 1 if
 * not, -1 on error. */
int vm_entry_get(pid_t pid, struct vm_entry *vi, struct vmsh_err *err);
/* All processes with a KVM VM. */
/* *unreadable (may be NULL): processes whose fds we may not read (not root:
 * they may run VMs we cannot see). */
int vm_list(struct vm_entry **out, size_t *n, size_t *unreadable, struct vmsh_err *err);
/* PID or VM name to a PID. A name is chosen by whoever started the VM: one
 * that leads to a process of a non-root user other than the caller is
 * refused (the caller gives the PID to mean it), unless libvirt's record of
 * a running domain of that name, which only root can write, names it. */
int vm_resolve(const char *arg, pid_t *pid, struct vmsh_err *err);
/* May a name lead the caller (uid, and SUDO_UID when run through sudo, or
 * NULL) to a process of owner? Exposed for unit tests. */
int vm_name_owner_ok(uid_t owner, uid_t caller, const char *sudo_uid);
/* The PID libvirt's record in rundir (/run/libvirt/qemu) gives for domain
 * name, if only root can have written it; 0 otherwise. Exposed for unit
 * tests. */
pid_t vm_libvirt_pid(const char *rundir, const char *name);

/* qemu -m syntax ("512", "512M", "2G", "size=2G,maxmem=..") to bytes; 0 if
 * not understood. Exposed for unit tests. */
uint64_t parse_qemu_mem(const char *s);
/* qemu -name syntax ("foo", "guest=foo,debug-threads=on"). */
void parse_qemu_name(const char *s, char *out, size_t len);

#endif
