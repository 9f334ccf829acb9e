"""hv-emu: a thin hypervisor in the style of BitVisor, on the Unicorn CPU emulator.

Models: a VMM that runs one guest, traps what it must (VMCALL, port I/O, CPUID, HLT, faults) and
guards the guest from outside the OS: every byte the guest writes to its disk is matched against
ClamAV signatures, and the signature database is replaced at run time by a signed update that comes
by VMCALL or over the network. Read this map first; every module opens with what it models, which
spec it follows, what it leaves out and what the guest controls.

The picture (``docs/ARCHITECTURE.md`` walks through it)::

    guest code (asm/, ELF, flat images)
          | runs on
    vcpu/          Unicorn, its only importer: traps become exits (exits.py, frozen values)
          | exit
    dispatch.py    exit -> outcome, a pure function
          |-- hypercalls/   the ABI (docs/ABI.md), one module per hypercall, one table
          |-- bus.py        the port bus -> devices/ (offsets, never ports; no policy)
          |                 devices/storage/ -> observer -> inspection.py (scanner + actions)
          |                 (and, without an exit, mmio.py: MMIO windows -> the AHCI HBA)
          |-- cpuid.py      the CPUID table
    updates/       verify -> parse -> swap: one pipeline for VMCALL and network
    net/           frames -> switch -> update receiver (sans-IO); backends and pcap at the edge

The files at the top are the picture: ``machine.py`` (the composition root, the only file that
wires devices, hooks and policies; ``loading.py`` puts a guest into it; ``machine_config.py``
holds what it is built from and what a run gives back), ``layout.py`` (every
port number and fixed address),
``exits.py``, ``dispatch.py``, ``bus.py``, ``mmio.py``, ``cpuid.py``, ``inspection.py`` (the
storage policy), ``events.py`` (the ``--events`` log) and ``errors.py`` (failures split by who
is at fault).

The parts: ``vcpu/`` (the CPU), ``memory/`` (guest RAM, page walks, the loader's tables, boot
state), ``hypercalls/``, ``devices/``, ``net/``, ``updates/``, ``scanner/`` (ClamAV body
signatures), ``loaders/`` (flat images and ELF), ``firmware/`` (hv-emu's own small BIOS for
16-bit runs and ``--boot``), ``linux/`` (a Linux personality for static and dynamically linked
programs), ``debug/`` (exit trace, gdb stub, run report). The front ends sit at the edge and
nothing imports them: ``cli/`` (``hv-emu``, with ``demo/``) and ``testing/`` (the ``hv`` pytest
fixture). Beside this package, ``guest_tool`` builds keys, signed updates and guest programs (from
``asm/``, installed as ``guest_tool.asm``); only the front ends import it.

Follows: the 2012 BitVisor malware-detection design (``docs/ARCHITECTURE.md``).

Leaves out: see each part; in short: SMP, AHCI, third-party firmware.

The guest controls its registers, its RAM and every port and hypercall argument; each part says
how it bounds what the guest controls.
"""

from pathlib import Path

__version__ = "0.1.0"

#: The sample ClamAV database that ships with hv-emu (the 2012 design's four signatures and one
#: for the EICAR test string): the demo's first database, ``guest-tool sample-db`` writes a copy.
SAMPLE_DB = Path(__file__).resolve().parent / "data" / "sample.db"

__all__ = ["SAMPLE_DB", "__version__"]
