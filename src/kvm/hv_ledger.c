/* hv_ledger.c - what a session created in the hypervisor, for a later run
 * to undo if the session dies (see hv_ledger.h). */
#include "kvm/hv_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/procfs.h"

#define PAGE 4096u

int hv_ledger_open(struct kvm_vm *vm, struct hv_ledger *l, struct vmsh_err *err)
{
	*l = (struct hv_ledger){ .lock_fd = -1 };
	if (shared_mem_create_named(vm, PAGE, HV_LEDGER_NAME, &l->mem, err) < 0)
		return vmsh_err_prefix(err, "the session's ledger");
	/* the lock must be on an open file description of our own: mem.fd is
	 * the hypervisor's, which its mapping keeps open (kernel_lib.c too) */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", l->mem.fd);
	l->lock_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (l->lock_fd < 0 || flock(l->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		vmsh_error(err, errno, "lock the session's ledger");
		hv_ledger_close(vm, l, false);
		return -1;
	}
	struct hv_ledger_page *p = (struct hv_ledger_page *)l->mem.local;
	memset(p, 0, sizeof(*p));
	for (unsigned i = 0; i < HV_LEDGER_MAX_FDS; i++)
		p->fds[i].fd = -1;
	p->version = HV_LEDGER_VERSION;
	__atomic_store_n(&p->magic, HV_LEDGER_MAGIC, __ATOMIC_RELEASE);
	vm->ledger = p;
	l->open = true;
	return 0;
}

void hv_ledger_close(struct kvm_vm *vm, struct hv_ledger *l, bool keep)
{
	if (vm->ledger == (struct hv_ledger_page *)l->mem.local)
		vm->ledger = NULL;
	if (keep && l->open) {
		/* stays mapped in the hypervisor; only our side goes */
		l->mem.remote = 0;
		log_verbose("the session's ledger stays in the hypervisor for a later run");
	}
	shared_mem_destroy(vm, &l->mem);
	if (l->lock_fd >= 0)
		close(l->lock_fd);
	l->lock_fd = -1;
	l->open = false;
}

void *hv_ledger_area(struct hv_ledger *l)
{
	return l->open ? ((struct hv_ledger_page *)l->mem.local)->area : NULL;
}

static struct hv_ledger_fd *find_fd(struct hv_ledger_page *p, int64_t fd)
{
	for (unsigned i = 0; i < HV_LEDGER_MAX_FDS; i++)
		if (p->fds[i].fd == fd)
			return &p->fds[i];
	return NULL;
}

void hv_ledger_eventfd(struct kvm_vm *vm, int64_t fd, bool open)
{
	struct hv_ledger_page *p = vm->ledger;
	if (!p || fd < 0)
		return;
	struct hv_ledger_fd *e = find_fd(p, open ? -1 : fd);
	if (!e) {
		if (open)
			log_info("the session's ledger is full: eventfd %lld is not recorded", (long long)fd);
		return;
	}
	if (open)
		*e = (struct hv_ledger_fd){ .fd = (int32_t)fd };
	else
		*e = (struct hv_ledger_fd){ .fd = -1 };
}

void hv_ledger_ioeventfd(struct kvm_vm *vm, int64_t fd, uint64_t addr, uint32_t len, bool match, uint64_t data,
			 bool on)
{
	struct hv_ledger_fd *e = vm->ledger && fd >= 0 ? find_fd(vm->ledger, fd) : NULL;
	if (!e)
		return;
	e->io_addr = addr;
	e->io_len = (uint8_t)len;
	e->io_match = match;
	e->io_data = data;
	e->io_on = on;
}

void hv_ledger_irqfd(struct kvm_vm *vm, int64_t fd, uint32_t gsi, bool on)
{
	struct hv_ledger_fd *e = vm->ledger && fd >= 0 ? find_fd(vm->ledger, fd) : NULL;
	if (!e)
		return;
	e->gsi = gsi;
	e->irq_on = on;
}

void hv_ledger_slot_pending(struct kvm_vm *vm, bool pending)
{
	if (vm->ledger)
		__atomic_store_n(&vm->ledger->slot.pending, pending, __ATOMIC_RELEASE);
}

void hv_ledger_slot(struct kvm_vm *vm, const struct kvm_slot *s, bool on)
{
	struct hv_ledger_page *p = vm->ledger;
	if (!p)
		return;
	if (!on) {
		p->slot.on = 0;
		return;
	}
	p->slot.id = s->id;
	p->slot.flags = s->flags;
	p->slot.gpa = s->gpa;
	p->slot.size = s->size;
	p->slot.hva = s->hva;
	__atomic_store_n(&p->slot.on, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&p->slot.pending, 0, __ATOMIC_RELEASE);
}

void hv_ledger_mem(struct kvm_vm *vm, const struct shared_mem *m, bool on)
{
	struct hv_ledger_page *p = vm->ledger;
	if (!p)
		return;
	if (!on) {
		p->mem.on = 0;
		return;
	}
	p->mem.hva = m->remote;
	p->mem.size = m->size;
	__atomic_store_n(&p->mem.on, 1, __ATOMIC_RELEASE);
}

/* ---- reaping a dead session's ledger ---- */

/* Is fd N of the hypervisor an eventfd? (fdinfo says so) */
static bool is_eventfd(pid_t pid, int32_t fd)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	char *text = NULL;
	size_t len = 0;
	struct vmsh_err e = { 0 };
	if (procfs_read_file(path, &text, &len, &e) < 0)
		return false;
	bool yes = strstr(text, "eventfd-count:") != NULL;
	free(text);
	return yes;
}

