/* vmsh_lib.c - the kernel library: C code that runs inside the guest kernel.
 *
 * Built freestanding for kernel context (see Makefile: large code model, no
 * red zone, no SSE, IBT landing pads) and linked against the guest's exported
 * symbols by vmsh's loader. The borrowed vCPU only runs entry.S and
 * vmsh_entry_c, which queues a work item; everything else runs in that work
 * item, in process context of a kernel worker, and does what the host asked
 * for in vmsh_channel.op. */
#include "vmsh/channel.h"

typedef unsigned long size_t;
typedef long ssize_t;
typedef _Bool bool;
typedef unsigned int u32;

struct list_head {
	struct list_head *next, *prev;
};

/* struct work_struct without lockdep (Debian's kernels do not enable it).
 * data 0 means "off queue, last pool 0", which queue_work_on accepts on every
 * version from 4.x to 6.x. */
struct work_struct {
	long data;
	struct list_head entry;
	void (*func)(struct work_struct *work);
};

/* struct resource as of Linux 4.6 and later (desc added in 4.6). */
struct resource {
	unsigned long long start, end;
	const char *name;
	unsigned long flags, desc;
	struct resource *parent, *sibling, *child;
};
#define IORESOURCE_MEM 0x00000200UL
#define IORESOURCE_IRQ 0x00000400UL
#define PLATFORM_DEVID_AUTO (-2)
#define ACPI_EDGE_SENSITIVE 1
#define ACPI_ACTIVE_HIGH 0
#define UMH_WAIT_EXEC 1
#define IRQF_SHARED 0x80UL
#define O_RDONLY 0
#define O_WRONLY 01
#define O_DIRECTORY 0200000
#define O_CREAT 0100
#define O_EXCL 0200
#define ETXTBSY 26
#define ENOENT 2
#define ENODEV 19
#define ENOSYS 38
#define ETIMEDOUT 110
#define ECANCELED 125
#define EBUSY 16
#define MAX_ERRNO 4095

struct platform_device;
struct file;
typedef int irqreturn_t;

extern int _printk(const char *fmt, ...);
extern bool queue_work_on(int cpu, void *wq, struct work_struct *work);
/* struct irq_work from Linux 5.9 on: a llist node, u32 flags and two u16
 * (struct __call_single_node), then func at 16; later fields (6.x: a
 * struct rcuwait) start zeroed. */
struct irq_work {
	void *next;
	unsigned int flags;
	unsigned short src, dst;
	void (*func)(struct irq_work *work);
};
_Static_assert(__builtin_offsetof(struct irq_work, func) == 16, "irq_work layout");
extern bool irq_work_queue(struct irq_work *work);
extern unsigned int tsc_khz;
extern void *system_wq;
extern char init_uts_ns[];
extern void msleep(unsigned int msecs);
/* the waiting thread (weak: without them the removal borrows a vCPU, as
 * before the thread existed) */
struct task_struct;
extern struct task_struct *kthread_create_on_node(int (*threadfn)(void *data), void *data, int node,
						  const char namefmt[], ...) __attribute__((weak));
extern int wake_up_process(struct task_struct *p) __attribute__((weak));
extern unsigned long msleep_interruptible(unsigned int msecs) __attribute__((weak));
extern char empty_zero_page[] __attribute__((weak));
/* weak: a kernel built without modules has no __request_module (what it
 * needs is built in, or missing, which the host sees) */
extern int __request_module(bool wait, const char *fmt, ...) __attribute__((weak));
extern int acpi_register_gsi(void *dev, u32 gsi, int trigger, int polarity);
extern void acpi_unregister_gsi(u32 gsi);
extern int request_threaded_irq(unsigned int irq, irqreturn_t (*handler)(int, void *), irqreturn_t (*thread_fn)(int, void *),
				unsigned long flags, const char *name, void *dev);
extern const void *free_irq(unsigned int irq, void *dev_id);
extern void *irq_get_irq_data(unsigned int irq);
/* weak: the number of IRQ descriptors there can be (exported since 2.6.x;
 * without it the library looks at the first 4096) */
