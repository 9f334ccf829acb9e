"""The files ``hv-emu run`` writes: never one it did not write, never half of one.

Models: a run's output files (``--report``, ``--events``, ``--screen``, ``--trace-json``,
``--capture``) as one transaction, the way ``sed -i`` or an editor saves a file:

- Before anything is opened (``Outputs.prepare``), every output is checked: not a directory, not
  the same file as any input (the image, ``--boot``, ``--db``, ``--trust``, ``--disk``, ``--file``
  grants) nor as another output, and not inside ``--state`` or a writable ``--file`` directory.
  "The same file" is the same inode (``st_dev`` and ``st_ino``, so a hard link counts) or the
  same path once symbolic links are resolved (for files that do not exist yet). A clash is one
  line and exit status 2; no file has been touched.
- Each output that is, or will be, a regular file is written to a temporary created beside it
  (``.NAME.<16 hex>.tmp``, ``O_CREAT | O_EXCL | O_NOFOLLOW``: a new inode of our own) before the
  guest runs, which also proves the directory exists and is writable; the streaming outputs
  (``--events``, ``--trace-json``, ``--capture``) stream into it. Only when the run ended (the
  guest halted, faulted, timed out, was stopped or ended by a signal: Ctrl-C, SIGTERM, SIGHUP; or
  the program exited)
  and every output was written does ``commit`` rename each temporary over its name (the existing
  file's permission bits kept). A refused run, a failed write, an internal error or a signal
  before the guest started removes the temporaries (``discard``) and leaves every existing file
  as it was.
- ``--events`` is the one output put in place early (``publish``): its temporary is renamed over
  its name once the guest is loaded, just before it starts, so the file itself grows line by
  line (``tail -f``) and a run that is killed, or fails, keeps every event flushed so far. A
  refused run still leaves an existing file as it was; the replacement is a rename, never a
  truncation, so other hard links of the old file keep its contents.
- A symbolic link given as an output is followed: its target is replaced, the link stays.
- An output that exists and is neither a regular file nor a directory (``/dev/null``, a FIFO,
  a terminal, ``/dev/stdout``) is written directly, as it was before: there is nothing to
  destroy and nowhere to put a temporary. A write error there (``/dev/full``) is one line.

Follows: rename(2) (atomic replacement within a file system), open(2) ``O_EXCL``,
stat(2) ``st_dev``/``st_ino``; README.md "Output files".

Leaves out: fsync (a host crash may lose a just-renamed output), an existing output's owner,
ACLs and other hard links (those names keep the old contents), and ``--sysroot``: the program
only reads it, outputs are renamed into place after the run, and ``--sysroot /`` holds every
path there is.

User controls: every path; the guest controls only the bytes written.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

from hv_emu.errors import ConfigError, HostError
from hv_emu.hostile_dir import CREATE_FLAGS, temporary_name

#: A path named on the command line with the option that named it: ("--db", Path("x.db")).
Named = tuple[str, Path]


def _identity(path: Path) -> set[object]:
    """What makes two paths the same file: the resolved path, and the inode if it exists."""
    keys: set[object] = {os.path.realpath(path)}
    with contextlib.suppress(OSError, ValueError):
        info = os.stat(path)
        keys.add((info.st_dev, info.st_ino))
    return keys


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` (resolved) lies in ``directory`` or below it (by inode: bounded by the
    number of components of the path)."""
    try:
        top = os.stat(directory)
    except (OSError, ValueError):
        return False
    if not stat.S_ISDIR(top.st_mode):
        return False
    for parent in Path(os.path.realpath(path)).parents:
        with contextlib.suppress(OSError):
            info = os.stat(parent)
            if (info.st_dev, info.st_ino) == (top.st_dev, top.st_ino):
                return True
    return False


class OutputText(io.TextIOWrapper):
    """A text output that names the user's path in errors (``name``), not the temporary's. With
    ``keep_errors``, a failed write does not raise into the writer (an exit observer inside the
    vCPU's hook): the first error is kept, later writes vanish, and ``close`` raises it as one
    ``HostError`` line."""

    def __init__(self, fd: int, shown: str, what: str, *, keep_errors: bool = False) -> None:
        super().__init__(io.FileIO(fd, "w", closefd=True), encoding="utf-8")
        self._shown, self._what, self._keep = shown, what, keep_errors
        self.error: OSError | None = None

    @property
    def name(self) -> str:
        return self._shown

    def write(self, text: str) -> int:
        if self.error is not None:
            return len(text)
        try:
            return super().write(text)
        except OSError as err:
            if not self._keep:
                raise
            self.error = err
            return len(text)

    def flush(self) -> None:
        if self.error is not None:
            return
        try:
            super().flush()
        except OSError as err:
            if not self._keep:
                raise
            self.error = err

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        except OSError as err:
            self.error = self.error or err
            with contextlib.suppress(OSError):
                self.buffer.close()  # closes the descriptor, unflushed text dropped
            if not self._keep:
                raise
        if self._keep and self.error is not None:
            why = self.error.strerror or str(self.error)
            raise HostError(f"cannot write {self._what} to {self._shown}: {why}")


