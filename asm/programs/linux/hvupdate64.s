# hvupdate64.s - `hvupdate UPDATE UPDATE.sig`: a real x86-64 Linux program that hands a signed
# signature update to the hv-emu hypervisor.
#
# guest_tool.linux_programs.build_hvupdate() assembles it at the entry point of a one-segment
# static ELF executable (guest_tool/elf_writer.py). It runs the same in `hv-emu run` (under the
# Linux personality, hv_emu/linux/) and on a real Linux machine, where it finds no hv-emu and says
# so instead of executing VMCALL (which would kill it with SIGILL outside a hypervisor).
#
# What it does:
#   1. checks CPUID for a hypervisor (leaf 1, ECX bit 31), then for hv-emu's signature (leaf
#      0x40000000: EBX, ECX, EDX = "hv-emu\0\0\0\0\0\0");
#   2. asks get_vmmcall_number which number "update_signatures" has;
#   3. reads both files into fresh anonymous memory (open, fstat, mmap, read, close);
#   4. calls update_signatures(update, length, signature) with VMCALL;
#   5. prints "hvupdate: rc=<n> (<NAME>)" and exits.
#
# Exit status: 0 the update was installed; 1 the hypervisor refused it (the rc says why);
#              2 usage or file error; 3 no hv-emu hypervisor (or no update service).

#include "hvabi.s"

.equ EXIT_INSTALLED, 0
.equ EXIT_REFUSED, 1
.equ EXIT_USAGE, 2
.equ EXIT_NO_HYPERVISOR, 3
# "hv-emu" as CPUID returns it: EBX = "hv-e", ECX = "mu\0\0", EDX = 0 (little-endian bytes).
.equ SIGNATURE_EBX, 0x652d7668
.equ SIGNATURE_ECX, 0x0000756d
.equ SIGNATURE_EDX, 0
.equ CPUID_HYPERVISOR_BIT, 31
.equ CPUID_HYPERVISOR_LEAF, 0x40000000

start:
    cld                             # lodsb in print_rc_name walks upwards
    mov r12, rsp                    # R12 = the start-up stack: argc, argv[0], argv[1]...
    cmp qword ptr [r12], 3          # argc must be 3: hvupdate UPDATE UPDATE.sig
    je have_arguments
    lea rsi, [rip + msg_usage]
    jmp fail_usage

have_arguments:
    # Step 1: is there a hypervisor, and is it hv-emu? (CPUID works everywhere: no SIGILL.)
    mov eax, 1
    xor ecx, ecx
    cpuid
    bt ecx, CPUID_HYPERVISOR_BIT    # CF = "running under a hypervisor"
    jnc no_hypervisor
    mov eax, CPUID_HYPERVISOR_LEAF
    xor ecx, ecx
    cpuid
    cmp ebx, SIGNATURE_EBX
    jne not_hv_emu
    cmp ecx, SIGNATURE_ECX
    jne not_hv_emu
    cmp edx, SIGNATURE_EDX
    jne not_hv_emu

    # Step 2: get_vmmcall_number("update_signatures") -> RAX = its number, or 0.
    mov eax, HC_GET_VMMCALL_NUMBER
    lea rbx, [rip + name_update]
    vmcall
    test rax, rax
    jz no_update_service
    mov r13, rax                    # R13 = the number of update_signatures

    # Step 3: read UPDATE (argv[1]) and UPDATE.sig (argv[2]).
    mov rdi, [r12 + 16]
    call read_file
    mov r14, rax                    # R14 = the update's address
    mov r15, rdx                    # R15 = its length
    mov rdi, [r12 + 24]
    call read_file                  # RAX = the signature's address

    # Step 4: update_signatures(RBX = update, RCX = length, RDX = signature) -> RAX = RC_*.
    mov rdx, rax
    mov rax, r13
    mov rbx, r14
    mov rcx, r15
    vmcall

    # Step 5: report "hvupdate: rc=<n> (<NAME>)" on standard output.
    mov r13, rax                    # R13 = the return code (the print routines keep R13)
    mov edi, STDOUT
    lea rsi, [rip + msg_rc]
    call print_str
    mov rax, r13
    call print_dec
    lea rsi, [rip + msg_open]
    call print_str
    mov rax, r13
    call print_rc_name
    lea rsi, [rip + msg_close]
    call print_str
    mov edi, EXIT_INSTALLED
    test r13, r13
    jz exit
    mov edi, EXIT_REFUSED
