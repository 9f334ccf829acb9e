"""The matching engine: anchor literals found by a literal finder, verified, chained, over a stream.

Models: libclamav's body matching (``matcher-ac.c``). Each variant of each part of a signature
enters the literal finder under its *anchor*, its longest static byte run. A hit of the anchor
places a candidate (the variant's start follows from where the anchor sits in it), which is then
verified element by element (the patterns and their anchors are ``program.py``'s). Bodies that
are one literal (all of rfxn.ndb but one) need no verification. A signature of several parts
(cut at ``*`` and ranges) fires when its parts are found in order, each at an allowed distance
from the end of the one before. A part's anchored bytes (``aa[x-y]BODY``, ``BODY[x-y]aa``) are
checked around its verified body: a left one in the bytes before it, a right one as its bytes
arrive, so the candidate waits at most 33 bytes more.

Streaming: the disk path feeds every sector or DMA transfer in order. The literal finder keeps its
own state across chunks (pyahocorasick's iterator, Hyperscan's stream), so a literal straddling a
chunk boundary is found. The stream also keeps, all bounded by the database, never by the data:
- the last ``history`` bytes (the widest part that needs verifying, with its anchored bytes'
  ranges), to verify around an anchor;
- candidates whose tail has not arrived yet (at most one per variant and start in that window);
- per multi-part signature and part, the ends of chains found so far: at most ``TRACK_LENGTH``
  (the newest, as libclamav keeps its last 8 offsets per part, ``CLI_DEFAULT_AC_TRACKLEN``), only
  the earliest when the gap is unbounded, and none that a later part could no longer reach.

Follows: ClamAV's raw-mode semantics (``clamscan --allmatch`` with normalisation and decoders off):
every name is reported, including two names for one body and a body nested in another.

Leaves out: what ``signatures`` refuses or marks not applied. ``EOF-n`` offsets match only in a
stream opened with its length (a one-shot scan), never on a disk. Unlike ClamAV, every occurrence
is reported (a disk has no per-file verdict; callers dedupe). With more than ``TRACK_LENGTH`` chain
ends inside one gap, the oldest are forgotten, as in ClamAV.

Guest controls: the scanned bytes (every hit costs a little Python: a hostile guest can make the
scan slower, never the state larger) and, through updates, the signatures.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from hv_emu.scanner.pattern import ByteClass, Folded, Literal, Variant
from hv_emu.scanner.program import Pattern, Program
from hv_emu.scanner.record import Frozen, setfield

if TYPE_CHECKING:
    from hv_emu.scanner.logical_match import LogicalState

TRACK_LENGTH = 64


class Match(Frozen):
    """A signature found at ``[start, end)``, absolute offsets in the stream."""

    __slots__ = ("name", "start", "end")  # noqa: RUF023 (__init__'s order)
    name: str
    start: int
    end: int

    def __init__(self, name: str, start: int, end: int) -> None:
        setfield(self, "name", name)
        setfield(self, "start", start)
        setfield(self, "end", end)


def _matches_at(elements: Variant, data: bytes | bytearray, at: int) -> bool:
    """Verify a variant element by element with its first byte at ``data[at]``."""
    for element in elements:
        if isinstance(element, Literal):
            if data[at : at + element.width] != element.data:
                return False
        elif isinstance(element, ByteClass):
            if data[at] not in element.allowed:
                return False
            if element.not_crlf and data[at] == 0x0D and data[at + 1 : at + 2] == b"\n":
                return False  # '!(L)' inside a part: neither an LF nor a CR LF
        elif isinstance(element, Folded):
            if data[at : at + element.width].lower() != element.data:
                return False
        else:  # a Choice: in the set when negated, or not in it otherwise
            segment = bytes(data[at : at + element.width])
            if ((segment.lower() if element.folded else segment) in element.options) == (
                element.negated
            ):
                return False
        at += element.width
    return True


class LiteralStream(Protocol):
    """A literal finder's per-stream state: chunks in, (literal index, absolute end) out."""

    def feed(self, chunk: bytes) -> Iterable[tuple[int, int]]: ...

    def close(self) -> None: ...


class LiteralMatcher(Protocol):
    """A compiled set of literals (an automaton or a Hyperscan database)."""

    name: str

    def open(self) -> LiteralStream: ...



