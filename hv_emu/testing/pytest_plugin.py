"""The pytest plugin of hv-emu: an ``hv`` fixture for testing hypercall ABIs.

Models: a test harness's entry point, as pytest-qt's ``qtbot`` or pytest-httpserver's
``httpserver``: installing hv-emu registers this module under the ``pytest11`` entry point, so any
project's tests can ask for ``hv``, a fresh ``hv_emu.testing.Hypervisor`` (one machine, 64 MiB,
a 10-second watchdog), closed after the test.

Follows: pytest's plugin conventions (entry point group ``pytest11``, fixtures as generators).

Leaves out: command-line options and markers; configure a machine by building
``Hypervisor(MachineConfig(...))`` in your own fixture.

Guest controls: nothing here; see ``hv_emu/testing/__init__.py`` for what a run reports.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hv_emu.testing import Hypervisor


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    """A fresh hypervisor bench: ``hv.register_hypercall``, ``hv.add_port_device``,
    ``hv.run_asm(...)`` -> ``GuestRun`` (see docs/TESTING.md)."""
    bench = Hypervisor()
    try:
        yield bench
    finally:
        bench.close()
