/* blk_lanes.c - vmsh-blk's serving threads on this machine's own CPUs.
 *
 * The end-to-end block benchmark (blk_bench.py) runs in the emulated KVM
 * host, which has one CPU (two wedge it): there, serving each request queue
 * from a thread of its own cannot gain anything. This program measures that
 * part of vmsh natively: vmsh's real block device (devices/blk_dev.c), its
 * real serving threads (devices/server.c) and disk (devices/blk_uring.c, a
 * file of --disk-mib MiB in /dev/shm, 256 by default), driven by a small virtio driver in a thread of this
 * process that keeps DEPTH 4 KiB random reads in flight on each request
 * queue. "Guest memory" is a buffer of this process, reached the way vmsh
 * reaches a guest's: with process_vm_readv/writev (anonymous guest RAM, the
 * default) or as vmsh's own mapping (--shared: memfd guest RAM).
 *
 * Each round measures, for SECONDS each, QUEUES queues served by one
 * thread (A), by one thread per queue (B), and A again (A'); it prints the
 * medians of requests per second over the rounds, B/A, and the self-check
 * A against A' (over 5 %: too noisy to decide).
 *
 * --poll-us US measures adaptive polling instead (blk_dev.c): A is a
 * thread per queue without polling, B the same polling for up to US after
 * a queue runs dry; the driver then uses event indices (VIRTIO_F_EVENT_IDX)
 * as Linux does, and notifies only where the device asked for it.
 *
 *   blk_lanes [--rounds N] [--seconds S] [--queues Q] [--depth D] [--shared] [--disk-mib M] [--poll-us US]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "devices/blk_dev.h"
#include "devices/blk_uring.h"
#include "devices/server.h"
#include "devices/vq_guestmem.h"
#include "guest/guestmem.h"

#define QSIZE 256
#define BS 4096u
#define QSPAN 0x10000ULL            /* per queue: rings and headers */
#define DESC_OFF 0x0
#define AVAIL_OFF 0x1000
#define USED_OFF 0x3000
#define HDR_OFF 0x6000
#define STATUS_OFF 0x8000
#define DATA_BASE (SERVER_MAX_LANES * QSPAN)
#define MAX_DEPTH 64

struct bench {
	uint64_t disk_bytes;
	uint8_t *mem;       /* "guest memory" */
	size_t mem_len;
	unsigned queues, depth;
	uint16_t avail_idx[BLK_MAX_QUEUES], used_seen[BLK_MAX_QUEUES];
	uint64_t rng;
	bool event_idx;     /* the driver honours the device's avail_event (--poll-us) */
	unsigned long kicks; /* notifications the driver made */
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static uint64_t next_rand(struct bench *b)
{
	b->rng ^= b->rng << 13;
	b->rng ^= b->rng >> 7;
	b->rng ^= b->rng << 17;
	return b->rng;
}

static uint64_t qbase(unsigned q)
{
	return (uint64_t)q * QSPAN;
}

static void put_desc(struct bench *b, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = b->mem + qbase(q) + DESC_OFF + 16 * i;
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* Request r of queue q: a read of 4 KiB at a random sector into its own
 * buffer; its chain starts at descriptor 3r. */
static void make_request(struct bench *b, unsigned q, unsigned r)
{
	uint64_t hdr = qbase(q) + HDR_OFF + 16 * r, st = qbase(q) + STATUS_OFF + r;
	uint64_t data = DATA_BASE + ((uint64_t)q * MAX_DEPTH + r) * BS;
	uint32_t type = VIRTIO_BLK_T_IN, prio = 0;
	uint64_t sector = (next_rand(b) % (b->disk_bytes / BS)) * (BS / 512);
	memcpy(b->mem + hdr, &type, 4);
	memcpy(b->mem + hdr + 4, &prio, 4);
	memcpy(b->mem + hdr + 8, &sector, 8);
	b->mem[st] = 0xff;
	put_desc(b, q, 3 * r, hdr, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * r + 1));
	put_desc(b, q, 3 * r + 1, data, BS, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, (uint16_t)(3 * r + 2));
	put_desc(b, q, 3 * r + 2, st, 1, VIRTQ_DESC_F_WRITE, 0);
}

static void offer(struct bench *b, unsigned q, unsigned r)
{
	uint8_t *avail = b->mem + qbase(q) + AVAIL_OFF;
	uint16_t head = (uint16_t)(3 * r), idx = b->avail_idx[q];
	memcpy(avail + 4 + 2 * (idx % QSIZE), &head, 2);
	b->avail_idx[q] = (uint16_t)(idx + 1);
}

static void publish(struct bench *b, unsigned q)
{
	atomic_thread_fence(memory_order_release);
	__atomic_store_n((uint16_t *)(b->mem + qbase(q) + AVAIL_OFF + 2), b->avail_idx[q], __ATOMIC_RELEASE);
}

/* vring_need_event(): does moving an index from old to new_idx cross event? */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static int kick(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, 8) == 8 ? 0 : -1;
}

