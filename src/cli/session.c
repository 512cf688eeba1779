/* session.c - vmsh's devices in a running guest (see session.h). */
#include "cli/session.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/inspect.h"
#include "common/clock.h"
#include "common/log.h"
#include "devices/blk_dev.h"
#include "devices/blk_uring.h"
#include "devices/console_dev.h"
#include "devices/server.h"
#include "kvm/mmio_trap.h"
#include "loader/kernel_lib.h"

#define PAGE 4096u
#define DEV_BLK 0
#define DEV_CON 1

struct session {
	const struct session_opts *o;
	struct session_stats *st;
	struct kvm_vm *vm;
	struct inspect_result *res;

	struct kernel_lib kl;
	bool kl_loaded;
	bool devices_added; /* the library's ADD work ran (it may have registered devices) */

	struct shared_mem pages; /* the register pages */
	struct kvm_slot slot;

	struct blk_uring be;
	struct blk_disk disk;
	bool be_open;
	struct console_dev con;
	bool con_init;
	struct vdev blk;
	bool blk_init;
	struct vdev *devs[2];
	size_t n_devs;
	struct dev_server srv;
	bool srv_init;
	int con_fds[2]; /* [0] ours (server side), [1] the caller's */
	struct vq_mem mem;
};

static int gread(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	return guest_mem_read(opaque, gpa, buf, len);
}

static int gwrite(void *opaque, uint64_t gpa, const void *buf, size_t len)
{
	return guest_mem_write(opaque, gpa, buf, len);
}

static uint8_t *gptr(void *opaque, uint64_t gpa, size_t len)
{
	return guest_mem_ptr(opaque, gpa, len);
}

static void on_mmio(void *opaque, struct mmio_access *a)
{
	struct session *s = opaque;
	for (size_t i = 0; i < s->n_devs; i++) {
		struct vdev *d = s->devs[i];
		if (a->gpa >= d->gpa && a->gpa < d->gpa + PAGE) {
			vdev_mmio(d, (uint32_t)(a->gpa - d->gpa), a->is_write, a->data, a->len);
			return;
		}
	}
}

/* Register pages: a read-only slot right after the library's memory, in a
 * range the guest's own map does not use. */
static int add_pages(struct session *s, struct vmsh_err *err)
{
	struct kvm_vm *vm = s->vm;
	if (shared_mem_create(vm, 2 * PAGE, &s->pages, err) < 0)
		return -1;
	uint64_t gpa = s->kl.slot.gpa + s->kl.slot.size;
	for (unsigned tries = 0; tries < 64; tries++, gpa += 2u << 20) {
		if (!iomem_range_free(s->res->iomem, (size_t)s->res->n_iomem, gpa, 2 * PAGE))
			continue;
		struct vmsh_err e = { 0 };
		if (kvm_slot_add(vm, &s->res->slots, &s->kl.slot.id, 1, gpa, 2u << 20, 1, s->pages.remote, 2 * PAGE,
				 KVM_MEM_READONLY, &s->slot, &e) == 0)
			return 0;
		if (e.errnum != ENOSPC) {
			*err = e;
			return -1;
		}
	}
	return vmsh_error(err, ENOSPC, "no free guest-physical range for the device registers");
}

/* A terminating signal arrived (they are held while a session runs). */
static bool interrupted(void)
{
	sigset_t p;
	sigpending(&p);
	return sigismember(&p, SIGINT) || sigismember(&p, SIGTERM) || sigismember(&p, SIGHUP) ||
	       sigismember(&p, SIGQUIT);
}

