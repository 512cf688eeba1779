/* cmd_coredump.c - `vmsh coredump`: a running VM's RAM and vCPU registers as
 * an ELF core file that crash and gdb open (format: guest/elfcore.h).
 *
 * Only RAM the memory map ties to a hypervisor mapping is dumped (the ranges
 * inspect marks verified); holes and device memory are left out.  The guest's
 * kernel is found first (core/vm.h), which gives the KASLR offset and phys_base
 * for the VMCOREINFO note crash reads.
 *
 *   (default) the registers and a copy-on-write image of guest RAM (a fork
 *            run inside the hypervisor, core/snapshot.h) in one stop of
 *            milliseconds; the copy is written from the image while the
 *            guest runs: consistent and short. Where no such image can be
 *            made (shared-memory RAM, not enough free memory), it says why
 *            and falls back to --stop.
 *   --stop   the vCPUs stay stopped from the register read to the last byte:
 *            a consistent image, the VM paused for the whole copy
 *   --live   registers read in vm_open's brief stop, memory copied while the
 *            guest runs: a stop of milliseconds, but memory changes during
 *            the copy (say so when reading the dump) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/vmlist.h"
#include "common/clock.h"
#include "core/snapshot.h"
#include "core/vm.h"
#include "guest/elfcore.h"
#include "tracer/tracer.h"

#define PAGE 4096ULL
#define KERNEL_MAP_START 0xffffffff80000000ULL /* __START_KERNEL_map */
#define KERNEL_TEXT_DEFAULT 0xffffffff81000000ULL

enum dump_mode { DUMP_SNAPSHOT, DUMP_STOP, DUMP_LIVE };

struct dump_run {
	enum dump_mode mode;
	bool mode_given;      /* on the command line: no fallback */
	bool force, progress;
	bool writing;         /* the file is being written (no fallback from here) */
	char fallback[1100];  /* why the default snapshot could not be made */
	const char *path;     /* final name, or "-" */
	int fd;
	struct core_stats st;
	uint64_t stopped_ns;  /* vCPUs stopped for the dump (--stop) */
	uint64_t t0;
	size_t n_segs, n_skipped;
};

#define OPT_STOP 0x200 /* long only: -s is inspect's --symbol */
#define OPT_SNAPSHOT 0x201

static void usage(FILE *out)
{
	fprintf(out, "usage: vmsh coredump [--snapshot|--stop|-l] [-F] [--vm-fd FD] PID|NAME [FILE|-]\n\n"
		     "Write the running VM's RAM and vCPU registers as an ELF core file (default\n"
		     "vmsh-NAME-YYYYmmdd-HHMMSS.core; - for standard output) that crash and gdb open with\n"
		     "the guest's vmlinux. By default the VM stops for milliseconds: a copy-on-write image\n"
		     "of its RAM is taken (a fork inside the hypervisor) and written while the guest runs;\n"
		     "where none can be taken, vmsh says why and does --stop. --stop keeps the VM stopped\n"
		     "for the whole copy; --live copies while the guest runs (memory may change during\n"
		     "the copy). An existing FILE is replaced only with --force.\n\n"
		     "options:\n"
		     "      --snapshot  a copy-on-write image, or an error (the default, with --stop as the fallback)\n"
		     "      --stop      the VM stopped for the whole copy\n"
		     "  -l, --live      copy while the guest runs\n"
		     "  -F, --force     replace an existing FILE\n"
		     "      --vm-fd FD  the hypervisor's VM fd, when it has more than one VM\n"
		     "  -h, --help      this help\n");
}

static int read_guest(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	return guest_mem_read(opaque, gpa, buf, len);
}

struct snap_source {
	const struct vm_snapshot *snap;
	const struct guest_mem *mem;
};

static int read_snapshot(void *opaque, uint64_t gpa, void *buf, size_t len)
{
	const struct snap_source *src = opaque;
	return vm_snapshot_read(src->snap, src->mem, gpa, buf, len);
}

