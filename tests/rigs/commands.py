"""Running the installed commands (``hv-emu``, ``guest-tool``) as a user would: the one beside this
Python, from a directory of the test's choosing, and their one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Where the commands of this Python's environment are installed.
BIN = Path(sys.executable).parent


def sh(*argv: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    tool, *rest = argv
    return subprocess.run(
        [str(BIN / str(tool)), *map(str, rest)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr
    return lines[0]
