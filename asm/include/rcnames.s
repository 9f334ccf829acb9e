# rcnames.s - the names of the return codes, for messages such as "rc=2 (BAD_SIGNATURE)".
#
# One NUL-terminated string per code, in numeric order (the same order as hv_emu.hypercalls.abi.Rc
# and the
# RC_* constants of hvabi.s): the name of code n is found by skipping n strings. The table reads
# the same in 16-, 32- and 64-bit code. tests/guest_tool/test_programs.py checks it against
# hv_emu.hypercalls.abi.Rc.
# It emits bytes: include it after the code, never in the path of execution.

.equ RC_NAME_COUNT, 10          # number of strings below; larger codes print as UNKNOWN

rc_names:
    .asciz "OK"                 # 0
    .asciz "UNREADABLE"         # 1
    .asciz "BAD_SIGNATURE"      # 2
    .asciz "MALFORMED"          # 3
    .asciz "TOO_LARGE"          # 4
    .asciz "STALE_VERSION"      # 5
    .asciz "UNTRUSTED_KEY"      # 6
    .asciz "EXPIRED"            # 7
    .asciz "BUFFER_TOO_SMALL"   # 8
    .asciz "STORAGE_FAILED"     # 9
rc_unknown:
    .asciz "UNKNOWN"