extern int nr_irqs __attribute__((weak));
/* weak: short sleeps on a high-resolution timer (usleep_range_state from
 * Linux 5.16, usleep_range before); without them msleep, whose shortest
 * sleep is two ticks (8 ms at HZ=250) */
extern void usleep_range_state(unsigned long min, unsigned long max, unsigned int state) __attribute__((weak));
extern void usleep_range(unsigned long min, unsigned long max) __attribute__((weak));
extern struct platform_device *platform_device_alloc(const char *name, int id);
extern int platform_device_add_resources(struct platform_device *pdev, const struct resource *res, unsigned int num);
extern int platform_device_add(struct platform_device *pdev);
extern void platform_device_put(struct platform_device *pdev);
extern void platform_device_unregister(struct platform_device *pdev);
struct device;
extern char platform_bus_type[];
extern struct device *bus_find_device(const void *bus, struct device *start, const void *data,
				      int (*match)(struct device *dev, const void *data));
extern struct resource *platform_get_resource(struct platform_device *dev, unsigned int type, unsigned int num);
extern void put_device(struct device *dev);
/* struct platform_device begins {const char *name; int id; bool id_auto;
 * struct device dev; ...} in every kernel vmsh supports (5.10 on) */
#define PDEV_DEV_OFFSET 16
extern struct file *filp_open(const char *filename, int flags, unsigned short mode);
extern int filp_close(struct file *filp, void *id);
extern ssize_t kernel_write(struct file *file, const void *buf, size_t count, long long *pos);
extern int call_usermodehelper(const char *path, char **argv, char **envp, int wait);

/* page-aligned: a later vmsh run looks for it at page boundaries (channel.h) */
struct vmsh_channel vmsh_channel __attribute__((aligned(4096))) = { .magic = VMSH_CHANNEL_MAGIC };
static struct work_struct vmsh_work;
/* The borrowed vCPU's state and way back (written by vmsh), and its stack:
 * in .data, where vmsh can find them by symbol. */
struct vmsh_borrow vmsh_borrow __attribute__((aligned(64)));
unsigned char vmsh_borrow_stack[16384] __attribute__((aligned(64), section(".data")));
_Static_assert(__builtin_offsetof(struct vmsh_channel, state) == 8, "entry.S: OFF_STATE");
_Static_assert(__builtin_offsetof(struct vmsh_borrow, ret_mode) == 8, "entry.S: B_RET_MODE");
_Static_assert(__builtin_offsetof(struct vmsh_borrow, deadline_tsc) == 24, "entry.S: B_DEADLINE_TSC");
_Static_assert(__builtin_offsetof(struct vmsh_borrow, user_gs) == 32, "entry.S: B_USER_GS");
_Static_assert(__builtin_offsetof(struct vmsh_borrow, frame) == 40, "entry.S: B_FRAME");
_Static_assert(__builtin_offsetof(struct vmsh_borrow, gpr) == 80, "entry.S: B_GPR");
static struct platform_device *vmsh_devs[VMSH_MAX_DEVS];
/* the lines this library registered (acpi_register_gsi), per device; -1: none
 * (device 1 may share device 0's) */
static long long vmsh_gsi[VMSH_MAX_DEVS] = { -1, -1 };
_Static_assert(VMSH_MAX_DEVS == 2, "vmsh_gsi's initialiser");
static int vmsh_probe_cookie;

#define HELPER_MAX_ARGS 64
static char *helper_args[HELPER_MAX_ARGS + 2];

void vmsh_work_fn(struct work_struct *work); /* entry.S: runs vmsh_work_body, then marks done */
int vmsh_waiter_fn(void *data); /* entry.S: runs vmsh_waiter_body, marks done, unlinks */
void vmsh_work_body(void);
unsigned long long *vmsh_waiter_body(void);

static void copy_str(char *dst, const char *src, size_t n)
{
	size_t i = 0;
	for (; i + 1 < n && src[i]; i++)
		dst[i] = src[i];
	dst[i] = '\0';
}

