/* vmsh_lib.c - the kernel library: C code that runs inside the guest kernel.
 *
 * Built freestanding for kernel context (see Makefile: large code model, no
 * red zone, no SSE, IBT landing pads) and linked against the guest's exported
 * symbols by vmsh's loader. The borrowed vCPU only runs entry.S and
 * vmsh_entry_c, which queues a work item; everything else runs in that work
 * item, in process context of a kernel worker. */
#include "channel.h"

typedef unsigned long size_t;
typedef _Bool bool;

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

extern int _printk(const char *fmt, ...);
extern bool queue_work_on(int cpu, void *wq, struct work_struct *work);
extern void *system_wq;
extern char init_uts_ns[];

struct vmsh_channel vmsh_channel = { .magic = VMSH_CHANNEL_MAGIC };
static struct work_struct vmsh_work;

void vmsh_work_fn(struct work_struct *work); /* entry.S: runs vmsh_work_body, then marks done */

static void copy_str(char *dst, const char *src, size_t n)
{
	size_t i = 0;
	for (; i + 1 < n && src[i]; i++)
		dst[i] = src[i];
	dst[i] = '\0';
}

/* struct uts_namespace starts with struct new_utsname: sysname[65],
 * nodename[65], release[65], ... */
static const char *guest_release(void)
{
	const char *sysname = init_uts_ns;
	if (sysname[0] != 'L' || sysname[1] != 'i' || sysname[2] != 'n')
		return "?";
	return init_uts_ns + 2 * 65;
}

void vmsh_work_body(void)
{
	const char *release = guest_release();
	_printk("vmsh: library loaded at %px in Linux %s\n", (void *)vmsh_channel.load_base, release);
	copy_str(vmsh_channel.message, release, sizeof(vmsh_channel.message));
}

/* Called by entry.S on a borrowed vCPU, at whatever the guest was doing
 * there (idle): do nothing but queue the work. */
void vmsh_entry_c(void)
{
	vmsh_channel.entered++;
	vmsh_work.data = 0;
	vmsh_work.entry.next = &vmsh_work.entry;
	vmsh_work.entry.prev = &vmsh_work.entry;
	vmsh_work.func = vmsh_work_fn;
	vmsh_channel.state = VMSH_LIB_ENTERED;
	queue_work_on(0, system_wq, &vmsh_work);
}