static void show_progress(void *opaque, uint64_t done, uint64_t total)
{
	struct dump_run *run = opaque;
	if (!run->progress)
		return;
	double secs = (now_ns() - run->t0) / 1e9;
	double rate = secs > 0 ? done / secs : 0;
	fprintf(stderr, "\rvmsh coredump: %llu of %llu MiB, %.0f MiB/s, %.0f s left   ",
		(unsigned long long)(done >> 20), (unsigned long long)(total >> 20), rate / (1 << 20),
		rate > 0 ? (total - done) / rate : 0.0);
	if (done == total)
		fputc('\n', stderr);
}

/* The guest's release as one printable word (guest text, going into a file
 * and onto the terminal). */
static void release_of(const struct guest_kernel *k, char *out, size_t cap)
{
	size_t j = 0;
	for (size_t i = 0; i < sizeof(k->version) && k->version[i] && j + 1 < cap; i++)
		if (k->version[i] > ' ' && k->version[i] < 0x7f)
			out[j++] = k->version[i];
	out[j] = '\0';
}

/* kdump's VMCOREINFO text, from what vmsh found: crash takes the KASLR
 * offset and phys_base from it. */
static void vmcoreinfo(const struct vm_info *res, const char *release, char *out, size_t cap)
{
	const struct guest_kernel *k = &res->kernel;
	/* __pa_symbol(x) = x - __START_KERNEL_map + phys_base, printed signed
	 * as the kernel does (KASLR makes it negative) */
	int64_t phys_base = (int64_t)(k->phys_base - (k->text_base - KERNEL_MAP_START));
	snprintf(out, cap,
		 "OSRELEASE=%s\nPAGESIZE=4096\nKERNELOFFSET=%llx\nNUMBER(phys_base)=%lld\nSYMBOL(_stext)=%llx\n",
		 release, (unsigned long long)(k->text_base - KERNEL_TEXT_DEFAULT), (long long)phys_base,
		 (unsigned long long)k->text_base);
}

/* The kernel's direct map base (page_offset_base, randomized with KASLR);
 * guest data, used only to label the dump's virtual addresses. */
static uint64_t direct_map_base(struct vm_info *res)
{
	uint64_t va, base = 0;
	if (ksymtab_lookup(&res->kernel.ksyms, "page_offset_base", &va) == 0 &&
	    kernel_read_virt(&res->mem, &res->kernel, va, &base, sizeof(base)) == 0 && (base >> 47) == 0x1ffff &&
	    (base & (PAGE - 1)) == 0)
		return base;
	return 0xffff888000000000ULL; /* the default without KASLR */
}

/* Verified RAM ranges, page-aligned and sorted (guest_mem keeps them sorted). */
static size_t segments(struct vm_info *res, struct core_segment *segs, size_t cap, size_t *skipped)
{
	uint64_t dm = direct_map_base(res);
	size_t n = 0;
	*skipped = 0;
	for (size_t i = 0; i < res->mem.n && n < cap; i++) {
		const struct guest_range *r = &res->mem.r[i];
		if (!r->verified || !r->hva) {
			(*skipped)++;
			continue;
		}
		uint64_t s = (r->gpa + PAGE - 1) & ~(PAGE - 1), e = (r->gpa + r->size) & ~(PAGE - 1);
		if (e <= s || (n && s < segs[n - 1].gpa + segs[n - 1].size))
			continue;
		segs[n++] = (struct core_segment){ .gpa = s, .size = e - s, .vaddr = dm + s };
	}
	return n;
}

static int write_core(struct dump_run *run, struct vm_info *res, const struct core_vcpu *vcpus, size_t nv,
		      core_read_fn read, void *opaque, struct vmsh_err *err)
{
	struct core_segment segs[64];
	size_t n = segments(res, segs, 64, &run->n_skipped);
	if (!n)
		return vmsh_error(err, 0, "no guest RAM is located in the hypervisor: nothing to dump (%s)",
				  res->mem_error[0] ? res->mem_error : "memory map empty");
	run->n_segs = n;
	char info[512], release[128];
	release_of(&res->kernel, release, sizeof(release));
	vmcoreinfo(res, release, info, sizeof(info));
	struct core_opts co = {
		.segs = segs, .n_segs = n, .vcpus = vcpus, .n_vcpus = nv, .vmcoreinfo = info,
		.ktext_vaddr = res->kernel.text_base, .ktext_paddr = res->kernel.phys_base,
		.ktext_size = res->kernel.image_size & ~(PAGE - 1), .read = read, .opaque = opaque,
		.progress = show_progress, .progress_opaque = run,
	};
	run->t0 = now_ns();
	run->writing = true;
	return core_write(run->fd, &co, &run->st, err);
}