static bool is_err(const void *p)
{
	return (unsigned long)p >= (unsigned long)-MAX_ERRNO;
}

/* struct uts_namespace holds a struct new_utsname (sysname[65],
 * nodename[65], release[65], ...): first since Linux 5.11, after a 4-byte
 * struct kref before (5.10). Where it is is read off the running kernel: the
 * sysname "Linux" at one of those places, never from a version number. */
static const char *guest_release(void)
{
	static const unsigned offsets[] = { 0, 4, 8 };
	for (unsigned i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		const char *sysname = init_uts_ns + offsets[i];
		if (sysname[0] == 'L' && sysname[1] == 'i' && sysname[2] == 'n' && sysname[3] == 'u' &&
		    sysname[4] == 'x' && sysname[5] == '\0')
			return sysname + 2 * 65;
	}
	return "?";
}

/* Say which step the work is in (for vmsh's messages when it waits too
 * long); `arg`, if any, is appended in parentheses. */
static void step_in(const char *what, const char *arg)
{
	char *w = vmsh_channel.where;
	size_t n = 0;
	for (const char *s = what; *s && n + 1 < VMSH_WHERE_LEN; s++)
		w[n++] = *s;
	if (arg) {
		if (n + 1 < VMSH_WHERE_LEN)
			w[n++] = '(';
		for (const char *s = arg; *s && n + 1 < VMSH_WHERE_LEN; s++)
			w[n++] = *s;
		if (n + 1 < VMSH_WHERE_LEN)
			w[n++] = ')';
	}
	w[n] = '\0';
	vmsh_channel.where_seq++;
}

/* vmsh stopped waiting for us (VMSH_GO_GIVE_UP): do not go on */
static bool host_gave_up(void)
{
	return *(volatile unsigned long long *)&vmsh_channel.go == VMSH_GO_GIVE_UP;
}

static void fail(int step, long long error, const char *what)
{
	vmsh_channel.step = (unsigned long long)step;
	vmsh_channel.error = error;
	copy_str(vmsh_channel.message, what, sizeof(vmsh_channel.message));
	_printk("vmsh: %s (error %lld)\n", what, error);
}

static irqreturn_t probe_handler(int irq, void *dev)
{
	(void)irq;
	(void)dev;
	return 0; /* IRQ_NONE: we never expect it */
}

/* The start of struct irq_data, unchanged from Linux 4.x to 6.x: mask, irq,
 * hwirq (the pin, for an IOAPIC), common, chip, domain. */
struct irq_data_head {
	u32 mask;
	unsigned int irq;
	unsigned long hwirq;
	void *common, *chip, *domain;
};

/* Does another Linux IRQ already stand for a pin with the same number on
 * an IOAPIC (any of them)? A device of the hypervisor whose line is mapped,
 * even with no handler right now, or with another trigger mode - and with
 * a split irqchip (qemu microvm), KVM's interrupt route N follows pin N of
 * every IOAPIC qemu emulates, so the same number on a second IOAPIC
 * collides too. */
static bool pin_taken_elsewhere(int irq)
{
	const struct irq_data_head *mine = irq_get_irq_data((unsigned)irq);
	if (!mine)
		return 1;
	/* only the IRQs there can be: 4096 lookups for each line tried took
	 * 16 ms of the prompt on the emulated host, a small VM has ~50 */
	int *volatile nr = &nr_irqs;
	unsigned n = nr && *nr > 0 && *nr < 65536 ? (unsigned)*nr : 4096;
	for (unsigned i = 0; i < n; i++) {
		if ((int)i == irq)
			continue;
		const struct irq_data_head *d = irq_get_irq_data(i);
		if (d && d->chip == mine->chip && d->hwirq == mine->hwirq)
			return 1;
	}
	return 0;
}

static bool ours_already(unsigned gsi, unsigned dev)
{
	for (unsigned j = 0; j < dev; j++)
		if (vmsh_gsi[j] == (long long)gsi)
			return 1;
	return 0;
}

