"""The publisher's work stamp in guest-tool's tests: ``guest-tool manifest`` and ``push --key``
stamp at ``encoding.PUBLISHER_WORK_BITS`` (24 bits, about 2^24 SHA-256 tries a manifest); tests here
stamp at the protocol minimum instead, unless they ask for ``real_work`` (the default, end to
end)."""

from __future__ import annotations

import pytest

from guest_tool import encoding
from hv_emu.updates import packets

#: The publisher's default, as shipped.
SHIPPED_WORK_BITS = encoding.PUBLISHER_WORK_BITS


@pytest.fixture(autouse=True)
def cheap_publisher_stamps(request: pytest.FixtureRequest,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if "real_work" not in request.fixturenames:
        monkeypatch.setattr(encoding, "PUBLISHER_WORK_BITS", packets.WORK_BITS)


@pytest.fixture
def real_work() -> int:
    """The shipped default stamp (``cheap_publisher_stamps`` leaves it alone): its bits."""
    assert encoding.PUBLISHER_WORK_BITS == SHIPPED_WORK_BITS
    return SHIPPED_WORK_BITS
