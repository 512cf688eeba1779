/* entry.S - how the kernel library is entered and left.
 *
 * vmsh_borrow_entry: vmsh stops a vCPU where it may take an interrupt (halted
 * in the idle loop, running user code, or kernel code with interrupts on),
 * saves its state, and points it here with interrupts off, on the library's
 * own stack, the kernel's code and stack segments, GS base and page tables
 * (include/vmsh/channel.h, struct vmsh_borrow). vmsh_borrow_c only queues an
 * irq_work; the stub then spins in [vmsh_borrow_spin, vmsh_borrow_spin_end)
 * until deadline_ms have passed (vmsh gives 0) and returns by itself where
 * it can (ret_mode): registers from vmsh_borrow, the GS base for user mode,
 * and iretq to the saved frame. Where it cannot (VMSH_RET_HOST) it spins
 * until vmsh stops the vCPU there and puts its saved state back. The
 * irq_work fires in the guest's own interrupt path as soon as the vCPU has
 * interrupts on again, and queues the work item.
 *
 * vmsh_work_fn: the work item. After its body it marks the channel DONE by
 * tail-jumping into the kernel's memcpy (one byte, from a constant of
 * ours: read before the write), so that once vmsh sees DONE no
 * instruction of ours is still to run on that worker. memcpy, not memset:
 * a kernel built with few options may have no memset at all (every call
 * inlined, arch/x86/lib's object not linked, nothing exported: seen on a
 * tinyconfig kernel without modules).
 *
 * vmsh_waiter_fn: the library's kernel thread (vmsh_waiter_body waits for
 * the host's word and does the removal). Its end is the work item's, and
 * where vmsh_waiter_body returns an address (vmsh's page-table entry that
 * links the library into the kernel's tables, checked to hold vmsh's
 * value), the last store clears that entry instead, through the kernel's
 * memcpy from its zero page: nothing of the library is read or run after
 * it, and the library is no longer reachable. The state is marked DONE
 * just before (the library's own store: still mapped then), so vmsh takes
 * DONE with self_unlink set as "nearly": only the cleared entry says that
 * the thread is out (it may be preempted between the two stores). */
#define OFF_STATE 8
#define STATE_DONE 2

#define B_STATE 0
#define B_RET_MODE 8
#define B_DEADLINE_TSC 24
#define B_USER_GS 32
#define B_FRAME 40
#define B_GPR 80
#define BORROW_SELF_RETURNED 3
#define RET_HOST 0
#define RET_USER 2
#define MSR_GS_BASE 0xc0000101

	.text
	.globl vmsh_borrow_entry
	.type vmsh_borrow_entry, @function
vmsh_borrow_entry:
	endbr64
	cld
	movabs $vmsh_borrow_c, %rax
	call *%rax
	movabs $vmsh_borrow, %rbx
	.globl vmsh_borrow_spin
vmsh_borrow_spin:
	pause
	cmpq $RET_HOST, B_RET_MODE(%rbx)
	je vmsh_borrow_spin
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	cmp B_DEADLINE_TSC(%rbx), %rax
	jb vmsh_borrow_spin
	.globl vmsh_borrow_spin_end
vmsh_borrow_spin_end:
	movq $BORROW_SELF_RETURNED, B_STATE(%rbx)
	pushq B_FRAME+32(%rbx)
	pushq B_FRAME+24(%rbx)
	pushq B_FRAME+16(%rbx)
	pushq B_FRAME+8(%rbx)
	pushq B_FRAME+0(%rbx)
	cmpq $RET_USER, B_RET_MODE(%rbx)
	jne 1f
	mov $MSR_GS_BASE, %ecx
	mov B_USER_GS(%rbx), %eax
	mov B_USER_GS+4(%rbx), %edx
	wrmsr
1:
	mov B_GPR+0(%rbx), %rax
	mov B_GPR+16(%rbx), %rcx
	mov B_GPR+24(%rbx), %rdx
	mov B_GPR+32(%rbx), %rsi
	mov B_GPR+40(%rbx), %rdi
	mov B_GPR+48(%rbx), %rbp
	mov B_GPR+56(%rbx), %r8
	mov B_GPR+64(%rbx), %r9
	mov B_GPR+72(%rbx), %r10
	mov B_GPR+80(%rbx), %r11
	mov B_GPR+88(%rbx), %r12
	mov B_GPR+96(%rbx), %r13
	mov B_GPR+104(%rbx), %r14
	mov B_GPR+112(%rbx), %r15
	mov B_GPR+8(%rbx), %rbx
	iretq
	.size vmsh_borrow_entry, .-vmsh_borrow_entry

	.globl vmsh_work_fn
	.type vmsh_work_fn, @function
vmsh_work_fn:
	endbr64
	push %rbx
	movabs $vmsh_work_body, %rax
	call *%rax
	pop %rbx
vmsh_mark_done:
	movabs $vmsh_channel+OFF_STATE, %rdi
	movabs $vmsh_state_done, %rsi
	mov $1, %edx
	movabs $memcpy, %rax
	jmp *%rax
	.size vmsh_work_fn, .-vmsh_work_fn

	.globl vmsh_waiter_fn
	.type vmsh_waiter_fn, @function
vmsh_waiter_fn:
	endbr64
	push %rbx
	movabs $vmsh_waiter_body, %rax
	call *%rax
	pop %rbx
	test %rax, %rax
	jz vmsh_mark_done
	movabs $vmsh_channel+OFF_STATE, %rdi
	movb $STATE_DONE, (%rdi)
	mov %rax, %rdi
	movabs $empty_zero_page, %rsi
	mov $8, %edx
	movabs $memcpy, %rax
	jmp *%rax
	.size vmsh_waiter_fn, .-vmsh_waiter_fn
	.weak empty_zero_page

	.section .rodata
vmsh_state_done:
	.byte STATE_DONE

	.section .note.GNU-stack,"",@progbits