exit:
    mov eax, SYS_EXIT_GROUP         # exit_group(EDI): the end
    syscall

no_hypervisor:
    lea rsi, [rip + msg_no_hypervisor]
    jmp fail_no_hypervisor
not_hv_emu:
    lea rsi, [rip + msg_not_hv_emu]
    jmp fail_no_hypervisor
no_update_service:
    lea rsi, [rip + msg_no_service]
fail_no_hypervisor:
    mov edi, STDERR
    call print_str
    mov edi, EXIT_NO_HYPERVISOR
    jmp exit
fail_usage:
    mov edi, STDERR
    call print_str
    mov edi, EXIT_USAGE
    jmp exit

# read_file - read the whole file named by the string at RDI into fresh anonymous memory.
#   out: RAX = its address, RDX = its length. Any failure prints
#        "hvupdate: cannot read PATH: errno N" and exits with EXIT_USAGE.
#   keeps: RBX, RBP, R12-R15 (system calls clobber RCX and R11)
read_file:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    sub rsp, STAT_SIZE              # a struct stat on the stack (RSP stays 16-byte aligned)
    mov rbx, rdi                    # RBX = the path, for the error message
    mov eax, SYS_OPEN               # open(path, O_RDONLY)
    mov esi, O_RDONLY
    xor edx, edx
    syscall
    test rax, rax
    js read_file.fail               # -4095..-1: -errno
    mov rbp, rax                    # RBP = the descriptor
    mov edi, ebp                    # fstat(fd, &stat)
    mov rsi, rsp
    mov eax, SYS_FSTAT
    syscall
    test rax, rax
    js read_file.fail
    mov r12, [rsp + STAT_ST_SIZE]   # R12 = the file's size
    xor edi, edi                    # mmap(NULL, size + 1, RW, private anonymous, -1, 0);
    lea rsi, [r12 + 1]              # + 1: an empty file still gets a (non-empty) mapping
    mov edx, PROT_READ_WRITE
    mov r10d, MAP_PRIVATE_ANONYMOUS
    mov r8, -1
    xor r9d, r9d
    mov eax, SYS_MMAP
    syscall
    test rax, rax
    js read_file.fail
    mov r13, rax                    # R13 = the buffer
    xor r14d, r14d                  # R14 = bytes read so far
read_file.more:
    cmp r14, r12
    jae read_file.done
    mov edi, ebp                    # read(fd, buffer + done, size - done)
    lea rsi, [r13 + r14]
    mov rdx, r12
    sub rdx, r14
    mov eax, SYS_READ
    syscall
    test rax, rax
    js read_file.fail
    jz read_file.done               # end of file came early: keep what was read
    add r14, rax
    jmp read_file.more
read_file.done:
    mov edi, ebp                    # close(fd)
    mov eax, SYS_CLOSE
    syscall
    mov rax, r13
    mov rdx, r14
    add rsp, STAT_SIZE
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
read_file.fail:
    neg rax
    mov r12, rax                    # R12 = errno
    mov edi, STDERR
    lea rsi, [rip + msg_cannot_read]
    call print_str
    mov rsi, rbx
    call print_str
    lea rsi, [rip + msg_errno]
    call print_str
    mov rax, r12
    call print_dec
    lea rsi, [rip + msg_close_line]
    call print_str
    mov edi, EXIT_USAGE
    jmp exit

name_update:        .asciz "update_signatures"
msg_usage:          .asciz "usage: hvupdate UPDATE UPDATE.sig\n"
msg_no_hypervisor:  .asciz "hvupdate: no hypervisor found (CPUID.1:ECX bit 31 is clear)\n"
msg_not_hv_emu:     .asciz "hvupdate: the hypervisor is not hv-emu (CPUID 0x40000000)\n"
msg_no_service:     .asciz "hvupdate: this hypervisor has no update_signatures\n"
msg_cannot_read:    .asciz "hvupdate: cannot read "
msg_errno:          .asciz ": errno "
msg_close_line:     .asciz "\n"
msg_rc:             .asciz "hvupdate: rc="
msg_open:           .asciz " ("
msg_close:          .asciz ")\n"

#include "linux64.s"
