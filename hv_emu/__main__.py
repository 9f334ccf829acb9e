"""``python -m hv_emu``: the same as the ``hv-emu`` command.

Models: nothing of its own; it calls ``hv_emu.cli.main.main`` (README.md). The user controls the
arguments; the guest controls nothing here.
"""

import sys

from hv_emu.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
