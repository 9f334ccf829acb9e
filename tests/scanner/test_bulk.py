"""``bulk.parse_entries`` (the compile worker's parse of an update) gives ``parse_database``'s
answer: the same signatures line for line (a plain line as its name and bytes), the same program
pattern for pattern, or the same error at the same line and column, on generated texts
(Hypothesis) and on a set large enough for short anchors."""

from __future__ import annotations

import gc
import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner.bulk import Entry, gc_paused, parse_entries, signatures_of
from hv_emu.scanner.database import compile_signatures
from hv_emu.scanner.program import LARGE_SET, Pattern, Program, build_program
from hv_emu.scanner.signatures import (
    Literal,
    Offset,
    Part,
    Signature,
    parse_database,
)
from tests.rigs.wild_texts import DB_LINES, NDB_LINES, TEXTS


def program_fields(program: Program) -> tuple[object, ...]:
    """Everything a program holds, each pattern as the tuple of its fields."""
    patterns = tuple(tuple(tuple(getattr(p, name) for name in Pattern.__slots__) for p in group)
                     for group in program.patterns_by_literal)  # fmt: skip
    return (program.literals, patterns, program.history, program.widest, program.gap_max,
            program.simple, program.logical)  # fmt: skip


def as_signature(entry: Entry, expected: Signature) -> Signature:
    """A plain entry as the ``Signature`` its line gives (line and source from ``expected``)."""
    if isinstance(entry, Signature):
        return entry
    name, data = entry
    return Signature(name, expected.line, 0, Offset("any"), (Part(0, 0, ((Literal(data),),)),),
                     None, expected.source)  # fmt: skip


def same(data: bytes, kind: str) -> str:
    """Assert that both parses agree; "ok" or "error"."""
    try:
        expected = parse_database(data, kind=kind, source="u")
    except DatabaseError as error:
        try:
            parse_entries(data, kind=kind, source="u")
        except DatabaseError as other:
            assert (other.line, other.column, str(other)) == (error.line, error.column,
                                                              str(error))  # fmt: skip
            return "error"
        raise AssertionError(f"parse_entries accepted what parse_database refuses: {error}") \
            from None
    entries = parse_entries(data, kind=kind, source="u")
    assert len(entries) == len(expected)
    assert [as_signature(e, s) for e, s in zip(entries, expected, strict=True)] == expected
    assert program_fields(build_program(entries)) == program_fields(build_program(expected))
    assert signatures_of(entries) == [e for e in entries if isinstance(e, Signature)]
    return "ok"




@settings(max_examples=400, deadline=None)
@given(st.lists(NDB_LINES, max_size=30), st.sampled_from([b"", b"\n", b"\n\n"]))
def test_ndb_texts_give_the_parsers_signatures_and_program(lines: list[bytes], tail: bytes) -> None:
    same(b"\n".join(lines) + tail, "ndb")


@settings(max_examples=400, deadline=None)
@given(st.lists(DB_LINES, max_size=30), st.sampled_from([b"", b"\n"]))
def test_db_texts_give_the_parsers_signatures_and_program(lines: list[bytes], tail: bytes) -> None:
    same(b"\n".join(lines) + tail, "db")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["db", "ndb"]))
def test_any_bytes_give_the_parsers_answer(data: bytes, kind: str) -> None:
    same(data, kind)


def test_a_large_set_gets_the_same_short_anchors_and_database() -> None:
    """From ``LARGE_SET`` signatures anchors are cut short: both paths cut them alike, and the
    compiled databases find the same matches."""
    rng = random.Random(10)
    bodies = [rng.randbytes(rng.randint(16, 40)) for _ in range(LARGE_SET + 10)]
    lines = [b"Big.%d:0:*:%s" % (i, body.hex().encode()) for i, body in enumerate(bodies)]
    lines[7] = b"Wild.7:0:*:4142??43444546474849"  # a line outside the runs, in the middle
    assert same(b"\n".join(lines) + b"\n", "ndb") == "ok"
    data = b"".join(rng.randbytes(50) + bodies[i] for i in range(0, LARGE_SET, 997))
    entries = parse_entries(b"\n".join(lines) + b"\n", kind="ndb", source="u")
    db = compile_signatures(entries, "ndb", 1, "u", "0" * 64, "ac")
    assert db.count == len(lines) and len(db.signatures) == 1  # only the wildcard line is kept
    reference = compile_signatures(parse_database(b"\n".join(lines) + b"\n", kind="ndb",
                                                  source="u"), "ndb", 1, "u", "0" * 64, "ac")
    found = db.scan(data)
    assert len(found) == len(range(0, LARGE_SET, 997)) and found == reference.scan(data)


def test_gc_paused_nests_overlaps_and_restores_the_collector() -> None:
    assert gc.isenabled()
    inner_entered, outer_may_leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with gc_paused():
            inner_entered.set()
            assert outer_may_leave.wait(30)

    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder is still in
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert inner_entered.wait(30)
    assert not gc.isenabled()  # the other thread still holds it
    outer_may_leave.set()
    thread.join(30)
    assert gc.isenabled()
    gc.disable()
    try:  # off before: stays off after
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@settings(max_examples=800, deadline=None)
@given(TEXTS)
def test_texts_with_wildcard_runs_give_the_parsers_signatures_and_program(data: bytes) -> None:
    same(data, "ndb")


def test_a_wildcard_run_gives_plain_literals_and_built_signatures() -> None:
    data = b"{HEX}a:0:*:4142??4344\n{HEX}b:0:*:414243\n{HEX}c:0:*:41(22|27)4243*444546\n"
    assert same(data, "ndb") == "ok"
    entries = parse_entries(data, kind="ndb", source="u")
    assert entries[1] == ("{HEX}b", b"ABC")
    assert [type(entry) for entry in entries] == [Signature, tuple, Signature]
