/* stub.c - encoding of the injection stub (see stub.h). */
#include "tracer/stub.h"

#include <stdbool.h>
#include <string.h>

/* data slots after the code, one u64 each; 0-15 are x86 register numbers */
enum {
	D_RAX, D_RCX, D_RDX, D_RBX, D_RSP, D_RBP, D_RSI, D_RDI,
	D_R8, D_R9, D_R10, D_R11, D_R12, D_R13, D_R14, D_R15,
	D_RIP, D_RFLAGS, D_TMP_RSP, D_COUNT
};
_Static_assert(STUB_CODE_MAX + D_COUNT * 8 == STUB_SITE_SIZE, "stub layout");

#define RED_ZONE 128

struct emitter {
	uint8_t *p;
	size_t off;
};

static void emit(struct emitter *e, const uint8_t *bytes, size_t n)
{
	memcpy(e->p + e->off, bytes, n);
	e->off += n;
}

/* disp32 to data slot d, for an instruction ending right after it */
static void emit_slot(struct emitter *e, int d)
{
	int32_t disp = (int32_t)(STUB_CODE_MAX + 8 * d) - (int32_t)(e->off + 4);
	emit(e, (const uint8_t *)&disp, 4);
}

/* mov r64, [rip + slot r] */
static void emit_load(struct emitter *e, int reg, int d)
{
	uint8_t rex = 0x48 | (reg >= 8 ? 0x04 : 0); /* REX.W, REX.R for r8-r15 */
	emit(e, (const uint8_t[]){ rex, 0x8b, (uint8_t)(((reg & 7) << 3) | 0x05) }, 3);
	emit_slot(e, d);
}

/* The process copy a clone made from the stub returns from the syscall
 * with rax 0: it ends there (exit_group(0), a raw syscall: no atexit
 * handler, no buffer flushed, nothing of the hypervisor's code run). */
static void emit_child_exits(struct emitter *e)
{
	static const uint8_t code[] = {
		0x48, 0x85, 0xc0,             /* test rax, rax */
		0x75, 0x09,                   /* jnz  parent (+9) */
		0xb8, 0xe7, 0x00, 0x00, 0x00, /* mov  eax, 231 (exit_group) */
		0x31, 0xff,                   /* xor  edi, edi */
		0x0f, 0x05,                   /* syscall */
	};
	emit(e, code, sizeof(code));
}

static void build(const struct user_regs_struct *r, uint8_t site[STUB_SITE_SIZE], bool fork)
{
	memset(site, 0xcc, STUB_CODE_MAX); /* int3 */
	struct emitter e = { .p = site };
	emit(&e, (const uint8_t[]){ 0x0f, 0x05 }, 2); /* syscall */
	if (fork)
		emit_child_exits(&e);
	emit_load(&e, D_RSP, D_TMP_RSP);
	emit(&e, (const uint8_t[]){ 0xff, 0x35 }, 2); /* push qword [rip + rflags] */
	emit_slot(&e, D_RFLAGS);
	emit(&e, (const uint8_t[]){ 0x9d }, 1);       /* popfq */
	for (int reg = 0; reg < 16; reg++)
		if (reg != D_RSP)
			emit_load(&e, reg, reg);
	emit_load(&e, D_RSP, D_RSP);
	emit(&e, (const uint8_t[]){ 0xff, 0x25 }, 2); /* jmp qword [rip + rip slot] */
	emit_slot(&e, D_RIP);

	uint64_t v[D_COUNT] = {
		[D_RAX] = r->rax, [D_RCX] = r->rcx, [D_RDX] = r->rdx, [D_RBX] = r->rbx,
		[D_RSP] = r->rsp, [D_RBP] = r->rbp, [D_RSI] = r->rsi, [D_RDI] = r->rdi,
		[D_R8] = r->r8,   [D_R9] = r->r9,   [D_R10] = r->r10, [D_R11] = r->r11,
		[D_R12] = r->r12, [D_R13] = r->r13, [D_R14] = r->r14, [D_R15] = r->r15,
		[D_RIP] = r->rip, [D_RFLAGS] = r->eflags,
		[D_TMP_RSP] = (r->rsp - RED_ZONE - STUB_STACK_USE) & ~15ULL,
	};
	memcpy(site + STUB_CODE_MAX, v, sizeof(v));
}

void stub_build(const struct user_regs_struct *r, uint8_t site[STUB_SITE_SIZE])
{
	build(r, site, false);
}

void stub_build_fork(const struct user_regs_struct *r, uint8_t site[STUB_SITE_SIZE])
{
	build(r, site, true);
}
