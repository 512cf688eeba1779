/* signals.c - holding the terminating signals (see signals.h). */
#include "common/signals.h"

#include <time.h>

void term_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGQUIT);
}

void term_signals_block(sigset_t *old)
{
	sigset_t term;
	term_signals(&term);
	sigprocmask(SIG_BLOCK, &term, old);
}

bool term_signal_pending(void)
{
	sigset_t p;
	sigpending(&p);
	return sigismember(&p, SIGINT) || sigismember(&p, SIGTERM) || sigismember(&p, SIGHUP) ||
	       sigismember(&p, SIGQUIT);
}

void term_signals_restore(const sigset_t *old)
{
	sigset_t term;
	term_signals(&term);
	struct timespec none = { 0, 0 };
	while (sigtimedwait(&term, NULL, &none) > 0)
		;
	sigprocmask(SIG_SETMASK, old, NULL);
}