static void vcpus_of(const struct vm_info *res, struct core_vcpu *out, size_t *n)
{
	*n = 0;
	for (size_t i = 0; i < res->n_vcpus; i++)
		if (res->vcpus[i].ok)
			out[(*n)++] = (struct core_vcpu){ .index = res->vcpus[i].index, .regs = res->vcpus[i].st.regs,
							  .sregs = res->vcpus[i].st.sregs };
}

/* Every vCPU's registers, inside a stop window. */
static int read_registers(struct kvm_vm *vm, struct core_vcpu *vc, size_t *nv, struct vmsh_err *err)
{
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		struct vcpu_state st;
		if (kvm_vcpu_get_state(vm, &vm->vcpus[i], &st, err) < 0)
			return -1;
		vc[(*nv)++] = (struct core_vcpu){ .index = vm->vcpus[i].index, .regs = st.regs, .sregs = st.sregs };
	}
	return 0;
}

/* --stop: the hypervisor held again, every thread of it stopped, registers
 * read afresh, then the whole copy. */
static int dump_stopped(struct dump_run *run, struct vm *v, struct vmsh_err *err)
{
	struct kvm_vm *vm = &v->kvm;
	struct vm_info *res = &v->info;
	if (vm_hold(v, err) < 0)
		return -1;
	vm_snapshot_reap_leftovers(v);
	struct core_vcpu *vc = calloc(vm->n_vcpus ? vm->n_vcpus : 1, sizeof(*vc));
	if (!vc)
		return vmsh_error(err, ENOMEM, "coredump");
	uint64_t t0 = now_ns();
	if (tracer_stop_others(vm->tr, err) < 0) {
		free(vc);
		return -1;
	}
	size_t nv = 0;
	int rc = read_registers(vm, vc, &nv, err);
	tracer_window_is_long(vm->tr); /* all of guest memory is written in this window */
	if (rc == 0)
		rc = write_core(run, res, vc, nv, read_guest, &res->mem, err);
	tracer_resume_others(vm->tr);
	run->stopped_ns = now_ns() - t0;
	free(vc);
	return rc;
}

/* --live: the registers of vm_open's brief stop, memory copied while the
 * guest runs. */
static int dump_live(struct dump_run *run, struct vm *v, struct vmsh_err *err)
{
	struct vm_info *res = &v->info;
	struct core_vcpu *vc = calloc(res->n_vcpus ? res->n_vcpus : 1, sizeof(*vc));
	if (!vc)
		return vmsh_error(err, ENOMEM, "coredump");
	size_t nv = 0;
	vcpus_of(res, vc, &nv);
	int rc = write_core(run, res, vc, nv, read_guest, &res->mem, err);
	free(vc);
	run->stopped_ns = res->stopped_ns;
	return rc;
}

/* The default: registers and a copy-on-write image in one short stop, the
 * file written from the image while the guest runs. */
static int dump_snapshot(struct dump_run *run, struct vm *v, struct vm_snapshot *snap, struct vmsh_err *err)
{
	struct kvm_vm *vm = &v->kvm;
	struct vm_info *res = &v->info;
	if (vm_hold(v, err) < 0)
		return -1;
	vm_snapshot_reap_leftovers(v);
	struct core_vcpu *vc = calloc(vm->n_vcpus ? vm->n_vcpus : 1, sizeof(*vc));
	if (!vc)
		return vmsh_error(err, ENOMEM, "coredump");
	uint64_t t0 = now_ns();
	if (tracer_stop_others(vm->tr, err) < 0) {
		free(vc);
		return -1;
	}
	size_t nv = 0;
	int rc = read_registers(vm, vc, &nv, err);
	if (rc == 0)
		rc = vm_snapshot_take(v, snap, err);
	tracer_resume_others(vm->tr);
	run->stopped_ns = now_ns() - t0;
	vm_let_go(v); /* the hypervisor's own threads all run while the file is written */
	if (rc == 0 && getenv("VMSH_TEST_STALL_AFTER_SNAPSHOT"))
		pause(); /* tests: be killed here, with the copy made and nothing written */
	if (rc == 0) {
		struct snap_source src = { snap, &res->mem };
		rc = write_core(run, res, vc, nv, read_snapshot, &src, err);
	}
	free(vc);
	return rc;
}

