/* lib_blob.S - the kernel library object (build/guest-lib/vmsh-lib.o),
 * embedded so that vmsh is one file to copy to a hypervisor host. */
	.section .rodata
	.globl vmsh_guest_lib_start, vmsh_guest_lib_end
	.balign 16
vmsh_guest_lib_start:
	.incbin "vmsh-lib.o"
vmsh_guest_lib_end:
	.section .note.GNU-stack,"",@progbits
