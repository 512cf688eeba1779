/* channel.h - the structure vmsh and its kernel library share, in the
 * library's data section (which vmsh maps too). Included by both sides:
 * fixed-size fields only. entry.S knows the offsets of the first four. */
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
	VMSH_PHASE_WAIT_HOST = 1, /* IRQ line chosen (gsi/irq valid): waiting for `go` */
	VMSH_PHASE_REGISTERING = 2,
	VMSH_PHASE_HELPER = 3,
};

#define VMSH_MAX_DEVS 2
#define VMSH_HELPER_ARGV 2048

struct vmsh_channel {
	unsigned long long magic;
	unsigned long long orig_rip;   /* host: where the borrowed vCPU continues */
	unsigned long long orig_rsp;
	unsigned long long state;      /* enum vmsh_lib_state, low byte */
	unsigned long long entered;    /* times the entry stub ran */
	long long error;               /* negative errno of the failing step, 0 if none */
	unsigned long long step;       /* which step failed */
	unsigned long long load_base;  /* host: where the library is mapped */

	unsigned long long op;         /* host: enum vmsh_lib_op */
	unsigned long long phase;      /* library: enum vmsh_lib_phase */
	unsigned long long go;         /* host: 1 = proceed, 2 = give up */
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
};

#endif
