"""``hv-emu scan -j``'s forked children for one file (``scan_shared.py``): started, given claims,
heard from, and ended with the process whatever ends it.

Models: a parent's side of a few plain ``os.fork`` workers (no ``multiprocessing``: its import
and pool cost as much as half a fast scan, docs/PERFORMANCE.md): ``Children.start`` writes the
claim tokens (each unit's number, ``TOKEN`` bytes) into a pipe, closes its write end and forks;
every process, the parent included, claims by reading one token (``token_claim``; a pipe read of
a few bytes is one claim, never split or given twice; end of file: nothing left). A child runs
its work, sends the result pickled through a pipe of its own and ends with ``os._exit`` (never
the parent's cleanup or buffered output); ``Children.collect`` reads each result and reaps its
child; ``Children.end`` kills and reaps whatever is left.

Follows: fork(2), pipe(7) (reads and writes of at most PIPE_BUF, 4,096, bytes are atomic; a
pipe holds at least one page, 4,096 bytes, even for a user over ``pipe-user-pages-soft``, so the
tokens of ``scan_shared.MAX_UNITS`` units fit before anyone reads; the write end is non-blocking,
and a pipe that cannot take them all at once means no sharing rather than waiting forever),
signal(7), pthread_sigmask(3) (SIGINT, SIGTERM and SIGHUP are blocked from before each fork until
the child has its own handlers, or the parent has noted the child: a signal in between neither
runs the parent's handlers in the child nor leaves a child unreaped).

Leaves out: children that are stopped (SIGSTOP) rather than ended: the parent waits for them.

User controls: nothing but signals: Ctrl-C, SIGTERM and SIGHUP end the children before the
process ends as the signal says (``children_end_with_us``), a signal ignored when the scan
starts stays ignored (by the children too), and a child whose parent was killed outright ends
at its next claim. A child that dies, or sends what does not decode, gives no result.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import signal
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

TOKEN = 4  # bytes of one claim token (a unit's number, little-endian)


def token_claim(tokens: int, parent: int | None = None) -> Callable[[], int | None]:
    """Claims read from the token pipe; a child (``parent`` given) ends if its parent is gone."""

    def claim() -> int | None:
        if parent is not None and os.getppid() != parent:
            os._exit(1)  # an orphan: the parent was killed, nobody wants its result
        token = os.read(tokens, TOKEN)
        return int.from_bytes(token, "little") if len(token) == TOKEN else None

    return claim


#: The signals that end a scan (``children_end_with_us``): blocked around each fork.
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _child(work: Callable[[int, int], object], tokens: int, results: int, parent: int,
           others: list[int], mask: Iterable[int]) -> None:  # fmt: skip
    """A forked child's whole life, ``ENDING`` signals blocked at first: their handlers set to
    the default (one ignored stays ignored), the signal mask ``mask`` restored, the parent's
    descriptors ``others`` closed, ``work(tokens, parent)``, its result sent, the end (never
    returns)."""
    status = 1
    try:
        for signum in ENDING:
            if signal.getsignal(signum) != signal.SIG_IGN:  # an ignored one stays ignored
                signal.signal(signum, signal.SIG_DFL)  # ended by the parent or the terminal
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one sent meanwhile ends it now
        for fd in others:
            os.close(fd)
        data = pickle.dumps(work(tokens, parent))
        view = memoryview(data)
        while view:
            view = view[os.write(results, view) :]
        status = 0
    finally:
        os._exit(status)  # never the parent's cleanup, nor its buffered output


class Children:
    """The forked children and the pipes they read claims from and send results through."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.results: list[int] = []
        self.tokens: int | None = None

    def start(self, units: range, count: int, work: Callable[[int, int], object]) -> int:
        """Put ``units`` up for claims and fork up to ``count`` children running ``work(token
        pipe, parent's pid)``; the token pipe's read end, for this process's own claims. A pipe
        or fork that fails means fewer children (the claims work with none); only the token
        pipe's failure raises ``OSError``, as does one that cannot take every token at once
        (``BlockingIOError``: never a wait for a reader that does not exist yet)."""
        tokens = b"".join(unit.to_bytes(TOKEN, "little") for unit in units)
        read, write = os.pipe()
        self.tokens = read
        try:
            os.set_blocking(write, False)
            if os.write(write, tokens) != len(tokens):  # only past PIPE_BUF: not all or none
                raise BlockingIOError(errno.EAGAIN, "the claim tokens do not fit the pipe")
        finally:
            os.close(write)  # before any fork: the last claim then reads end of file
        parent = os.getpid()
        for _ in range(count):
            # The mask as it is (a handler already due runs here, nothing changed yet), then
            # ENDING blocked until the child is noted: restored even if the block's own check
            # of due handlers raises.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, ENDING)
                if not self._fork(work, read, parent, mask):
                    break
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal meanwhile: now
        return read

    def _fork(self, work: Callable[[int, int], object], tokens: int, parent: int,
              mask: Iterable[int]) -> bool:  # fmt: skip
        """One child with a result pipe of its own, noted (``ENDING`` blocked by the caller);
        False when out of descriptors or processes (fewer children, the claims still work)."""
        try:
            result_read, result_write = os.pipe()
        except OSError:
            return False
        try:
            pid = os.fork()
        except OSError:
            os.close(result_read)
            os.close(result_write)
            return False
        if pid == 0:
            _child(work, tokens, result_write, parent, [result_read, *self.results], mask)
        self.pids.append(pid)
        self.results.append(result_read)
        os.close(result_write)
        return True

    def collect(self) -> list[object]:
        """The items of each child's result (a list), once it has ended; a child that died or
        sent what does not decode gives none."""
        items: list[object] = []
        while self.pids:
            pid, fd = self.pids[0], self.results[0]
            parts = []
            while chunk := os.read(fd, 1 << 16):
                parts.append(chunk)
            del self.results[0]  # before closing: end() must never close it again
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            del self.pids[0]
            if os.waitstatus_to_exitcode(status) != 0:
                continue
            try:
                received = pickle.loads(b"".join(parts))
            except Exception:  # a child's bytes cut short: ignored
                continue
            if isinstance(received, list):
                items += received
        return items

    def end(self) -> None:
        """Kill and reap every child still there, close every pipe (idempotent)."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        fds = [*self.results, *([] if self.tokens is None else [self.tokens])]
        self.pids, self.results, self.tokens = [], [], None
        for fd in fds:
            with contextlib.suppress(OSError):  # never an error in place of the signal's end
                os.close(fd)


@contextlib.contextmanager
def children_end_with_us(children: Children) -> Iterator[None]:
    """While children may run: SIGTERM and SIGHUP (when they would end the process, their default)
    raise ``KeyboardInterrupt`` here, as Ctrl-C does, so the children are killed and reaped
    (``Children.end``) before this process ends: by the signal, as it would have without
    children, or for Ctrl-C with ``cli/main.py``'s one line and status 130."""
    caught: list[int] = []

    def raised(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, raised)
    try:
        yield
    except KeyboardInterrupt:
        children.end()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous = {}
        if caught:
            os.kill(os.getpid(), caught[0])  # its default: this process ends as it would have
        raise  # Ctrl-C (or something else meanwhile took the signal)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
