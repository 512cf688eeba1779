/*
 * spinner — keep every vCPU of a test guest busy, and check that nothing
 * disturbed the busy code.
 *
 *     spinner start [-f PRIO] [-k CPUS]   one child per online CPU, pinned to it
 *     spinner status                      one line per child, then exit
 *
 * A child in user mode runs an assembly loop that keeps 13 general
 * registers in lock step (each gets +1 per round) and checks their
 * differences after every block of rounds: a register changed from outside
 * (a vCPU borrowed and put back wrongly) shows up as an error. A child on a
 * CPU listed in -k (comma separated) reads /dev/zero in a loop instead, so
 * that CPU spends its time in kernel code with interrupts on, and checks
 * every buffer is all zero. -f gives the children SCHED_FIFO priority PRIO.
 * Counters live in a shared file (/dev/shm/spinner), which status prints:
 *
 *     SPINNER cpu=N mode=user|kernel policy=fifo|normal rounds=R errors=E pid=P
 *
 * Build: musl-gcc -static -O2 -o spinner spinner.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STATE "/dev/shm/spinner"
#define MAX_CPUS 64
#define BLOCK 200000ULL

struct slot {
	volatile uint64_t rounds, errors;
	volatile int32_t pid, cpu, kernel, fifo;
};

struct state {
	uint32_t n;
	struct slot s[MAX_CPUS];
};

/* BLOCK rounds with 13 registers counting up together from different
 * starts; returns how many of them are off their expected difference. */
static uint64_t user_block(uint64_t base)
{
	uint64_t bad;
	__asm__ volatile(
		"mov %[b], %%rax\n\t"
		"lea 1(%%rax), %%rbx\n\t"
		"lea 2(%%rax), %%rdx\n\t"
		"lea 3(%%rax), %%rsi\n\t"
		"lea 4(%%rax), %%rdi\n\t"
		"lea 5(%%rax), %%r8\n\t"
		"lea 6(%%rax), %%r9\n\t"
		"lea 7(%%rax), %%r10\n\t"
		"lea 8(%%rax), %%r11\n\t"
		"lea 9(%%rax), %%r12\n\t"
		"lea 10(%%rax), %%r13\n\t"
		"lea 11(%%rax), %%r14\n\t"
		"lea 12(%%rax), %%r15\n\t"
		"mov %[n], %%rcx\n"
		"1:\n\t"
		"inc %%rax\n\tinc %%rbx\n\tinc %%rdx\n\tinc %%rsi\n\tinc %%rdi\n\t"
		"inc %%r8\n\tinc %%r9\n\tinc %%r10\n\tinc %%r11\n\tinc %%r12\n\t"
		"inc %%r13\n\tinc %%r14\n\tinc %%r15\n\t"
		"dec %%rcx\n\tjnz 1b\n\t"
		/* every register minus rax must equal its start offset */
		"xor %%rcx, %%rcx\n\t"
		"sub %%rax, %%rbx\n\tcmp $1, %%rbx\n\tsetne %%bl\n\tmovzbq %%bl, %%rbx\n\tadd %%rbx, %%rcx\n\t"
		"sub %%rax, %%rdx\n\tcmp $2, %%rdx\n\tsetne %%dl\n\tmovzbq %%dl, %%rdx\n\tadd %%rdx, %%rcx\n\t"
		"sub %%rax, %%rsi\n\tcmp $3, %%rsi\n\tsetne %%sil\n\tmovzbq %%sil, %%rsi\n\tadd %%rsi, %%rcx\n\t"
		"sub %%rax, %%rdi\n\tcmp $4, %%rdi\n\tsetne %%dil\n\tmovzbq %%dil, %%rdi\n\tadd %%rdi, %%rcx\n\t"
		"sub %%rax, %%r8\n\tcmp $5, %%r8\n\tsetne %%r8b\n\tmovzbq %%r8b, %%r8\n\tadd %%r8, %%rcx\n\t"
		"sub %%rax, %%r9\n\tcmp $6, %%r9\n\tsetne %%r9b\n\tmovzbq %%r9b, %%r9\n\tadd %%r9, %%rcx\n\t"
		"sub %%rax, %%r10\n\tcmp $7, %%r10\n\tsetne %%r10b\n\tmovzbq %%r10b, %%r10\n\tadd %%r10, %%rcx\n\t"
		"sub %%rax, %%r11\n\tcmp $8, %%r11\n\tsetne %%r11b\n\tmovzbq %%r11b, %%r11\n\tadd %%r11, %%rcx\n\t"
		"sub %%rax, %%r12\n\tcmp $9, %%r12\n\tsetne %%r12b\n\tmovzbq %%r12b, %%r12\n\tadd %%r12, %%rcx\n\t"
		"sub %%rax, %%r13\n\tcmp $10, %%r13\n\tsetne %%r13b\n\tmovzbq %%r13b, %%r13\n\tadd %%r13, %%rcx\n\t"
		"sub %%rax, %%r14\n\tcmp $11, %%r14\n\tsetne %%r14b\n\tmovzbq %%r14b, %%r14\n\tadd %%r14, %%rcx\n\t"
		"sub %%rax, %%r15\n\tcmp $12, %%r15\n\tsetne %%r15b\n\tmovzbq %%r15b, %%r15\n\tadd %%r15, %%rcx\n\t"
		/* and rax itself went up by exactly BLOCK */
		"sub %[b], %%rax\n\tcmp %[n], %%rax\n\tsetne %%al\n\tmovzbq %%al, %%rax\n\tadd %%rax, %%rcx\n\t"
		"mov %%rcx, %[bad]\n\t"
		: [bad] "=m"(bad)
		: [b] "m"(base), [n] "i"(BLOCK)
		: "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cc");
	return bad;
}

