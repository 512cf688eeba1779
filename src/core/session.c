/* session.c - vmsh's devices in a running guest (see session.h). */
#include "core/session.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/signals.h"
#include "devices/adopt.h"
#include "devices/blk_dev.h"
#include "devices/blk_uring.h"
#include "devices/console_dev.h"
#include "devices/server.h"
#include "devices/vq_guestmem.h"
#include "kvm/hv_ledger.h"
#include "kvm/mmio_trap.h"
#include "loader/kernel_lib.h"

#define PAGE 4096u
#define DEV_BLK 0
#define DEV_CON 1

struct session {
	const struct session_opts *o;
	struct session_stats *st;
	struct kvm_vm *vm;
	struct vm_info *info;

	struct kernel_lib kl;
	bool kl_loaded;
	bool devices_added; /* the library's ADD work ran (it may have registered devices) */

	struct shared_mem pages; /* the register pages */
	struct kvm_slot slot;
	struct hv_ledger ledger; /* what we create in the hypervisor, for a later run if we die */

	struct blk_uring be;
	struct blk_disk disk;
	bool be_open;
	struct console_dev con;
	bool con_init;
	struct vdev blk;
	bool blk_init;
	struct vdev *devs[2 * VMSH_MAX_DEVS]; /* ours, then an earlier run's taken over */
	size_t n_devs;
	struct dev_server srv;
	bool srv_init;
	uint64_t calls_at_start; /* guest memory's process_vm_readv/writev when the server started */
	uint64_t bytes_at_start; /* and the bytes they had moved */
	int con_fds[2]; /* [0] ours (server side), [1] the caller's */
	struct vq_mem mem;
	/* devices of an earlier run killed outright, taken over to be removed */
	struct hv_ledger_dead dead;
	struct vdev adopted[VMSH_MAX_DEVS];
	bool removable[VMSH_MAX_DEVS]; /* every queue taken over, its line connected */
	size_t n_adopted;
	size_t n_dead; /* of those, sent to the library to be removed */
	/* test hook: die the moment the console's driver reports DRIVER_OK
	 * (VMSH_TEST_DIE_AT_CONSOLE_READY) */
	bool test_die_at_console_ready;
};

/* our devices' records in the ledger's area: the block device, the console */
_Static_assert(VMSH_MAX_DEVS * sizeof(struct vdev_record) <= HV_LEDGER_AREA, "the ledger's area");
_Static_assert(2 * VMSH_MAX_DEVS <= SERVER_MAX_DEVS, "the server serves ours and the taken-over ones");

static bool on_mmio(void *opaque, struct mmio_access *a)
{
	struct session *s = opaque;
	for (size_t i = 0; i < s->n_devs; i++) {
		struct vdev *d = s->devs[i];
		if (a->gpa >= d->gpa && a->gpa < d->gpa + PAGE) {
			vdev_mmio(d, (uint32_t)(a->gpa - d->gpa), a->is_write, a->data, a->len);
			if (s->test_die_at_console_ready && d == &s->con.dev && (vdev_status(d) & VIRTIO_STATUS_DRIVER_OK))
				raise(SIGKILL); /* killed outright while the guest's console driver sets up */
			return true;
		}
	}
	return false; /* between our pages: the hypervisor's */
}

struct reap_view {
	const struct vm_info *info;
	bool lib_at_work; /* an earlier run's library is still at work */
};

/* May the guest use [gpa, gpa+size)? A dead session's devices the guest
 * still has (its iomem tree shows them) keep their register pages. So do
 * all while an earlier library is still at work: it may be about to
 * register devices at the addresses its run chose, which must not become
 * ours in the meantime. */
static bool range_busy(void *opaque, uint64_t gpa, uint64_t size)
{
	const struct reap_view *v = opaque;
	return v->lib_at_work || !iomem_range_free(v->info->iomem, (size_t)v->info->n_iomem, gpa, size);
}

/* Register pages: a read-only slot right after the library's memory, in a
 * range the guest's own map does not use. */
