/* channel.h - the structure vmsh and its kernel library share, in the
 * library's data section (which vmsh maps too). Included by both sides:
 * fixed-size fields only. entry.S knows the offsets of the first four. The
 * library aligns it to a page, so that a later vmsh run finds it by its
 * magic at a page boundary of the library's memory. */
#ifndef VMSH_CHANNEL_H
#define VMSH_CHANNEL_H

#define VMSH_CHANNEL_MAGIC 0x6c6e6863687376ULL /* "vshchnl" */

enum vmsh_lib_state {
	VMSH_LIB_LOADED = 0,  /* written by the host, not entered yet */
	VMSH_LIB_ENTERED = 1, /* the entry stub queued the work */
	VMSH_LIB_DONE = 2,    /* the work ran (its last store: nothing of ours runs after) */
};

/* What the work item does when entered. */
enum vmsh_lib_op {
	VMSH_OP_HELLO = 0,          /* log the kernel version */
	VMSH_OP_DEVICES_ADD = 1,    /* load drivers, pick an IRQ line, wait for the host, register devices, start the helper */
	VMSH_OP_DEVICES_REMOVE = 2, /* wait for the host, unregister the devices, release the IRQ line */
};

/* Where the work is (host polls it). */
enum vmsh_lib_phase {
	VMSH_PHASE_RUNNING = 0,
	VMSH_PHASE_WAIT_HOST = 1, /* IRQ lines chosen (dev_gsi/dev_irq valid): waiting for `go` */
	VMSH_PHASE_REGISTERING = 2,
	VMSH_PHASE_HELPER = 3,
};

/* What the host tells the work waiting in VMSH_PHASE_WAIT_HOST (`go`). */
enum vmsh_lib_go {
	VMSH_GO_WAIT = 0,    /* not yet */
	VMSH_GO_ON = 1,      /* the host listens on the line and traps the devices: proceed */
	VMSH_GO_GIVE_UP = 2, /* the host stopped waiting: undo and finish */
};

/* The library's waiting thread: started once the devices are registered,
 * it sleeps in short steps until the host's word in waiter_cmd, so that
 * the removal needs no borrowed vCPU (no stop of the guest). */
#define VMSH_WAITER_MAGIC 0x676e6974696177ULL /* "waiting" */
#define VMSH_WAITER_POLL_MS 20
enum vmsh_waiter_cmd {
	VMSH_WAITER_SLEEP = 0, /* go on waiting */
	VMSH_WAITER_RUN = 1,   /* do what op says (the removal), then end */
	VMSH_WAITER_EXIT = 2,  /* end without doing anything (a later run reaps the library) */
};

#define VMSH_MAX_DEVS 2
#define VMSH_HELPER_ARGV 2048
#define VMSH_MAX_MODULES 2 /* drivers the helper's mounts need besides the devices' */
#define VMSH_MODULE_NAME 32
#define VMSH_WHERE_LEN 96

/* Written by vmsh when it loads the library: what a later vmsh run needs to
 * find and remove a library an earlier run had to leave behind (its work
 * had not finished). The channel lives in guest-writable memory, so a later
 * run treats every field as a claim to check against what it can verify
 * itself (the hypervisor's mappings, KVM's answer for the slot, the guest's
 * page-table entry) - see kernel_lib.c klib_reap_stale. */
#define VMSH_RECORD_MAGIC 0x64726f6365726873ULL /* "shrecord" */
struct vmsh_lib_record {
	unsigned long long magic;
	unsigned long long region_va;   /* the 1 GiB region the library is linked at */
	unsigned long long table_gpa;   /* the guest's table holding the one entry vmsh wrote */
	unsigned long long table_index;
	unsigned long long table_entry; /* the value written there */
	unsigned long long slot_id, slot_gpa, slot_size;
	unsigned long long hva;         /* the hypervisor's mapping of the slot's memory */
	unsigned long long chan_off;    /* offset of this channel in that memory */
	unsigned long long borrow_off;  /* offset of the library's struct vmsh_borrow in it */
};

/* How a vCPU lent to the library gets back to what it was doing. vmsh
 * stops it, saves its whole state, points it at vmsh_borrow_entry (entry.S)
 * on the library's own stack with interrupts off. The stub queues its work
 * and, once deadline_ms have passed (vmsh gives 0: at once), goes back by
 * itself from the copy here (ret_mode) and says VMSH_BORROW_SELF_RETURNED.
 * With VMSH_RET_HOST it cannot (the guest's page tables for user mode do
 * not map the stub): it reports VMSH_BORROW_SPINNING and spins until vmsh
 * stops it and puts every register back from vmsh's own copy. */