static void kernel_round(int fd, struct slot *s)
{
	static uint64_t buf[8192];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n != (ssize_t)sizeof(buf)) {
		s->errors++;
		return;
	}
	for (size_t i = 0; i < sizeof(buf) / sizeof(buf[0]); i++)
		if (buf[i]) {
			s->errors++;
			buf[i] = 0;
		}
	/* dirty it again: the next read must clear it */
	buf[(s->rounds * 7) % (sizeof(buf) / sizeof(buf[0]))] = s->rounds | 1;
}

static void child(struct slot *s, int cpu, int kernel, int fifo)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		s->errors += 1000000;
	if (fifo) {
		struct sched_param p = { .sched_priority = fifo };
		/* musl's sched_setscheduler is a stub (ENOSYS): the system call */
		if (syscall(SYS_sched_setscheduler, 0, SCHED_FIFO, &p) < 0)
			s->errors += 1000000;
	}
	int fd = kernel ? open("/dev/zero", O_RDONLY) : -1;
	uint64_t base = (uint64_t)cpu << 40;
	for (;;) {
		if (kernel) {
			kernel_round(fd, s);
		} else {
			s->errors += user_block(base);
			base += BLOCK;
		}
		s->rounds++;
	}
}

static struct state *map_state(int create)
{
	int fd = open(STATE, create ? O_RDWR | O_CREAT | O_TRUNC : O_RDONLY, 0644);
	if (fd < 0 || (create && ftruncate(fd, sizeof(struct state)) < 0)) {
		perror("spinner: " STATE);
		exit(1);
	}
	struct state *st = mmap(NULL, sizeof(*st), create ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (st == MAP_FAILED) {
		perror("spinner: mmap");
		exit(1);
	}
	close(fd);
	return st;
}

static int in_list(const char *list, int cpu)
{
	if (!list)
		return 0;
	char *copy = strdup(list), *save = NULL;
	int hit = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		hit |= atoi(t) == cpu;
	free(copy);
	return hit;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "status")) {
		struct state *st = map_state(0);
		for (uint32_t i = 0; i < st->n && i < MAX_CPUS; i++)
			printf("SPINNER cpu=%d mode=%s policy=%s rounds=%llu errors=%llu pid=%d\n", st->s[i].cpu,
			       st->s[i].kernel ? "kernel" : "user", st->s[i].fifo ? "fifo" : "normal",
			       (unsigned long long)st->s[i].rounds, (unsigned long long)st->s[i].errors, st->s[i].pid);
		return 0;
	}
	if (argc < 2 || strcmp(argv[1], "start")) {
		fprintf(stderr, "usage: spinner start [-f PRIO] [-k CPU,...] | spinner status\n");
		return 2;
	}
	int fifo = 0, opt;
	const char *kernel_cpus = NULL;
	optind = 2;
	while ((opt = getopt(argc, argv, "f:k:")) != -1) {
		if (opt == 'f')
			fifo = atoi(optarg);
		else if (opt == 'k')
			kernel_cpus = optarg;
		else
			return 2;
	}
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpu < 1 || ncpu > MAX_CPUS)
		ncpu = ncpu < 1 ? 1 : MAX_CPUS;
	struct state *st = map_state(1);
	st->n = (uint32_t)ncpu;
	for (int cpu = 0; cpu < ncpu; cpu++) {
		struct slot *s = &st->s[cpu];
		s->cpu = cpu;
		s->kernel = in_list(kernel_cpus, cpu);
		s->fifo = fifo;
		pid_t pid = fork();
		if (pid < 0) {
			perror("spinner: fork");
			return 1;
		}
		if (pid == 0) {
			setsid();
			int null = open("/dev/null", O_RDWR);
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			child(s, cpu, s->kernel, fifo);
		}
		s->pid = pid;
	}
	printf("SPINNER started %ld\n", ncpu);
	return 0;
}
