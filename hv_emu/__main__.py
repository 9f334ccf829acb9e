"""``python -m hv_emu``: the same as the ``hv-emu`` command.

Models: nothing of its own; it calls ``hv_emu.cli.main.entry``, as the console script does
(README.md). The user controls the
arguments; the guest controls nothing here.
"""

import sys

from hv_emu.cli.main import entry

if __name__ == "__main__":
    sys.exit(entry())
