/* vmlist.c - finding KVM VMs on the host (see vmlist.h). */
#include "cli/vmlist.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/procfs.h"
#include "guest/memmap.h"
#include "kvm/kvm.h"

uint64_t parse_qemu_mem(const char *s)
{
	const char *p = strstr(s, "size=");
	p = p ? p + 5 : s;
	char *end;
	double v = strtod(p, &end);
	if (end == p || !isfinite(v) || v <= 0)
		return 0;
	uint64_t mul = 1ULL << 20; /* qemu default unit: MiB */
	switch (toupper((unsigned char)*end)) {
	case 'K': mul = 1ULL << 10; break;
	case 'M': mul = 1ULL << 20; break;
	case 'G': mul = 1ULL << 30; break;
	case 'T': mul = 1ULL << 40; break;
	case 'B': mul = 1; break;
	case '\0': case ',': break;
	default: return 0;
	}
	double bytes = v * (double)mul;
	if (bytes >= 18446744073709551616.0)
		return 0;
	return (uint64_t)bytes;
}

/* qemu option syntax: comma-separated, ",," is a literal comma, the first
 * element may be a bare value (the name) and "guest=" names it too. */
void parse_qemu_name(const char *s, char *out, size_t len)
{
	out[0] = '\0';
	bool first = true;
	while (*s) {
		char elem[256];
		size_t n = 0;
		for (; *s; s++) {
			if (*s == ',' && s[1] == ',') {
				s++;
			} else if (*s == ',') {
				s++;
				break;
			}
			if (n + 1 < sizeof(elem))
				elem[n++] = *s;
		}
		elem[n] = '\0';
		const char *val = NULL;
		if (!strncmp(elem, "guest=", 6))
			val = elem + 6;
		else if (first && !strchr(elem, '='))
			val = elem;
		if (val)
			snprintf(out, len, "%s", val);
		first = false;
	}
}

static void info_from_cmdline(pid_t pid, struct vm_entry *vi)
{
	char *buf;
	char **argv;
	int argc = procfs_cmdline(pid, &buf, &argv, NULL);
	if (argc < 0)
		return; /* 0 (an empty or NUL-less command line) still has buf and argv to free */
	for (int i = 0; i + 1 < argc; i++) {
		const char *a = argv[i];
		if (a[0] == '-' && a[1] == '-')
			a++;
		if (!strcmp(a, "-name") && !vi->name[0])
			parse_qemu_name(argv[i + 1], vi->name, sizeof(vi->name));
		else if (!strcmp(a, "-m") && !vi->ram_bytes) {
			vi->ram_bytes = parse_qemu_mem(argv[i + 1]);
			if (vi->ram_bytes)
				vi->ram_source = "cmdline";
		}
	}
	free(argv);
	free(buf);
}

static uint64_t largest_candidate(pid_t pid)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(pid, &maps, &n, NULL) < 0)
		return 0;
	uint64_t best = 0;
	for (size_t i = 0; i < n; i++)
		if (memmap_is_candidate(&maps[i]) && maps[i].end - maps[i].start > best)
			best = maps[i].end - maps[i].start;
	free(maps);
	return best;
}

/* Real uid from /proc/PID/status ("Uid:\treal\teffective\t..."). */
static uid_t owner_of(pid_t pid)
{
	char path[64], *buf;
	size_t len;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (procfs_read_file(path, &buf, &len, NULL) < 0)
		return (uid_t)-1;
	const char *u = strstr(buf, "\nUid:");
	uid_t uid = u ? (uid_t)strtoul(u + 5, NULL, 10) : (uid_t)-1;
	free(buf);
	return uid;
}

int vm_entry_get(pid_t pid, struct vm_entry *vi, struct vmsh_err *err)
{
	memset(vi, 0, sizeof(*vi));
	vi->pid = pid;
	struct kvm_fds f;
	if (kvm_fds_scan(pid, &f, err) < 0)
		return -1;
	vi->n_vms = f.n_vms;
	vi->n_vcpus = f.n_vcpus;
	kvm_fds_free(&f);
	if (!vi->n_vms)
		return 1;
	procfs_exe(pid, vi->exe, sizeof(vi->exe));
	vi->uid = owner_of(pid);
	info_from_cmdline(pid, vi);
	if (!vi->ram_bytes) {
		vi->ram_bytes = largest_candidate(pid);
		vi->ram_source = vi->ram_bytes ? "largest-mapping" : NULL;
	}
	return 0;
}

