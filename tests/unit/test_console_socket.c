/* test_console_socket.c - `vmsh serve --console-socket` (src/cli/
 * console_socket.c): a stuck client must not keep vmsh from its SIGTERM, a
 * second client must not make it spin, and the socket is root's alone and
 * never replaces someone else's file. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/console_socket.h"

struct loop {
	int stop, lfd, con[2]; /* con[0]: vmsh's end, con[1]: the guest's side */
	struct sock_file sf;
	pthread_t th;
	int rc;
	volatile int done;
	char path[108];
};

static void *run(void *opaque)
{
	struct loop *l = opaque;
	struct vmsh_err err = { 0 };
	l->rc = console_socket_serve(l->stop, -1, l->lfd, l->con[0], &err);
	l->done = 1;
	return NULL;
}

static void start(struct loop *l)
{
	memset(l, 0, sizeof(*l));
	snprintf(l->path, sizeof(l->path), "/tmp/vmsh-test-sock-%d", (int)getpid());
	unlink(l->path);
	struct vmsh_err err = { 0 };
	l->lfd = console_socket_listen(l->path, &l->sf, &err);
	assert_true(l->lfd >= 0);
	l->stop = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, l->con), 0);
	assert_int_equal(pthread_create(&l->th, NULL, run, l), 0);
}