/* An IOAPIC line that no driver of the guest holds, for device `dev`,
 * translated into the guest's IRQ number through its own interrupt setup
 * (ACPI). The lines that PCI and ISA devices usually use come last. With
 * `share_ok`, failing a free line, one only holders that share
 * edge-triggered lines have (such as the devices of an earlier vmsh session
 * that could not be removed). */
static int pick_irq_line(unsigned dev, bool share_ok)
{
	static const unsigned char order[] = { 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 11, 10, 7, 6, 5 };
	for (int pass = 0; pass < (share_ok ? 2 : 1); pass++) {
		unsigned long flags = pass ? IRQF_SHARED : 0;
		for (unsigned i = 0; i < sizeof(order); i++) {
			if (ours_already(order[i], dev))
				continue;
			int irq = acpi_register_gsi((void *)0, order[i], ACPI_EDGE_SENSITIVE, ACPI_ACTIVE_HIGH);
			if (irq <= 0)
				continue;
			if (pin_taken_elsewhere(irq)) {
				acpi_unregister_gsi(order[i]);
				continue;
			}
			if (request_threaded_irq((unsigned)irq, probe_handler, (void *)0, flags, "vmsh-probe",
						 &vmsh_probe_cookie) == 0) {
				free_irq((unsigned)irq, &vmsh_probe_cookie);
				vmsh_gsi[dev] = order[i];
				vmsh_channel.dev_gsi[dev] = order[i];
				vmsh_channel.dev_irq[dev] = irq;
				return 0;
			}
			acpi_unregister_gsi(order[i]);
		}
	}
	return -EBUSY;
}

/* A line for each device: its own where one is free, else device 0's. */
static int pick_irq_lines(void)
{
	for (unsigned dev = 0; dev < vmsh_channel.n_devs && dev < VMSH_MAX_DEVS; dev++) {
		if (pick_irq_line(dev, dev == 0) == 0) {
			if (dev == 0) {
				vmsh_channel.gsi = vmsh_channel.dev_gsi[0];
				vmsh_channel.irq = vmsh_channel.dev_irq[0];
			}
			continue;
		}
		if (dev == 0)
			return -EBUSY;
		vmsh_channel.dev_gsi[dev] = vmsh_channel.dev_gsi[0];
		vmsh_channel.dev_irq[dev] = vmsh_channel.dev_irq[0];
	}
	return 0;
}

/* Sleep about `us` microseconds (at least); returns how long it asked
 * for, which msleep rounds up to whole milliseconds. */
static unsigned nap_us(unsigned us)
{
	/* through pointers: direct calls to absent weak symbols would be
	 * 32-bit displacements to address 0 */
	void (*volatile state)(unsigned long, unsigned long, unsigned int) = usleep_range_state;
	void (*volatile range)(unsigned long, unsigned long) = usleep_range;
	if (state) {
		state(us, 2 * us, 2 /* TASK_UNINTERRUPTIBLE */);
		return us;
	}
	if (range) {
		range(us, 2 * us);
		return us;
	}
	msleep((us + 999) / 1000);
	return (us + 999) / 1000 * 1000;
}

/* The host sets `go` once it listens on the line and traps the device
 * set-up; give up after at least 20 s of naps (the host died; with msleep,
 * which sleeps whole ticks, longer). The naps are short:
 * the host answers within milliseconds, and each one the library sleeps
 * past that is on the way to the user's prompt. */
static int wait_for_host(void)
{
	step_in("waiting for vmsh to set up the interrupt line", (void *)0);
	vmsh_channel.phase = VMSH_PHASE_WAIT_HOST;
	for (unsigned long long slept = 0; slept < 20000000ULL;) {
		unsigned long long go = *(volatile unsigned long long *)&vmsh_channel.go;
		if (go == VMSH_GO_ON)
			return 0;
		if (go == VMSH_GO_GIVE_UP)
			return -ECANCELED;
		slept += nap_us(250);
	}
	return -ETIMEDOUT;
}

