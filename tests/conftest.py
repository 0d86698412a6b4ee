"""Shared fixtures. Helpers live in tests/helpers.py (importable as `from tests.helpers import ...`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import BusHarness, NetnsPair, have_root_netns, netns_pair, tcp_endpoints

PCAPS = Path(__file__).resolve().parent.parent.parent / "shared" / "pcaps"
_NETNS_OK: bool | None = None


@pytest.fixture
def harness() -> Iterator[BusHarness]:
    """A fake supervisor + event proxy on fresh loopback TCP endpoints."""
    with BusHarness(tcp_endpoints()) as h:
        yield h


@pytest.fixture
def pcaps_dir() -> Path:
    if not PCAPS.is_dir():
        pytest.skip(f"shared captures not found at {PCAPS} (they live beside the repo in ../shared/pcaps)")
    return PCAPS


def require_netns() -> None:
    global _NETNS_OK
    if _NETNS_OK is None:
        _NETNS_OK = have_root_netns()
    if not _NETNS_OK:
        pytest.skip("needs root and network namespaces (ip netns)")


@pytest.fixture
def netns() -> Iterator[NetnsPair]:
    """Two namespaces joined by veth, removed afterwards whatever happens."""
    require_netns()
    with netns_pair() as pair:
        yield pair
