/* loader_sample.c - an object for test_loader.c: code, read-only data,
 * data, bss, a pointer needing an absolute relocation, and two imports. */
extern long host_add(long a, long b);
extern long host_counter;

static long table[4] = { 10, 20, 30, 40 };
long bss_value;
const char *greeting = "hello";

long sample_entry(long x)
{
	bss_value = x;
	host_counter++;
	return host_add(table[x & 3], x) + greeting[1];
}

long sample_get_bss(void)
{
	return bss_value;
}

#ifdef WEAK_IMPORT
/* an import the kernel may lack (__request_module without modules): weak,
 * left 0 by the loader when absent, checked before the call */
extern long host_optional(long x) __attribute__((weak));

long sample_optional(long x)
{
	long (*volatile f)(long) = host_optional;
	return f ? f(x) : -1;
}
#endif