/* Which dump: the snapshot if it can be made, else (unless asked for it by
 * name) --stop, saying why. */
static int dump(struct dump_run *run, struct vm *v, struct vmsh_err *err)
{
	struct vm_info *res = &v->info;
	if (!res->kernel_ok)
		return vmsh_error_kind(err, VMSH_E_NOKERNEL, 0, "guest kernel not found: %s", res->kernel_error);
	if (run->mode == DUMP_LIVE)
		return dump_live(run, v, err);
	if (run->mode == DUMP_SNAPSHOT) {
		struct vm_snapshot snap;
		struct vmsh_err e = { 0 };
		int rc = vm_snapshot_prepare(v, &snap, &e);
		if (rc == 0) {
			rc = dump_snapshot(run, v, &snap, &e);
			struct vmsh_err e2 = { 0 };
			if (vm_snapshot_drop(v, &snap, &e2) < 0)
				fprintf(stderr, "vmsh coredump: warning: %s\n", e2.msg);
			if (rc == 0)
				return 0;
			if (run->writing) { /* failed while writing the file: not the snapshot's fault */
				*err = e;
				return -1;
			}
		}
		if (run->mode_given) {
			*err = e;
			return vmsh_err_prefix(err, "no copy-on-write snapshot");
		}
		snprintf(run->fallback, sizeof(run->fallback), "%s", e.msg);
		fprintf(stderr, "vmsh coredump: no copy-on-write snapshot (%s): the VM stays stopped for the whole copy\n",
			e.msg);
		run->mode = DUMP_STOP;
	}
	return dump_stopped(run, v, err);
}

static int default_path(pid_t pid, char *out, size_t cap)
{
	struct vm_entry vi;
	struct vmsh_err e = { 0 };
	char name[128] = "";
	if (vm_entry_get(pid, &vi, &e) == 0 && vi.name[0]) {
		size_t j = 0;
		for (size_t i = 0; vi.name[i] && j + 1 < sizeof(name); i++) {
			char c = vi.name[i];
			name[j++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
						    c == '-' || c == '_' || c == '.'
					    ? c
					    : '_';
		}
		name[j] = '\0';
	} else {
		snprintf(name, sizeof(name), "%d", (int)pid);
	}
	time_t t = time(NULL);
	struct tm tm;
	localtime_r(&t, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	return snprintf(out, cap, "vmsh-%s-%s.core", name, stamp) >= (int)cap ? -1 : 0;
}

/* The file being written: without a name until it is complete (O_TMPFILE
 * in the destination's directory), so that a vmsh killed meanwhile leaves
 * nothing; where the file system has no O_TMPFILE (9p, NFS), a temporary
 * name next to the final one (tmp), removed on failure. 0600: the guest's
 * secrets. */
static int open_tmp(const char *path, char *tmp, size_t cap, struct vmsh_err *err)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	tmp[0] = '\0';
	int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	if (snprintf(tmp, cap, "%s.tmp-XXXXXX", path) >= (int)cap)
		return vmsh_error(err, ENAMETOOLONG, "%s", path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return vmsh_error(err, errno, "create a temporary file next to %s", path);
	fchmod(fd, 0600);
	return fd;
}

/* Give the complete file its name: without force never over an existing
 * file (one made since the start: EEXIST), with force replacing it. */
static int publish(int fd, const char *tmp, const char *path, bool force)
{
	char proc[64], name[4200];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (!force) {
		if (tmp[0]) {
			if (link(tmp, path) < 0)
				return -1;
			return unlink(tmp);
		}
		return linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW);
	}
	if (tmp[0])
		return rename(tmp, path);
	for (unsigned i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "%s.tmp-%u-%u", path, (unsigned)getpid(), i);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW) < 0) {
			if (errno == EEXIST)
				continue;
			return -1;
		}
		if (rename(name, path) < 0) {
			int e = errno;
			unlink(name);
			errno = e;
			return -1;
		}
		return 0;
	}
	errno = EEXIST;
	return -1;
}

