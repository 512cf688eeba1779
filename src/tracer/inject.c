/* inject.c - running syscalls inside the hypervisor's injection thread.
 *
 * Every injected syscall runs from the stub (stub.h): if vmsh dies at any
 * point, the kernel detaches the thread, which finishes the syscall and
 * jumps back to exactly where it was. The stub is written into padding the
 * process never executes: the tail of the last page of an executable
 * file-backed mapping past its ELF segment's contents (a private mapping, so
 * the write only copies that page for this process). Placing it needs no
 * syscall at all, so there is no instant at which a dying vmsh leaves the
 * thread on code it does not own. Syscall arguments live on the thread's own
 * stack, below its red zone and below the stub's few bytes.
 *
 * Each thread we inject into (the main injection thread, and a vCPU's own
 * thread for that vCPU's ioctls) has its own stub, since the stub carries
 * that thread's registers.
 *
 * Fallbacks for the main thread, each logged: without such padding, an
 * anonymous mapping made by an mmap run from the vDSO's `syscall` (a window
 * of one syscall); without room on the stack, a scratch mapping made through
 * the stub. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/procfs.h"
#include "common/remote_mem.h"
#include "tracer/internal.h"
#include "tracer/stub.h"

#define RED_ZONE 128
#define FALLBACK_AREA_SIZE 4096

_Static_assert(sizeof(((struct inj_thread *)0)->site_orig) >= STUB_SITE_SIZE, "site_orig too small");
#define MAX_SITES 256
#define SITES_MORE 16 /* places looked for at a time */

/* /proc/PID/mem, opened once per attachment (closed by tracer_detach):
 * an injection stub is written and taken away again in every stop window. */
static int mem_fd(struct tracer *t)
{
	if (!t->mem_fd_open) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", t->pid);
		t->mem_fd = open(path, O_RDWR | O_CLOEXEC);
		t->mem_fd_open = t->mem_fd >= 0;
	}
	return t->mem_fd_open ? t->mem_fd : -1;
}

void inject_close_mem(struct tracer *t)
{
	if (t->mem_fd_open)
		close(t->mem_fd);
	t->mem_fd_open = false;
}

/* Write through /proc/PID/mem, which (unlike process_vm_writev) may write
 * read-only pages of a traced process, copying private pages first. */
int tracer_poke(struct tracer *t, uint64_t addr, const void *buf, size_t len)
{
	int fd = mem_fd(t);
	if (fd < 0)
		return -1;
	return pwrite(fd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

int tracer_peek(struct tracer *t, uint64_t addr, void *buf, size_t len)
{
	int fd = mem_fd(t);
	if (fd < 0)
		return -1;
	return pread(fd, buf, len, (off_t)addr) == (ssize_t)len ? 0 : -1;
}

/* Unused tail of an executable mapping, from its file's program headers. */
static int segment_tail(pid_t pid, const struct proc_map *m, uint64_t *tail)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", pid, (unsigned long long)m->start,
		 (unsigned long long)m->end);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	Elf64_Ehdr eh;
	if (pread(fd, &eh, sizeof(eh), 0) != sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 64)
		return -1;
	Elf64_Phdr ph[64];
	if (pread(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), (off_t)eh.e_phoff) != (ssize_t)(eh.e_phnum * sizeof(Elf64_Phdr)))
		return -1;
	uint64_t len = m->end - m->start;
	for (int i = 0; i < eh.e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X))
			continue;
		uint64_t seg_end = ph[i].p_offset + ph[i].p_filesz;
		/* the segment must end inside this mapping's last page */
		if (seg_end <= m->offset || seg_end > m->offset + len || m->offset + len - seg_end >= 4096)
			continue;
		*tail = m->start + (seg_end - m->offset);
		return 0;
	}
	return -1;
}

/* Overlaps a place already known (a later look may see a mapping split or
 * grown, its places shifted: two stubs must never share a byte). */
static bool known_site(const struct tracer *t, uint64_t at)
{
	for (size_t i = 0; i < t->n_sites; i++)
		if (at < t->sites[i] + STUB_SITE_SIZE && t->sites[i] < at + STUB_SITE_SIZE)
			return true;
	return false;
}

/* The mapping m holds sites: remembered, so that a later attachment can
 * tell the sites are still where they were (sites_unchanged). */
static int remember_site_map(struct tracer *t, const struct proc_map *m)
{
	struct proc_map *nm = realloc(t->site_maps, (t->n_site_maps + 1) * sizeof(*nm));
	if (!nm)
		return -1;
	t->site_maps = nm;
	t->site_maps[t->n_site_maps++] = *m;
	return 0;
}

