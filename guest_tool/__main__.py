"""``python -m guest_tool``: the same as the ``guest-tool`` command.

Models: nothing of its own; it calls ``guest_tool.cli.main`` (README.md), as ``python -m hv_emu``
calls ``hv-emu``'s. The user controls the arguments; the guest controls nothing here.
"""

import sys

from guest_tool.cli import main

if __name__ == "__main__":
    sys.exit(main())
