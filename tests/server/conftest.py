"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PgCluster, bindir
from tests.server.notify_setup import Peers


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """The notification receivers (aiohttp, aiosmtpd), stopped after the test."""
    p = Peers(tmp_path)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the whole session (tests/pgcluster.py), removed afterwards."""
    if bindir() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh --dev installs it)")
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
