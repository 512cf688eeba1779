/* test_snapshot.c - the copy-on-write snapshot (core/snapshot.c over
 * tracer/fork.c) against a real process standing in for a hypervisor: two
 * threads blocked in read, "guest RAM" kept out of forks with MADV_DONTFORK
 * as QEMU does. Needs ptrace of a child (root in CI, or ptrace_scope 0/1). */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/remote_mem.h"
#include "core/snapshot.h"

#define RAM_LEN (4u << 20)

struct hv {
	pid_t pid;
	int cmd, reply;
	int witness;  /* read end of a pipe whose only write end the stand-in holds */
	uint64_t ram;
};

static void *idle_thread(void *arg)
{
	char c;
	while (read(*(int *)arg, &c, 1) < 0)
		;
	return NULL;
}

static void reply(int fd, const void *p, size_t n)
{
	if (write(fd, p, n) != (ssize_t)n)
		_exit(3);
}

/* The stand-in: answers one-letter commands on cmd. */
static void hv_main(int cmd, int out, bool shared, int witness)
{
	uint8_t *ram = mmap(NULL, RAM_LEN, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS,
			    -1, 0);
	if (ram == MAP_FAILED || madvise(ram, RAM_LEN, MADV_DONTFORK) < 0)
		_exit(2);
	memset(ram, 'A', RAM_LEN);
	int idle[2];
	pthread_t th;
	if (pipe(idle) < 0 || pthread_create(&th, NULL, idle_thread, &idle[0]))
		_exit(2);
	uint64_t addr = (uint64_t)(uintptr_t)ram;
	reply(out, &addr, sizeof(addr));
	for (;;) {
		char c;
		ssize_t r = read(cmd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != 1 || c == 'q')
			_exit(0);
		if (c == 'B') { /* the guest writes its RAM */
			memset(ram, 'B', RAM_LEN);
			reply(out, "k", 1);
		} else if (c == 'F') { /* a child of its own that ends at once (exit signal SIGCHLD) */
			pid_t p = fork();
			if (p == 0)
				_exit(7);
			int v = p;
			reply(out, &v, sizeof(v));
		} else if (c == 'C') { /* close a file of its own */
			close(witness);
			reply(out, "k", 1);
		} else if (c == 'R') { /* part of its RAM goes (as an unplug would) */
			if (munmap(ram + RAM_LEN / 2, RAM_LEN / 2) < 0)
				_exit(4);
			reply(out, "k", 1);
		} else if (c == 'W') { /* reap any child, as a hypervisor's SIGCHLD handler might */
			int st = 0;
			pid_t p = waitpid(-1, &st, __WALL | WNOHANG);
			int v[2] = { p, st };
			reply(out, v, sizeof(v));
		}
	}
}

static struct hv hv_start(bool shared)
{
	int c[2], r[2], w[2];
	assert_int_equal(pipe(c), 0);
	assert_int_equal(pipe(r), 0);
	assert_int_equal(pipe2(w, O_NONBLOCK), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(c[1]);
		close(r[0]);
		close(w[0]);
		hv_main(c[0], r[1], shared, w[1]);
	}
	close(c[0]);
	close(r[1]);
	close(w[1]);
	struct hv h = { .pid = pid, .cmd = c[1], .reply = r[0], .witness = w[0] };
	assert_int_equal(read(h.reply, &h.ram, sizeof(h.ram)), sizeof(h.ram));
	return h;
}

static void hv_ask(struct hv *h, char c, void *answer, size_t n)
{
	assert_int_equal(write(h->cmd, &c, 1), 1);
	assert_int_equal(read(h->reply, answer, n), (ssize_t)n);
}

static void hv_stop(struct hv *h)
{
	int st;
	assert_int_equal(write(h->cmd, "q", 1), 1);
	assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(h->cmd);
	close(h->reply);
	close(h->witness);
}

/* A struct vm holding the stand-in: attached, one verified RAM range. */
static struct vm *vm_of(struct hv *h)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	assert_non_null(vm);
	struct vmsh_err err = { 0 };
	vm->info.pid = h->pid;
	vm->kvm.tr = &vm->tr;
	vm->kvm.pid = h->pid;
	assert_int_equal(tracer_attach(&vm->tr, h->pid, &err), 0);
	vm->attached = true;
	guest_mem_init(&vm->info.mem, h->pid);
	struct guest_range r = { .gpa = 0x100000, .size = RAM_LEN, .hva = h->ram, .verified = true, .kind = "System RAM" };
	snprintf(r.backing, sizeof(r.backing), "[anon]");
	assert_int_equal(guest_mem_add(&vm->info.mem, &r), 0);
	return vm;
}

static void vm_free(struct vm *vm)
{
	tracer_close(&vm->tr);
	guest_mem_free(&vm->info.mem);
	free(vm);
}

/* VmFlags of the mapping at addr has "dc" */
static bool dontfork(pid_t pid, uint64_t addr)
{
	struct proc_vma *v;
	size_t n;
	bool dc = false;
	assert_int_equal(procfs_read_smaps(pid, &v, &n, NULL), 0);
	for (size_t i = 0; i < n; i++)
		if (v[i].start <= addr && addr < v[i].end)
			dc = v[i].dontfork;
	free(v);
	return dc;
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t want)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != want)
			return false;
	return true;
}

