"""The body grammar under Hypothesis: hostile text raises only BodyError, and generated signatures
are found in generated matching bytes by every engine at every split point of the stream."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner.body import BodyError, parse_body
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, compile_database
from hv_emu.scanner.pattern import ByteClass, Choice, Literal
from hv_emu.scanner.signatures import Signature

ENGINES = ["ac"] + (["hyperscan"] if HYPERSCAN_AVAILABLE else [])
BODY_ALPHABET = "0123456789abcdefABCDEF?*{}-()|![]BLW,x "
#: Tokens of the supported grammar; static runs of 3 bytes keep every part loadable.
STATIC = ["6a6b6c", "7a7b7c", "0a0b0c", "e1e2e3", "000102"]
FIXED = ["41", "??", "4?", "?4", "(41|42)", "!(41|42)", "(4142|4344)", "!(4142|4344)",
         "(41|4243|44??45)", "{3}"]
GAPS = ["*", "{-4}", "{2-}", "{1-5}", "{130}"]


@given(st.text(BODY_ALPHABET, max_size=60))
@settings(max_examples=300, deadline=None)
def test_hostile_bodies_raise_only_body_error(text: str) -> None:
    try:
        parts = parse_body(text)
    except BodyError as error:
        assert 0 <= error.column <= len(text)
        return
    assert parts and all(part.variants for part in parts)


@given(st.text(max_size=40), st.sampled_from(["{", "{-", "{1-", "(", "!(", "[", ""]))
@settings(max_examples=300, deadline=None)
def test_any_unicode_text_raises_only_body_error(text: str, opener: str) -> None:
    """Not only the grammar's alphabet: digits of other scripts (superscripts pass
    ``str.isdigit`` and then fail ``int``) and any other character meet the same one error."""
    with contextlib.suppress(BodyError):
        parse_body("414243" + opener + text)


def test_a_superscript_digit_in_a_gap_is_a_body_error() -> None:
    with pytest.raises(BodyError):
        parse_body("4142{\u00b9}4344")



@st.composite
def bodies(draw: st.DrawFn) -> str:
    """A body of 1-3 parts, each a static run with fixed-width tokens around it."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        before = draw(st.lists(st.sampled_from(FIXED), max_size=2))
        after = draw(st.lists(st.sampled_from(FIXED), max_size=2))
        parts.append("".join([*before, draw(st.sampled_from(STATIC)), *after]))
    gaps = [draw(st.sampled_from(GAPS)) for _ in parts[1:]]
    return parts[0] + "".join(gap + part for gap, part in zip(gaps, parts[1:], strict=True))


def matching_bytes(signature: Signature, rng: random.Random) -> bytes:
    out = bytearray()
    for number, part in enumerate(signature.parts):
        if number:
            high = part.gap_min + 6 if part.gap_max is None else part.gap_max
            out += b"\xf0" * rng.randint(part.gap_min, high)
        for element in rng.choice(part.variants):
            if isinstance(element, Literal):
                out += element.data
            elif isinstance(element, ByteClass):
                out.append(rng.choice(sorted(element.allowed)))
            else:
                assert isinstance(element, Choice)
                if element.negated:
                    while (other := rng.randbytes(element.width)) in element.options:
                        pass
                    out += other
                else:
                    out += rng.choice(sorted(element.options))
    return bytes(out)


@pytest.mark.parametrize("engine", ENGINES)
@given(body=bodies(), seed=st.integers(0, 2**32), lead=st.integers(0, 40))
@settings(max_examples=100, deadline=None)
def test_generated_signatures_are_found_at_every_split(
    engine: str, body: str, seed: int, lead: int
) -> None:
    try:
        db = compile_database(f"Gen:0:*:{body}\n".encode(), kind="ndb", version=1, source="gen",
                              engine=engine)  # fmt: skip
    except DatabaseError:
        return  # a loader rule (e.g. a short part) refused it, as ClamAV would
    rng = random.Random(seed)
    sample = matching_bytes(db.signatures[0], rng)
    data = b"\xf0" * lead + sample + b"\xf0" * 3
    for split in range(len(data) + 1):
        stream = db.open_stream()
        found = stream.feed(data[:split]) + stream.feed(data[split:])
        stream.close()
        assert any(m.name == "Gen" and m.end == lead + len(sample) for m in found), (body, split)
