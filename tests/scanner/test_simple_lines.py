"""``simple_lines.simple_ndb_line`` gives exactly the ``Signature`` the grammar gives
(``signatures._parse_ndb_line``) for every line it takes, and takes the common wildcard forms;
generated lines (Hypothesis) mix them with forms it must leave to the grammar."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner import signatures
from hv_emu.scanner.simple_lines import (
    MAX_SIMPLE_PARTS,
    WILD_RUNS,
    run_elements,
    simple_form,
    simple_ndb_line,
)
from tests.rigs.wild_texts import wild_line

_TOKENS = st.sampled_from([
    "41", "4142", "414243", "4a4B4c4D", "00", "ff" * 9, "??", "(22|27)", "(2A|2b|2c)", "(41|41)",
    "*", "{0-16}", "{3-}", "{-5}", "{0-0}", "{7-2}", "{4}", "{200}", "4?", "?4", "(4142|4344)",
    "!(22|27)", "(B)", "(L)", "41[1-2]42", "(", "|", "zz", "{", "{1-2", "{999999999-1}",
])
_NAMES = st.sampled_from(["N", "{HEX}php.malware.1", "Sp ace", "#c", "a:b", "N (Clam)", "\xe9"])
_HEADS = st.sampled_from([":0:*:", ":1:*:", ":0:10:", ":*:*:", ":0:EOF-5:"])
_TAILS = st.sampled_from(["", "\r", "\r\r", ":50", ":0:999"])


def taken(raw: bytes) -> signatures.Signature | None:
    """``simple_ndb_line``'s answer, after checking that ``simple_form`` (the pause's check) takes
    exactly the same lines and counts their elements."""
    fast = simple_ndb_line(raw, 7, "u")
    elements = None if fast is None else sum(len(v) for p in fast.parts for v in p.variants)
    assert simple_form(raw) == elements, raw
    return fast


def grammar(raw: bytes) -> signatures.Signature | str | None:
    text = raw.decode("latin-1").rstrip("\r")
    try:
        return signatures._parse_ndb_line(text, "u", 7)
    except DatabaseError as error:
        return f"error {error}"


@settings(max_examples=3000, deadline=None)
@given(_NAMES, _HEADS, st.lists(_TOKENS, min_size=1, max_size=12), _TAILS)
def test_every_line_it_takes_is_the_grammars_signature(
    name: str, head: str, tokens: list[str], tail: str
) -> None:
    raw = (name + head + "".join(tokens) + tail).encode("latin-1")
    fast = taken(raw)
    if fast is not None:
        assert fast == grammar(raw), raw


_RUNS = st.sampled_from(["41", "4142", "414243", "4a4B4c4D", "00ff", "ff" * 9])
_ONES = st.sampled_from(["??", "(22|27)", "(2A|2b|2c)", "(41|41)", "4?", "(4142|4344)", "(B)"])
_GAPS = st.sampled_from(["*", "{0-16}", "{3-}", "{-5}", "{0-0}", "{7-2}", "{4}", "{-0}", "{0-}"])
_PARTS = st.lists(st.tuples(_RUNS, _ONES), min_size=0, max_size=3).map(
    lambda pairs: "".join(one + run for run, one in pairs))
_BODIES = st.lists(st.tuples(_RUNS, _PARTS), min_size=1, max_size=5)


@settings(max_examples=2000, deadline=None)
@given(_BODIES, st.lists(_GAPS, min_size=4, max_size=4), _TAILS)
def test_well_formed_bodies_get_the_grammars_signature(
    parts: list[tuple[str, str]], gaps: list[str], tail: str
) -> None:
    body = "".join((gaps[i % 4] if i else "") + run + rest for i, (run, rest) in enumerate(parts))
    raw = ("{HEX}N:0:*:" + body + tail).encode("latin-1")
    fast = taken(raw)
    if fast is not None:
        assert fast == grammar(raw), raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_it_takes_are_the_grammars_signature(raw: bytes) -> None:
    fast = taken(raw)
    if fast is not None:
        assert fast == grammar(raw), raw


def test_it_takes_the_common_wildcard_forms_and_leaves_the_rest() -> None:
    forms = [b"{HEX}JS.Flood:0:*:7773682e72756e28(22|27)73746172742f",
             b"W:0:*:414243??444546", b"G:0:*:41424344{0-16}4546", b"S:0:*:4142*4344\r",
             b"R:0:*:41424344{9-3}4546", b"O:0:*:4142{5-}4344{-7}45464748"]
    for raw in forms:
        fast = taken(raw)
        assert fast is not None and fast == grammar(raw), raw
    ranged = simple_ndb_line(b"R:0:*:41424344{9-3}4546", 7, "u")
    assert ranged is not None and ranged.not_applied is not None
    many = b"M:0:*:" + b"*".join([b"4142"] * (MAX_SIMPLE_PARTS + 1))
    left = [b"P:0:*:41424344", b"T:1:*:4142??4344", b"N:0:*:41??42", b"B:0:*:4142(B)??4344",
            b"E:0:*:41?2??4344", b"Sp ace:0:*:4142??4344", b"F:0:*:4142??4344:50", many]
    for raw in left:
        assert taken(raw) is None, raw
    assert taken(many[:-5]) is not None  # one part fewer: taken


@settings(max_examples=3000, deadline=None)
@given(wild_line())
def test_a_run_takes_a_line_only_as_simple_form_or_a_plain_line_and_counts_alike(
    raw: bytes,
) -> None:
    """``WILD_RUNS`` takes a line (with its newline) only if ``simple_form`` takes it or it is a
    plain literal, and ``run_elements`` counts what ``simple_form`` counts (a plain line: 1); it
    takes every such line whose name fits its forms."""
    line = raw + b"\n"
    forms = [braces for form, braces in WILD_RUNS if form.fullmatch(line)]
    cut = raw.rstrip(b"\r")
    plain = signatures._PLAIN_NDB_LINE.fullmatch(raw) is not None and len(cut) < 60_000
    expected = 1 if plain else simple_form(raw)
    name = raw.split(b":")[0]
    fits = (len(name) <= 4096 and not any(c in name[1:] for c in b"(?*{")
            and not any(c in name[:1] for c in b"(?*#") and raw.count(b"\r") <= 1
            and b"\x00" not in raw)  # fmt: skip
    assert len(forms) <= 1
    if forms:
        assert expected is not None and fits, raw
        assert run_elements(line, 0, len(line), 1, forms[0]) == expected
    else:
        assert expected is None or not fits, raw