static void take(struct vm *vm, struct vm_snapshot *s)
{
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_prepare(vm, s, &err), 0);
	assert_int_equal(s->n_dontfork, 1);
	assert_true(s->resident >= RAM_LEN);
	assert_int_equal(tracer_stop_others(&vm->tr, &err), 0);
	int rc = vm_snapshot_take(vm, s, &err);
	tracer_resume_others(&vm->tr);
	if (rc < 0)
		fail_msg("%s", err.msg);
	assert_true(s->copy.pid > 0);
}

static void test_the_image_stays_as_it_was_while_the_process_writes(void **state)
{
	struct hv h = hv_start(false);
	struct vm *vm = vm_of(&h);
	struct vm_snapshot s;
	take(vm, &s);
	kvm_vm_release(&vm->kvm); /* let go: the stand-in runs freely, as during a dump */
	assert_true(dontfork(h.pid, h.ram)); /* the hypervisor's own setting is back */
	char k;
	hv_ask(&h, 'B', &k, 1);
	uint8_t *buf = malloc(RAM_LEN);
	assert_non_null(buf);
	assert_int_equal(remote_read(h.pid, h.ram, buf, RAM_LEN), RAM_LEN);
	assert_true(all_bytes(buf, RAM_LEN, 'B'));
	assert_int_equal(vm_snapshot_read(&s, &vm->info.mem, 0x100000, buf, RAM_LEN), 0);
	assert_true(all_bytes(buf, RAM_LEN, 'A'));
	/* outside the ranges: refused */
	assert_int_equal(vm_snapshot_read(&s, &vm->info.mem, 0x100000 + RAM_LEN - 8, buf, 16), -1);
	pid_t copy = s.copy.pid;
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_drop(vm, &s, &err), 0);
	assert_false(vm->tr.attached); /* let go again after reaping */
	/* gone without a trace: no such process, no child left to the stand-in */
	assert_int_equal(kill(copy, 0), -1);
	int v[2];
	hv_ask(&h, 'W', v, sizeof(v));
	assert_int_equal(v[0], -1); /* ECHILD: nothing to reap */
	assert_true(dontfork(h.pid, h.ram));
	free(buf);
	vm_free(vm);
	hv_stop(&h);
}

/* vmsh dies with the copy alive: the kernel lets the copy go, and all it
 * runs is the stub's exit_group(0) - none of the hypervisor's code. */
static void test_a_copy_let_go_only_exits(void **state)
{
	struct hv h = hv_start(false);
	struct vm *vm = vm_of(&h);
	struct vm_snapshot s;
	take(vm, &s);
	kvm_vm_release(&vm->kvm);
	pid_t copy = s.copy.pid;
	assert_int_equal(ptrace(PTRACE_DETACH, copy, 0, 0), 0);
	int v[2] = { 0, 0 };
	for (int i = 0; i < 500 && v[0] <= 0; i++) {
		hv_ask(&h, 'W', v, sizeof(v));
		if (v[0] <= 0)
			usleep(2000);
	}
	assert_int_equal(v[0], s.copy.ns_pid);
	assert_true(WIFEXITED(v[1]) && WEXITSTATUS(v[1]) == 0);
	s.copy.pid = 0; /* reaped by the stand-in itself */
	s.copy.ended = false;
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_drop(vm, &s, &err), 0);
	vm_free(vm);
	hv_stop(&h);
}

static bool is_zombie(pid_t pid)
{
	char path[64], buf[512] = "";
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *close = strrchr(buf, ')');
	return close && close[1] == ' ' && close[2] == 'Z';
}

/* ... and a later vmsh reaps what that left, never the hypervisor's own
 * children. */
static void test_a_later_run_reaps_the_copy_a_killed_vmsh_left(void **state)
{
	struct hv h = hv_start(false);
	struct vm *vm = vm_of(&h);
	struct vm_snapshot s;
	take(vm, &s);
	kvm_vm_release(&vm->kvm);
	pid_t copy = s.copy.pid;
	assert_int_equal(ptrace(PTRACE_DETACH, copy, 0, 0), 0);
	for (int i = 0; i < 500 && !is_zombie(copy); i++)
		usleep(2000);
	assert_true(is_zombie(copy));
	int own;
	hv_ask(&h, 'F', &own, sizeof(own));
	for (int i = 0; i < 500 && !is_zombie(own); i++)
		usleep(2000);
	assert_true(is_zombie(own));
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_hold(vm, &err), 0);
	assert_int_equal(vm_snapshot_reap_leftovers(vm), 1);
	vm_let_go(vm);
	assert_int_equal(kill(copy, 0), -1);
	int v[2];
	hv_ask(&h, 'W', v, sizeof(v)); /* its own child is still there for it */
	assert_int_equal(v[0], own);
	assert_true(WIFEXITED(v[1]) && WEXITSTATUS(v[1]) == 7);
	s.copy.pid = 0;
	s.copy.ended = false;
	assert_int_equal(vm_snapshot_drop(vm, &s, &err), 0);
	vm_free(vm);
	hv_stop(&h);
}

