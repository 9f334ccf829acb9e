"""guest_tool.assemble: keystone's traps are refused with a reason, its 0x66 mis-encodings are
caught by the lint, the raw-byte macros give the SDM's encodings, and errors name the line."""

from __future__ import annotations

import pytest

from guest_tool import assemble as asm_mod
from guest_tool.assemble import REFUSED_DIRECTIVES, AssemblyError, assemble, split_statements
from guest_tool.programs import macro_prelude
from hv_emu.errors import ConfigError

LOAD64 = 0x100000
LOAD16 = 0x7C00


# ------------------------------------------------------------------ refused directives


@pytest.mark.parametrize("directive", sorted(REFUSED_DIRECTIVES))
def test_refused_directive_names_line_and_reason(directive: str) -> None:
    source = f"nop\nnop\n    {directive} \"x\"\nnop\n"
    with pytest.raises(AssemblyError) as info:
        assemble(source, mode=64, address=LOAD64)
    err = info.value
    assert err.line == 3
    assert directive in str(err)
    assert REFUSED_DIRECTIVES[directive] in str(err)


def test_text_and_data_are_refused_because_keystone_crashes() -> None:
    for directive in (".text", ".data"):
        with pytest.raises(AssemblyError, match="SIGSEGV"):
            assemble(f"{directive}\nnop", mode=32, address=LOAD64)


def test_nasm_percent_directive_refused_not_hung() -> None:
    with pytest.raises(AssemblyError, match="endless loop") as info:
        assemble("nop\n%define X 1\n", mode=16, address=LOAD16)
    assert info.value.line == 2


def test_incbin_refused_with_the_alternative() -> None:
    with pytest.raises(AssemblyError, match="append blobs"):
        assemble('blob: .incbin "/etc/hostname"', mode=64, address=LOAD64)


def test_unexpanded_include_is_refused() -> None:
    with pytest.raises(AssemblyError, match="load_source") as info:
        assemble('nop\n#include "hvabi.s"\n', mode=64, address=LOAD64)
    assert info.value.line == 2


def test_directive_inside_a_string_is_not_refused() -> None:
    code = assemble('.ascii ".text; %define # x"', mode=64, address=LOAD64)
    assert code == b".text; %define # x"


def test_empty_output_for_nonempty_source_is_an_error() -> None:
    # .p2align at an aligned address emits nothing: keystone returns no bytes at all.
    with pytest.raises(AssemblyError, match="no bytes"):
        assemble(".p2align 4", mode=64, address=LOAD64)


def test_equates_only_source_is_not_an_error() -> None:
    assert assemble(".equ X, 1\n", mode=64, address=LOAD64) == b""


# ------------------------------------------------------------------ keystone errors carry the line


def test_bad_mnemonic_reports_its_line_and_statement() -> None:
    source = "start:\n    nop\n\n    # a comment\n    frobnicate eax\n    nop\n"
    with pytest.raises(AssemblyError) as info:
        assemble(source, mode=64, address=LOAD64)
    assert info.value.line == 5
    assert info.value.statement == "frobnicate eax"
    assert "KS_ERR_ASM_MNEMONICFAIL" in str(info.value)
    assert str(info.value).startswith("line 5: `frobnicate eax`")


def test_missing_symbol_reports_its_line_despite_forward_references() -> None:
    source = "jmp later\nmov eax, nowhere\nlater: hlt\n"
    with pytest.raises(AssemblyError) as info:
        assemble(source, mode=32, address=LOAD64)
    assert info.value.line == 2
    assert "SYMBOL_MISSING" in str(info.value)


def test_statements_after_semicolons_keep_their_line() -> None:
    with pytest.raises(AssemblyError) as info:
        assemble("nop ; nop\nnop ; bogus eax ; nop", mode=64, address=LOAD64)
    assert info.value.line == 2
    assert info.value.statement == "bogus eax"


def test_lines_count_from_the_source_not_the_prelude() -> None:
    with pytest.raises(AssemblyError) as info:
        assemble("nop\nbogus", mode=16, address=LOAD16, prelude=macro_prelude(16))
    assert info.value.line == 2


def test_error_in_the_prelude_says_so() -> None:
    with pytest.raises(AssemblyError, match="in the prelude, line 2") as info:
        assemble("nop", mode=64, address=LOAD64, prelude="nop\nbogus\n")
    assert info.value.line is None and info.value.in_prelude


@pytest.mark.parametrize("source", [
    "hlt\nroot:x:0:0:root:/root:/bin/bash\nnop\n",  # a file that is not assembly (/etc/passwd)
    "nop\nA:\nnop\nA:\nhlt\n",  # a label defined twice
])
def test_an_error_keystone_blames_on_a_prelude_that_assembles_is_found_in_the_source(
    source: str,
) -> None:
    """keystone's own line is unreliable, and the skeleton ``_locate`` keeps (the source's labels)
    breaks with the whole prelude in front: the prelude alone assembles, so it is the source's."""
    prelude = ".equ HC_X, 0\n.equ Y, 1\n"
    with pytest.raises(AssemblyError) as info:
        assemble(source, mode=64, address=LOAD64, prelude=prelude)
    err = info.value
    assert "prelude" not in str(err) and not err.in_prelude
    assert err.line is not None
    assert source.splitlines()[err.line - 1] == err.statement