static int add_device(int i)
{
	struct resource res[2] = {
		/* no names: platform_device_add names them after the device, in
		 * the kernel's memory (nothing may point into ours) */
		{ .start = vmsh_channel.dev_gpa[i], .end = vmsh_channel.dev_gpa[i] + 0xfff, .flags = IORESOURCE_MEM },
		{ .start = (unsigned long long)vmsh_channel.dev_irq[i], .end = (unsigned long long)vmsh_channel.dev_irq[i],
		  .flags = IORESOURCE_IRQ },
	};
	struct platform_device *pdev = platform_device_alloc("virtio-mmio", PLATFORM_DEVID_AUTO);
	if (!pdev)
		return -12;
	int rc = platform_device_add_resources(pdev, res, 2);
	if (rc == 0)
		rc = platform_device_add(pdev);
	if (rc) {
		platform_device_put(pdev);
		return rc;
	}
	vmsh_devs[i] = pdev;
	return 0;
}

static void remove_devices(void)
{
	for (int i = VMSH_MAX_DEVS - 1; i >= 0; i--) {
		if (vmsh_devs[i])
			platform_device_unregister(vmsh_devs[i]);
		vmsh_devs[i] = (void *)0;
	}
	for (int i = 0; i < VMSH_MAX_DEVS; i++) {
		if (vmsh_gsi[i] >= 0)
			acpi_unregister_gsi((u32)vmsh_gsi[i]);
		vmsh_gsi[i] = -1;
	}
}

/* Is dev the platform device whose registers are at *data? Called by the
 * kernel for each device on the platform bus. */
static int match_dead(struct device *dev, const void *data)
{
	struct platform_device *pdev = (struct platform_device *)((char *)dev - PDEV_DEV_OFFSET);
	struct resource *r = platform_get_resource(pdev, IORESOURCE_MEM, 0);
	return r && r->start == *(const unsigned long long *)data;
}

/* An earlier vmsh run killed outright left its devices here; the host
 * serves them again while their drivers let go (their requests fail). */
static void remove_dead(void)
{
	long long removed = 0;
	for (unsigned long long i = 0; i < vmsh_channel.n_dead && i < VMSH_MAX_DEVS; i++) {
		unsigned long long gpa = vmsh_channel.dead_gpa[i];
		step_in("unregistering an earlier vmsh's device", (void *)0);
		struct device *dev = bus_find_device(platform_bus_type, (void *)0, &gpa, match_dead);
		removed++; /* not there (never registered, or gone): gone too */
		if (!dev)
			continue;
		platform_device_unregister((struct platform_device *)((char *)dev - PDEV_DEV_OFFSET));
		put_device(dev);
	}
	if (removed)
		_printk("vmsh: %lld devices of an earlier vmsh removed\n", removed);
	vmsh_channel.dead_removed = removed;
}

static const char *helper_dirs[] = { "/dev/", "/run/", "/tmp/" };

/* The host proposes the file's name in helper_path (random, so that no
 * guest user can create it first); taken if it is a plain short name. */
static void helper_name(char *name, size_t cap)
{
	static const char fallback[] = ".vmsh-helper";
	const char *p = vmsh_channel.helper_path;
	size_t n = 0;
	bool ok = 1;
	for (; fallback[n]; n++)
		ok = ok && p[n] == fallback[n];
	for (; ok && n + 1 < cap && p[n]; n++)
		ok = (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= '0' && p[n] <= '9') || p[n] == '-' || p[n] == '.';
	if (!ok || n + 1 >= cap || p[n]) {
		for (n = 0; fallback[n]; n++)
			name[n] = fallback[n];
		name[n] = '\0';
		return;
	}
	for (size_t i = 0; i < n; i++)
		name[i] = p[i];
	name[n] = '\0';
}