int cmd_coredump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "snapshot", no_argument, 0, OPT_SNAPSHOT },
		{ "stop", no_argument, 0, OPT_STOP },
		{ "live", no_argument, 0, 'l' },
		{ "force", no_argument, 0, 'F' },
		VM_FD_OPTION,
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct dump_run run = { .mode = DUMP_SNAPSHOT, .fd = -1 };
	struct vm_target t = { .vm_fd = -1 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "lFh" VM_FD_OPTSTRING, opts, NULL)) != -1) {
		switch (c) {
		case OPT_SNAPSHOT: run.mode = DUMP_SNAPSHOT; run.mode_given = true; break;
		case OPT_STOP: run.mode = DUMP_STOP; run.mode_given = true; break;
		case 'l': run.mode = DUMP_LIVE; run.mode_given = true; break;
		case 'F': run.force = true; break;
		case OPT_VM_FD:
			if (vm_option("coredump", c, optarg, &t) < 0)
				return EXIT_VMSH_USAGE;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_VMSH_USAGE;
		}
	}
	if (optind != argc - 1 && optind != argc - 2) {
		usage(stderr);
		return EXIT_VMSH_USAGE;
	}
	int code = vm_target_resolve("coredump", argv[optind], &t);
	if (code)
		return code;
	struct vmsh_err err = { 0 };
	char path[4096], tmp[4200] = "";
	if (optind == argc - 2)
		snprintf(path, sizeof(path), "%s", argv[optind + 1]);
	else if (default_path(t.pid, path, sizeof(path)) < 0)
		return EXIT_VMSH_FAILED;
	bool to_stdout = !strcmp(path, "-");
	if (to_stdout && isatty(STDOUT_FILENO)) {
		fprintf(stderr, "vmsh coredump: standard output is a terminal: give a FILE or redirect it\n");
		return EXIT_VMSH_USAGE;
	}
	struct stat sb;
	if (!to_stdout && !run.force && lstat(path, &sb) == 0) {
		fprintf(stderr, "vmsh coredump: %s exists (--force replaces it)\n", path);
		return EXIT_VMSH_FAILED;
	}
	run.path = path;
	run.progress = isatty(STDERR_FILENO);
	run.fd = to_stdout ? STDOUT_FILENO : open_tmp(path, tmp, sizeof(tmp), &err);
	if (run.fd < 0)
		return report_error("coredump", &err);

	uint64_t t0 = now_ns();
	struct vm vm;
	int rc = vm_open_guest(&vm, t.pid, t.vm_fd, true, &err);
	if (rc == 0)
		rc = dump(&run, &vm, &err);
	vm_detach(&vm);
	const struct vm_info *r = &vm.info;
	if (rc == 0 && !to_stdout && (fsync(run.fd) < 0 || publish(run.fd, tmp, path, run.force) < 0))
		rc = vmsh_error(&err, errno, "write %s", path);
	if (!to_stdout) {
		close(run.fd);
		if (rc < 0 && tmp[0])
			unlink(tmp);
	}
	if (rc < 0) {
		vm_close(&vm);
		return report_error("coredump", &err);
	}
	char release[128];
	release_of(&r->kernel, release, sizeof(release));
	fprintf(stderr,
		"vmsh coredump: %s: %llu MiB of guest RAM in %zu ranges (%llu MiB of zero pages as holes), %zu vCPUs, "
		"Linux %s; VM stopped %.1f ms (%s), %.1f s in all\n",
		to_stdout ? "standard output" : path, (unsigned long long)(run.st.ram_bytes >> 20), run.n_segs,
		(unsigned long long)(run.st.zero_bytes >> 20), r->n_vcpus, release, run.stopped_ns / 1e6,
		run.mode == DUMP_SNAPSHOT ? "copy-on-write snapshot"
		: run.mode == DUMP_STOP  ? "for the whole copy"
					 : "live copy: memory may have changed during it",
		(now_ns() - t0) / 1e9);
	if (run.n_skipped)
		fprintf(stderr, "vmsh coredump: %zu memory ranges left out: not located in the hypervisor\n",
			run.n_skipped);
	vm_close(&vm);
	return 0;
}