def test_bad_mode_and_address_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="mode"):
        assemble("nop", mode=8, address=0)
    with pytest.raises(ConfigError, match="out of range"):
        assemble("nop", mode=16, address=0x100000)
    with pytest.raises(ConfigError, match="out of range"):
        assemble("nop", mode=32, address=1 << 32)


# ------------------------------------------------------------------ the capstone lint


@pytest.mark.parametrize(
    ("statement", "encoding"),
    [("ret", "66 c3"), ("retf", "66 cb"), ("ret 4", "66 c2"), ("push 0x1234", "66 68"),
     ("push 1", "66 6a")],
)
def test_16bit_lint_catches_prefixed_stack_instructions(statement: str, encoding: str) -> None:
    with pytest.raises(AssemblyError) as info:
        assemble(f"nop\nnop\n{statement}\n", mode=16, address=LOAD16)
    err = info.value
    assert err.offset == 2
    assert encoding in str(err)
    assert "CALL16" in str(err)


def test_16bit_lint_catches_call() -> None:
    with pytest.raises(AssemblyError, match="66 e8") as info:
        assemble("call f\nf: nop\n", mode=16, address=LOAD16)
    assert info.value.offset == 0


@pytest.mark.parametrize(
    ("statement", "offset"), [("lgdt [0x600]", 1), ("lidt [0x600]", 1), ("ljmp 0x08:0x12345", 1)]
)
def test_32bit_lint_catches_prefixed_descriptor_and_far_jump(statement: str, offset: int) -> None:
    with pytest.raises(AssemblyError, match="LGDT32") as info:
        assemble(f"cli\n{statement}\n", mode=32, address=LOAD64)
    assert info.value.offset == offset
    assert "66 " in str(info.value)


def test_lint_leaves_legitimate_32bit_operands_alone_in_16bit_code() -> None:
    # push eax / div ecx / mov ebx, imm32 want the 0x66 prefix in real mode.
    code = assemble("push eax\ndiv ecx\nmov ebx, 0x12345\npop eax", mode=16, address=LOAD16)
    assert code == bytes.fromhex("6650 66f7f1 66bb45230100 6658")


def test_lint_ignores_raw_bytes_when_the_mnemonic_is_not_used() -> None:
    assert assemble(".byte 0x66, 0xc3", mode=16, address=LOAD16) == b"\x66\xc3"


def test_64bit_code_is_not_linted() -> None:
    assert assemble("push 1\nret", mode=64, address=LOAD64) == bytes.fromhex("6a01c3")


# ------------------------------------------------------------------ the raw-byte macros


def test_macros16_encode_as_the_sdm_says() -> None:
    source = """
        CALL16 target       # e8 rel16: target - end of the call
        nop
    target:
        RET16
        RETF16
        PUSH16 0x1234
        LJMP_TO32 0x08, 0x12345
    """
    code = assemble(source, mode=16, address=LOAD16, prelude=macro_prelude(16))
    assert code == bytes.fromhex("e80100" "90" "c3" "cb" "683412" "66ea452301000800")


def test_call16_reaches_backwards() -> None:
    code = assemble("f: nop\nCALL16 f", mode=16, address=LOAD16, prelude=macro_prelude(16))
    assert code == bytes.fromhex("90e8fcff")  # from 0x7c04 back to 0x7c00: -4


def test_macros32_encode_as_the_sdm_says() -> None:
    source = "LGDT32 0x600\nLIDT32 0x12345678\nLJMP32 0x08, 0x12345\n"
    code = assemble(source, mode=32, address=LOAD64, prelude=macro_prelude(32))
    assert code == bytes.fromhex("0f011500060000" "0f011d78563412" "ea452301000800")


# ------------------------------------------------------------------ labels and addresses


def test_label_arithmetic_and_the_load_address() -> None:
    source = """
    start:
        mov ecx, end - start
        .word end - start
        .long start
    end:
    """
    code = assemble(source, mode=32, address=0x200000)
    assert code == bytes.fromhex("b90b000000" "0b00" "00002000")


def test_movabs_label_is_a_full_64bit_address() -> None:
    code = assemble("movabs rbx, here\nhere:", mode=64, address=0x123450000)
    assert code == bytes.fromhex("48bb") + (0x12345000A).to_bytes(8, "little")


def test_character_constants_with_separators() -> None:
    assert assemble("mov al, ';'\nmov al, '#'", mode=64, address=LOAD64) == b"\xb0;\xb0#"


def test_split_statements_comments_strings_and_lines() -> None:
    stmts = split_statements('a: b: nop # c ; d\n/* x\ny */ hlt ; .ascii "; #"\n')
    assert [(s.line, s.text, s.labels, s.head) for s in stmts] == [
        (1, "a: b: nop", ("a", "b"), "nop"),
        (3, "hlt", (), "hlt"),
        (3, '.ascii "; #"', (), ".ascii"),
    ]


def test_one_keystone_per_mode() -> None:
    assert asm_mod._keystone(16) is asm_mod._keystone(16)
    assert asm_mod._keystone(16) is not asm_mod._keystone(32)
