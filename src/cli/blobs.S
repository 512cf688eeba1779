/* blobs.S - the files `vmsh attach` puts into the guest, embedded so that
 * vmsh is one file to copy: the in-guest helper (a static binary) and the
 * built-in tools image (ext4 with busybox). */
	.section .rodata
	.balign 16
	.globl vmsh_helper_start, vmsh_helper_end
vmsh_helper_start:
	.incbin "vmsh-helper"
vmsh_helper_end:
	.balign 16
	.globl vmsh_toolbox_start, vmsh_toolbox_end
vmsh_toolbox_start:
	.incbin "toolbox.img"
vmsh_toolbox_end:
	.section .note.GNU-stack,"",@progbits