static bool same_mapping(const struct proc_map *a, const struct proc_map *b)
{
	return a->start == b->start && a->end == b->end && a->offset == b->offset && a->dev == b->dev &&
	       a->inode == b->inode && !strcmp(a->perms, b->perms) && !strcmp(a->path, b->path);
}

/* Does every mapping the sites were found in still exist as it was (the
 * same file at the same offset, so the same program headers and the same
 * unused tail)? A re-attachment then skips looking for sites, which opens
 * each file's /proc/PID/map_files entry (4-17 ms on the emulated host). */
static bool sites_unchanged(const struct tracer *t, const struct proc_map *maps, size_t n)
{
	if (!t->n_sites)
		return false;
	for (size_t i = 0; i < t->n_site_maps; i++) {
		bool found = false;
		for (size_t j = 0; j < n && !found; j++)
			found = same_mapping(&t->site_maps[i], &maps[j]);
		if (!found)
			return false;
	}
	return true;
}

void inject_forget_sites(struct tracer *t)
{
	free(t->sites);
	free(t->site_used);
	free(t->site_maps);
	t->sites = NULL;
	t->site_used = NULL;
	t->site_maps = NULL;
	t->n_sites = t->n_site_maps = 0;
	t->sites_all = false;
}

/* Places a stub fits (STUB_SITE_SIZE slices of the unused tails of
 * executable file mappings), mapping after mapping, until there are
 * `wanted`: a stub per thread that injects at once needs one, and each
 * mapping looked at costs an open of /proc/PID/map_files/... and two reads
 * (a hypervisor maps some 50 executable files: 45-120 ms per attachment on
 * the emulated host when every one was looked at, four attachments per
 * `vmsh attach`). More are looked for when they run out (twice as many each
 * time: a VM with many vCPUs needs a place per vCPU thread). */
static void collect_sites_in(struct tracer *t, const struct proc_map *maps, size_t n, size_t wanted)
{
	if (!t->sites)
		t->sites = calloc(MAX_SITES, sizeof(*t->sites));
	if (!t->site_used)
		t->site_used = calloc(MAX_SITES, sizeof(*t->site_used));
	if (wanted > MAX_SITES)
		wanted = MAX_SITES;
	if (!t->sites || !t->site_used)
		return;
	size_t i;
	for (i = 0; i < n && t->n_sites < wanted; i++) {
		const struct proc_map *m = &maps[i];
		uint64_t tail;
		if (m->perms[2] != 'x' || m->perms[3] != 'p' || m->path[0] != '/' || segment_tail(t->pid, m, &tail) < 0)
			continue;
		tail = (tail + 15) & ~15ULL;
		size_t before = t->n_sites;
		for (uint64_t at = (m->end - STUB_SITE_SIZE) & ~15ULL; at >= tail && t->n_sites < MAX_SITES;
		     at = (at - STUB_SITE_SIZE) & ~15ULL)
			if (!known_site(t, at))
				t->sites[t->n_sites++] = at;
		if (t->n_sites > before && remember_site_map(t, m) < 0)
			t->n_sites = before; /* a site must be checkable again */
	}
	t->sites_all = i == n || t->n_sites == MAX_SITES;
	log_debug("%zu places for injection stubs in process %d", t->n_sites, t->pid);
}

static void collect_sites(struct tracer *t, size_t wanted)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(t->pid, &maps, &n, NULL) < 0)
		return;
	collect_sites_in(t, maps, n, wanted);
	free(maps);
}

int tracer_take_site(struct tracer *t, uint64_t *site)
{
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < t->n_sites; i++)
			if (!t->site_used[i]) {
				t->site_used[i] = true;
				*site = t->sites[i];
				return 0;
			}
		if (t->sites_all)
			break;
		collect_sites(t, 2 * t->n_sites + SITES_MORE); /* each look starts over: few of them */
	}
	return -1;
}

void tracer_give_site(struct tracer *t, uint64_t site)
{
	for (size_t i = 0; i < t->n_sites; i++)
		if (t->sites[i] == site)
			t->site_used[i] = false;
}

/* Bytes 0f 05 (`syscall`) in the vDSO, which every x86-64 process has, or
 * else in any executable mapping. */