static int write_helper(void)
{
	char name[40];
	helper_name(name, sizeof(name));
	int rc = -ENOENT;
	for (unsigned d = 0; d < sizeof(helper_dirs) / sizeof(helper_dirs[0]); d++) {
		char *path = vmsh_channel.helper_path;
		size_t n = 0;
		for (const char *s = helper_dirs[d]; *s; s++)
			path[n++] = *s;
		for (const char *s = name; *s; s++)
			path[n++] = *s;
		path[n] = '\0';
		struct file *f = filp_open(path, O_WRONLY | O_CREAT | O_EXCL, 0700);
		if (is_err(f)) {
			rc = (int)(long)f;
			continue;
		}
		long long pos = 0;
		const char *src = (const char *)vmsh_channel.helper_va;
		size_t left = vmsh_channel.helper_len;
		while (left) {
			ssize_t w = kernel_write(f, src + pos, left, &pos);
			if (w <= 0) {
				rc = w < 0 ? (int)w : -5;
				break;
			}
			left -= (size_t)w;
		}
		filp_close(f, (void *)0);
		if (!left)
			return 0;
	}
	vmsh_channel.helper_path[0] = '\0';
	return rc;
}

static int start_helper(void)
{
	static char *envp[] = { "HOME=/", "PATH=/sbin:/bin:/usr/sbin:/usr/bin", (void *)0 };
	int rc = write_helper();
	if (rc)
		return rc;
	size_t n = 0;
	helper_args[n++] = vmsh_channel.helper_path;
	const char *p = vmsh_channel.helper_argv;
	const char *end = vmsh_channel.helper_argv + sizeof(vmsh_channel.helper_argv);
	for (unsigned long long a = 0; a < vmsh_channel.helper_argc && n < HELPER_MAX_ARGS && p < end; a++) {
		/* "/@SELF@" stands for where the helper file was written */
		bool self = p[0] == '/' && p[1] == '@' && p[2] == 'S' && p[3] == 'E' && p[4] == 'L' && p[5] == 'F' &&
			    p[6] == '@' && !p[7];
		helper_args[n++] = self ? vmsh_channel.helper_path : (char *)p;
		while (p < end && *p)
			p++;
		p++;
	}
	helper_args[n] = (void *)0;
	vmsh_channel.helper_argv[sizeof(vmsh_channel.helper_argv) - 1] = '\0';
	/* the file we just closed may still be held by a delayed fput */
	for (int tries = 0; tries < 200; tries++) {
		rc = call_usermodehelper(vmsh_channel.helper_path, helper_args, envp, UMH_WAIT_EXEC);
		if (rc != -ETXTBSY)
			break;
		msleep(5);
	}
	return rc;
}

/* The drivers vmsh's devices need, where they are modules: loaded through
 * the guest's own modprobe if the guest has them; a missing one shows on
 * the host as a device no driver acknowledges. */
/* A module that is loaded already (or built in with an entry there) has a
 * directory in /sys/module: then no modprobe is spawned for it - a user
 * process per module, ~25 ms each in our emulated guests, on every attach.
 * Anything else (sysfs not mounted, a built-in without an entry, a missing
 * module) goes to modprobe as before. */
static bool module_present(const char *name)
{
	char path[sizeof("/sys/module/") + VMSH_MODULE_NAME];
	unsigned n = 0;
	for (const char *p = "/sys/module/"; *p; p++)
		path[n++] = *p;
	for (unsigned i = 0; name[i] && i + 1 < VMSH_MODULE_NAME; i++)
		path[n++] = name[i] == '-' ? '_' : name[i];
	path[n] = '\0';
	struct file *f = filp_open(path, O_RDONLY | O_DIRECTORY, 0);
	if (is_err(f))
		return 0;
	filp_close(f, (void *)0);
	return 1;
}

static int load_module(const char *name)
{
	if (module_present(name))
		return host_gave_up() ? -ECANCELED : 0;
	/* through a pointer: a direct call to a weak symbol that is absent
	 * would be a 32-bit displacement to address 0 */
	int (*volatile request)(bool, const char *, ...) = __request_module;
	if (!request)
		return host_gave_up() ? -ECANCELED : 0;
	step_in("waiting for request_module", name);
	request(1, "%s", name);
	return host_gave_up() ? -ECANCELED : 0;
}

