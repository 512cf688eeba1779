/* klib_work.c - the work vmsh asks of its kernel library once loaded, over
 * the channel both share (vmsh/channel.h): which operation, the devices'
 * register pages, the helper's command line; then the phases the work goes
 * through and the host's go-ahead. The only code of vmsh that touches the
 * channel's work fields: everything it reads there is guest data. */
#include "loader/kernel_lib.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/signals.h"
#include "vmsh/helper_proto.h" /* vmsh_plain_word */

/* Linux's and KVM's bound on interrupt routes (KVM_MAX_IRQ_ROUTES) */
#define MAX_GSI 4096

int klib_set_helper_args(struct kernel_lib *kl, const char *args, size_t len, unsigned argc, struct vmsh_err *err)
{
	if (len > sizeof(kl->chan->helper_argv))
		return vmsh_error(err, E2BIG, "the command line is too long for the guest helper (%zu bytes at most)",
				  sizeof(kl->chan->helper_argv));
	memset(kl->chan->helper_argv, 0, sizeof(kl->chan->helper_argv));
	if (len)
		memcpy(kl->chan->helper_argv, args, len);
	kl->chan->helper_argc = argc;
	return 0;
}

int klib_set_modules(struct kernel_lib *kl, const char *const *names, size_t n, struct vmsh_err *err)
{
	if (n > VMSH_MAX_MODULES)
		return vmsh_error(err, E2BIG, "%zu modules for the helper: the library takes %d", n, VMSH_MAX_MODULES);
	memset(kl->chan->modules, 0, sizeof(kl->chan->modules));
	for (size_t i = 0; i < n; i++) {
		if (!vmsh_plain_word(names[i], VMSH_MODULE_NAME - 1))
			return vmsh_error(err, EINVAL, "module name '%s'", names[i]);
		memcpy(kl->chan->modules[i], names[i], strlen(names[i]));
	}
	return 0;
}

int klib_request(struct kernel_lib *kl, enum vmsh_lib_op op, const uint64_t *dev_gpa, size_t n_devs,
		 unsigned timeout_ms, struct vmsh_err *err)
{
	struct vmsh_channel *c = kl->chan;
	if (n_devs > VMSH_MAX_DEVS)
		return vmsh_error(err, E2BIG, "%zu devices: the library takes %d at most", n_devs, VMSH_MAX_DEVS);
	c->op = op;
	if (dev_gpa) { /* else (removal) the devices stay those of the set-up */
		c->n_devs = n_devs;
		for (size_t i = 0; i < n_devs; i++)
			c->dev_gpa[i] = dev_gpa[i];
	}
	c->go = VMSH_GO_WAIT;
	c->phase = VMSH_PHASE_RUNNING;
	if (op == VMSH_OP_DEVICES_REMOVE && klib_waiting(kl)) {
		/* a guest that restarted has no such thread any more (its state
		 * here is what the old kernel's thread last wrote) */
		if (klib_require_mapped(kl, err) < 0)
			return -1;
		klib_wake(kl);
		return 0;
	}
	return klib_start(kl, timeout_ms, err);
}

int klib_wait_phase(struct kernel_lib *kl, enum vmsh_lib_phase phase, unsigned timeout_ms, bool interruptible,
		    struct vmsh_err *err)
{
	/* The budget is per step: a slow guest that keeps going (each driver
	 * load runs the guest's modprobe from its disk) is waited for; one
	 * step that takes longer than timeout_ms is reported by name. */
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	/* a guest that reports steps forever is not waited for forever */
	uint64_t limit = now_ns() + 10ULL * timeout_ms * 1000000ULL;
	volatile struct vmsh_channel *c = kl->chan;
	unsigned long long seq = c->where_seq;
	char w[VMSH_WHERE_LEN * 4 + 8];
	while (c->phase != phase) {
		klib_log_progress(kl);
		if (c->where_seq != seq) {
			seq = c->where_seq;
			deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
		}
		if (klib_done(kl))
			return klib_wait(kl, 0, err) < 0 ? -1 : vmsh_error(err, EPROTO, "the kernel library stopped early");
		if (now_ns() > limit)
			return vmsh_error(err, ETIMEDOUT, "the kernel library did not get ready within %llu ms: it is %s",
					  10ULL * timeout_ms, klib_where(kl, w, sizeof(w)));
		if (now_ns() > deadline)
			return vmsh_error(err, ETIMEDOUT, "the kernel library made no progress for %u ms: it is %s",
					  timeout_ms, klib_where(kl, w, sizeof(w)));
		if (interruptible && term_signal_pending())
			return vmsh_error(err, EINTR, "interrupted while the kernel library is %s",
					  klib_where(kl, w, sizeof(w)));
		sleep_ms(1);
	}
	klib_log_progress(kl);
	return 0;
}

void klib_go(struct kernel_lib *kl, enum vmsh_lib_go go)
{
	__sync_synchronize();
	kl->chan->go = go;
}

int klib_irq_line(const struct kernel_lib *kl, size_t dev, uint32_t *gsi, uint32_t *irq, struct vmsh_err *err)
{
	if (dev >= VMSH_MAX_DEVS)
		return vmsh_error(err, EINVAL, "device %zu: the library takes %d at most", dev, VMSH_MAX_DEVS);
	long long g = ((volatile struct vmsh_channel *)kl->chan)->dev_gsi[dev];
	long long i = ((volatile struct vmsh_channel *)kl->chan)->dev_irq[dev];
	if (g < 0 || g >= MAX_GSI || i < 0 || i > UINT32_MAX)
		return vmsh_error(err, EPROTO,
				  "the kernel library reported interrupt line %lld (Linux irq %lld) for device %zu: out of range",
				  g, i, dev);
	*gsi = (uint32_t)g;
	*irq = (uint32_t)i;
	return 0;
}

int klib_set_dead(struct kernel_lib *kl, const uint64_t *gpa, size_t n, struct vmsh_err *err)
{
	struct vmsh_channel *c = kl->chan;
	if (n > VMSH_MAX_DEVS)
		return vmsh_error(err, E2BIG, "%zu earlier devices: the library takes %d at most", n, VMSH_MAX_DEVS);
	for (size_t i = 0; i < n; i++)
		c->dead_gpa[i] = gpa[i];
	c->n_dead = n;
	c->dead_removed = 0;
	return 0;
}

unsigned klib_dead_removed(const struct kernel_lib *kl)
{
	const volatile struct vmsh_channel *c = kl->chan;
	long long n = c->dead_removed; /* the guest's word: bounded, compared by the caller with its own count */
	return n > 0 && n <= VMSH_MAX_DEVS ? (unsigned)n : 0;
}

bool klib_registered_any(const struct kernel_lib *kl)
{
	const volatile struct vmsh_channel *c = kl->chan;
	for (size_t i = 0; i < VMSH_MAX_DEVS; i++)
		if (c->dev_ok[i] == 1 || c->dev_gsi[i] > 0)
			return true;
	return c->gsi > 0;
}
