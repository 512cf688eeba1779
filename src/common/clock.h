/* clock.h - monotonic time and short sleeps (vmsh and its in-guest helper). */
#ifndef VMSH_CLOCK_H
#define VMSH_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Milliseconds, for timeouts counted in milliseconds. */
static inline int64_t now_ms(void)
{
	return (int64_t)(now_ns() / 1000000ULL);
}

static inline void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

#endif
