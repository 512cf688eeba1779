/* elfcore.c - format a guest's memory and vCPUs as an ELF64 core (elfcore.h). */
#include "guest/elfcore.h"

#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/procfs.h>
#include <unistd.h>

#define PAGE 4096u
#define CHUNK (1u << 20)
#define NOTE_ALIGN 4u /* what kdump and crash use for ELF64 cores */

static size_t align_up(size_t v, size_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static size_t note_size(size_t namesz, size_t descsz)
{
	return sizeof(Elf64_Nhdr) + align_up(namesz, NOTE_ALIGN) + align_up(descsz, NOTE_ALIGN);
}

static size_t put_note(uint8_t *p, const char *name, uint32_t type, const void *desc, size_t descsz)
{
	size_t namesz = strlen(name) + 1;
	Elf64_Nhdr h = { .n_namesz = (Elf64_Word)namesz, .n_descsz = (Elf64_Word)descsz, .n_type = type };
	size_t off = 0;
	memcpy(p, &h, sizeof(h));
	off += sizeof(h);
	memset(p + off, 0, align_up(namesz, NOTE_ALIGN));
	memcpy(p + off, name, namesz);
	off += align_up(namesz, NOTE_ALIGN);
	memset(p + off, 0, align_up(descsz, NOTE_ALIGN));
	memcpy(p + off, desc, descsz);
	return off + align_up(descsz, NOTE_ALIGN);
}

static void prstatus_of(const struct core_vcpu *v, struct elf_prstatus *ps)
{
	const struct kvm_regs *r = &v->regs;
	const struct kvm_sregs *s = &v->sregs;
	memset(ps, 0, sizeof(*ps));
	ps->pr_pid = v->index + 1; /* gdb shows vCPU n as thread n+1; 0 is not a thread id */
	/* user_regs_struct order */
	unsigned long long g[] = { r->r15, r->r14, r->r13, r->r12, r->rbp, r->rbx, r->r11, r->r10, r->r9,
				   r->r8, r->rax, r->rcx, r->rdx, r->rsi, r->rdi, r->rax /* orig_rax */,
				   r->rip, s->cs.selector, r->rflags, r->rsp, s->ss.selector, s->fs.base,
				   s->gs.base, s->ds.selector, s->es.selector, s->fs.selector, s->gs.selector };
	_Static_assert(sizeof(g) == sizeof(ps->pr_reg), "user_regs_struct has 27 registers");
	memcpy(&ps->pr_reg, g, sizeof(g));
}

static size_t notes_size(const struct core_opts *o)
{
	size_t n = o->n_vcpus * note_size(5, sizeof(struct elf_prstatus));
	if (o->vmcoreinfo)
		n += note_size(strlen("VMCOREINFO") + 1, strlen(o->vmcoreinfo));
	return n;
}

static size_t n_phdrs(const struct core_opts *o)
{
	return 1 + o->n_segs + (o->ktext_size ? 1 : 0);
}

static size_t data_start(const struct core_opts *o)
{
	return align_up(sizeof(Elf64_Ehdr) + n_phdrs(o) * sizeof(Elf64_Phdr) + notes_size(o), PAGE);
}

size_t core_headers(const struct core_opts *o, uint8_t *buf, size_t cap)
{
	size_t start = data_start(o);
	if (start > cap)
		return 0;
	memset(buf, 0, start);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)buf;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_ident[EI_OSABI] = ELFOSABI_NONE;
	eh->e_type = ET_CORE;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = (Elf64_Half)n_phdrs(o);

	Elf64_Phdr *ph = (Elf64_Phdr *)(buf + eh->e_phoff);
	size_t note_off = sizeof(Elf64_Ehdr) + n_phdrs(o) * sizeof(Elf64_Phdr);
	ph[0] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = note_off, .p_filesz = notes_size(o), .p_align = 0 };
	uint64_t off = start;
	for (size_t i = 0; i < o->n_segs; i++) {
		const struct core_segment *s = &o->segs[i];
		ph[1 + i] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X, .p_offset = off,
					  .p_vaddr = s->vaddr, .p_paddr = s->gpa, .p_filesz = s->size,
					  .p_memsz = s->size, .p_align = 0 };
		if (o->ktext_size && o->ktext_paddr >= s->gpa && o->ktext_paddr - s->gpa < s->size) {
			uint64_t in = o->ktext_paddr - s->gpa;
			uint64_t len = o->ktext_size < s->size - in ? o->ktext_size : s->size - in;
			ph[1 + o->n_segs] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_W | PF_X,
							  .p_offset = off + in, .p_vaddr = o->ktext_vaddr,
							  .p_paddr = o->ktext_paddr, .p_filesz = len, .p_memsz = len };
		}
		off += s->size;
	}
	/* an alias whose physical range is in no segment stays a harmless empty PT_LOAD */
	if (o->ktext_size && ph[1 + o->n_segs].p_type != PT_LOAD)
		ph[1 + o->n_segs] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = start, .p_vaddr = o->ktext_vaddr,
						  .p_paddr = o->ktext_paddr };

	uint8_t *p = buf + note_off;
	for (size_t i = 0; i < o->n_vcpus; i++) {
		struct elf_prstatus ps;
		prstatus_of(&o->vcpus[i], &ps);
		p += put_note(p, "CORE", NT_PRSTATUS, &ps, sizeof(ps));
	}
	if (o->vmcoreinfo)
		p += put_note(p, "VMCOREINFO", 0, o->vmcoreinfo, strlen(o->vmcoreinfo));
	return start;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];
	return memcmp(p, zero, PAGE) == 0;
}