int vm_list(struct vm_entry **out, size_t *n, size_t *unreadable, struct vmsh_err *err)
{
	if (unreadable)
		*unreadable = 0;
	DIR *d = opendir("/proc");
	if (!d)
		return vmsh_error(err, errno, "open /proc");
	size_t cap = 8, cnt = 0;
	struct vm_entry *v = malloc(cap * sizeof(*v));
	struct dirent *de;
	pid_t self = getpid();
	while (v && (de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == self)
			continue;
		if (cnt == cap) {
			struct vm_entry *nv = realloc(v, cap * 2 * sizeof(*v));
			if (!nv)
				break;
			v = nv;
			cap *= 2;
		}
		struct vmsh_err e = { 0 };
		int rc = vm_entry_get((pid_t)pid, &v[cnt], &e);
		if (rc == 0)
			cnt++;
		else if (rc < 0 && e.kind == VMSH_E_PERM && unreadable)
			(*unreadable)++;
	}
	closedir(d);
	if (!v)
		return vmsh_error(err, ENOMEM, "list VMs");
	*out = v;
	*n = cnt;
	return 0;
}

/* Where libvirtd (system instance) keeps a pid file per running qemu domain. */
#define LIBVIRT_QEMU_RUN "/run/libvirt/qemu"

/* Only root can have written it: owned by root, not writable by others. */
static bool root_only(const struct stat *st)
{
	return st->st_uid == 0 && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

pid_t vm_libvirt_pid(const char *rundir, const char *name)
{
	struct stat d, f;
	if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") || strlen(name) > 200)
		return 0;
	if (stat(rundir, &d) < 0 || !S_ISDIR(d.st_mode) || !root_only(&d))
		return 0;
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.pid", rundir, name);
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0;
	char buf[24] = { 0 };
	ssize_t r = fstat(fd, &f) == 0 && S_ISREG(f.st_mode) && root_only(&f) ? read(fd, buf, sizeof(buf) - 1) : -1;
	close(fd);
	if (r <= 0)
		return 0;
	char *end;
	long v = strtol(buf, &end, 10);
	while (*end == '\n' || *end == ' ')
		end++;
	return end != buf && !*end && v > 0 && v <= 1 << 30 ? (pid_t)v : 0;
}

int vm_resolve(const char *arg, pid_t *pid, struct vmsh_err *err)
{
	char *end;
	long v = strtol(arg, &end, 10);
	if (*arg && !*end) {
		if (v <= 0 || v > 1 << 30)
			return vmsh_error_kind(err, VMSH_E_USAGE, EINVAL, "'%s' is not a valid PID", arg);
		if (kill((pid_t)v, 0) < 0 && errno == ESRCH)
			return vmsh_error_kind(err, VMSH_E_NOPROC, ESRCH, "no process with PID %ld", v);
		*pid = (pid_t)v;
		return 0;
	}
	struct vm_entry *vms;
	size_t n;
	if (vm_list(&vms, &n, NULL, err) < 0)
		return -1;
	int found = 0;
	uid_t owner = 0;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(vms[i].name, arg)) {
			*pid = vms[i].pid;
			owner = vms[i].uid;
			found++;
		}
	}
	/* a libvirt domain: libvirtd's own record names the process, whoever
	 * runs it (libvirt's qemu user) and whatever else took the name */
	pid_t lv = vm_libvirt_pid(LIBVIRT_QEMU_RUN, arg);
	for (size_t i = 0; lv > 0 && i < n; i++) {
		if (vms[i].pid == lv) {
			*pid = lv;
			free(vms);
			return 0;
		}
	}
	free(vms);
	if (found > 1)
		return vmsh_error_kind(err, VMSH_E_AMBIGUOUS, 0, "several VMs are named '%s': give a PID", arg);
	if (!found)
		return vmsh_error_kind(err, VMSH_E_NOPROC, ENOENT, "no VM named '%s' (see 'vmsh list')", arg);
	if (!vm_name_owner_ok(owner, getuid(), getenv("SUDO_UID")))
		return vmsh_error_kind(err, VMSH_E_NOPROC, EPERM,
				       "the VM named '%s' (PID %d) belongs to uid %u, not to you: anyone may give a VM "
				       "any name; give its PID if you mean that process",
				       arg, (int)*pid, (unsigned)owner);
	return 0;
}

int vm_name_owner_ok(uid_t owner, uid_t caller, const char *sudo_uid)
{
	if (owner == 0 || owner == caller)
		return 1;
	char *end;
	unsigned long su = sudo_uid && *sudo_uid ? strtoul(sudo_uid, &end, 10) : (unsigned long)-1;
	return sudo_uid && *sudo_uid && !*end && su == owner;
}
