/* snapshot.c - a copy-on-write image of a running VM's RAM (see snapshot.h). */
#include "core/snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/remote_mem.h"

#define MiB (1ULL << 20)
/* kept free beyond the worst case: the kernel's own needs, page tables */
#define HEADROOM_MARGIN (64 * MiB)

static bool overlaps(const struct proc_vma *m, const struct guest_range *r)
{
	return m->start < r->hva + r->size && r->hva < m->end;
}

/* "MemAvailable:" of /proc/meminfo in bytes, or 0 if unknown. */
static uint64_t mem_available(void)
{
	_cleanup_free_ char *buf = NULL;
	if (procfs_read_file("/proc/meminfo", &buf, NULL, NULL) < 0)
		return 0;
	const char *p = strstr(buf, "MemAvailable:");
	unsigned long long kb;
	return p && sscanf(p, "MemAvailable: %llu kB", &kb) == 1 ? (uint64_t)kb << 10 : 0;
}

/* Free room in the hypervisor's cgroup v2 and each of its ancestors
 * (memory.max - memory.current, the smallest); UINT64_MAX without limits
 * or where they cannot be read. */
static uint64_t cgroup_room(pid_t pid, char *where, size_t cap)
{
	char path[4200], *buf = NULL;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	if (procfs_read_file(path, &buf, NULL, NULL) < 0)
		return UINT64_MAX;
	uint64_t room = UINT64_MAX;
	char *p = strstr(buf, "0::/");
	if (p && (p == buf || p[-1] == '\n')) {
		char cg[4096];
		snprintf(cg, sizeof(cg), "%.*s", (int)strcspn(p + 3, "\n"), p + 3);
		for (;;) {
			char *mx = NULL, *cur = NULL;
			unsigned long long max, used;
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", strcmp(cg, "/") ? cg : "");
			bool limited = procfs_read_file(path, &mx, NULL, NULL) == 0 && sscanf(mx, "%llu", &max) == 1;
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", strcmp(cg, "/") ? cg : "");
			if (limited && procfs_read_file(path, &cur, NULL, NULL) == 0 && sscanf(cur, "%llu", &used) == 1) {
				uint64_t r = used < max ? max - used : 0;
				if (r < room) {
					room = r;
					snprintf(where, cap, "memory cgroup %.200s", cg);
				}
			}
			free(mx);
			free(cur);
			char *slash = strrchr(cg, '/');
			if (!slash || slash == cg)
				break;
			*slash = '\0';
		}
	}
	free(buf);
	return room;
}

/* The lines of /proc/PID/maps that overlap guest RAM, as one string (the
 * rest of the hypervisor's mappings - malloc arenas, thread stacks - come
 * and go at any time and do not matter here). */
static char *ram_maps(pid_t pid, const struct guest_mem *gm, struct vmsh_err *err)
{
	char path[64], *text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	if (procfs_read_file(path, &text, NULL, err) < 0)
		return NULL;
	size_t len = strlen(text), o = 0;
	char *out = malloc(len + 1);
	if (!out) {
		free(text);
		vmsh_error(err, ENOMEM, "snapshot");
		return NULL;
	}
	for (char *line = text; *line;) {
		char *nl = strchr(line, '\n');
		size_t l = nl ? (size_t)(nl - line + 1) : strlen(line);
		struct proc_map m;
		if (procfs_parse_map_line(line, &m) == 0) {
			struct proc_vma v = { .start = m.start, .end = m.end };
			bool ram = false;
			for (size_t i = 0; i < gm->n && !ram; i++)
				ram = gm->r[i].verified && gm->r[i].hva && overlaps(&v, &gm->r[i]);
			if (ram) {
				memcpy(out + o, line, l);
				o += l;
			}
		}
		line += l;
	}
	out[o] = '\0';
	free(text);
	return out;
}

/* Devices that DMA into guest RAM (vfio, vDPA, iommufd) pin its pages: a
 * fork would copy every pinned page at once (a long stop, all of RAM twice)
 * or, on old kernels, leave the device writing to the copy's pages. */
static int pinned_ram(pid_t pid, struct vmsh_err *err)
{
	struct proc_fd *fds;
	size_t n;
	if (procfs_list_fds(pid, &fds, &n, err) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *t = fds[i].target;
		if (!strncmp(t, "/dev/vfio/", 10) || !strcmp(t, "/dev/iommu") || !strncmp(t, "/dev/vhost-vdpa", 15))
			rc = vmsh_error(err, ENOTSUP, "the hypervisor has %.100s open: a device may hold guest RAM "
					"pinned, which a fork would copy at once", t);
	}
	free(fds);
	return rc;
}

