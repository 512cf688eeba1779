/* entry.S - how the kernel library is entered and left.
 *
 * vmsh_entry: vmsh points a halted vCPU's RIP here and its RSP 512 bytes
 * below where it was; the original RIP and RSP are in vmsh_channel. Every
 * register and the flags are saved and restored; the vCPU then continues
 * exactly where it was.
 *
 * vmsh_work_fn: the work item. After its body it marks the channel DONE by
 * tail-jumping into the kernel's memset, so that once vmsh sees DONE no
 * instruction of ours is still to run on that worker. */
#define OFF_ORIG_RIP 8
#define OFF_ORIG_RSP 16
#define OFF_STATE 24
#define STATE_DONE 2

	.text
	.globl vmsh_entry
	.type vmsh_entry, @function
vmsh_entry:
	endbr64
	pushfq
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	/* 16 pushes from a 16-byte aligned rsp: aligned again for the call */
	cld
	movabs $vmsh_entry_c, %rax
	call *%rax
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	popfq
	mov vmsh_channel+OFF_ORIG_RSP(%rip), %rsp
	jmp *vmsh_channel+OFF_ORIG_RIP(%rip)
	.size vmsh_entry, .-vmsh_entry

	.globl vmsh_work_fn
	.type vmsh_work_fn, @function
vmsh_work_fn:
	endbr64
	push %rbx
	movabs $vmsh_work_body, %rax
	call *%rax
	pop %rbx
	movabs $vmsh_channel+OFF_STATE, %rdi
	mov $STATE_DONE, %esi
	mov $1, %edx
	movabs $memset, %rax
	jmp *%rax
	.size vmsh_work_fn, .-vmsh_work_fn

	.section .note.GNU-stack,"",@progbits