@dataclass
class Output:
    """One output: the user's ``path``, the ``target`` it names (links resolved) and, for a
    regular file, the ``temporary`` written instead until ``commit``."""

    option: str
    path: Path
    target: Path
    temporary: Path | None = None
    fd: int | None = None  # the temporary's, open from creation until the output is opened

    @property
    def writes_to(self) -> Path:
        """The path to write now: the temporary, or the device or FIFO itself."""
        return self.path if self.temporary is None else self.temporary


@dataclass
class Outputs:
    """A run's outputs by option; a context manager that discards them unless committed."""

    outputs: dict[str, Output] = field(default_factory=dict)
    committed: bool = False
    streams: list[OutputText] = field(default_factory=list)  # closed by ``discard`` if still open

    @classmethod
    def prepare(cls, outputs: Sequence[tuple[str, Path | None]], inputs: Iterable[Named],
                input_dirs: Iterable[Named] = ()) -> Outputs:  # fmt: skip
        """Check every output against the inputs and each other, then create the temporaries;
        ``ConfigError`` (one line naming the option) for the first problem, nothing left."""
        given = [(option, path) for option, path in outputs if path is not None]
        inputs, input_dirs = list(inputs), list(input_dirs)
        seen: list[tuple[str, Path, set[object]]] = []
        for option, path in given:
            if path.is_dir():
                raise ConfigError(f"{option} {path} is a directory: give a file to write")
            if _special(path):
                continue
            keys = _identity(path)
            for other_option, other in inputs:
                if keys & _identity(other):
                    raise ConfigError(f"{option} {path} is the same file as {other_option} "
                                      f"{other}: hv-emu never writes over a file it reads; "
                                      "name another file")  # fmt: skip
            for other_option, other in input_dirs:
                if _inside(path, other):
                    raise ConfigError(f"{option} {path} is inside {other_option} {other}: "
                                      "name a file outside it")  # fmt: skip
            for other_option, other, other_keys in seen:
                if keys & other_keys:
                    raise ConfigError(f"{option} {path} and {other_option} {other} are the same "
                                      "file: give each output its own")  # fmt: skip
            seen.append((option, path, keys))
        made = cls()
        try:
            for option, path in given:
                made.outputs[option] = _create(option, path)
        except BaseException:
            made.discard()
            raise
        return made

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        if not self.committed:
            self.discard()

    def path(self, option: str) -> Path | None:
        """Where ``option``'s bytes go now (its temporary), or None if it was not given."""
        output = self.outputs.get(option)
        return None if output is None else output.writes_to

    def open_text(self, option: str, what: str, *, keep_errors: bool = False) -> TextIO | None:
        """``option``'s output as a UTF-8 text stream (``OutputText``), or None if not given."""
        output = self.outputs.get(option)
        if output is None:
            return None
        fd, output.fd = output.fd, None
        if fd is None:  # a device or FIFO, opened now (a FIFO waits for its reader, as before)
            try:
                fd = os.open(output.path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as err:
                raise HostError(f"cannot write {what} to {output.path}: {err.strerror}") from None
        stream = OutputText(fd, str(output.path), what, keep_errors=keep_errors)
        self.streams.append(stream)
        return stream

    def write_text(self, option: str, what: str, text: str) -> None:
        """Write all of ``text`` as ``option``'s output, if it was given."""
        stream = self.open_text(option, what, keep_errors=True)
        if stream is not None:
            stream.write(text)
            stream.close()

    def release(self, option: str) -> None:
        """Close the temporary's descriptor: another part of hv-emu opens it by path."""
        output = self.outputs.get(option)
        if output is not None and output.fd is not None:
            os.close(output.fd)
            output.fd = None

    def publish(self, option: str) -> None:
        """Put ``option``'s temporary in place now (``--events``, once the guest starts): from
        then on the user's file is the stream itself, whatever happens to the run."""
        output = self.outputs.get(option)
        if output is not None:
            _put_in_place(output)

    def commit(self) -> None:
        """Rename every temporary over its output (the old file's permission bits kept)."""
        for output in self.outputs.values():
            self.release(output.option)
            _put_in_place(output)
        self.committed = True

    def discard(self) -> None:
        """Remove every temporary: existing files stay as they were."""
        for stream in self.streams:
            with contextlib.suppress(OSError, HostError):
                stream.close()
        for output in self.outputs.values():
            self.release(output.option)
            if output.temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(output.temporary)
                output.temporary = None


def _put_in_place(output: Output) -> None:
    """Rename ``output``'s temporary over its target, keeping the old file's permission bits."""
    if output.temporary is None:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(output.temporary, stat.S_IMODE(os.stat(output.target).st_mode))
        os.replace(output.temporary, output.target)
    except OSError as err:
        raise HostError(f"cannot write {output.option} {output.path}: "
                        f"{err.strerror}") from None  # fmt: skip
    output.temporary = None


def _special(path: Path) -> bool:
    """An existing output that is not a regular file or directory: a device, a FIFO, a socket."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _create(option: str, path: Path) -> Output:
    """``option``'s output: a new temporary beside a regular (or new) file, else the path."""
    if _special(path):
        return Output(option, path, path)
    target = Path(os.path.realpath(path))
    temporary = target.parent / temporary_name(f".{target.name}")
    try:
        fd = os.open(temporary, CREATE_FLAGS, 0o666)
    except OSError as err:
        raise ConfigError(f"cannot write {option} {path}: {err.strerror}") from None
    return Output(option, path, target, temporary, fd)