static int add_pages(struct session *s, struct vmsh_err *err)
{
	struct kvm_vm *vm = s->vm;
	if (shared_mem_create(vm, 2 * PAGE, &s->pages, err) < 0)
		return -1;
	hv_ledger_mem(vm, &s->pages, true);
	uint64_t gpa = s->kl.slot.gpa + s->kl.slot.size;
	for (unsigned tries = 0; tries < 64; tries++, gpa += 2u << 20) {
		if (!iomem_range_free(s->info->iomem, (size_t)s->info->n_iomem, gpa, 2 * PAGE))
			continue;
		struct vmsh_err e = { 0 };
		hv_ledger_slot_pending(vm, true);
		if (kvm_slot_add(vm, &s->info->slots, &s->kl.slot.id, 1, gpa, 2u << 20, 1, s->pages.remote, 2 * PAGE,
				 KVM_MEM_READONLY, &s->slot, &e) == 0) {
			hv_ledger_slot(vm, &s->slot, true);
			return 0;
		}
		hv_ledger_slot_pending(vm, false);
		if (e.errnum != ENOSPC) {
			*err = e;
			return -1;
		}
	}
	return vmsh_error(err, ENOSPC, "no free guest-physical range for the device registers");
}

/* A request queue per guest vCPU, each served by a thread of its own - but
 * no more than the host CPUs vmsh may run on: measured on a host with one
 * CPU (bench/blk_bench.py --smp 2 --numjobs 2, README), a 2-vCPU guest's
 * random reads at iodepth 16 ran at 0.45x with two queues and threads
 * taking turns on that CPU against one queue. */
static size_t default_queues(size_t n_vcpus)
{
	cpu_set_t set;
	size_t cpus = 1;
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		cpus = (size_t)CPU_COUNT(&set);
	} else { /* more than 1024 CPUs: those online */
		long online = sysconf(_SC_NPROCESSORS_ONLN);
		if (online > 0)
			cpus = (size_t)online;
	}
	return n_vcpus < cpus ? n_vcpus : cpus;
}

/* With the server thread stopped (teardown), the queues are served here
 * between trapped exits, one budget per device and round, so that requests
 * the guest still has in flight complete while its drivers go away. */
static void serve_here(struct session *s)
{
	for (size_t i = 0; i < s->n_devs; i++)
		vdev_kick(s->devs[i], ~0u);
}

/* Let the library go on and trap the drivers' register writes until its
 * work is done. The hypervisor's injection thread `skip` stays held. */
/* Does the library reach the point where it waits for us within `ms`?
 * false as soon as it is loading a driver (request_module: the guest's
 * modprobe reads its disk, served by the hypervisor's thread vmsh holds)
 * or has ended. */
#define LIB_WAITS_SOON_MS 30
static bool lib_waits_soon(struct kernel_lib *kl, unsigned ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ULL;
	volatile struct vmsh_channel *c = kl->chan;
	char w[VMSH_WHERE_LEN * 4 + 8];
	while (now_ns() < end) {
		klib_log_progress(kl);
		if (c->phase == VMSH_PHASE_WAIT_HOST)
			return true;
		if (klib_done(kl) || strstr(klib_where(kl, w, sizeof(w)), "request_module"))
			return false;
		sleep_ms(1);
	}
	return false;
}

static int trapped_run(struct session *s, pid_t skip, unsigned timeout_ms, struct vmsh_err *err)
{
	struct mmio_trap mt;
	uint64_t t0 = now_ns();
	/* the vCPU threads, if vm_open saw every one inside KVM_RUN */
	pid_t tids[64];
	size_t n = 0;
	for (size_t i = 0; i < s->info->n_vcpus && n < 64; i++)
		if (s->info->vcpus[i].tid > 0)
			tids[n++] = s->info->vcpus[i].tid;
	if (n != s->info->n_vcpus)
		n = 0;
	uint64_t lo = UINT64_MAX, hi = 0; /* our pages, an earlier run's too */
	for (size_t i = 0; i < s->n_devs; i++) {
		lo = s->devs[i]->gpa < lo ? s->devs[i]->gpa : lo;
		hi = s->devs[i]->gpa + PAGE > hi ? s->devs[i]->gpa + PAGE : hi;
	}
	if (mmio_trap_start(&mt, s->vm, skip, tids, n, lo, hi, on_mmio, s, err) < 0) {
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		return -1;
	}
	klib_go(&s->kl, VMSH_GO_ON);
	int rc = 0;
	uint64_t deadline = t0 + (uint64_t)timeout_ms * 1000000ULL;
	while (!klib_done(&s->kl)) {
		if (mmio_trap_poll(&mt, 20, err) < 0) {
			rc = -1;
			break;
		}
		if (s->srv_init && !s->srv.running)
			serve_here(s);
		if (now_ns() > deadline) {
			rc = vmsh_error(err, ETIMEDOUT, "the guest did not finish setting up the devices within %u ms",
					timeout_ms);
			break;
		}
	}
	mmio_trap_end(&mt);
	s->st->traced_ns += now_ns() - t0;
	s->st->trapped += mt.handled;
	s->st->syscall_exits += mt.st.exits;
	if (rc == 0 && klib_wait(&s->kl, 0, err) < 0)
		rc = -1;
	return rc;
}

