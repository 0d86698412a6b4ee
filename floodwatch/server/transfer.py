"""Moving a server's data from SQLite to PostgreSQL: `floodwatch server export` writes the core tables
as JSON lines, `floodwatch server import` loads them into an empty PostgreSQL database (by COPY, in one
transaction), keeping every id, so agents' incident and command ids stay valid.

Format: a header line {"format": FORMAT, "schema_version": N}, then per table a line {"table", "columns"}
followed by one JSON array per row. Streamed both ways: memory does not grow with the database.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from floodwatch.errors import StorageError
from floodwatch.server import migrations

FORMAT = "floodwatch-server-export"
# Parents before children; the tables with an identity id get their sequence moved past the highest id.
TABLES = ("nodes", "metrics", "incidents", "incident_history", "pcaps", "commands", "admin_tokens",
          "metrics_1m", "metrics_1h", "node_latest", "dash_users")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
WITH_ID = ("nodes", "metrics", "incidents", "incident_history", "commands", "admin_tokens", "dash_users")


def export(db: Path, out: IO[str]) -> dict[str, int]:
    """Write the database's tables to `out`; rows per table."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = migrations.version(conn)
        if found != migrations.CURRENT:
            raise StorageError(f"{db}: schema version {found}; run `floodwatch server migrate` first "
                               f"(this floodwatch exports version {migrations.CURRENT})")
        out.write(json.dumps({"format": FORMAT, "schema_version": found}) + "\n")
        counts: dict[str, int] = {}
        for table in TABLES:
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 - our own table names
            out.write(json.dumps({"table": table, "columns": [d[0] for d in cur.description]}) + "\n")
            n = 0
            for row in cur:
                out.write(json.dumps(list(row)) + "\n")
                n += 1
            counts[table] = n
        return counts
    except sqlite3.Error as e:
        raise StorageError(f"{db}: {e}") from e
    finally:
        conn.close()


def _sections(lines: Iterable[str]) -> Iterator[tuple[str, list[str], Iterator[list[Any]]]]:
    """(table, columns, rows) of an export, checked as it is read."""
    it = iter(lines)
    head = json.loads(next(it, "{}") or "{}")
    if head.get("format") != FORMAT or head.get("schema_version") != migrations.CURRENT:
        raise StorageError(f"not a {FORMAT} of schema version {migrations.CURRENT}: {str(head)[:100]}")
    pending: list[str] = []

    def rows() -> Iterator[list[Any]]:
        for line in it:
            value = json.loads(line)
            if isinstance(value, dict):
                pending.append(line)
                return
            yield value

    line: str | None = next(it, None)
    while line is not None:
        section = json.loads(line)
        if not isinstance(section, dict) or section.get("table") not in TABLES:
            raise StorageError(f"export: unexpected line {line[:100]!r}")
        columns = [str(c) for c in section.get("columns", [])]
        if not columns or not all(_NAME.fullmatch(c) for c in columns):
            raise StorageError(f"export: bad columns for {section['table']}: {columns[:20]!r}")
        yield str(section["table"]), columns, rows()
        line = pending.pop() if pending else None


def import_pg(lines: Iterable[str], url: str, password: str | None) -> dict[str, int]:
    """Load an export into an empty PostgreSQL database (its schema created or upgraded first)."""
    from floodwatch.server.pg_store import PGStore

    store = PGStore(url, password)
    counts: dict[str, int] = {}
    try:
        with store._tx() as cur:
            held = cur.execute("SELECT count(*) AS n FROM nodes").fetchone()
            if held and held["n"]:
                raise StorageError(f"{store.where}: the database already holds nodes; import only into an empty one")
            for table, columns, rows in _sections(lines):
                counts[table] = _copy(cur, table, columns, rows)
            for table in WITH_ID:
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                            f"coalesce(max(id), 0) + 1, false) FROM {table}")
    finally:
        store.close()
    return counts


def _copy(cur: Any, table: str, columns: list[str], rows: Iterator[list[Any]]) -> int:
    n = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n
