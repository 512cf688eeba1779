/* sparse_map.c - see sparse_map.h. */
#include "common/sparse_map.h"

#include <sys/mman.h>

void *sparse_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* advice: a kernel without transparent huge pages refuses it (EINVAL)
	 * and has none to give anyway */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}