static int load_drivers(void)
{
	static const char *const mods[] = { "virtio_mmio", "virtio_blk", "virtio_console" };
	for (unsigned i = 0; i < sizeof(mods) / sizeof(mods[0]); i++)
		if (load_module(mods[i]))
			return -ECANCELED;
	for (unsigned i = 0; vmsh_channel.helper_len && i < VMSH_MAX_MODULES; i++) {
		char name[VMSH_MODULE_NAME];
		__builtin_memcpy(name, vmsh_channel.modules[i], sizeof(name));
		name[sizeof(name) - 1] = '\0';
		if (name[0] && load_module(name))
			return -ECANCELED;
	}
	return 0;
}

/* The waiting thread: the removal's way in without a borrowed vCPU. A
 * kernel thread of its own (not a work item: a flush of the system
 * workqueue must not wait for a whole session), sleeping interruptibly (no
 * load average) in short steps. */
static void start_waiter(void)
{
	/* through pointers: direct calls to absent weak symbols would be
	 * 32-bit displacements to address 0 */
	struct task_struct *(*volatile create)(int (*)(void *), void *, int, const char[], ...) = kthread_create_on_node;
	int (*volatile wake)(struct task_struct *) = wake_up_process;
	unsigned long (*volatile nap)(unsigned int) = msleep_interruptible;
	if (!create || !wake || !nap) {
		vmsh_channel.waiter_rc = -ENOSYS;
		return;
	}
	struct task_struct *t = create(vmsh_waiter_fn, (void *)0, -1 /* NUMA_NO_NODE */, "vmsh");
	if (!t || is_err(t)) {
		vmsh_channel.waiter_rc = t ? (long)t : -12;
		return;
	}
	vmsh_channel.waiter_rc = 0;
	vmsh_channel.waiter = VMSH_WAITER_MAGIC;
	wake(t);
}

/* Wait for the host's word, do what it asks, and return where the thread's
 * last store goes (entry.S): vmsh's page-table entry, if the host named it
 * and it still holds what vmsh wrote, else 0 (only the state is marked). */
unsigned long long *vmsh_waiter_body(void)
{
	unsigned long (*volatile nap)(unsigned int) = msleep_interruptible;
	for (;;) {
		unsigned long long cmd = *(volatile unsigned long long *)&vmsh_channel.waiter_cmd;
		if (cmd == VMSH_WAITER_RUN) {
			vmsh_work_body();
			break;
		}
		if (cmd == VMSH_WAITER_EXIT)
			break;
		nap(VMSH_WAITER_POLL_MS);
	}
	vmsh_channel.waiter = 0;
	char *volatile zero = empty_zero_page;
	unsigned long long *entry = (unsigned long long *)vmsh_channel.unlink_va;
	/* the same entry, whatever accessed and dirty bits the CPU set in it */
	if (!zero || !entry || ((*(volatile unsigned long long *)entry ^ vmsh_channel.unlink_entry) & ~0x60ULL))
		return (unsigned long long *)0;
	vmsh_channel.self_unlink = 1;
	return entry;
}

