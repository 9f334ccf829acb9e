"""``python -m benchmarks`` (``make bench``): run every benchmark, print a Markdown table.

Each row is a ratio against a named peer measured in the same run, as docs/PERFORMANCE.md records.
The rows against QEMU TCG (``benchmarks/qemu.py``) are skipped, with a message, where
``qemu-system-x86_64`` is not installed.
"""

from __future__ import annotations

import sys

from benchmarks import (
    ahci,
    disk,
    hypercall,
    injection,
    linux,
    network,
    nic,
    ports,
    qemu,
    scanner,
    scanner_process,
    trace,
    update,
)


def main() -> int:
    rows = ports.run() + hypercall.run() + update.run() + scanner.run() + scanner_process.run()
    rows += disk.run() + network.run()
    rows += trace.run() + nic.run() + linux.run() + injection.run() + qemu.run() + ahci.run()
    print("| benchmark | hv-emu | peer | peer value | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