class ScanStream:
    """Scans one in-order byte stream fed in chunks; ``offset`` is the bytes fed so far."""

    def __init__(
        self, program: Program, literals: LiteralStream | None, length: int | None = None
    ) -> None:
        self._program = program
        self._literals = literals
        self._length = length  # the stream's total length when known: places EOF-n offsets
        self.offset = 0
        # The last ``program.history`` bytes before ``offset``, for verification.
        self._history = bytearray()
        # Candidates whose bytes have not all arrived yet, by (id of pattern, start).
        self._pending: dict[tuple[int, int], Pattern] = {}
        # Ends (with the chain's start) of chains of parts found so far, by (chain, next part).
        self._chains: dict[tuple[int, int], deque[tuple[int, int]]] = {}
        # Added to the literal finder's end offsets: its stream may have begun after ours.
        self._literal_base = 0
        # Counts of the logical signatures' subsignatures (None: the database has none).
        self._logical: LogicalState | None = None
        if program.logical is not None:
            self._logical = program.logical.open(length)

    def feed(self, chunk: bytes) -> list[Match]:
        """Scan the next chunk; return the matches that end within it, sorted by end offset (a
        logical signature when it holds: at the end of a stream of known length, else at the
        chunk that made it hold)."""
        matches = self._feed(chunk)
        if self._logical is None:
            return matches
        return self._logical.feed(matches, self.offset)

    def _feed(self, chunk: bytes) -> list[Match]:
        chunk = bytes(chunk)
        base = self.offset - len(self._history)  # absolute offset of window[0]
        self.offset += len(chunk)
        if self._literals is None:
            return []
        hits = self._literals.feed(chunk)
        if self._literal_base:
            hits = [(literal, end + self._literal_base) for literal, end in hits]
        by_literal = self._program.patterns_by_literal
        if self._program.simple:  # plain literals only: every hit is a match
            plain = {
                Match(p.name, end - p.width, end)
                for literal, end in hits
                for p in by_literal[literal]
                if p.offset.allows(end - p.width, self._length)
            }
            return sorted(plain, key=_order)
        if not hits and not self._pending:  # the usual chunk: nothing found, nothing waiting
            self._remember(chunk)
            return []
        found: list[tuple[int, int, Pattern]] = []  # verified (start, end, pattern)
        for literal, end in hits:
            for pattern in by_literal[literal]:
                start = end - len(pattern.anchor) - pattern.anchor_at
                if start < 0:
                    continue
                if pattern.part == 0 and not pattern.offset.allows(start, self._length):
                    continue
                if pattern.needs_verification:
                    self._pending[(id(pattern), start)] = pattern
                else:
                    found.append((start, end, pattern))
        chunk_base = self.offset - len(chunk)  # absolute offset of chunk[0]
        for key, pattern in list(self._pending.items()):
            start = key[1]
            end = start + pattern.width
            if end > self.offset:
                continue  # its tail is still to come
            if pattern.anchored:
                verdict = self._verify_anchored(pattern, start, chunk, chunk_base, base)
                if verdict is None:
                    continue  # its right anchored byte may still come
                del self._pending[key]
                if verdict:
                    found.append((start, end, pattern))
                continue
            del self._pending[key]
            data: bytes | bytearray
            if start >= chunk_base:  # all in this chunk: verify in place, no copy
                data, at = chunk, start - chunk_base
            else:  # it began in the history: join just its own bytes
                data, at = self._history[start - base :] + chunk[: max(0, end - chunk_base)], 0
            if _matches_at(pattern.elements, data, at):
                found.append((start, end, pattern))
        self._remember(chunk)
        # In end order, so that a part is chained after every part it may follow.
        found.sort(key=lambda hit: (hit[1], hit[0], hit[2].part))
        matches = set()
        for start, end, pattern in found:
            chain_start = start if pattern.part == 0 else self._chain_start(pattern, start)
            if chain_start is None:
                continue
            if pattern.last:
                matches.add(Match(pattern.name, chain_start, end))
            else:
                self._extend_chain(pattern, end, chain_start)
        self._forget_unreachable_chains()
        return sorted(matches, key=_order)

    def _window(self, first: int, stop: int, chunk: bytes, chunk_base: int, base: int) -> bytes:
        """The stream's bytes at absolute offsets [first, stop), from the history and the chunk."""
        older = bytes(self._history[first - base : min(stop, chunk_base) - base])
        return older + chunk[max(first, chunk_base) - chunk_base : max(0, stop - chunk_base)]

    def _verify_anchored(
        self, pattern: Pattern, start: int, chunk: bytes, chunk_base: int, base: int
    ) -> bool | None:
        """Verify a variant with anchored bytes whose body has arrived: True or False, or None
        while its right anchored byte is still to come. A left anchored byte must lie in the
        stream (from offset 0); a right one is found as soon as it arrives, and is missed only
        once every byte in its range has arrived without it."""
        end = start + pattern.width
        first = max(0, start - pattern.reach_before)
        stop = min(self.offset, end + pattern.reach_after)
        data = self._window(first, stop, chunk, chunk_base, base)
        at = start - first
        if not _matches_at(pattern.elements, data, at):
            return False
        if (left := pattern.left) is not None:
            # Offsets at..at-1 are the body's; the anchored byte sits nearest..farthest before it.
            window = data[max(0, at - 1 - left.farthest) : max(0, at - left.nearest)]
            if not any(byte in left.allowed for byte in window):
                return False
        # At 0 (no byte before), the part starts the stream.
        edge = pattern.left_boundary
        if edge is not None and not edge.holds_before(data[at - 1] if at else None):
            return False
        after = at + pattern.width
        verdict: bool | None = True
        if (edge := pattern.right_boundary) is not None:
            ended = self._length is not None and stop >= self._length
            verdict = edge.holds_after(bytes(data[after : after + edge.reach]), ended)
            if verdict is False:
                return False
        right = pattern.right
        if right is not None and not any(b in right.allowed for b in data[after + right.nearest :]):
            return None if stop < end + right.farthest + 1 else False
        return verdict

    def _remember(self, chunk: bytes) -> None:
        """Keep the last ``program.history`` bytes (and never more) for verification."""
        keep = self._program.history
        if keep == 0:
            return
        if len(chunk) >= keep:
            self._history = bytearray(chunk[len(chunk) - keep :])
        else:
            self._history += chunk
            del self._history[: max(0, len(self._history) - keep)]

    def _chain_start(self, pattern: Pattern, start: int) -> int | None:
        """Where the chain this part completes begins, if some earlier part ends within its gap."""
        for end, chain_start in self._chains.get((pattern.chain, pattern.part), ()):
            gap = start - end
            if gap >= pattern.gap_min and (pattern.gap_max is None or gap <= pattern.gap_max):
                return chain_start
        return None

    def _extend_chain(self, pattern: Pattern, end: int, chain_start: int) -> None:
        key = (pattern.chain, pattern.part + 1)
        ends = self._chains.setdefault(key, deque(maxlen=TRACK_LENGTH))
        if ends and self._program.gap_max[pattern.chain][pattern.part + 1] is None:
            return  # with no upper bound on the gap, the earliest end serves every later part
        ends.append((end, chain_start))

    def _forget_unreachable_chains(self) -> None:
        """Drop chain ends that no part still to come can lie within reach of."""
        earliest_start = self.offset - self._program.widest
        for (chain, part), ends in self._chains.items():
            gap_max = self._program.gap_max[chain][part]
            if gap_max is None:
                continue
            while ends and earliest_start - ends[0][0] > gap_max:
                ends.popleft()

    def switch_literals(self, literals: LiteralStream, recent: bytes) -> None:
        """Go on with another literal finder of the same program (a database recompiled faster),
        keeping offsets, history, candidates and chains. ``recent`` is the stream's last bytes (at
        least the widest pattern less one, fewer only at the start): fed to the new finder so a
        literal straddling this point is still found; its hits there were already reported."""
        old, self._literals = self._literals, literals
        if old is not None:
            old.close()
        self._literal_base = self.offset - len(recent)
        if recent:
            literals.feed(recent)

    def close(self) -> None:
        """Release the literal finder's stream state (Hyperscan's is outside Python's heap)."""
        if self._literals is not None:
            self._literals.close()


def _order(match: Match) -> tuple[int, int, str]:
    return (match.end, match.start, match.name)
