"""Test devices for the port bus."""

from __future__ import annotations


class Fifo:
    """A test device: a data port that reads 1, 2, 3, ... and records what is written."""

    def __init__(self) -> None:
        self.next = 1
        self.written: list[int] = []

    def io_read(self, offset: int, size: int) -> int:
        value = self.next
        self.next += 1
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.written.append(value)
