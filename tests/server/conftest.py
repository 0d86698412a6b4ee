"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pgcluster import PgCluster, bindir
from tests.server.fwserver_util import Backend, pg_backend
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


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The server suite runs on both stores: SQLite, and a fresh PostgreSQL database per module."""
    if request.param == "sqlite":
        return Backend()
    cluster = request.getfixturevalue("pg_cluster")
    return pg_backend(cluster, tmp_path_factory.mktemp("pg"))


@pytest.fixture(params=BACKENDS)
def fresh_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """Both stores, a fresh PostgreSQL database for each test (tests whose servers share nothing)."""
    if request.param == "sqlite":
        return Backend()
    return pg_backend(request.getfixturevalue("pg_cluster"), tmp_path_factory.mktemp("pg"))


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Both stores opened in this process: SQLite in a file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        from floodwatch.server.sqlite_store import SQLiteStore

        s: Any = SQLiteStore(tmp_path / "server.db")
    else:
        from floodwatch.server.pg_store import PGStore

        cluster = request.getfixturevalue("pg_cluster")
        s = PGStore(cluster.new_database(), password=cluster.password)
    try:
        yield s
    finally:
        s.close()