static void undo_fd(struct kvm_vm *vm, const struct hv_ledger_fd *f)
{
	if (!is_eventfd(vm->pid, f->fd)) {
		log_info("a dead session's ledger names fd %d of the hypervisor, which is no eventfd: left alone", f->fd);
		return;
	}
	struct kvm_eventfd e = { .local = -1, .remote = f->fd };
	struct vmsh_err err = { 0 };
	/* unregistering what is not registered any more answers an error and
	 * changes nothing (a kill between unregistering and forgetting) */
	if (f->io_on)
		kvm_ioeventfd(vm, &e, f->io_addr, f->io_len, f->io_match, f->io_data, true, &err);
	if (f->irq_on)
		kvm_irqfd(vm, &e, f->gsi, true, &err);
	kvm_eventfd_close(vm, &e);
}

/* Is [hva, hva+size) exactly one vmsh memory mapping of the hypervisor? */
static bool is_vmsh_mapping(const struct proc_map *maps, size_t n, uint64_t hva, uint64_t size)
{
	for (size_t i = 0; i < n; i++)
		if (maps[i].start == hva && maps[i].end - maps[i].start == size &&
		    strncmp(maps[i].path, "/memfd:vmsh ", 12) == 0)
			return true;
	return false;
}

/* One dead session's ledger (locked by us): undo what it names. 1 all gone,
 * 0 something stays on purpose or could not be checked. */
static int reap_ledger(struct kvm_vm *vm, struct hv_ledger_page *p, const struct proc_map *maps, size_t n,
		       uint64_t probe_gpa, hv_range_busy_fn busy, void *opaque)
{
	for (unsigned i = 0; i < HV_LEDGER_MAX_FDS; i++) {
		if (p->fds[i].fd >= 0)
			undo_fd(vm, &p->fds[i]);
		p->fds[i] = (struct hv_ledger_fd){ .fd = -1 }; /* closed: its number may be reused */
	}
	/* a slot being added when the session died may hold the memory under
	 * an id we cannot know: then the memory stays (a leak, never a slot
	 * whose memory is gone - the guest's next access would end the VM) */
	bool slot_gone = !p->slot.on && !p->slot.pending, mem_gone = !p->mem.on;
	if (p->slot.pending && !p->slot.on)
		log_info("a dead session was adding a memory slot when it ended: its memory stays");
	if (p->slot.on) {
		struct vmsh_err e = { 0 };
		if (busy && busy(opaque, p->slot.gpa, p->slot.size)) {
			log_info("a dead vmsh session's devices are still in the guest (at %#llx): their register "
				 "pages stay until it restarts", (unsigned long long)p->slot.gpa);
		} else if (p->slot.size > (1u << 20) || p->slot.id >= 0x10000) {
			log_info("a dead session's ledger names an implausible slot: left alone");
		} else {
			int holds = kvm_slot_holds(vm, p->slot.id, p->slot.flags, p->slot.hva, p->slot.size, p->slot.gpa,
						   probe_gpa, &e);
			if (holds > 0) {
				struct kvm_slot s = { .id = p->slot.id, .gpa = p->slot.gpa, .size = p->slot.size,
						      .hva = p->slot.hva, .flags = p->slot.flags, .added = true };
				kvm_slot_remove(vm, &s);
				slot_gone = true;
			} else if (holds == 0) {
				slot_gone = true; /* removed already: the id holds other memory or none */
			}
		}
		if (slot_gone)
			p->slot.on = 0;
	}
	if (p->mem.on && slot_gone) {
		if (is_vmsh_mapping(maps, n, p->mem.hva, p->mem.size)) {
			struct shared_mem m = { .fd = -1, .remote = p->mem.hva, .size = p->mem.size };
			shared_mem_destroy(vm, &m);
		}
		mem_gone = true;
	}
	return slot_gone && mem_gone;
}