/* Take over the devices of the earlier run whose ledger the reaper kept:
 * served again (to be ended) alongside ours, removed by our library. */
static void adopt_dead(struct session *s)
{
	struct hv_ledger_dead *dl = &s->dead;
	struct vdev_record *recs = (struct vdev_record *)dl->page->area;
	for (size_t i = 0; i < VMSH_MAX_DEVS; i++) {
		struct vdev_record *r = &recs[i];
		uint64_t gpa = r->gpa;
		if (!r->on || gpa < dl->regs_gpa || gpa - dl->regs_gpa > dl->regs_size - PAGE || (gpa & (PAGE - 1)))
			continue;
		struct vmsh_err e = { 0 };
		struct vdev *d = &s->adopted[s->n_adopted];
		if (vdev_adopt(d, r, &s->mem, dl->regs + (gpa - dl->regs_gpa), gpa, &e) < 0) {
			log_info("an earlier session's device: %s", e.msg);
			continue;
		}
		bool ok = true;
		for (unsigned q = 0; q < r->n_queues && q < VDEV_REC_QUEUES; q++)
			ok = ok && (!r->q[q].ready || (d->vq_live[q] && !d->vq[q].broken));
		if (!ok)
			log_info("an earlier session's device at %#llx stays in the guest: its queues could not be taken "
				 "over", (unsigned long long)gpa);
		s->removable[s->n_adopted++] = ok;
		s->devs[s->n_devs++] = d;
		vdev_kick(d, ~0u); /* no interrupt yet: a driver spinning for the host polls */
	}
}

/* The earlier run's devices our library is to remove: every one taken over
 * whole, with its line - the driver must learn of the requests completed
 * for it, or removing it waits for them for ever. None while an earlier
 * library is still at work (it may still be registering them). */
static int send_dead(struct session *s, bool lib_at_work, struct vmsh_err *err)
{
	uint64_t gpa[VMSH_MAX_DEVS];
	s->n_dead = 0;
	for (size_t i = 0; i < s->n_adopted; i++)
		if (s->removable[i])
			gpa[s->n_dead++] = s->adopted[i].gpa;
	if (lib_at_work && s->n_dead) {
		log_info("an earlier vmsh's library is still at work in the guest: its devices are served for now, "
			 "removed by a later run");
		s->n_dead = 0;
	}
	return klib_set_dead(&s->kl, gpa, s->n_dead, err);
}

/* Interrupt lines: ours for our devices, an earlier run's devices keep
 * theirs (checked: a line a later connect would refuse is not taken). */
static int connect_lines(struct session *s, struct vmsh_err *err)
{
	for (size_t i = 0; i < s->n_devs; i++) {
		struct vdev *d = s->devs[i];
		if (i < s->n_devs - s->n_adopted) { /* ours come first */
			if (klib_irq_line(&s->kl, i, &s->st->gsi[i], &s->st->irq[i], err) < 0 ||
			    vdev_connect_irq(d, s->vm, s->st->gsi[i], err) < 0)
				return -1;
			continue;
		}
		if (!d->rec->gsi_on || d->rec->gsi >= 1024) {
			s->removable[i - (s->n_devs - s->n_adopted)] = false;
			continue;
		}
		struct vmsh_err e = { 0 };
		if (vdev_connect_irq(d, s->vm, d->rec->gsi, &e) < 0) {
			log_info("an earlier session's device: %s", e.msg);
			s->removable[i - (s->n_devs - s->n_adopted)] = false;
			continue;
		}
		vdev_notify_driver(d); /* what the dead run held is completed */
		vdev_kick(d, ~0u);
	}
	return 0;
}

