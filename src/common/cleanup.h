/* cleanup.h - scope-bound cleanup helpers, so early returns never leak. */
#ifndef VMSH_CLEANUP_H
#define VMSH_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}
static inline void cleanup_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
static inline void cleanup_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_free_ __attribute__((cleanup(cleanup_freep)))
#define _cleanup_close_ __attribute__((cleanup(cleanup_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(cleanup_fclosep)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Make room for one more element in a malloc'd array of *cap elements of
 * `size` bytes holding `cnt`: doubles it when full. On failure frees the
 * array, sets *v to NULL and returns -1. */
static inline int array_reserve(void *v, size_t *cap, size_t cnt, size_t size)
{
	void **pv = v;
	if (!*pv || cnt < *cap)
		return *pv ? 0 : -1;
	void *nv = realloc(*pv, *cap * 2 * size);
	if (!nv) {
		free(*pv);
		*pv = NULL;
		return -1;
	}
	*pv = nv;
	*cap *= 2;
	return 0;
}

#endif
