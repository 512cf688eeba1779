/*
 * physmarker — plant a known value at a known guest-physical address.
 *
 * Runs inside a test guest.  A background child allocates one page, locks it
 * (mlock, no transparent huge page), fills the first 16 bytes with random
 * data, looks the page up in /proc/self/pagemap and prints
 *
 *     PHYSMARKER gpa=0x<page GPA> value=<32 hex digits> pid=<child pid>
 *
 * then sleeps forever so the page stays where it is.  The foreground process
 * exits as soon as the line is printed (exit 0) or the child failed (exit 1),
 * so a test can run it from the guest shell and read the line back.
 * Host-side tests then look for the value at that GPA through vmsh.
 *
 * Options: -f  stay in the foreground (do not fork; useful for debugging).
 *
 * Build: musl-gcc -static -O2 -o physmarker physmarker.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#define MARKER_LEN 16
#define PM_PFN_MASK ((UINT64_C(1) << 55) - 1)
#define PM_PRESENT (UINT64_C(1) << 63)

static int fail(const char *what)
{
	fprintf(stderr, "physmarker: %s: %s\n", what, strerror(errno));
	return -1;
}

/* Allocate, fill, lock and locate the page; print the PHYSMARKER line. */
static int plant(void)
{
	long page_size = sysconf(_SC_PAGESIZE);
	unsigned char *page = mmap(NULL, page_size, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return fail("mmap");
	madvise(page, page_size, MADV_NOHUGEPAGE);
	if (mlock(page, page_size) != 0)
		return fail("mlock");

	unsigned char value[MARKER_LEN];
	if (getrandom(value, sizeof(value), 0) != sizeof(value))
		return fail("getrandom");
	memset(page, 0, page_size);
	memcpy(page, value, sizeof(value));

	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return fail("open /proc/self/pagemap");
	uint64_t entry;
	off_t off = (off_t)((uintptr_t)page / page_size) * sizeof(entry);
	if (pread(fd, &entry, sizeof(entry), off) != sizeof(entry))
		return fail("read /proc/self/pagemap");
	close(fd);
	uint64_t pfn = entry & PM_PFN_MASK;
	if (!(entry & PM_PRESENT) || pfn == 0) {
		/* PFN reads as 0 without CAP_SYS_ADMIN. */
		errno = EPERM;
		return fail("page not present or PFN hidden (run as root)");
	}

	char hex[2 * MARKER_LEN + 1];
	for (int i = 0; i < MARKER_LEN; i++)
		sprintf(hex + 2 * i, "%02x", value[i]);
	printf("PHYSMARKER gpa=0x%" PRIx64 " value=%s pid=%d\n",
	       pfn * (uint64_t)page_size, hex, (int)getpid());
	fflush(stdout);
	return 0;
}

static void sleep_forever(void)
{
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-f") == 0) {
		if (plant() != 0)
			return 1;
		sleep_forever();
	}

	int ready[2];
	if (pipe(ready) != 0)
		return fail("pipe"), 1;
	pid_t child = fork();
	if (child < 0)
		return fail("fork"), 1;
	if (child == 0) {
		close(ready[0]);
		setsid();
		signal(SIGHUP, SIG_IGN);
		if (plant() != 0)
			_exit(1);
		/* Tell the parent the line is out, then let go of the terminal. */
		if (write(ready[1], "k", 1) != 1)
			_exit(1);
		close(ready[1]);
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
		sleep_forever();
	}
	close(ready[1]);
	char c;
	ssize_t n;
	do
		n = read(ready[0], &c, 1);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : 1;
}