static int find_syscall_insn(pid_t pid, uint64_t *addr, struct vmsh_err *err)
{
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(pid, &maps, &n, err) < 0)
		return -1;
	int rc = -1;
	for (int pass = 0; pass < 2 && rc < 0; pass++) {
		for (size_t i = 0; i < n && rc < 0; i++) {
			bool vdso = strcmp(maps[i].path, "[vdso]") == 0;
			if (maps[i].perms[2] != 'x' || (pass == 0) != vdso)
				continue;
			size_t len = maps[i].end - maps[i].start;
			if (len > (16u << 20))
				len = 16u << 20;
			_cleanup_free_ uint8_t *buf = malloc(len);
			if (!buf)
				break;
			ssize_t got = remote_read(pid, maps[i].start, buf, len);
			for (ssize_t k = 0; k + 1 < got; k++) {
				if (buf[k] == 0x0f && buf[k + 1] == 0x05) {
					*addr = maps[i].start + k;
					rc = 0;
					break;
				}
			}
		}
	}
	free(maps);
	if (rc < 0)
		vmsh_error(err, ENOEXEC, "no syscall instruction found in process %d", pid);
	return rc;
}

static int syscall_in(struct tracer *t, struct inj_thread *th, long nr, const uint64_t args[6], int64_t *ret,
		      struct vmsh_err *err)
{
	if (!t->attached)
		return vmsh_error(err, EINVAL, "inject syscall: not attached");
	struct user_regs_struct regs = th->saved;
	regs.rip = th->stub ? th->stub : th->syscall_insn;
	regs.rax = nr;
	regs.orig_rax = (unsigned long long)-1; /* no restart logic on the way out of this stop */
	regs.rdi = args[0];
	regs.rsi = args[1];
	regs.rdx = args[2];
	regs.r10 = args[3];
	regs.r8 = args[4];
	regs.r9 = args[5];
	pid_t tid = th->tid;
	if (!regs.rip)
		return vmsh_error(err, EINVAL, "inject syscall: thread %d not set up", tid);
	if (ptrace(PTRACE_SETREGS, tid, 0, &regs) < 0)
		return vmsh_error(err, errno, "set registers of thread %d", tid);
	if (ptrace(PTRACE_SYSCALL, tid, 0, 0) < 0)
		goto fail_restore;
	if (tracer_wait_stop(tid, true, PTRACE_SYSCALL, &th->pending_sig, err) < 0)
		goto fail;
	/* fault injection for tests: die where a crash would hurt most */
	if (t->die_at_syscall && t->injected_syscalls + 1 == t->die_at_syscall)
		raise(SIGKILL);
	/* syscall-enter stop; run it */
	if (ptrace(PTRACE_SYSCALL, tid, 0, 0) < 0)
		goto fail_restore;
	if (tracer_wait_stop(tid, true, PTRACE_SYSCALL, &th->pending_sig, err) < 0)
		goto fail;
	if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
		goto fail_restore;
	*ret = (int64_t)regs.rax;
	t->injected_syscalls++;
	/* the thread's own registers go back right away, not only at detach */
	if (ptrace(PTRACE_SETREGS, tid, 0, &th->saved) < 0)
		return vmsh_error(err, errno, "restore registers of thread %d", tid);
	/* a signal held back during the syscall is made pending again at once:
	 * were vmsh to die now, the thread would still receive it */
	if (th->pending_sig) {
		tracer_reraise(t->pid, tid, th->pending_sig);
		th->pending_sig = 0;
	}
	return 0;
fail_restore:
	vmsh_error(err, errno, "inject syscall %ld into thread %d", nr, tid);
fail:
	ptrace(PTRACE_SETREGS, tid, 0, &th->saved);
	return -1;
}

int tracer_syscall(struct tracer *t, long nr, const uint64_t args[6], int64_t *ret, struct vmsh_err *err)
{
	return syscall_in(t, &t->main, nr, args, ret, err);
}

static int setup_fallback_area(struct tracer *t, const uint8_t stub[STUB_SITE_SIZE], struct vmsh_err *err)
{
	struct inj_thread *th = &t->main;
	uint64_t args[6] = { 0, FALLBACK_AREA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0 };
	int64_t ret;
	log_verbose("no padding for the injection stub in process %d: mapping one (not safe against "
		    "vmsh being killed during that one syscall)", t->pid);
	if (tracer_syscall(t, SYS_mmap, args, &ret, err) < 0)
		return -1;
	if (ret < 0 && ret > -4096)
		return vmsh_error(err, (int)-ret, "map injection stub in process %d", t->pid);
	th->area = (uint64_t)ret;
	if (remote_write(t->pid, th->area, stub, STUB_SITE_SIZE) != STUB_SITE_SIZE)
		return vmsh_error(err, errno, "write injection stub into process %d", t->pid);
	uint64_t pargs[6] = { th->area, FALLBACK_AREA_SIZE, PROT_READ | PROT_EXEC, 0, 0, 0 };
	if (tracer_syscall(t, SYS_mprotect, pargs, &ret, err) < 0)
		return -1;
	if (ret != 0)
		return vmsh_error(err, (int)-ret, "protect injection stub in process %d", t->pid);
	th->stub = th->area;
	return 0;
}