static const char *status_problem(uint32_t st, const char *driver)
{
	static char buf[160];
	if (!(st & VIRTIO_STATUS_ACKNOWLEDGE))
		return "the guest's virtio_mmio driver never looked at it (virtio_mmio missing in the guest kernel?)";
	if (!(st & VIRTIO_STATUS_DRIVER)) {
		snprintf(buf, sizeof(buf), "no driver took it (%s missing in the guest kernel?)", driver);
		return buf;
	}
	if (st & VIRTIO_STATUS_FAILED)
		return "its driver gave up (FAILED)";
	if (!(st & VIRTIO_STATUS_DRIVER_OK))
		return "its driver did not finish setting it up";
	return NULL;
}

static int setup(struct session *s, struct vmsh_err *err)
{
	const struct session_opts *o = s->o;
	struct kvm_vm *vm = s->vm;
	struct vm_info *info = s->info;
	uint64_t t0 = now_ns();

	/* shared guest RAM (memfd, file, hugetlbfs): the devices copy directly */
	size_t mapped = guest_mem_map_shared(&info->mem);
	log_verbose("guest memory: %zu of %zu ranges mapped into vmsh (shared backing), the rest through "
		    "process_vm_readv/writev", mapped, info->mem.n);
	if ((o->disk_size ? blk_uring_open_window(&s->be, o->disk, o->disk_base, o->disk_size, &s->disk, err)
			  : blk_uring_open(&s->be, o->disk, o->disk_ro, &s->disk, err)) < 0)
		return -1;
	s->be_open = true;
	snprintf(s->disk.id, sizeof(s->disk.id), "%s", o->id);
	size_t nq = o->blk_queues ? o->blk_queues : default_queues(info->n_vcpus);
	s->disk.num_queues = (uint16_t)(nq < 1 ? 1 : nq > BLK_MAX_QUEUES ? BLK_MAX_QUEUES : nq);
	s->st->blk_queues = s->disk.num_queues;
	s->disk.poll_us = o->blk_poll_us > BLK_MAX_POLL_US ? BLK_MAX_POLL_US : o->blk_poll_us;
	s->st->disk_sectors = s->disk.sectors;

	/* a library an earlier run had to leave behind goes now, if it can,
	 * and so do the objects of sessions killed outright */
	unsigned reaped, left = 0;
	if (klib_reap_stale(vm, &info->mem, &info->kernel, &info->slots, info->kernel.pt.root, &reaped, &left) == 0 &&
	    (reaped || left))
		log_verbose("earlier vmsh kernel libraries: %u removed, %u still in the guest", reaped, left);
	struct reap_view view = { .info = info, .lib_at_work = left > 0 };
	struct vmsh_err e = { 0 };
	/* an earlier session's devices still in the guest are taken over */
	if (hv_ledger_reap(vm, info->kernel.pt.root, range_busy, &view, &reaped, &left, &s->dead, &e) < 0)
		log_info("looking for what earlier sessions left in the hypervisor: %s", e.msg);
	if (hv_ledger_open(vm, &s->ledger, err) < 0)
		return -1;
	struct vdev_record *recs = hv_ledger_area(&s->ledger);
	uint64_t t_lib = now_ns();
	if (klib_load(&s->kl, vm, &info->mem, &info->kernel, info->iomem, (size_t)info->n_iomem, &info->slots,
		      vm_gpa_limit(info), err) < 0)
		return -1;
	s->kl_loaded = true;
	log_verbose("session: earlier leftovers checked in %.1f ms, library linked and mapped in %.1f ms",
		    (t_lib - t0) / 1e6, (now_ns() - t_lib) / 1e6);
	log_memory("with the library mapped");
	if (o->helper && klib_add_file(&s->kl, o->helper, o->helper_len, err) < 0)
		return vmsh_err_prefix(err, "the helper");
	if (klib_set_helper_args(&s->kl, o->helper_args, o->helper_args_len, o->helper_argc, err) < 0)
		return -1;
	size_t n_mod = 0;
	while (n_mod < VMSH_MAX_MODULES && o->modules[n_mod])
		n_mod++;
	if (klib_set_modules(&s->kl, o->modules, n_mod, err) < 0)
		return -1;

	if (add_pages(s, err) < 0)
		return -1;
	s->st->dev_gpa = s->slot.gpa;
	vq_mem_of_guest(&s->mem, &info->mem);
	blk_dev_init(&s->blk, &s->disk, &s->mem, s->pages.local, s->slot.gpa);
	vdev_keep_record(&s->blk, &recs[0]);
	s->blk_init = true;
	s->devs[s->n_devs++] = &s->blk;
	if (o->console) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->con_fds) < 0)
			return vmsh_error(err, errno, "console socket");
		if (console_dev_init(&s->con, o->id, s->con_fds[0], &s->mem, s->pages.local + PAGE, s->slot.gpa + PAGE,
				     err) < 0)
			return -1;
		s->con_init = true;
		vdev_keep_record(&s->con.dev, &recs[1]);
		s->devs[s->n_devs++] = &s->con.dev;
	}
	/* An earlier run's devices are served from here on: what their drivers
	 * wait for is completed now - a console killed during its set-up has
	 * a vCPU spinning for its control message (preemption off, its
	 * library's work stuck in the probe). They are removed only when no
	 * earlier library is at work any more (it may still be registering
	 * them); else by a later run. */
	if (s->dead.on)
		adopt_dead(s);
	for (size_t i = 0; i < s->n_devs; i++)
		if (vdev_connect(s->devs[i], vm, err) < 0)
			return -1;
	/* a serving thread per request queue of the disk */
	if (server_init(&s->srv, s->devs, s->n_devs, s->disk.num_queues, err) < 0)
		return -1;
	s->srv_init = true;
	s->st->serve_threads = s->srv.n_lanes;
	if (vm->tr->pidfd >= 0 && server_stop_on(&s->srv, vm->tr->pidfd, err) < 0)
		return -1;
	if (s->con_init && console_dev_watch(&s->con, &s->srv, err) < 0)
		return -1;

	if (term_signal_pending())
		return vmsh_error(err, EINTR, "interrupted");
	/* the library: load drivers, choose the interrupt line, wait for us */
	uint64_t gpas[VMSH_MAX_DEVS];
	size_t n_own = s->n_devs - s->n_adopted; /* ours come first in devs */
	for (size_t i = 0; i < n_own; i++)
		gpas[i] = s->devs[i]->gpa;
	if (klib_request(&s->kl, VMSH_OP_DEVICES_ADD, gpas, n_own, o->timeout_ms, err) < 0)
		return -1;
	s->devices_added = true;
	/* Let the hypervisor run free while the library works: its work waits
	 * for the guest itself (request_module runs the guest's modprobe, which
	 * reads the guest's own disk), and the hypervisor thread we inject
	 * through is the one that completes that disk's I/O (qemu's main loop)
	 * - held, it would stall the guest until we gave up (issue 18). Unless
	 * the library waits for us at once (its drivers are loaded): then the
	 * hypervisor is held a few milliseconds more instead of let go and
	 * attached again (15-20 ms on the emulated host). */
	uint64_t t_add = now_ns();
	bool held = lib_waits_soon(&s->kl, LIB_WAITS_SOON_MS);
	if (!held) {
		kvm_vm_release(vm);
		if (klib_wait_phase(&s->kl, VMSH_PHASE_WAIT_HOST, o->timeout_ms, true, err) < 0)
			return -1;
	}
	log_verbose("session: %.1f ms from the start to the library's work waiting for us (drivers loaded, line "
		    "chosen: %.1f ms%s)", (now_ns() - t0) / 1e6, (now_ns() - t_add) / 1e6,
		    held ? ", the hypervisor held" : "");
	if (kvm_vm_reacquire(vm, err) < 0) {
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		return vmsh_err_prefix(err, "attach again to connect the interrupt line");
	}
	if (connect_lines(s, err) < 0 || send_dead(s, view.lib_at_work, err) < 0) {
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		return -1;
	}
	if (term_signal_pending()) {
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		return vmsh_error(err, EINTR, "interrupted");
	}
	s->calls_at_start = __atomic_load_n(&s->info->mem.remote_calls, __ATOMIC_RELAXED);
	s->bytes_at_start = __atomic_load_n(&s->info->mem.remote_bytes, __ATOMIC_RELAXED);
	if (server_start(&s->srv, err) < 0) {
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		return -1;
	}
	/* From here the hypervisor runs untraced but for the drivers' set-up. */
	kvm_vm_release(vm);
	uint64_t t_reg = now_ns();
	if (trapped_run(s, 0, o->timeout_ms + 30000, err) < 0)
		return -1;
	log_verbose("session: devices registered and set up by the guest's drivers in %.1f ms",
		    (now_ns() - t_reg) / 1e6);
	log_memory("with the devices set up");
	s->st->blk_status = vdev_status(&s->blk);
	const char *p = status_problem(s->st->blk_status, "virtio_blk");
	if (p)
		return vmsh_error(err, ENODEV, "the block device: %s", p);
	if (s->con_init) {
		s->st->con_status = vdev_status(&s->con.dev);
		p = status_problem(s->st->con_status, "virtio_console");
		if (p)
			return vmsh_error(err, ENODEV, "the console device: %s", p);
	}
	s->st->setup_ns = now_ns() - t0;
	const char *die = getenv("VMSH_TEST_DIE_AT_BLK_REQUEST");
	if (die)
		__atomic_store_n(&s->disk.test_die_at, (unsigned)strtoul(die, NULL, 10), __ATOMIC_RELAXED);
	return 0;
}

