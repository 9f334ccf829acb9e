"""``python -m benchmarks`` (``make bench``): run every benchmark, print a Markdown table.

Each row is a ratio against a named peer measured in the same run, as docs/PERFORMANCE.md records.
"""

from __future__ import annotations

import sys

from benchmarks import hypercall, update


def main() -> int:
    rows = hypercall.run() + update.run()
    print("| benchmark | hv-emu | peer | peer value | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
