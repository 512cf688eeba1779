/* num.h - the one checked parser for numbers on vmsh's command line. */
#ifndef VMSH_NUM_H
#define VMSH_NUM_H

#include <stdint.h>

/* A whole decimal number in [min, max], nothing else around it (no sign, no
 * spaces, no suffix): 0 and *out, or -1. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
