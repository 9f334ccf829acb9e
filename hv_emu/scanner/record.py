"""Records without ``dataclasses``: value classes for what ``hv-emu scan`` imports at start-up.

Models: what ``@dataclass`` gives the scanner's small value classes (the pattern model, a match,
a file's result), written once as two base classes over ``__slots__``: ``Record`` (equal when of
one class with equal fields, printed as ``Name(field=value, ...)``, pickled as its fields given
back to its ``__init__``) and ``Frozen`` (a ``Record`` whose fields cannot be set once built:
its ``__init__`` stores them with ``object.__setattr__``, as a frozen dataclass's does). Importing
``dataclasses`` costs about 6 ms (it imports ``inspect``) and each decorated class about 0.4 ms
of generated code; a scan of one small file is about 50 ms in all (docs/PERFORMANCE.md).

Follows: the ``dataclasses`` semantics the scanner relied on: ``eq`` compares the fields in order
and only with the same class, a frozen record hashes its fields, a mutable one is unhashable.

Leaves out: ordering, ``replace``, ``fields`` (a class that needs them stays a dataclass).

Guest controls: nothing (the values come from the parsers that bound them).
"""

from __future__ import annotations

from typing import Any

#: How a frozen record's ``__init__`` stores a field.
setfield = object.__setattr__


class Record:
    """A record whose fields are its ``__slots__``, in ``__init__``'s argument order. Defining
    ``__eq__`` makes it unhashable, as a mutable dataclass."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return self.__class__, self._values()


class Frozen(Record):
    """A ``Record`` that cannot be changed once built, and so may be hashed."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")