static int wait_phase(struct session *s, unsigned timeout_ms, struct vmsh_err *err)
{
	/* The budget is per step: a slow guest that keeps going (each driver
	 * load runs the guest's modprobe from its disk) is waited for; one
	 * step that takes longer than timeout_ms is reported by name. */
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	/* a guest that reports steps forever is not waited for forever */
	uint64_t limit = now_ns() + 10ULL * timeout_ms * 1000000ULL;
	volatile struct vmsh_channel *c = s->kl.chan;
	unsigned long long seq = c->where_seq;
	while (c->phase != VMSH_PHASE_WAIT_HOST) {
		klib_log_progress(&s->kl);
		if (c->where_seq != seq) {
			seq = c->where_seq;
			deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
		}
		if (klib_done(&s->kl))
			return klib_wait(&s->kl, 0, err) < 0 ? -1 : vmsh_error(err, EPROTO, "the kernel library stopped early");
		char w[VMSH_WHERE_LEN * 4 + 8];
		if (now_ns() > limit)
			return vmsh_error(err, ETIMEDOUT, "the kernel library did not get ready within %llu ms: it is %s",
					  10ULL * timeout_ms, klib_where(&s->kl, w, sizeof(w)));
		if (now_ns() > deadline)
			return vmsh_error(err, ETIMEDOUT, "the kernel library made no progress for %u ms: it is %s",
					  timeout_ms, klib_where(&s->kl, w, sizeof(w)));
		if (interrupted())
			return vmsh_error(err, EINTR, "interrupted while the kernel library is %s",
					  klib_where(&s->kl, w, sizeof(w)));
		sleep_ms(1);
	}
	klib_log_progress(&s->kl);
	return 0;
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
static int trapped_run(struct session *s, pid_t skip, unsigned timeout_ms, struct vmsh_err *err)
{
	struct mmio_trap mt;
	uint64_t t0 = now_ns();
	if (mmio_trap_start(&mt, s->vm, skip, s->slot.gpa, s->slot.gpa + 2 * PAGE, on_mmio, s, err) < 0) {
		s->kl.chan->go = 2;
		return -1;
	}
	__sync_synchronize();
	s->kl.chan->go = 1;
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
	struct inspect_result *res = s->res;
	uint64_t t0 = now_ns();
	if (!res->ksyms_ok)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, 0, "guest kernel not found: %s", res->kernel_error);
	if (!res->slots_ok)
		return vmsh_error(err, 0, "memory slots unknown: %s", res->slots_error);
	if (!res->mem_ok)
		return vmsh_error(err, 0, "guest memory unknown: %s", res->mem_error);

	/* shared guest RAM (memfd, file, hugetlbfs): the devices copy directly */
	size_t mapped = guest_mem_map_shared(&res->mem);
	log_verbose("guest memory: %zu of %zu ranges mapped into vmsh (shared backing), the rest through "
		    "process_vm_readv/writev", mapped, res->mem.n);
	if (blk_uring_open(&s->be, o->disk, o->disk_ro, &s->disk, err) < 0)
		return -1;
	s->be_open = true;
	snprintf(s->disk.id, sizeof(s->disk.id), "%s", o->id);
	s->st->disk_sectors = s->disk.sectors;

	/* a library an earlier run had to leave behind goes now, if it can */
	unsigned reaped, left;
	if (klib_reap_stale(vm, &res->mem, &res->kernel, &res->slots, res->kernel.pt.root, &reaped, &left) == 0 &&
	    (reaped || left))
		log_verbose("earlier vmsh kernel libraries: %u removed, %u still in the guest", reaped, left);
	if (klib_load(&s->kl, vm, &res->mem, &res->kernel, res->iomem, (size_t)res->n_iomem, &res->slots,
		      inspect_gpa_limit(res), err) < 0)
		return -1;
	s->kl_loaded = true;
	if (o->helper && klib_add_file(&s->kl, o->helper, o->helper_len, err) < 0)
		return vmsh_err_prefix(err, "the helper");
	if (o->helper_args_len > sizeof(s->kl.chan->helper_argv))
		return vmsh_error(err, E2BIG, "the command line is too long for the guest helper");
	if (o->helper_args_len)
		memcpy(s->kl.chan->helper_argv, o->helper_args, o->helper_args_len);
	s->kl.chan->helper_argc = o->helper_argc;

	if (add_pages(s, err) < 0)
		return -1;
	s->st->dev_gpa = s->slot.gpa;
	s->mem = (struct vq_mem){ .read = gread, .write = gwrite, .ptr = gptr, .opaque = &res->mem };
	blk_dev_init(&s->blk, &s->disk, &s->mem, s->pages.local, s->slot.gpa);
	s->blk_init = true;
	s->devs[s->n_devs++] = &s->blk;
	if (o->console) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->con_fds) < 0)
			return vmsh_error(err, errno, "console socket");
		if (console_dev_init(&s->con, o->id, s->con_fds[0], &s->mem, s->pages.local + PAGE, s->slot.gpa + PAGE,
				     err) < 0)
			return -1;
		s->con_init = true;
		s->devs[s->n_devs++] = &s->con.dev;
	}
	for (size_t i = 0; i < s->n_devs; i++)
		if (vdev_connect(s->devs[i], vm, err) < 0)
			return -1;
	if (server_init(&s->srv, s->devs, s->n_devs, err) < 0)
		return -1;
	s->srv_init = true;
	if (vm->tr->pidfd >= 0 && server_stop_on(&s->srv, vm->tr->pidfd, err) < 0)
		return -1;
	if (s->con_init && console_dev_watch(&s->con, &s->srv, err) < 0)
		return -1;

	if (interrupted())
		return vmsh_error(err, EINTR, "interrupted");
	/* the library: load drivers, choose the interrupt line, wait for us */
	struct vmsh_channel *c = s->kl.chan;
	c->op = VMSH_OP_DEVICES_ADD;
	c->n_devs = s->n_devs;
	for (size_t i = 0; i < s->n_devs; i++)
		c->dev_gpa[i] = s->devs[i]->gpa;
	c->go = 0;
	c->phase = VMSH_PHASE_RUNNING;
	if (klib_start(&s->kl, o->timeout_ms, err) < 0)
		return -1;
	s->devices_added = true;
	/* Let the hypervisor run free while the library works: its work waits
	 * for the guest itself (request_module runs the guest's modprobe, which
	 * reads the guest's own disk), and the hypervisor thread we inject
	 * through is the one that completes that disk's I/O (qemu's main loop)
	 * - held, it would stall the guest until we gave up (issue 18). */
	kvm_vm_release(vm);
	if (wait_phase(s, o->timeout_ms, err) < 0)
		return -1;
	if (kvm_vm_reacquire(vm, err) < 0) {
		c->go = 2;
		return vmsh_err_prefix(err, "attach again to connect the interrupt line");
	}
	s->st->gsi = (uint32_t)c->gsi;
	s->st->irq = (uint32_t)c->irq;
	for (size_t i = 0; i < s->n_devs; i++) {
		if (vdev_connect_irq(s->devs[i], vm, (uint32_t)c->gsi, err) < 0) {
			c->go = 2;
			return -1;
		}
	}
	if (interrupted()) {
		c->go = 2;
		return vmsh_error(err, EINTR, "interrupted");
	}
	if (server_start(&s->srv, err) < 0) {
		c->go = 2;
		return -1;
	}
	/* From here the hypervisor runs untraced but for the drivers' set-up. */
	kvm_vm_release(vm);
	if (trapped_run(s, 0, o->timeout_ms + 30000, err) < 0)
		return -1;
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
	if (s->devices_added && s->kl.chan && !klib_done(&s->kl)) {
		/* the library is still at work: tell it to give up and give it a
		 * moment, with the hypervisor free (the work may wait for the
		 * guest's disk, see setup) */
		s->kl.chan->go = 2;
		if (vm->tr->attached)
			kvm_vm_release(vm);
		klib_wait(&s->kl, 5000, NULL);
	}
	if (kvm_vm_reacquire(vm, &e) < 0) {
		log_info("cannot attach again to remove the devices: %s", e.msg);
		return;
	}
	bool in_use = false; /* the guest may still touch our devices and library */
	if (s->devices_added) {
		in_use = true;
		if (klib_done(&s->kl)) {
			struct vmsh_channel *c = s->kl.chan;
			c->op = VMSH_OP_DEVICES_REMOVE;
			c->go = 0;
			c->phase = VMSH_PHASE_RUNNING;
			if (klib_start(&s->kl, s->o->timeout_ms, &e) < 0 || wait_phase(s, s->o->timeout_ms, &e) < 0 ||
			    trapped_run(s, vm->tr->main.tid, s->o->timeout_ms + 10000, &e) < 0)
				log_info("removing the devices from the guest: %s", e.msg);
			else
				in_use = false;
		} else if (s->kl.chan->dev_ok[0] != 1 && s->kl.chan->dev_ok[1] != 1 && s->kl.chan->gsi <= 0) {
			in_use = false; /* it gave up before registering anything */
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
	if (in_use) {
		/* The guest still has our devices: keep what it may touch (the
		 * register pages, the library) rather than pull it away. */
		log_info("the devices could not be removed from the guest: they stay (unserved) until it restarts");
		s->pages.remote = 0;
		shared_mem_destroy(vm, &s->pages);
		if (s->kl_loaded)
			klib_abandon(&s->kl);
		s->st->teardown_ns = now_ns() - t0;
		return;
	}
	if (s->slot.added)
		kvm_slot_remove(vm, &s->slot);
	if (s->pages.fd >= 0 && s->pages.local)
		shared_mem_destroy(vm, &s->pages);
	if (s->kl_loaded)
		klib_unload(&s->kl);
	s->st->teardown_ns = now_ns() - t0;
}

static void free_local(struct session *s)
{
	s->st->blk_interrupts = s->blk.interrupts;
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

static int run_cb(struct kvm_vm *vm, struct inspect_result *res, void *opaque, struct vmsh_err *err)
{
	struct session *s = opaque;
	s->vm = vm;
	s->res = res;
	int rc = setup(s, err);
	if (rc == 0) {
		rc = s->o->serve(s, s->con_init ? s->con_fds[1] : -1, s->o->opaque, err);
		/* the caller's end stays open until the guest side is gone */
	}
	teardown(s);
	free_local(s);
	return rc;
}

int session_run(const struct session_opts *o, struct session_stats *st, struct vmsh_err *err)
{
	/* Terminating signals wait until the guest is left as it was: the
	 * caller's serve() takes them (signalfd), teardown always runs, and
	 * whatever is still pending is delivered at the end. */
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGINT);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGHUP);
	sigaddset(&term, SIGQUIT);
	sigprocmask(SIG_BLOCK, &term, &old);
	struct session s = { .o = o, .st = st, .con_fds = { -1, -1 } };
	s.pages.fd = -1;
	memset(st, 0, sizeof(*st));
	struct inspect_opts io = { .pid = o->pid, .vm_fd = o->vm_fd, .while_attached = run_cb, .opaque = &s };
	struct inspect_result r;
	int rc = inspect_vm(&io, &r, err);
	inspect_result_free(&r);
	/* A signal that ended the session was taken by serve() or stopped the
	 * set-up; more of the same (a shell's SIGTERM to our process group and
	 * the one our parent forwards) must not kill us now that we are done. */
	struct timespec none = { 0, 0 };
	while (sigtimedwait(&term, NULL, &none) > 0)
		;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}
