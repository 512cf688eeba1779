/* kcache.h - what vmsh learned about kernel builds, kept between runs: one
 * small file per build (guest/kernel.h struct kernel_hint), so that the
 * next attach to a guest running the same kernel reads a few hundred KiB of
 * it instead of searching its whole image.
 *
 * A hint only says where to look; the guest's memory is always parsed (see
 * kernel_find_hinted), so a stale or wrong file costs a full search, never
 * a wrong symbol. Files are still only read if they belong to vmsh's user
 * and nobody else may write them.
 *
 * Where: $VMSH_CACHE_DIR if set ("off": no cache), else /var/cache/vmsh
 * for root, else $XDG_CACHE_HOME/vmsh or ~/.cache/vmsh; kernel hints in
 * its kernels/ directory. */
#ifndef VMSH_KCACHE_H
#define VMSH_KCACHE_H

#include <stddef.h>

#include "guest/kernel.h"

#define KCACHE_MAX_FILES 64

/* The cache's kernels/ directory into buf; NULL if caching is off or no
 * directory can be named. */
const char *kcache_dir(char *buf, size_t len);
/* Up to max hints from dir (0 if none or unreadable). */
size_t kcache_load(const char *dir, struct kernel_hint *out, size_t max);
/* Store h in dir (created if missing, mode 0700), atomically. */
int kcache_store(const char *dir, const struct kernel_hint *h, struct vmsh_err *err);
/* Exposed for unit tests: a hint as the file's text and back. */
int kcache_format(const struct kernel_hint *h, char *buf, size_t len);
int kcache_parse(const char *text, struct kernel_hint *h);

#endif
