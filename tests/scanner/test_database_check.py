"""``check_database`` (an update's pause) gives exactly ``parse_database``'s answer: the count of
signatures, or the same error at the same line and column, on generated texts mixing the plain
lines its fast runs cover with every kind of line they do not (Hypothesis), and at the limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner import signatures
from hv_emu.scanner.database_check import WildRun, check_database, check_steps
from hv_emu.scanner.signatures import parse_database
from tests.rigs.wild_texts import DB_LINES, NDB_LINES, TEXTS


def answer(check: bool, data: bytes, kind: str) -> tuple[str, object]:
    try:
        if check:
            return "ok", check_database(data, kind=kind, source="u")
        return "ok", len(parse_database(data, kind=kind, source="u"))
    except DatabaseError as error:
        return "error", (error.line, error.column, str(error))


def same(data: bytes, kind: str) -> tuple[str, object]:
    expected = answer(False, data, kind)
    assert answer(True, data, kind) == expected, data[:200]
    return expected




@settings(max_examples=500, deadline=None)
@given(st.lists(NDB_LINES, max_size=30), st.sampled_from([b"", b"\n", b"\n\n"]))
def test_ndb_texts_get_the_parsers_answer(lines: list[bytes], tail: bytes) -> None:
    same(b"\n".join(lines) + tail, "ndb")


@settings(max_examples=500, deadline=None)
@given(st.lists(DB_LINES, max_size=30), st.sampled_from([b"", b"\n"]))
def test_db_texts_get_the_parsers_answer(lines: list[bytes], tail: bytes) -> None:
    same(b"\n".join(lines) + tail, "db")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["db", "ndb"]))
def test_any_bytes_get_the_parsers_answer(data: bytes, kind: str) -> None:
    same(data, kind)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 6])
def test_limits_are_hit_on_the_same_line(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    monkeypatch.setattr(signatures, "MAX_SIGNATURES", limit)
    plain, mixed = b"A:0:*:414243\n" * 6, b"# c\n" + b"A:0:*:414243\n" * 3 + b"B:0:*:4142??43\n" * 3
    for text in (plain, mixed):  # six signatures each
        assert same(text, "ndb")[0] == ("error" if limit < 6 else "ok")
    monkeypatch.setattr(signatures, "MAX_SIGNATURES", 100)
    monkeypatch.setattr(signatures, "MAX_DATABASE_ELEMENTS", limit)
    for text in [b"A:0:*:414243\n" * 8, b"W:0:*:41??4243??44\n" + b"A:0:*:414243\n" * 8]:
        assert same(text, "ndb")[0] == "error"


def test_a_long_plain_line_is_refused_as_the_parser_refuses_it() -> None:
    line = b"L:0:*:" + b"41" * (signatures.MAX_LINE_LENGTH // 2)
    assert same(b"A:0:*:414243\n" + line + b"\n", "ndb")[0] == "error"
    assert same(b"A=414243\n" + b"L=" + b"41" * (signatures.MAX_LINE_LENGTH // 2), "db")[0] == (
        "error")


@settings(max_examples=1500, deadline=None)
@given(TEXTS)
def test_texts_with_wildcard_runs_get_the_parsers_answer(data: bytes) -> None:
    same(data, "ndb")


def wild_text(lines: int) -> bytes:
    """``lines`` lines of the run forms, plain and with every wildcard and gap, {HEX} names."""
    bodies = [b"4142??4344", b"41(22|27)4243*44454647", b"4142{0-16}4344(2a|2b)45",
              b"41424344{-5}4546??47{3-}4849", b"414243"]  # fmt: skip
    return b"".join(b"{HEX}n.%d:0:*:%s\n" % (i, bodies[i % 5]) for i in range(lines))


def test_wildcard_runs_are_one_step_and_count_their_elements() -> None:
    """A text of the run forms is walked as one step (not line by line: the pause's speed), with
    the parser's count; and brace-less names make a run of their own."""
    data = wild_text(50)
    count, steps = check_steps(data, kind="ndb", source="u")
    assert count == 50 == len(parse_database(data, kind="ndb", source="u"))
    assert steps == [WildRun(0, len(data), 1, 50)]
    mixed = data + data.replace(b"{HEX}", b"Plain.")
    count, steps = check_steps(mixed, kind="ndb", source="u")
    assert count == 100 and [type(step) for step in steps] == [WildRun, WildRun]


@pytest.mark.parametrize("limit", [1, 2, 7, 39, 40, 41, 60, 134, 135, 136, 137])
def test_limits_inside_a_wildcard_run_are_hit_on_the_same_line(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    data = wild_text(40)  # 40 signatures, 136 elements (17 each five lines), the last line's 1
    assert check_steps(data, kind="ndb", source="u")[1] == [WildRun(0, len(data), 1, 40)]
    elements = sum(len(v) for s in parse_database(data, kind="ndb", source="u") for p in s.parts
                   for v in p.variants)  # fmt: skip
    assert elements == 136
    monkeypatch.setattr(signatures, "MAX_DATABASE_ELEMENTS", limit)
    assert same(data, "ndb")[0] == ("error" if limit < 135 else "ok")
    assert same(b"# c\n" + data + data, "ndb")[0] == "error"
    monkeypatch.setattr(signatures, "MAX_DATABASE_ELEMENTS", 10_000)
    monkeypatch.setattr(signatures, "MAX_SIGNATURES", limit)
    assert same(data, "ndb")[0] == ("error" if limit < 40 else "ok")