/* The copy holds no file of the hypervisor's itself (it shares the fd
 * table): a pipe the hypervisor closes reaches EOF while the copy lives;
 * and every signal is blocked in it. */
static void test_the_copy_holds_no_file_and_takes_no_signal(void **state)
{
	struct hv h = hv_start(false);
	struct vm *vm = vm_of(&h);
	struct vm_snapshot s;
	take(vm, &s);
	kvm_vm_release(&vm->kvm);
	char k;
	hv_ask(&h, 'C', &k, 1);
	assert_int_equal(read(h.witness, &k, 1), 0); /* EOF: no write end left anywhere */
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", s.copy.pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	unsigned long long blocked = 0;
	while (fgets(line, sizeof(line), f))
		sscanf(line, "SigBlk: %llx", &blocked);
	fclose(f);
	assert_true(blocked & (1ULL << (SIGINT - 1)));
	assert_true(blocked & (1ULL << (SIGTERM - 1)));
	assert_true(blocked & (1ULL << (SIGHUP - 1)));
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_drop(vm, &s, &err), 0);
	vm_free(vm);
	hv_stop(&h);
}

/* The hypervisor unmaps part of guest RAM between the look at its mappings
 * and the fork: refused, nothing changed, no copy made. */
static void test_a_remap_before_the_fork_is_refused(void **state)
{
	struct hv h = hv_start(false);
	struct vm *vm = vm_of(&h);
	struct vm_snapshot s;
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_prepare(vm, &s, &err), 0);
	kvm_vm_release(&vm->kvm);
	char k;
	hv_ask(&h, 'R', &k, 1);
	assert_true(dontfork(h.pid, h.ram));
	assert_int_equal(vm_hold(vm, &err), 0);
	assert_int_equal(tracer_stop_others(&vm->tr, &err), 0);
	int rc = vm_snapshot_take(vm, &s, &err);
	tracer_resume_others(&vm->tr);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err.msg, "mappings of guest RAM changed"));
	assert_int_equal(s.copy.pid, 0);
	assert_true(dontfork(h.pid, h.ram)); /* not touched */
	assert_int_equal(vm_snapshot_drop(vm, &s, &err), 0);
	vm_let_go(vm);
	int v[2];
	hv_ask(&h, 'W', v, sizeof(v));
	assert_int_equal(v[0], -1);
	vm_free(vm);
	hv_stop(&h);
}

static void test_shared_ram_is_refused_with_its_reason(void **state)
{
	struct hv h = hv_start(true);
	struct vm *vm = vm_of(&h);
	vm->info.mem.r[0].shared = true; /* as guest_mem reports a MAP_SHARED backing */
	struct vm_snapshot s;
	struct vmsh_err err = { 0 };
	assert_int_equal(vm_snapshot_prepare(vm, &s, &err), -1);
	assert_non_null(strstr(err.msg, "shared memory"));
	/* and from the hypervisor's own mappings, whatever the range says */
	vm->info.mem.r[0].shared = false;
	memset(&err, 0, sizeof(err));
	assert_int_equal(vm_snapshot_prepare(vm, &s, &err), -1);
	assert_non_null(strstr(err.msg, "shared memory"));
	vm_free(vm);
	hv_stop(&h);
}

static void test_smaps_flags_are_parsed(void **state)
{
	const char *text = "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n"
			   "Size:               4096 kB\n"
			   "Rss:                2048 kB\n"
			   "AnonHugePages:         0 kB\n"
			   "VmFlags: rd wr mr mw me dc ac sd \n"
			   "7f0000400000-7f0000600000 rw-s 00000000 00:01 42 /memfd:ram (deleted)\n"
			   "Rss:                9999999 kB\n"
			   "VmFlags: rd wr sh mr mw me ms sd\n"
			   "7f0000600000-7f0000800000 rw-p 00000000 00:0f 7 /dev/hugepages/x\n"
			   "VmFlags: rd wr mr mw me de ht sd\n";
	struct proc_vma *v;
	size_t n;
	assert_int_equal(procfs_parse_smaps(text, &v, &n, NULL), 0);
	assert_int_equal(n, 3);
	assert_true(v[0].dontfork && !v[0].shared && !v[0].hugetlb);
	assert_int_equal(v[0].rss, 2048 << 10);
	assert_true(!v[1].dontfork && v[1].shared);
	assert_int_equal(v[1].rss, 0); /* more than the mapping's size: not believed */
	assert_true(v[2].hugetlb && !v[2].dontfork);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_smaps_flags_are_parsed),
		cmocka_unit_test(test_the_image_stays_as_it_was_while_the_process_writes),
		cmocka_unit_test(test_a_copy_let_go_only_exits),
		cmocka_unit_test(test_a_later_run_reaps_the_copy_a_killed_vmsh_left),
		cmocka_unit_test(test_the_copy_holds_no_file_and_takes_no_signal),
		cmocka_unit_test(test_a_remap_before_the_fork_is_refused),
		cmocka_unit_test(test_shared_ram_is_refused_with_its_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