int vm_snapshot_prepare(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err)
{
	const struct guest_mem *gm = &vm->info.mem;
	memset(s, 0, sizeof(*s));
	size_t usable = 0;
	for (size_t i = 0; i < gm->n; i++) {
		const struct guest_range *r = &gm->r[i];
		if (!r->verified || !r->hva)
			continue;
		if (r->shared)
			return vmsh_error(err, ENOTSUP,
					  "guest RAM at %#llx is shared memory (%.100s): a fork would not freeze it",
					  (unsigned long long)r->gpa, r->backing);
		usable++;
	}
	if (!usable)
		return vmsh_error(err, ENOENT, "no guest RAM is located in the hypervisor");
	if (tracer_fork_check(&vm->tr, err) < 0 || pinned_ram(vm->info.pid, err) < 0)
		return -1;
	if (!(s->maps = ram_maps(vm->info.pid, gm, err)))
		return -1;
	struct proc_vma *v;
	size_t n;
	if (procfs_read_smaps(vm->info.pid, &v, &n, err) < 0) {
		free(s->maps);
		s->maps = NULL;
		return -1;
	}
	s->dontfork = calloc(n ? n : 1, sizeof(*s->dontfork));
	if (!s->dontfork) {
		free(v);
		return vmsh_error(err, ENOMEM, "snapshot");
	}
	int rc = 0;
	for (size_t k = 0; k < n && rc == 0; k++) {
		bool ram = false;
		for (size_t i = 0; i < gm->n && !ram; i++)
			ram = gm->r[i].verified && gm->r[i].hva && overlaps(&v[k], &gm->r[i]);
		if (!ram)
			continue;
		if (v[k].shared || v[k].hugetlb)
			rc = vmsh_error(err, ENOTSUP, "guest RAM at %#llx in the hypervisor is %s: a fork would not copy it",
					(unsigned long long)v[k].start, v[k].shared ? "shared memory" : "hugetlbfs memory");
		s->resident += v[k].rss;
		if (v[k].dontfork)
			s->dontfork[s->n_dontfork++] = v[k];
	}
	free(v);
	if (rc == 0) {
		/* worst case: the guest rewrites every resident page before the copy ends */
		uint64_t need = s->resident + s->resident / 512 + HEADROOM_MARGIN, avail = mem_available();
		char where[256] = "";
		uint64_t room = cgroup_room(vm->info.pid, where, sizeof(where));
		if (avail && avail < need)
			rc = vmsh_error(err, ENOMEM,
					"the host has %llu MiB available, a snapshot may need up to %llu MiB (the guest's "
					"resident RAM, copied as the guest writes it)",
					(unsigned long long)(avail / MiB), (unsigned long long)(need / MiB));
		else if (room < need)
			rc = vmsh_error(err, ENOMEM,
					"the hypervisor's %s has %llu MiB free, a snapshot may need up to %llu MiB: the "
					"hypervisor could be OOM-killed", where, (unsigned long long)(room / MiB),
					(unsigned long long)(need / MiB));
	}
	if (rc < 0) {
		free(s->dontfork);
		free(s->maps);
		memset(s, 0, sizeof(*s));
		return -1;
	}
	s->prepared = true;
	return 0;
}

/* madvise(advice) on every guest RAM mapping the hypervisor keeps out of
 * forks: all of them, even after a failure (each is logged). */
static int advise_all(struct vm *vm, struct vm_snapshot *s, int advice, struct vmsh_err *err)
{
	int rc = 0;
	for (size_t i = 0; i < s->n_dontfork; i++) {
		uint64_t args[6] = { s->dontfork[i].start, s->dontfork[i].end - s->dontfork[i].start, (uint64_t)advice };
		int64_t ret;
		struct vmsh_err e = { 0 };
		const char *name = advice == MADV_DOFORK ? "MADV_DOFORK" : "MADV_DONTFORK";
		if (tracer_syscall(&vm->tr, SYS_madvise, args, &ret, &e) < 0 || ret != 0) {
			if (!e.msg[0])
				vmsh_error(&e, (int)-ret, "madvise(%#llx, %s) in process %d", (unsigned long long)args[0],
					   name, vm->info.pid);
			log_info("%s", e.msg);
			if (rc == 0 && err)
				*err = e;
			rc = -1;
		}
	}
	return rc;
}

int vm_snapshot_take(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err)
{
	if (!s->prepared)
		return vmsh_error(err, EINVAL, "snapshot not prepared");
	/* what vm_snapshot_prepare saw must still be so, now that every thread
	 * is stopped: else the mappings to lift MADV_DONTFORK on are not known */
	char *now = ram_maps(vm->info.pid, &vm->info.mem, err);
	if (!now)
		return -1;
	if (strcmp(now, s->maps)) {
		/* name the first line that differs */
		size_t i = 0, line = 0;
		while (now[i] && now[i] == s->maps[i])
			if (now[i++] == '\n')
				line = i;
		vmsh_error(err, EAGAIN, "the hypervisor's mappings of guest RAM changed since they were read (now: %.120s)",
			   now + line);
		free(now);
		return -1;
	}
	free(now);
	int rc = advise_all(vm, s, MADV_DOFORK, err);
	if (rc == 0)
		rc = tracer_fork_frozen(&vm->tr, &s->copy, err);
	/* whatever happened: the hypervisor's own setting back, at once */
	struct vmsh_err e2 = { 0 };
	if (advise_all(vm, s, MADV_DONTFORK, &e2) < 0 && rc == 0) {
		*err = e2;
		rc = -1;
	}
	s->taken = rc == 0;
	return rc;
}