int session_hypervisor_pidfd(const struct session *s)
{
	return s->vm->tr->pidfd;
}

static void teardown(struct session *s)
{
	uint64_t t0 = now_ns();
	struct kvm_vm *vm = s->vm;
	struct vmsh_err e = { 0 };
	if (s->devices_added && !klib_done(&s->kl)) {
		/* the library is still at work: tell it to give up and give it a
		 * moment, with the hypervisor free (the work may wait for the
		 * guest's disk, see setup) */
		klib_go(&s->kl, VMSH_GO_GIVE_UP);
		if (vm->tr->attached)
			kvm_vm_release(vm);
		klib_wait(&s->kl, 5000, NULL);
	}
	/* an earlier run's devices we took over: gone from the guest if our
	 * library says it removed them all (the guest's word: at worst their
	 * pages go while it still has them, which only the guest feels) */
	bool dead_gone = s->n_adopted && s->n_dead == s->n_adopted && s->kl_loaded &&
			 klib_dead_removed(&s->kl) == s->n_dead;
	if (kvm_vm_reacquire(vm, &e) < 0) {
		log_info("cannot attach again to remove the devices: %s", e.msg);
		if (s->srv_init) /* it uses the pages and records unmapped below */
			server_stop(&s->srv);
		hv_ledger_dead_end(vm, &s->dead, 0, false);
		hv_ledger_close(vm, &s->ledger, true);
		return;
	}
	bool in_use = false; /* the guest may still touch our devices and library */
	if (s->devices_added) {
		in_use = true;
		if (klib_done(&s->kl)) {
			if (klib_request(&s->kl, VMSH_OP_DEVICES_REMOVE, NULL, 0, s->o->timeout_ms, &e) < 0 ||
			    klib_wait_phase(&s->kl, VMSH_PHASE_WAIT_HOST, s->o->timeout_ms, false, &e) < 0 ||
			    trapped_run(s, vm->tr->main.tid, s->o->timeout_ms + 10000, &e) < 0)
				log_info("removing the devices from the guest: %s", e.msg);
			else
				in_use = false;
		} else if (!klib_registered_any(&s->kl)) {
			in_use = false; /* it gave up before registering anything */
		}
		/* A guest that restarted has a kernel that never knew our
		 * devices or library (its table no longer holds our entry):
		 * nothing of the guest points at them any more. */
		if (in_use && s->kl_loaded && klib_mapped(&s->kl) == 0) {
			log_info("the guest restarted during the session: its kernel never knew vmsh's devices; "
				 "removing them from the hypervisor");
			in_use = false;
		}
	}
	/* The serving thread stops only now. Until the devices are gone the
	 * guest may wait for vmsh with interrupts off (virtio_console's
	 * __send_to_port spins until the host takes its buffer): stopped
	 * earlier, the helper's last write left the guest's vCPU spinning, so
	 * no vCPU could be borrowed to remove the devices. A guest that keeps
	 * the thread busy cannot hold it up: it serves a bounded number of
	 * requests per wake-up and then looks at the stop request. */
	if (s->srv_init)
		server_stop(&s->srv);
	for (size_t i = 0; i < s->n_devs; i++)
		vdev_disconnect(s->devs[i], vm);
	hv_ledger_dead_end(vm, &s->dead, s->info->kernel.pt.root, dead_gone);
	if (in_use) {
		/* The guest still has our devices: keep what it may touch (the
		 * register pages, the library) rather than pull it away. */
		log_info("the devices could not be removed from the guest: they stay (unserved) until it restarts");
		s->pages.remote = 0;
		shared_mem_destroy(vm, &s->pages);
		if (s->kl_loaded)
			klib_abandon(&s->kl);
		hv_ledger_close(vm, &s->ledger, true);
		s->st->teardown_ns = now_ns() - t0;
		return;
	}
	if (s->slot.added) {
		kvm_slot_remove(vm, &s->slot);
		hv_ledger_slot(vm, &s->slot, false);
	}
	if (s->pages.fd >= 0 && s->pages.local) {
		hv_ledger_mem(vm, &s->pages, false); /* first: another run's memory may be mapped there later */
		shared_mem_destroy(vm, &s->pages);
	}
	hv_ledger_close(vm, &s->ledger, false);
	if (s->kl_loaded)
		klib_unload(&s->kl);
	s->st->teardown_ns = now_ns() - t0;
}

