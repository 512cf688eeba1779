/* signals.h - the terminating signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT)
 * held while vmsh has something of its own in a guest or hypervisor: they
 * wait (blocked) until everything is undone, are checked for between steps,
 * and taken by a signalfd where a command waits for them. */
#ifndef VMSH_SIGNALS_H
#define VMSH_SIGNALS_H

#include <signal.h>
#include <stdbool.h>

/* The terminating signals. */
void term_signals(sigset_t *set);
/* Block them; *old gets the previous mask. */
void term_signals_block(sigset_t *old);
/* One of them is pending. */
bool term_signal_pending(void);
/* Discard the pending ones (they ended what they were sent to end; more
 * of the same, from a shell's process group and a forwarding parent, must
 * not kill vmsh once it is done), then restore *old. */
void term_signals_restore(const sigset_t *old);

#endif
