"""Which store the server uses: SQLite at a file (the default) or PostgreSQL (`[apiserver] database`).

The server process, the supervised actor and the operator CLI all open their store here, so the choice
and the password's source (a file, else $FLOODWATCH_DB_PASSWORD; never the URL) live in one place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from floodwatch.errors import StorageError
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.settings.apiserver import ApiserverSettings


def redact(url: str) -> str:
    """The URL without anything after a ':' in its user part (for messages)."""
    scheme, sep, rest = url.partition("://")
    cred, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{cred.split(':')[0]}{at}{host}" if at else url


def read_password(path: str | None) -> str | None:
    """The database password: from `path` (its first line; the file not readable by others) when given,
    else FLOODWATCH_DB_PASSWORD."""
    if path:
        try:
            mode = os.stat(path).st_mode
            if mode & stat.S_IRWXO:
                raise StorageError(f"database password file {path}: readable by others (mode "
                                   f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}")
            return Path(path).read_text().splitlines()[0] if Path(path).stat().st_size else ""
        except OSError as e:
            raise StorageError(f"database password file {path}: {e.strerror}") from e
    return os.environ.get("FLOODWATCH_DB_PASSWORD")


def is_postgres(settings: ApiserverSettings) -> bool:
    return bool(settings.database)


def describe(settings: ApiserverSettings, db_path: Path) -> str:
    """Where the data is, for messages: the SQLite file, or the URL without credentials."""
    if is_postgres(settings):
        return redact(settings.database)
    return str(db_path)


def open_store(settings: ApiserverSettings, db_path: Path, create: bool = True) -> Any:
    """The configured store, its schema checked (a newer one refused) and upgraded: a SQLiteStore at
    `db_path` (created when `create`), or a PGStore on `settings.database` (StorageError if unreachable)."""
    if not is_postgres(settings):
        return SQLiteStore(db_path, settings.synchronous, create=create)
    from floodwatch.server.pg_store import PGStore

    password = read_password(settings.database_password_file or None)
    return PGStore(settings.database, password, max_size=settings.database_pool_size)