enum vmsh_borrow_state {
	VMSH_BORROW_NONE = 0,
	VMSH_BORROW_RUNNING = 1,       /* host: the vCPU was sent to the stub */
	VMSH_BORROW_SPINNING = 2,      /* stub: work queued, spinning until deadline_ms or vmsh */
	VMSH_BORROW_SELF_RETURNED = 3, /* stub: it went back by itself */
	VMSH_BORROW_RESTORED = 4,      /* host: put back */
};
enum vmsh_borrow_ret {
	VMSH_RET_HOST = 0,   /* only vmsh can put it back */
	VMSH_RET_KERNEL = 1, /* iretq to the kernel-mode frame */
	VMSH_RET_USER = 2,   /* GS base back to user_gs, iretq to the user-mode frame */
};
/* entry.S knows these offsets (vmsh_lib.c checks them). */
struct vmsh_borrow {
	unsigned long long state;        /* 0: enum vmsh_borrow_state */
	unsigned long long ret_mode;     /* 8: enum vmsh_borrow_ret */
	unsigned long long deadline_ms;  /* 16: host */
	unsigned long long deadline_tsc; /* 24: stub */
	unsigned long long user_gs;      /* 32: host */
	unsigned long long frame[5];     /* 40: host: rip, cs, rflags, rsp, ss as interrupted */
	unsigned long long gpr[15];      /* 80: host: rax rbx rcx rdx rsi rdi rbp r8-r15 as interrupted */
	/* 200: the library's struct irq_work (5.10+: flags, a u32, at +8) */
	unsigned long long irq_work[8];
};

struct vmsh_channel {
	unsigned long long magic;
	unsigned long long state;      /* enum vmsh_lib_state, low byte */
	unsigned long long entered;    /* times the entry stub ran */
	long long error;               /* negative errno of the failing step, 0 if none */
	unsigned long long step;       /* which step failed */
	unsigned long long load_base;  /* host: where the library is mapped */

	unsigned long long op;         /* host: enum vmsh_lib_op */
	unsigned long long phase;      /* library: enum vmsh_lib_phase */
	unsigned long long go;         /* host: enum vmsh_lib_go */
	unsigned long long n_devs;     /* host: devices to register */
	unsigned long long dev_gpa[VMSH_MAX_DEVS]; /* host: register page of each */
	long long gsi, irq;            /* library: the interrupt line and its Linux IRQ */
	long long dev_ok[VMSH_MAX_DEVS]; /* library: 1 registered, <0 -errno */
	unsigned long long helper_va;  /* host: helper binary in the library's mapping, 0 = none */
	unsigned long long helper_len;
	long long helper_pid_rc;       /* library: call_usermodehelper's result */
	unsigned long long helper_argc;
	char helper_path[64];          /* library: where the helper file was written */
	char helper_argv[VMSH_HELPER_ARGV]; /* host: NUL-separated arguments after argv[0] */
	char message[256];             /* NUL-terminated, written by the library */
	/* library: the step the work is in now, so that vmsh can say what it
	 * waits for when it gives up ("waiting for request_module(virtio_mmio)");
	 * where_seq counts the steps. Guest data to vmsh: read bounded, printed
	 * escaped. */
	unsigned long long where_seq;
	char where[VMSH_WHERE_LEN];
	struct vmsh_lib_record rec;    /* host */
	/* host: modules the helper's mounts need (the image's file system,
	 * overlay), loaded by name like the devices' drivers: a guest's
	 * modprobe may not know the fs-TYPE alias mount(2) would ask for.
	 * NUL-terminated plain words, "" for none. (New fields go at the end:
	 * a stale library of an older vmsh keeps rec where a newer one reads
	 * it.) */
	char modules[VMSH_MAX_MODULES][VMSH_MODULE_NAME];
	/* host: devices an earlier vmsh run killed outright left in the guest
	 * (register pages of each), which vmsh serves again for the moment:
	 * unregistered before the new ones are added (VMSH_OP_DEVICES_ADD).
	 * library: how many are gone from the guest (unregistered now, or not
	 * there any more). */
	unsigned long long n_dead;
	unsigned long long dead_gpa[VMSH_MAX_DEVS];
	long long dead_removed;
	/* library: each device's interrupt line and its Linux IRQ (gsi/irq
	 * above repeat device 0's). Each device has a line of its own where
	 * the guest has enough free ones: virtio-mmio's handler acknowledges
	 * its device on every interrupt of its line, a register write that
	 * costs a guest exit, so a shared line costs one exit per device and
	 * interrupt. A device gets device 0's line when no other is free. */
	long long dev_gsi[VMSH_MAX_DEVS], dev_irq[VMSH_MAX_DEVS];
	/* The waiting thread (VMSH_WAITER_MAGIC). library: `waiter` while its
	 * thread waits for waiter_cmd (host); waiter_rc why none was started
	 * (negative errno). Its last two stores are the state (DONE) and,
	 * where the host gave unlink_va, vmsh's entry in the guest's page
	 * table: unlink_va is that entry's kernel address (the direct map,
	 * checked by vmsh against the kernel's page tables) and unlink_entry
	 * the value vmsh wrote there; the thread clears it only if it still
	 * holds that value, and says so first in self_unlink. Then nothing of
	 * the library runs or is reachable any more. */
	unsigned long long waiter;
	unsigned long long waiter_cmd;
	long long waiter_rc;
	unsigned long long unlink_va, unlink_entry;
	unsigned long long self_unlink;
};

#endif
