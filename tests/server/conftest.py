"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.notify_setup import Peers


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """The notification receivers (aiohttp, aiosmtpd), stopped after the test."""
    p = Peers(tmp_path)
    try:
        yield p
    finally:
        p.stop()
