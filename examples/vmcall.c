/*
 * vmcall.c - the hypercall function of the original design, in a freestanding Linux program.
 *
 * Build (no C library, no start files: the program is its own _start):
 *     gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -O2 \
 *         -o vmcall examples/vmcall.c
 * Run it under hv-emu (it is a static x86-64 ELF executable):
 *     hv-emu run vmcall
 * It asks the hypervisor for the number of "get_status" (hypercall 0, get_vmmcall_number),
 * calls it, prints the status text and exits with that number (1 in hv-emu), so the exit status
 * shows the lookup worked. On real hardware, VMCALL outside a hypervisor raises #UD: SIGILL.
 */

/* The hypercall, as the original design wrote it: VMCALL (0f 01 c1) spelled as bytes.
 * RAX = the hypercall number, RBX, RCX, RDX = its arguments; the result comes back in RAX.
 * A hypercall may also answer in RBX..RDX (get_status returns a length in RCX), so they are
 * in/out operands, and "memory" tells the compiler the hypervisor may write guest memory. */
static int vmcall(unsigned long a, unsigned long b, unsigned long c, unsigned long d)
{
	int ret;

	asm volatile(".byte 0xf,0x1,0xc1"
		     : "=a"(ret), "+b"(b), "+c"(c), "+d"(d)
		     : "a"(a)
		     : "memory");
	return ret;
}

/* Two Linux system calls, made directly: number in RAX, arguments in RDI, RSI, RDX; the CPU
 * clobbers RCX and R11. */
static long sys_write(int fd, const void *buf, unsigned long count)
{
	long ret;

	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(1L), "D"((long)fd), "S"(buf), "d"(count)
		     : "rcx", "r11", "memory");
	return ret;
}

static __attribute__((noreturn)) void sys_exit_group(int status)
{
	asm volatile("syscall" : : "a"(231L), "D"((long)status) : "rcx", "r11", "memory");
	__builtin_unreachable();
}

#define GET_VMMCALL_NUMBER 0	/* slot 0: RBX = a name -> RAX = its number (docs/ABI.md) */

static char status[1024];

/* The entry point. RSP is 16-byte aligned here, not 8 past it as after a call: have gcc
 * realign the stack rather than trust it. */
__attribute__((force_align_arg_pointer, noreturn)) void _start(void)
{
	static const char name[] = "get_status";
	int nr = vmcall(GET_VMMCALL_NUMBER, (unsigned long)name, 0, 0);
	unsigned long length = 0;

	/* get_status writes its text without a NUL (as BitVisor's does): offer one byte less than
	 * the buffer, so the zeroed last byte always ends the text. */
	if (nr != 0 && vmcall(nr, (unsigned long)status, sizeof status - 1, 0) == 0)
		while (status[length] != '\0')
			length++;
	sys_write(1, status, length);
	sys_exit_group(nr);
}