struct run_result {
	double per_s;
	double cpu_us; /* process CPU time per request */
	unsigned long errors;
	unsigned long wakeups[SERVER_MAX_LANES];
	unsigned long kicks, polls, hits; /* notifications the driver made; polls, and those that found work */
};

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* Notify queue q's device of what publish() made available since `old`:
 * always, or with event indices only where its avail_event asks for it. */
static void notify_device(struct bench *b, unsigned q, int fd, uint16_t old)
{
	if (b->event_idx) {
		atomic_thread_fence(memory_order_seq_cst);
		uint16_t event = __atomic_load_n((uint16_t *)(b->mem + qbase(q) + USED_OFF + 4 + 8 * QSIZE),
						 __ATOMIC_ACQUIRE);
		if (!need_event(event, b->avail_idx[q], old))
			return;
	}
	b->kicks++;
	kick(fd);
}

/* One measurement: a fresh device with b->queues queues served by `lanes`
 * threads, polling for up to poll_us, driven for `seconds`. */
static int run(struct bench *b, struct blk_disk *disk, const struct vq_mem *vm, unsigned lanes, unsigned poll_us,
	       double seconds, struct run_result *out)
{
	static uint8_t page[4096];
	struct vdev dev;
	memset(b->mem, 0, DATA_BASE);
	memset(b->avail_idx, 0, sizeof(b->avail_idx));
	memset(b->used_seen, 0, sizeof(b->used_seen));
	disk->num_queues = (uint16_t)b->queues;
	disk->poll_us = poll_us;
	memset(disk->poll, 0, sizeof(disk->poll));
	blk_dev_init(&dev, disk, vm, page, 0xd0000000);
	int notify[BLK_MAX_QUEUES], irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (irq < 0)
		return perror("blk_lanes: eventfd"), -1;
	for (unsigned q = 0; q < b->queues; q++) {
		notify[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (notify[q] < 0 || vq_init(&dev.vq[q], vm, QSIZE, qbase(q) + DESC_OFF, qbase(q) + AVAIL_OFF,
						 qbase(q) + USED_OFF, b->event_idx) < 0) {
			fprintf(stderr, "blk_lanes: queue %u: set-up failed\n", q);
			return -1; /* the process ends */
		}
		dev.vq_live[q] = true;
		dev.notify[q].local = notify[q];
	}
	dev.irq.local = irq;
	dev.irq_on = true;
	dev.driver_ok = true;
	struct dev_server srv;
	struct vdev *devs[] = { &dev };
	struct vmsh_err err = { 0 };
	if (server_init(&srv, devs, 1, lanes, &err) < 0 || server_start(&srv, &err) < 0) {
		fprintf(stderr, "blk_lanes: server: %s\n", err.msg);
		return -1;
	}
	for (unsigned q = 0; q < b->queues; q++) {
		for (unsigned r = 0; r < b->depth; r++) {
			make_request(b, q, r);
			offer(b, q, r);
		}
		publish(b, q);
		kick(notify[q]);
	}
	unsigned long done = 0, errors = 0, stalls = 0;
	b->kicks = 0;
	double c0 = cpu_s();
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
	while (now_ns() < end) {
		struct pollfd p = { irq, POLLIN, 0 };
		uint64_t cnt;
		int ready = poll(&p, 1, 100);
		if (ready == 0) {
			/* 100 ms without an interrupt, every request in flight: a
			 * lost notification or interrupt. Counted as an error, and
			 * every queue kicked so that the run goes on. */
			stalls++;
			for (unsigned q = 0; q < b->queues; q++)
				kick(notify[q]);
		}
		if (ready > 0 && read(irq, &cnt, 8) < 0 && errno != EAGAIN) {
			perror("blk_lanes: read the interrupt");
			errors++;
			break;
		}
		for (unsigned q = 0; q < b->queues; q++) {
			uint8_t *used = b->mem + qbase(q) + USED_OFF;
			uint16_t idx = __atomic_load_n((uint16_t *)(used + 2), __ATOMIC_ACQUIRE);
			uint16_t old = b->avail_idx[q];
			bool any = false;
			while (b->used_seen[q] != idx) {
				uint32_t id;
				memcpy(&id, used + 4 + 8 * (b->used_seen[q] % QSIZE), 4);
				b->used_seen[q]++;
				unsigned r = id / 3;
				if (id % 3 || r >= b->depth) {
					errors++;
					continue;
				}
				if (b->mem[qbase(q) + STATUS_OFF + r] != VIRTIO_BLK_S_OK)
					errors++;
				done++;
				make_request(b, q, r);
				offer(b, q, r);
				any = true;
				if (b->used_seen[q] == idx && b->event_idx) {
					/* an interrupt for the next completion, then
					 * look again: one may have come meanwhile */
					__atomic_store_n((uint16_t *)(b->mem + qbase(q) + AVAIL_OFF + 4 + 2 * QSIZE),
							 b->used_seen[q], __ATOMIC_RELEASE);
					atomic_thread_fence(memory_order_seq_cst);
					idx = __atomic_load_n((uint16_t *)(used + 2), __ATOMIC_ACQUIRE);
				}
			}
			if (any) {
				publish(b, q);
				notify_device(b, q, notify[q], old);
			}
		}
	}
	double el = (now_ns() - t0) / 1e9;
	double cpu = cpu_s() - c0;
	server_stop(&srv);
	out->per_s = done / el;
	out->kicks = b->kicks;
	out->polls = out->hits = 0;
	for (unsigned q = 0; q < b->queues; q++) {
		out->polls += disk->poll[q].polls;
		out->hits += disk->poll[q].hits;
	}
	out->cpu_us = done ? cpu / done * 1e6 : 0;
	out->errors = errors + stalls;
	if (stalls)
		fprintf(stderr, "blk_lanes: %lu times 100 ms without an interrupt, requests in flight\n", stalls);
	for (unsigned q = 0; q < b->queues; q++)
		out->errors += dev.vq[q].broken ? 1 : 0;
	if (!done)
		out->errors++; /* a device that serves nothing fails the run */
	for (unsigned l = 0; l < SERVER_MAX_LANES; l++)
		out->wakeups[l] = l < srv.n_lanes ? srv.lane[l].wakeups : 0;
	for (unsigned q = 0; q < b->queues; q++)
		close(notify[q]);
	close(irq);
	vdev_destroy(&dev);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int make_disk(char *path, size_t cap, uint64_t bytes)
{
	snprintf(path, cap, "/dev/shm/vmsh-blk-lanes-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	uint8_t *buf = malloc(1 << 20);
	if (!buf) {
		close(fd);
		return -1;
	}
	for (size_t i = 0; i < (1 << 20); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (uint64_t off = 0; off < bytes; off += 1 << 20)
		if (pwrite(fd, buf, 1 << 20, (off_t)off) != 1 << 20) {
			free(buf);
			close(fd);
			unlink(path);
			return -1;
		}
	free(buf);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned rounds = 5, queues = 2, depth = 16, disk_mib = 256, poll_us = 0;
	double seconds = 2;
	bool shared = false;
	static const struct option opts[] = {
		{ "rounds", required_argument, 0, 'r' }, { "seconds", required_argument, 0, 's' },
		{ "queues", required_argument, 0, 'q' }, { "depth", required_argument, 0, 'd' },
		{ "shared", no_argument, 0, 'm' },        { "disk-mib", required_argument, 0, 'k' },
		{ "poll-us", required_argument, 0, 'p' }, { 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': rounds = (unsigned)atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'q': queues = (unsigned)atoi(optarg); break;
		case 'd': depth = (unsigned)atoi(optarg); break;
		case 'm': shared = true; break;
		case 'k': disk_mib = (unsigned)atoi(optarg); break;
		case 'p': poll_us = (unsigned)atoi(optarg); break;
		default:
			fprintf(stderr, "usage: blk_lanes [--rounds N] [--seconds S] [--queues Q] [--depth D] [--shared] "
					"[--disk-mib M] [--poll-us US]\n");
			return 2;
		}
	}
	if (rounds < 1 || rounds > 100 || queues < (poll_us ? 1 : 2) || queues > BLK_MAX_QUEUES ||
	    queues > SERVER_MAX_LANES || depth < 1 || depth > MAX_DEPTH || 3 * depth > QSIZE || seconds <= 0 ||
	    disk_mib < 1 || disk_mib > 4096 || poll_us > BLK_MAX_POLL_US) {
		fprintf(stderr, "blk_lanes: rounds 1-100, queues 2-%d (1 with --poll-us), depth 1-%d, seconds > 0, "
				"disk 1-4096 MiB, poll 0-%d us\n",
			BLK_MAX_QUEUES, MAX_DEPTH, BLK_MAX_POLL_US);
		return 2;
	}
	struct bench b = { .queues = queues, .depth = depth, .rng = 0x9e3779b97f4a7c15ULL,
			   .disk_bytes = (uint64_t)disk_mib << 20, .event_idx = poll_us > 0 };
	b.mem_len = DATA_BASE + (size_t)SERVER_MAX_LANES * MAX_DEPTH * BS;
	int mfd = -1;
	if (shared) {
		mfd = memfd_create("blk-lanes-guest", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, (off_t)b.mem_len) < 0)
			return perror("memfd"), 1;
		b.mem = mmap(NULL, b.mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	} else {
		b.mem = mmap(NULL, b.mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (b.mem == MAP_FAILED)
		return perror("mmap"), 1;
	/* this process stands in for the hypervisor: its buffer is the guest's
	 * RAM at gpa 0, reached as vmsh reaches a hypervisor's */
	struct guest_mem gm;
	guest_mem_init(&gm, getpid());
	struct guest_range r = { .gpa = 0, .size = b.mem_len, .hva = (uint64_t)(uintptr_t)b.mem, .verified = true,
				 .shared = shared, .kind = "System RAM" };
	snprintf(r.backing, sizeof(r.backing), "%s", shared ? "/memfd:blk-lanes-guest (deleted)" : "[anon]");
	if (shared)
		r.local = b.mem;
	if (guest_mem_add(&gm, &r) < 0)
		return fprintf(stderr, "blk_lanes: guest_mem_add failed\n"), 1;
	struct vq_mem vm;
	vq_mem_of_guest(&vm, &gm);

	char path[64];
	if (make_disk(path, sizeof(path), b.disk_bytes) < 0)
		return perror("blk_lanes: disk in /dev/shm"), 1;
	struct blk_uring u;
	struct blk_disk disk = { 0 };
	struct vmsh_err err = { 0 };
	int rc = blk_uring_open(&u, path, true, &disk, &err);
	unlink(path);
	if (rc < 0)
		return fprintf(stderr, "blk_lanes: %s\n", err.msg), 1;
	snprintf(disk.id, sizeof(disk.id), "lanes");

	cpu_set_t set;
	int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
	printf("blk_lanes: %u queues, %u reads of 4 KiB in flight per queue, %s guest memory, %d CPUs, "
	       "%u rounds of %.1f s per configuration\n",
	       queues, depth, shared ? "shared (memfd)" : "anonymous (process_vm_readv/writev)", cpus, rounds,
	       seconds);
	double a[100], bb[100], a2[100], ca[100], cb[100];
	unsigned long errors = 0;
	for (unsigned i = 0; i < rounds; i++) {
		struct run_result ra, rb, ra2;
		unsigned a_lanes = poll_us ? queues : 1; /* --poll-us: a thread per queue both ways */
		if (run(&b, &disk, &vm, a_lanes, 0, seconds, &ra) < 0 ||
		    run(&b, &disk, &vm, queues, poll_us, seconds, &rb) < 0 ||
		    run(&b, &disk, &vm, a_lanes, 0, seconds, &ra2) < 0)
			return 1;
		a[i] = ra.per_s;
		bb[i] = rb.per_s;
		a2[i] = ra2.per_s;
		ca[i] = (ra.cpu_us + ra2.cpu_us) / 2;
		cb[i] = rb.cpu_us;
		errors += ra.errors + rb.errors + ra2.errors;
		if (poll_us)
			printf("round %u: no polling %.0f/s (%.2f notifications per request), polling for up to %u us "
			       "%.0f/s (%.2f notifications per request, %lu polls of which %lu found a request), "
			       "no polling again %.0f/s\n",
			       i + 1, ra.per_s, ra.kicks / (ra.per_s * seconds), poll_us, rb.per_s,
			       rb.kicks / (rb.per_s * seconds), rb.polls, rb.hits, ra2.per_s);
		else
			printf("round %u: one thread %.0f/s, %u threads %.0f/s (wake-ups %lu + %lu), one thread again "
			       "%.0f/s\n",
			       i + 1, ra.per_s, queues, rb.per_s, rb.wakeups[0], rb.wakeups[1], ra2.per_s);
		fflush(stdout);
	}
	blk_uring_close(&u);
	guest_mem_free(&gm);
	double ma = median(a, rounds), mb = median(bb, rounds), ma2 = median(a2, rounds);
	double mca = median(ca, rounds), mcb = median(cb, rounds);
	double spread = ma > ma2 ? (ma - ma2) / ma2 : (ma2 - ma) / ma;
	const char *na = poll_us ? "no polling" : "one thread";
	char nb[48];
	if (poll_us)
		snprintf(nb, sizeof(nb), "polling for up to %u us", poll_us);
	else
		snprintf(nb, sizeof(nb), "%u threads", queues);
	printf("\nrequests per second (medians): %s %.0f, %s %.0f: %.2fx\n", na, (ma + ma2) / 2, nb, mb,
	       mb / ((ma + ma2) / 2));
	printf("CPU time per request (this process: serving threads and the driver): %s %.1f us, %s %.1f us\n", na,
	       mca, nb, mcb);
	printf("self-check: %s before and after differ by %.1f %% (%s)\n", na, spread * 100,
	       spread <= 0.05 ? "ok" : "over 5 %: too noisy to decide");
	if (errors) {
		printf("ERRORS: %lu requests failed or came back malformed\n", errors);
		return 1;
	}
	return 0;
}