/* One entry per thread: renewed, else added, else one replaced. */
static void remember_stack(struct tracer *t, pid_t tid, uint64_t start, uint64_t end)
{
	size_t slot = t->n_stacks;
	for (size_t k = 0; k < t->n_stacks; k++)
		if (t->stacks[k].tid == tid)
			slot = k;
	if (slot == TRACER_STACKS)
		slot = (size_t)tid % TRACER_STACKS;
	else if (slot == t->n_stacks)
		t->n_stacks++;
	t->stacks[slot] = (struct tracer_stack){ .tid = tid, .start = start, .end = end };
}

void inject_learn_stacks(struct tracer *t, const struct proc_map *maps, size_t n)
{
	for (size_t k = 0; k < t->n_others; k++) {
		const struct inj_thread *o = &t->others[k];
		if (!o->tid || !o->saved_valid || !o->in_kvm_run)
			continue;
		for (size_t i = 0; i < n; i++)
			if (maps[i].perms[1] == 'w' && maps[i].start <= o->saved.rsp && o->saved.rsp < maps[i].end)
				remember_stack(t, o->tid, maps[i].start, maps[i].end);
	}
}

/* Is [lo, rsp] inside one writable mapping? For a vCPU thread stopped in
 * KVM_RUN the mapping an earlier window of this process saw for it is
 * used: a hypervisor enters KVM_RUN on the thread's own stack (never on a
 * coroutine's), which stays mapped as long as the thread lives. Else the
 * process's maps (remembered for vCPU threads): `known`, read by the
 * caller, or NULL to read them now. */
static int stack_mapping(struct tracer *t, const struct inj_thread *th, uint64_t lo, bool *on_stack,
			 const struct proc_map *known, size_t n_known, struct vmsh_err *err)
{
	pid_t tid = th->tid;
	uint64_t rsp = th->saved.rsp;
	for (size_t i = 0; i < t->n_stacks && th->in_kvm_run; i++) {
		const struct tracer_stack *m = &t->stacks[i];
		if (m->tid == tid && m->start <= lo && rsp <= m->end) {
			*on_stack = true;
			return 0;
		}
	}
	struct proc_map *maps = (struct proc_map *)known;
	size_t n = n_known;
	if (!known && procfs_read_maps(t->pid, &maps, &n, err) < 0)
		return -1;
	*on_stack = false;
	for (size_t i = 0; i < n; i++)
		if (maps[i].perms[1] == 'w' && maps[i].start <= lo && rsp <= maps[i].end)
			*on_stack = true;
	inject_learn_stacks(t, maps, n); /* every vCPU thread stopped now, this one among them */
	if (!known)
		free(maps);
	return 0;
}

/* Scratch on the thread's stack if its mapping reaches far enough down;
 * else (if allowed) a mapping made through the thread's stub. */
static int setup_scratch(struct tracer *t, struct inj_thread *th, bool may_map, const struct proc_map *maps,
			 size_t n_maps, struct vmsh_err *err)
{
	uint64_t top = (th->saved.rsp - RED_ZONE - STUB_STACK_USE - 64) & ~63ULL;
	uint64_t lo = top - TRACER_SCRATCH_SIZE;
	bool on_stack;
	if (stack_mapping(t, th, lo, &on_stack, maps, n_maps, err) < 0)
		return -1;
	if (on_stack) {
		th->scratch = lo;
		return 0;
	}
	if (!may_map)
		return vmsh_error(err, ENOSPC, "stack of thread %d too short for scratch", th->tid);
	uint64_t args[6] = { 0, TRACER_SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0 };
	int64_t ret;
	if (syscall_in(t, th, SYS_mmap, args, &ret, err) < 0)
		return -1;
	if (ret < 0 && ret > -4096)
		return vmsh_error(err, (int)-ret, "map scratch area in process %d", t->pid);
	th->scratch = (uint64_t)ret;
	th->scratch_mapped = true;
	log_verbose("stack of thread %d too short for scratch: mapped %#llx", th->tid, (unsigned long long)th->scratch);
	return 0;
}

/* Stub in padding for a stopped thread whose registers are in th->saved. */
static int setup_stub(struct tracer *t, struct inj_thread *th)
{
	uint8_t stub[STUB_SITE_SIZE];
	uint64_t site;
	stub_build(&th->saved, stub);
	if (tracer_take_site(t, &site) < 0)
		return -1;
	if (tracer_peek(t, site, th->site_orig, STUB_SITE_SIZE) < 0 || tracer_poke(t, site, stub, STUB_SITE_SIZE) < 0) {
		tracer_give_site(t, site);
		return -1;
	}
	th->site = th->stub = site;
	return 0;
}

