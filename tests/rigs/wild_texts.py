"""Generated ``.ndb`` lines around ``simple_lines.WILD_RUNS``'s form (Hypothesis strategies), for
the tests that hold the update pause's check and the worker's parse to ``parse_database``: plain
and wildcard bodies, well formed or one token off, under names each run form takes (``{HEX}``
names, names without braces) and names it must leave to the per-line path (``(``, ``?``, ``*``
or a later ``{`` in the name, a name too long for a run), with the line endings it must take and
leave."""

from __future__ import annotations

from hypothesis import strategies as st

RUNS = st.sampled_from([b"41", b"4142", b"414243", b"4a4B4c4D", b"00ff", b"ff" * 9, b"2e" * 40])
ONES = st.sampled_from([b"??", b"(22|27)", b"(2A|2b|2c)", b"(41|41)", b"4?", b"(4142|4344)",
                        b"(B)", b"?", b"(22|", b"!(22|27)"])  # fmt: skip
GAPS = st.sampled_from([b"*", b"{0-16}", b"{3-}", b"{-5}", b"{0-0}", b"{7-2}", b"{4}", b"{-0}",
                        b"{0-}", b"{999999999-1}", b"{1-2", b"**"])  # fmt: skip
NAMES = st.sampled_from([b"{HEX}php.malware.1", b"{HEX}a-b", b"N", b"Sane.X-1", b"{", b"}x",
                         b"N(x", b"Q?", b"S*x", b"a{b", b"{a{b", b"#c", b"Sp ace", b"N" * 4100,
                         b"{HEX}" + b"N" * 4092])  # fmt: skip
HEADS = st.sampled_from([b":0:*:"] * 6 + [b":1:*:", b":0:10:"])
TAILS = st.sampled_from([b""] * 6 + [b"\r", b"\r\r", b":50", b"\x00x"])

#: A body: runs with one-byte wildcards between them, parts between gaps (each token may be
#: one the grammar refuses or the simple form leaves).
PARTS = st.lists(st.tuples(ONES, RUNS), max_size=3).map(
    lambda pairs: b"".join(o + r for o, r in pairs))
BODIES = st.lists(st.tuples(GAPS, RUNS, PARTS), min_size=1, max_size=4).map(
    lambda parts: b"".join((g if i else b"") + r + p for i, (g, r, p) in enumerate(parts)))


@st.composite
def wild_line(draw: st.DrawFn) -> bytes:
    """One line (no newline)."""
    return draw(NAMES) + draw(HEADS) + draw(BODIES) + draw(TAILS)


#: A text: mostly lines of the run forms, the rest anything of the above, with comments.
TEXTS = st.tuples(
    st.lists(st.one_of(wild_line(), st.just(b"# c"), st.just(b"{HEX}P:0:*:414243"),
                       st.just(b"W:0:*:41424344*45464748")), max_size=25),
    st.sampled_from([b"", b"\n", b"\n\n"]),
).map(lambda pair: b"\n".join(pair[0]) + pair[1])


#: Hand-picked ``.ndb`` lines: plain, wildcard, refused and edge-case lines, for the tests that
#: hold the pause's check and the worker's parse to ``parse_database`` line by line.
NDB_LINES = st.sampled_from([
    b"Plain:0:*:414243", b"Plain.Two:0:*:41424344454647", b"Short:0:*:4142", b"Odd:0:*:4142434",
    b"Crlf:0:*:414243\r", b"Crlf2:0:*:414243\r\r", b"# comment", b"", b"Wild:0:*:4142??4344",
    b"Alt:0:*:41(4243|4445)46", b"Offset:0:10:414243", b"Target:1:*:414243", b"Bad:0:*:41424g",
    b"Name (Clam):0:*:414243", b"Flevel:0:*:414243:999", b":0:*:414243", b"#x:0:*:414243",
    b"Hex:0:*:" + b"ab" * 40, b"Caps:0:*:ABCDEF", b"Sp ace:0:*:414243", b"\xff\xfe:0:*:414243",
    b"Long:0:*:" + b"41" * 33, b"Chain:0:*:414243*444546", b"Same:0:*:414243",
    b"N" * 4200 + b":0:*:414243", b"Nul:0:*:4142\x0043", b"Gap:0:*:414243{2-5}444546",
    b"Anch:0:*:41[1-2]424344",
])  # fmt: skip
#: The same for ``.db`` lines.
DB_LINES = st.sampled_from([
    b"Plain=414243", b"Plain Two=41424344", b"Short=4142", b"Odd=4142434", b"Cr=414243\r",
    b"# comment", b"", b"Wild=41??4243", b"Skip==414243", b"NoEquals", b"Name (Clam)=414243",
    b"=414243", b"Nul\x00=414243", b" lead=414243", b"Eq=41=42", b"Hex=" + b"cd" * 33,
    b"Same=414243", b"Alt=41(42|43)4445",
])  # fmt: skip