static void free_local(struct session *s)
{
	for (size_t i = 0; i < s->n_adopted; i++)
		vdev_destroy(&s->adopted[i]);
	s->st->blk_interrupts = s->blk.interrupts;
	s->st->wakeups = s->srv_init ? server_wakeups(&s->srv) : 0;
	for (unsigned l = 0; s->srv_init && l < s->srv.n_lanes && l < 4; l++)
		s->st->lane_wakeups[l] = s->srv.lane[l].wakeups;
	if (s->srv_init) {
		s->st->serve_remote_calls = __atomic_load_n(&s->info->mem.remote_calls, __ATOMIC_RELAXED) - s->calls_at_start;
		s->st->serve_remote_bytes = __atomic_load_n(&s->info->mem.remote_bytes, __ATOMIC_RELAXED) - s->bytes_at_start;
		for (unsigned q = 0; q < BLK_MAX_QUEUES; q++) { /* the serving threads have stopped */
			s->st->blk_polls += s->disk.poll[q].polls;
			s->st->blk_poll_hits += s->disk.poll[q].hits;
		}
	}
	if (s->blk_init)
		vdev_destroy(&s->blk);
	if (s->con_init) {
		s->st->con_interrupts = s->con.dev.interrupts;
		console_dev_destroy(&s->con);
	}
	for (int i = 0; i < 2; i++)
		if (s->con_fds[i] >= 0)
			close(s->con_fds[i]);
	if (s->be_open)
		blk_uring_close(&s->be);
}

struct session *session_open(struct vm *vm, const struct session_opts *o, struct session_stats *st,
			     struct vmsh_err *err)
{
	memset(st, 0, sizeof(*st));
	if (vm_need_kernel(vm, err) < 0)
		return NULL;
	if (vm_hold(vm, err) < 0)
		return NULL;
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		vmsh_error(err, ENOMEM, "session");
		return NULL;
	}
	*s = (struct session){ .o = o, .st = st, .vm = &vm->kvm, .info = &vm->info, .con_fds = { -1, -1 } };
	s->pages.fd = -1;
	s->ledger = (struct hv_ledger){ .lock_fd = -1, .mem = { .fd = -1 } };
	s->test_die_at_console_ready = getenv("VMSH_TEST_DIE_AT_CONSOLE_READY") != NULL;
	if (setup(s, err) < 0) {
		session_close(s);
		return NULL;
	}
	return s;
}

int session_console_fd(const struct session *s)
{
	return s->con_init ? s->con_fds[1] : -1;
}

void session_close(struct session *s)
{
	if (!s)
		return;
	teardown(s);
	free_local(s);
	free(s);
}
