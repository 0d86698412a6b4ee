"""Which store the server uses: SQLite at a file (the default) or PostgreSQL (`[apiserver] database`).

The server process, the supervised actor and the operator CLI all open their store here, so the choice
and the password's source (a file, else $FLOODWATCH_DB_PASSWORD; never the URL) live in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.settings.apiserver import ApiserverSettings


def is_postgres(settings: ApiserverSettings) -> bool:
    return bool(settings.database)


def describe(settings: ApiserverSettings, db_path: Path) -> str:
    """Where the data is, for messages: the SQLite file, or the URL without credentials."""
    if is_postgres(settings):
        from floodwatch.server.pg_store import redact

        return redact(settings.database)
    return str(db_path)


def open_store(settings: ApiserverSettings, db_path: Path, create: bool = True) -> Any:
    """The configured store, its schema checked (a newer one refused) and upgraded: a SQLiteStore at
    `db_path` (created when `create`), or a PGStore on `settings.database` (StorageError if unreachable)."""
    if not is_postgres(settings):
        return SQLiteStore(db_path, settings.synchronous, create=create)
    from floodwatch.server.pg_store import PGStore, read_password

    password = read_password(settings.database_password_file or None)
    return PGStore(settings.database, password, max_size=settings.database_pool_size)