/* One chunk: nonzero runs written, zero pages skipped with lseek when the
 * output can have holes. */
static int put_chunk(int fd, bool seekable, const uint8_t *buf, size_t len, struct core_stats *st)
{
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		bool zero = seekable && page_is_zero(buf + i);
		while (j < len && (seekable && page_is_zero(buf + j)) == zero)
			j += PAGE;
		if (zero) {
			if (lseek(fd, (off_t)(j - i), SEEK_CUR) < 0)
				return -1;
			st->zero_bytes += j - i;
		} else if (write_all(fd, buf + i, j - i) < 0) {
			return -1;
		}
		i = j;
	}
	return 0;
}

int core_write(int fd, const struct core_opts *o, struct core_stats *st, struct vmsh_err *err)
{
	memset(st, 0, sizeof(*st));
	uint64_t total = 0;
	for (size_t i = 0; i < o->n_segs; i++) {
		const struct core_segment *s = &o->segs[i];
		if ((s->gpa | s->size) & (PAGE - 1) || !s->size || (i && s->gpa < o->segs[i - 1].gpa + o->segs[i - 1].size))
			return vmsh_error(err, EINVAL, "core: segment %zu (%#llx+%#llx) not page-aligned, empty or unsorted",
					  i, (unsigned long long)s->gpa, (unsigned long long)s->size);
		total += s->size;
	}
	size_t hsize = data_start(o);
	uint8_t *buf = malloc(hsize > CHUNK ? hsize : CHUNK);
	if (!buf)
		return vmsh_error(err, ENOMEM, "core buffer");
	int rc = -1;
	core_headers(o, buf, hsize);
	bool seekable = lseek(fd, 0, SEEK_CUR) == 0;
	if (write_all(fd, buf, hsize) < 0) {
		vmsh_error(err, errno, "write core headers");
		goto out;
	}
	uint64_t done = 0, last = 0;
	for (size_t i = 0; i < o->n_segs; i++) {
		const struct core_segment *s = &o->segs[i];
		for (uint64_t at = 0; at < s->size; at += CHUNK) {
			size_t len = s->size - at < CHUNK ? (size_t)(s->size - at) : CHUNK;
			if (o->read(o->opaque, s->gpa + at, buf, len) < 0) {
				vmsh_error(err, errno ? errno : EIO, "read guest memory at %#llx",
					   (unsigned long long)(s->gpa + at));
				goto out;
			}
			if (put_chunk(fd, seekable, buf, len, st) < 0) {
				vmsh_error(err, errno, "write core");
				goto out;
			}
			done += len;
			if (o->progress && done - last >= (64u << 20)) {
				o->progress(o->progress_opaque, done, total);
				last = done;
			}
		}
	}
	st->ram_bytes = total;
	st->file_size = hsize + total;
	/* trailing holes: give the file its full length */
	if (seekable && ftruncate(fd, (off_t)st->file_size) < 0) {
		vmsh_error(err, errno, "set the core's size");
		goto out;
	}
	if (o->progress)
		o->progress(o->progress_opaque, done, total);
	rc = 0;
out:
	free(buf);
	return rc;
}