/* Map a left ledger and its register memory into vmsh for a later run to
 * take its devices over: only when its slot and memory are still there as
 * recorded and it recorded devices. */
static bool keep_for_adoption(struct kvm_vm *vm, int fd, uint64_t remote, const struct hv_ledger_page *p,
			      const struct proc_map *maps, size_t n, struct hv_ledger_dead *d)
{
	bool any = false;
	for (size_t i = 0; i < sizeof(p->area) && !any; i++)
		any = p->area[i] != 0;
	if (!any || !p->slot.on || !p->mem.on || p->mem.size != p->slot.size || p->mem.hva != p->slot.hva ||
	    p->mem.size < PAGE || p->mem.size > (1u << 20) || !is_vmsh_mapping(maps, n, p->mem.hva, p->mem.size))
		return false;
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)vm->pid, (unsigned long long)p->mem.hva,
		 (unsigned long long)(p->mem.hva + p->mem.size));
	int rfd = open(path, O_RDWR | O_CLOEXEC);
	if (rfd < 0)
		return false;
	void *regs = mmap(NULL, p->mem.size, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
	close(rfd);
	void *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (regs == MAP_FAILED || page == MAP_FAILED) {
		if (regs != MAP_FAILED)
			munmap(regs, p->mem.size);
		if (page != MAP_FAILED)
			munmap(page, PAGE);
		return false;
	}
	*d = (struct hv_ledger_dead){ .on = true, .fd = fd, .remote = remote, .page = page, .regs = regs,
				      .regs_gpa = p->slot.gpa, .regs_size = p->mem.size };
	return true;
}

void hv_ledger_dead_end(struct kvm_vm *vm, struct hv_ledger_dead *d, uint64_t probe_gpa, bool gone)
{
	if (!d->on)
		return;
	munmap(d->regs, d->regs_size);
	if (gone) {
		struct proc_map *maps = NULL;
		size_t n = 0;
		struct vmsh_err e = { 0 };
		if (procfs_read_maps(vm->pid, &maps, &n, &e) == 0 &&
		    reap_ledger(vm, d->page, maps, n, probe_gpa, NULL, NULL)) {
			struct shared_mem lm = { .fd = -1, .remote = d->remote, .size = PAGE };
			shared_mem_destroy(vm, &lm);
			log_verbose("an earlier session's devices left the guest: its leftovers removed");
		}
		free(maps);
	}
	munmap(d->page, PAGE);
	close(d->fd);
	d->on = false;
}

int hv_ledger_reap(struct kvm_vm *vm, uint64_t probe_gpa, hv_range_busy_fn busy, void *opaque, unsigned *reaped,
		   unsigned *left, struct hv_ledger_dead *adopt, struct vmsh_err *err)
{
	*reaped = *left = 0;
	struct proc_map *maps = NULL;
	size_t n = 0;
	if (procfs_read_maps(vm->pid, &maps, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n && i < 65536; i++) {
		const struct proc_map *m = &maps[i];
		if (m->end - m->start != PAGE || strncmp(m->path, "/memfd:" HV_LEDGER_NAME " ", 19) != 0)
			continue;
		char path[96];
		snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)vm->pid,
			 (unsigned long long)m->start, (unsigned long long)m->end);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) { /* a live session's (or ours) */
			close(fd);
			continue;
		}
		struct hv_ledger_page p;
		bool valid = pread(fd, &p, sizeof(p), 0) == (ssize_t)sizeof(p) && p.magic == HV_LEDGER_MAGIC &&
			     p.version == HV_LEDGER_VERSION;
		/* without its magic the ledger was being created: it names nothing */
		int done = valid ? reap_ledger(vm, &p, maps, n, probe_gpa, busy, opaque) : 1;
		if (done) {
			struct shared_mem lm = { .fd = -1, .remote = m->start, .size = PAGE };
			shared_mem_destroy(vm, &lm);
			(*reaped)++;
		} else {
			/* what stays is named in it still, the rest forgotten; our
			 * lock goes with the fd: the next run looks again */
			if (pwrite(fd, &p, sizeof(p), 0) != (ssize_t)sizeof(p))
				log_info("updating a dead session's ledger failed: %s", strerror(errno));
			(*left)++;
			if (adopt && !adopt->on && keep_for_adoption(vm, fd, m->start, &p, maps, n, adopt))
				continue; /* the fd (and lock) are the caller's now */
		}
		close(fd);
	}
	free(maps);
	if (*reaped || *left)
		log_info("earlier vmsh sessions killed outright: %u cleaned up in the hypervisor%s", *reaped,
			 *left ? ", some leftovers stay (see above)" : "");
	return 0;
}