/* A process left by a killed vmsh: a zombie child of thread tid with exit
 * signal 0 and that thread's name; *ns_pid its pid as the hypervisor knows
 * it. */
static bool leftover_copy(pid_t pid, pid_t tid, pid_t child, pid_t *ns_pid)
{
	char path[96], *buf = NULL, *mine = NULL;
	bool match = false;
	snprintf(path, sizeof(path), "/proc/%d/stat", child);
	if (procfs_read_file(path, &buf, NULL, NULL) < 0)
		return false;
	/* the copy has the name of the thread that forked it */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", pid, tid);
	if (procfs_read_file(path, &mine, NULL, NULL) < 0) {
		free(buf);
		return false;
	}
	/* "pid (comm) state ..." - comm may hold spaces and parentheses */
	char *open = strchr(buf, '('), *close = strrchr(buf, ')');
	mine[strcspn(mine, "\n")] = '\0';
	if (open && close && close > open && (size_t)(close - open - 1) == strlen(mine) &&
	    !strncmp(open + 1, mine, strlen(mine)) && close[1] == ' ' && close[2] == 'Z') {
		/* exit_signal is field 38; after ") " the fields are numbered from 3 */
		char *p = close + 2;
		int field = 3;
		while (field < 38 && (p = strchr(p, ' ')))
			p++, field++;
		match = p && field == 38 && strtol(p, NULL, 10) == 0;
	}
	free(buf);
	free(mine);
	if (!match)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/status", child);
	if (procfs_read_file(path, &buf, NULL, NULL) < 0)
		return false;
	const char *ns = strstr(buf, "\nNSpid:");
	*ns_pid = 0;
	if (ns) {
		const char *end = ns + 7 + strcspn(ns + 7, "\n");
		const char *last = end;
		while (last > ns + 7 && last[-1] != ' ' && last[-1] != '\t')
			last--;
		*ns_pid = (pid_t)strtol(last, NULL, 10);
	}
	free(buf);
	return *ns_pid > 0;
}

int vm_snapshot_reap_leftovers(struct vm *vm)
{
	pid_t *tids;
	size_t n;
	int reaped = 0;
	if (procfs_list_tasks(vm->info.pid, &tids, &n, NULL) < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char path[96], *buf = NULL;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", vm->info.pid, tids[i]);
		if (procfs_read_file(path, &buf, NULL, NULL) < 0)
			continue;
		for (char *p = buf, *end; *p; p = end) {
			long child = strtol(p, &end, 10);
			if (end == p)
				break;
			pid_t ns_pid;
			if (child > 0 && leftover_copy(vm->info.pid, tids[i], (pid_t)child, &ns_pid)) {
				uint64_t args[6] = { (uint64_t)ns_pid, 0, __WALL | WNOHANG, 0, 0, 0 };
				int64_t ret;
				struct vmsh_err e = { 0 };
				if (tracer_syscall(&vm->tr, SYS_wait4, args, &ret, &e) == 0 && ret == ns_pid) {
					log_info("reaped process %ld, a snapshot copy an earlier vmsh left in process %d",
						 child, vm->info.pid);
					reaped++;
				}
			}
		}
		free(buf);
	}
	free(tids);
	return reaped;
}

int vm_snapshot_read(const struct vm_snapshot *s, const struct guest_mem *gm, uint64_t gpa, void *buf, size_t len)
{
	uint8_t *out = buf;
	if (!s->taken || !s->copy.pid) {
		errno = ESRCH;
		return -1;
	}
	while (len) {
		const struct guest_range *r = guest_mem_find(gm, gpa);
		if (!r || !r->verified || r->shared) {
			errno = EFAULT;
			return -1;
		}
		uint64_t off = gpa - r->gpa;
		size_t chunk = r->size - off < len ? (size_t)(r->size - off) : len;
		ssize_t done = remote_read(s->copy.pid, r->hva + off, out, chunk);
		if (done != (ssize_t)chunk) {
			if (done >= 0)
				errno = EFAULT;
			return -1;
		}
		out += chunk;
		gpa += chunk;
		len -= chunk;
	}
	return 0;
}

int vm_snapshot_drop(struct vm *vm, struct vm_snapshot *s, struct vmsh_err *err)
{
	int rc = 0;
	if (s->copy.pid || s->copy.ended) {
		struct vmsh_err e = { 0 };
		tracer_fork_release(&vm->tr, &s->copy, &e); /* kills it; reaps it if attached */
		if (s->copy.ended && (rc = vm_hold(vm, err)) == 0) {
			rc = tracer_fork_release(&vm->tr, &s->copy, err);
			vm_let_go(vm);
		}
		if (rc < 0)
			log_info("the hypervisor's snapshot copy (its pid %d) is left a zombie: %s", s->copy.ns_pid,
				 err ? err->msg : "");
	}
	free(s->dontfork);
	free(s->maps);
	memset(s, 0, sizeof(*s));
	return rc;
}