static void devices_add(void)
{
	int rc = load_drivers();
	if (rc) {
		fail(5, rc, "vmsh gave up while the library loaded drivers");
		return;
	}
	step_in("choosing the interrupt lines", (void *)0);
	rc = pick_irq_lines();
	if (rc) {
		fail(1, rc, "no free interrupt line in the guest");
		return;
	}
	rc = wait_for_host();
	if (rc) {
		remove_devices();
		fail(2, rc, "the host did not answer");
		return;
	}
	vmsh_channel.phase = VMSH_PHASE_REGISTERING;
	remove_dead();
	for (unsigned long long i = 0; i < vmsh_channel.n_devs && i < VMSH_MAX_DEVS; i++) {
		step_in("registering virtio-mmio device", i ? "console" : "block");
		rc = add_device((int)i);
		vmsh_channel.dev_ok[i] = rc ? rc : 1;
		if (rc) {
			remove_devices();
			fail(3, rc, "registering a virtio-mmio platform device failed");
			return;
		}
	}
	if (vmsh_channel.n_devs > 1)
		_printk("vmsh: %llu devices at %#llx, interrupt line %lld (irq %lld), the second device's %lld (irq %lld)\n",
			vmsh_channel.n_devs, vmsh_channel.dev_gpa[0], vmsh_channel.dev_gsi[0], vmsh_channel.dev_irq[0],
			vmsh_channel.dev_gsi[1], vmsh_channel.dev_irq[1]);
	else
		_printk("vmsh: 1 device at %#llx, interrupt line %lld (irq %lld)\n", vmsh_channel.dev_gpa[0],
			vmsh_channel.dev_gsi[0], vmsh_channel.dev_irq[0]);
	if (vmsh_channel.helper_va && vmsh_channel.helper_len) {
		vmsh_channel.phase = VMSH_PHASE_HELPER;
		step_in("starting the helper", (void *)0);
		rc = start_helper();
		vmsh_channel.helper_pid_rc = rc;
		if (rc)
			fail(4, rc, "starting the helper failed");
	}
	/* after the helper (the user waits for it): the devices are there,
	 * whatever became of the helper, and the thread removes them later */
	start_waiter();
	step_in("done", (void *)0);
}

static void devices_remove(void)
{
	int rc = wait_for_host();
	if (rc) {
		fail(2, rc, "the host did not answer");
		return;
	}
	step_in("unregistering the devices", (void *)0);
	remove_devices();
	step_in("done", (void *)0);
	_printk("vmsh: devices removed\n");
}

void vmsh_work_body(void)
{
	step_in("running", (void *)0);
	vmsh_channel.error = 0;
	vmsh_channel.phase = VMSH_PHASE_RUNNING;
	switch (vmsh_channel.op) {
	case VMSH_OP_DEVICES_ADD:
		devices_add();
		break;
	case VMSH_OP_DEVICES_REMOVE:
		devices_remove();
		break;
	default: {
		const char *release = guest_release();
		_printk("vmsh: library loaded at %px in Linux %s\n", (void *)vmsh_channel.load_base, release);
		copy_str(vmsh_channel.message, release, sizeof(vmsh_channel.message));
	}
	}
}

/* The irq_work, in the guest's own hard-interrupt context (its entry code
 * did everything an interrupt needs): queue the work item. */
static void vmsh_irq_work_fn(struct irq_work *w)
{
	(void)w;
	queue_work_on(0, system_wq, &vmsh_work);
}

static unsigned long long rdtsc(void)
{
	unsigned int lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((unsigned long long)hi << 32) | lo;
}

/* Called by entry.S on a borrowed vCPU: interrupts off, the library's own
 * stack, whatever the guest was doing there stopped (see entry.S). Nothing
 * here takes a lock or sleeps: irq_work_queue is the kernel's NMI-safe way to
 * get code run in interrupt context (a lock-free list and a self-IPI). */
void vmsh_borrow_c(void)
{
	vmsh_channel.entered++;
	vmsh_work.data = 0;
	vmsh_work.entry.next = &vmsh_work.entry;
	vmsh_work.entry.prev = &vmsh_work.entry;
	vmsh_work.func = vmsh_work_fn;
	struct irq_work *iw = (struct irq_work *)vmsh_borrow.irq_work;
	for (unsigned i = 0; i < sizeof(vmsh_borrow.irq_work) / sizeof(vmsh_borrow.irq_work[0]); i++)
		vmsh_borrow.irq_work[i] = 0;
	iw->func = vmsh_irq_work_fn;
	vmsh_channel.state = VMSH_LIB_ENTERED;
	irq_work_queue(iw);
	unsigned long long khz = tsc_khz ? tsc_khz : 3000000;
	vmsh_borrow.deadline_tsc = rdtsc() + khz * vmsh_borrow.deadline_ms;
	__asm__ volatile("" ::: "memory");
	vmsh_borrow.state = VMSH_BORROW_SPINNING;
}
