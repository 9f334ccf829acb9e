# linux64.s - the Linux x86-64 system-call ABI as assembler constants, and console output.
#
# A system call: number in RAX, arguments in RDI, RSI, RDX, R10, R8, R9, then `syscall`; the
# result comes back in RAX, -4095..-1 meaning -errno. The CPU clobbers RCX (the return RIP) and
# R11 (RFLAGS); every other register is preserved. Numbers from Linux's syscall_64.tbl (the same
# as hv_emu/linux/numbers.py). Include it after the program's code: the routines emit bytes.

.equ SYS_READ, 0
.equ SYS_WRITE, 1
.equ SYS_OPEN, 2
.equ SYS_CLOSE, 3
.equ SYS_FSTAT, 5
.equ SYS_MMAP, 9
.equ SYS_EXIT_GROUP, 231

.equ STDOUT, 1
.equ STDERR, 2
.equ O_RDONLY, 0
.equ PROT_READ_WRITE, 3         # PROT_READ | PROT_WRITE
.equ MAP_PRIVATE_ANONYMOUS, 0x22
.equ STAT_SIZE, 144             # sizeof(struct stat) on x86-64
.equ STAT_ST_SIZE, 48           # offsetof(struct stat, st_size)

# print_str - write the NUL-terminated string at RSI to descriptor EDI.
#   clobbers: RAX, RCX, RDX, R11
print_str:
    mov rdx, rsi
print_str.length:
    cmp byte ptr [rdx], 0       # find the NUL: RDX - RSI is the length
    je print_str.write
    inc rdx
    jmp print_str.length
print_str.write:
    sub rdx, rsi
    mov eax, SYS_WRITE          # write(fd = EDI, buf = RSI, count = RDX)
    syscall
    ret

# print_dec - write RAX as an unsigned decimal number to descriptor EDI.
#   clobbers: RAX, RCX, RDX, RSI, R11
print_dec:
    sub rsp, 32                 # room for 20 digits and a NUL, on the stack
    lea rsi, [rsp + 31]
    mov byte ptr [rsi], 0
    mov ecx, 10
print_dec.divide:
    xor edx, edx                # DIV divides RDX:RAX: clear the high half
    div rcx                     # RAX = quotient, RDX = the lowest digit
    add dl, '0'
    dec rsi                     # digits are stored right to left
    mov [rsi], dl
    test rax, rax
    jnz print_dec.divide
    call print_str
    add rsp, 32
    ret

# print_rc_name - write the name of return code RAX ("OK", "BAD_SIGNATURE"...) to EDI.
#   clobbers: RAX, RCX, RDX, RSI, R11
print_rc_name:
    lea rsi, [rip + rc_unknown]
    cmp rax, RC_NAME_COUNT
    jae print_str               # not in the table: UNKNOWN
    lea rsi, [rip + rc_names]
    mov rcx, rax                # RCX = names still to skip
print_rc_name.skip:
    test rcx, rcx
    jz print_str
print_rc_name.scan:
    lodsb                       # walk past the next NUL
    test al, al
    jnz print_rc_name.scan
    dec rcx
    jmp print_rc_name.skip

#include "rcnames.s"
