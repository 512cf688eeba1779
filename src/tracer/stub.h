/* stub.h - the injection stub: a few instructions written into the
 * hypervisor so that an injected syscall is always followed by a return to
 * exactly where the thread was, even if vmsh dies (SIGKILL) meanwhile:
 *
 *   stub:  syscall                     ; the injected call
 *          mov   rsp, [tmp_rsp]        ; below the thread's red zone
 *          push  [rflags] ; popfq
 *          mov   rax..r15, [saved.*]   ; every GPR but rsp
 *          mov   rsp, [saved.rsp]
 *          jmp   [saved.rip]           ; the thread's own code
 *
 * Every operand is RIP-relative, so the bytes are the same at any address,
 * and the saved registers follow the code, read-only. The site is padding
 * the process never executes (the tail of an executable segment's last page,
 * see inject.c), so no syscall is needed to create it. */
#ifndef VMSH_STUB_H
#define VMSH_STUB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/user.h>

#define STUB_CODE_MAX 160
#define STUB_SITE_SIZE (STUB_CODE_MAX + 19 * 8)
/* bytes of the thread's stack below its red zone the stub may use */
#define STUB_STACK_USE 64

/* The stub for a thread whose registers (an interrupted syscall already set
 * up to restart) are `regs`: STUB_SITE_SIZE bytes, code first. */
void stub_build(const struct user_regs_struct *regs, uint8_t site[STUB_SITE_SIZE]);
/* The same for an injected clone/fork: right after the syscall, the copy
 * (rax 0) calls exit_group(0); the caller (rax = the copy's pid, or an
 * error) goes on as above. Should vmsh die at any point, the copy never runs
 * a single instruction of the hypervisor's own. */
void stub_build_fork(const struct user_regs_struct *regs, uint8_t site[STUB_SITE_SIZE]);

#endif
