/* log.h - diagnostic output on stderr, filtered by verbosity. */
#ifndef VMSH_LOG_H
#define VMSH_LOG_H

enum { LOG_QUIET = -1, LOG_NORMAL = 0, LOG_VERBOSE = 1, LOG_DEBUG = 2 };

/* The one piece of global mutable state: the verbosity chosen by -v/-q,
 * read by every layer that may print diagnostics. */
void log_set_level(int level);
int log_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* With -vv: vmsh's resident and peak memory now (VmRSS, VmHWM). */
void log_memory(const char *when);

#define log_info(...) log_msg(LOG_NORMAL, __VA_ARGS__)
#define log_verbose(...) log_msg(LOG_VERBOSE, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
