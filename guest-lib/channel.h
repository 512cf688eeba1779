/* channel.h - the structure vmsh and its kernel library share, in the
 * library's data section (which vmsh maps too). Included by both sides:
 * fixed-size fields only. */
#ifndef VMSH_CHANNEL_H
#define VMSH_CHANNEL_H

#define VMSH_CHANNEL_MAGIC 0x6c6e6863687376ULL /* "vshchnl" */

enum vmsh_lib_state {
	VMSH_LIB_LOADED = 0,  /* written by the host, not entered yet */
	VMSH_LIB_ENTERED = 1, /* the entry stub queued the work */
	VMSH_LIB_DONE = 2,    /* the work ran (its last store: nothing of ours runs after) */
};

struct vmsh_channel {
	unsigned long long magic;
	unsigned long long orig_rip;   /* host: where the borrowed vCPU continues */
	unsigned long long orig_rsp;
	unsigned long long state;      /* enum vmsh_lib_state, low byte */
	unsigned long long entered;    /* times the entry stub ran */
	long long error;               /* negative errno of the failing step, 0 if none */
	unsigned long long step;       /* which step failed */
	unsigned long long load_base;  /* host: where the library is mapped */
	char message[256];             /* NUL-terminated, written by the library */
};

#endif