static int client(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Ask the loop to stop; it must within 2 s. */
static void stop(struct loop *l)
{
	uint64_t one = 1;
	assert_int_equal(write(l->stop, &one, 8), 8);
	double t0 = now();
	while (!l->done && now() - t0 < 2)
		usleep(1000);
	if (!l->done)
		fail_msg("the console socket loop did not stop within 2 s");
	pthread_join(l->th, NULL);
	assert_int_equal(l->rc, 0);
	console_socket_unlink(l->path, &l->sf);
	close(l->lfd);
	close(l->stop);
	close(l->con[0]);
	close(l->con[1]);
}

/* A client that never reads while the guest keeps writing: old code blocked
 * in write() and never saw the stop request (SIGTERM). */
static void test_stuck_client_does_not_block_stop(void **state)
{
	(void)state;
	struct loop l;
	start(&l);
	int c = client(l.path);
	int fl = fcntl(l.con[1], F_GETFL);
	fcntl(l.con[1], F_SETFL, fl | O_NONBLOCK);
	static char junk[1 << 16];
	memset(junk, 'g', sizeof(junk));
	double t0 = now();
	size_t sent = 0;
	while (now() - t0 < 0.5) { /* fill every buffer on the way */
		ssize_t w = write(l.con[1], junk, sizeof(junk));
		if (w > 0)
			sent += (size_t)w;
		else
			usleep(1000);
	}
	assert_true(sent > 0);
	stop(&l);
	close(c);
}

/* A second client while one is connected: old code polled the listening
 * socket anyway and spun on its pending connection. */
static void test_second_client_does_not_spin(void **state)
{
	(void)state;
	struct loop l;
	start(&l);
	int c1 = client(l.path);
	usleep(50000);
	int c2 = client(l.path); /* stays in the backlog */
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	usleep(300000);
	getrusage(RUSAGE_SELF, &r1);
	double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
		     (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	print_message("CPU while idle with a second client pending: %.3f s of 0.3 s\n", cpu);
	assert_true(cpu < 0.1);
	/* the first client still works both ways */
	assert_int_equal(write(c1, "hi", 2), 2);
	char b[8];
	assert_int_equal(read(l.con[1], b, 2), 2);
	assert_memory_equal(b, "hi", 2);
	assert_int_equal(write(l.con[1], "yo", 2), 2);
	assert_int_equal(read(c1, b, 2), 2);
	assert_memory_equal(b, "yo", 2);
	stop(&l);
	close(c1);
	close(c2);
}

struct pump {
	int fd;
	size_t n;
	uint8_t seed;
	int ok;
};

static void *reader(void *opaque)
{
	struct pump *p = opaque;
	static uint8_t b[2][8192];
	uint8_t *buf = b[p->seed & 1];
	size_t got = 0;
	p->ok = 1;
	while (got < p->n) {
		ssize_t r = read(p->fd, buf, sizeof(b[0]));
		if (r <= 0) {
			p->ok = 0;
			return NULL;
		}
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != (uint8_t)((got + (size_t)i) * 7 + p->seed))
				p->ok = 0;
		got += (size_t)r;
	}
	return NULL;
}

static void writer(int fd, size_t n, uint8_t seed)
{
	uint8_t buf[4096];
	for (size_t off = 0; off < n;) {
		size_t k = n - off < sizeof(buf) ? n - off : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = (uint8_t)((off + i) * 7 + seed);
		ssize_t w = write(fd, buf, k);
		assert_true(w > 0);
		off += (size_t)w;
	}
}

/* Bytes pass both ways at once, complete and in order. */
static void test_both_directions_intact(void **state)
{
	(void)state;
	struct loop l;
	start(&l);
	int c = client(l.path);
	struct pump to_guest = { .fd = l.con[1], .n = 3u << 20, .seed = 1 };
	struct pump to_client = { .fd = c, .n = 3u << 20, .seed = 2 };
	pthread_t a, b;
	pthread_create(&a, NULL, reader, &to_guest);
	pthread_create(&b, NULL, reader, &to_client);
	writer(c, to_guest.n, 1);
	writer(l.con[1], to_client.n, 2);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_true(to_guest.ok);
	assert_true(to_client.ok);
	stop(&l);
	close(c);
}

/* 0600 whatever the umask. */
static void test_socket_mode_is_0600(void **state)
{
	(void)state;
	char path[108];
	snprintf(path, sizeof(path), "/tmp/vmsh-test-mode-%d", (int)getpid());
	unlink(path);
	mode_t old = umask(0);
	struct vmsh_err err = { 0 };
	struct sock_file sf;
	int fd = console_socket_listen(path, &sf, &err);
	umask(old);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	console_socket_unlink(path, &sf);
	close(fd);
	assert_int_equal(lstat(path, &st), -1);
}

/* A file that is not a socket is refused, not unlinked; a stale socket is
 * replaced; a socket replaced by someone else is not removed at the end. */
static void test_non_socket_is_not_replaced(void **state)
{
	(void)state;
	char path[108];
	snprintf(path, sizeof(path), "/tmp/vmsh-test-file-%d", (int)getpid());
	int f = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(f >= 0);
	assert_int_equal(write(f, "precious", 8), 8);
	close(f);
	struct vmsh_err err = { 0 };
	struct sock_file sf;
	assert_int_equal(console_socket_listen(path, &sf, &err), -1);
	assert_non_null(strstr(err.msg, "not a socket"));
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 8);
	unlink(path);

	/* a stale socket (nobody listens) is replaced */
	int fd = console_socket_listen(path, &sf, &err);
	assert_true(fd >= 0);
	close(fd);
	fd = console_socket_listen(path, &sf, &err);
	assert_true(fd >= 0);
	/* someone else's file at the path by the end: left alone */
	unlink(path);
	f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	close(f);
	console_socket_unlink(path, &sf);
	close(fd);
	assert_int_equal(lstat(path, &st), 0);
	unlink(path);
}

/* `vmsh serve --no-console`: no port, no socket - it waits for its stop
 * (or the hypervisor's exit) all the same. It failed at once with "console
 * socket: Bad file descriptor" (found 2026-12-05). */
static void test_no_console_waits_for_the_stop(void **state)
{
	(void)state;
	int stop = eventfd(0, EFD_CLOEXEC), gone = eventfd(0, EFD_CLOEXEC);
	assert_true(stop >= 0 && gone >= 0);
	uint64_t one = 1;
	assert_int_equal(write(stop, &one, 8), 8);
	struct vmsh_err err = { 0 };
	assert_int_equal(console_socket_serve(stop, gone, -1, -1, &err), 0);
	assert_int_equal(read(stop, &one, 8), 8);
	assert_int_equal(write(gone, &one, 8), 8);
	assert_int_equal(console_socket_serve(stop, gone, -1, -1, &err), 1);
	close(stop);
	close(gone);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stuck_client_does_not_block_stop),
		cmocka_unit_test(test_second_client_does_not_spin),
		cmocka_unit_test(test_both_directions_intact),
		cmocka_unit_test(test_socket_mode_is_0600),
		cmocka_unit_test(test_non_socket_is_not_replaced),
		cmocka_unit_test(test_no_console_waits_for_the_stop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