static void teardown_thread(struct tracer *t, struct inj_thread *th)
{
	int64_t ret;
	struct vmsh_err e = { 0 };
	if (th->scratch_mapped) {
		uint64_t args[6] = { th->scratch, TRACER_SCRATCH_SIZE, 0, 0, 0, 0 };
		if (syscall_in(t, th, SYS_munmap, args, &ret, &e) < 0 || ret != 0)
			log_info("unmapping the scratch area in process %d failed: %s", t->pid, e.msg);
		th->scratch_mapped = false;
	}
	th->scratch = 0;
	if (th->site) {
		if (tracer_poke(t, th->site, th->site_orig, STUB_SITE_SIZE) < 0)
			log_info("restoring %d bytes at %#llx in process %d failed: %s", STUB_SITE_SIZE,
				 (unsigned long long)th->site, t->pid, strerror(errno));
		tracer_give_site(t, th->site);
		th->site = th->stub = 0;
	}
	if (th->area) {
		/* from the vDSO: the syscall would return into the unmapped page */
		th->stub = 0;
		uint64_t args[6] = { th->area, FALLBACK_AREA_SIZE, 0, 0, 0, 0 };
		if (th->syscall_insn && (syscall_in(t, th, SYS_munmap, args, &ret, &e) < 0 || ret != 0))
			log_info("unmapping the injection stub in process %d failed: %s", t->pid, e.msg);
		th->area = 0;
	}
}

int tracer_prepare_thread(struct tracer *t, struct inj_thread *th, struct vmsh_err *err)
{
	if (th->stub)
		return 0;
	if (!th->saved_valid)
		return vmsh_error(err, EINVAL, "thread %d is not stopped", th->tid);
	if (setup_stub(t, th) < 0)
		return vmsh_error(err, ENOSPC, "no room for an injection stub for thread %d", th->tid);
	if (setup_scratch(t, th, false, NULL, 0, err) < 0) {
		teardown_thread(t, th);
		return -1;
	}
	return 0;
}

int tracer_syscall_in(struct tracer *t, struct inj_thread *th, long nr, const uint64_t args[6], int64_t *ret,
		      struct vmsh_err *err)
{
	if (tracer_prepare_thread(t, th, err) < 0)
		return -1;
	return syscall_in(t, th, nr, args, ret, err);
}

void inject_thread_teardown(struct tracer *t, struct inj_thread *th)
{
	teardown_thread(t, th);
}

int inject_setup(struct tracer *t, struct vmsh_err *err)
{
	struct inj_thread *th = &t->main;
	/* the maps read once for the places and the scratch (each read of a
	 * large hypervisor's maps costs milliseconds on the emulated host) */
	struct proc_map *maps;
	size_t n;
	if (procfs_read_maps(t->pid, &maps, &n, err) < 0)
		return -1;
	/* a place for each thread there is now (a stop window prepares a stub
	 * in each vCPU thread: no looking for more while the guest stands);
	 * those of the last attachment if their mappings are unchanged */
	size_t wanted = t->n_threads + 1 > SITES_MORE ? t->n_threads + 1 : SITES_MORE;
	if (sites_unchanged(t, maps, n) && t->n_sites >= wanted) {
		memset(t->site_used, 0, MAX_SITES * sizeof(*t->site_used));
		t->sites_all = false; /* mappings may have been added: more can be looked for */
		log_debug("%zu places for injection stubs in process %d, as at the last attachment", t->n_sites,
			  t->pid);
	} else {
		inject_forget_sites(t);
		collect_sites_in(t, maps, n, wanted);
	}
	if (setup_stub(t, th) < 0) {
		uint8_t stub[STUB_SITE_SIZE];
		stub_build(&th->saved, stub);
		if (find_syscall_insn(t->pid, &th->syscall_insn, err) < 0) {
			free(maps);
			return -1;
		}
		if (setup_fallback_area(t, stub, err) < 0) {
			free(maps);
			inject_teardown(t);
			return -1;
		}
	}
	int rc = setup_scratch(t, th, true, maps, n, err);
	free(maps);
	if (rc < 0) {
		inject_teardown(t);
		return -1;
	}
	return 0;
}

void inject_teardown(struct tracer *t)
{
	teardown_thread(t, &t->main);
	/* the sites stay for the next attachment (sites_unchanged) */
	if (t->site_used)
		memset(t->site_used, 0, MAX_SITES * sizeof(*t->site_used));
}
