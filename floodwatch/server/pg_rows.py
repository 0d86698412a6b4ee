"""Backend-neutral SQL on PostgreSQL: what PGStore.execute returns for code that keeps its own tables in
the server's database (notify/, web/) and writes its SQL once, with SQLite's `?` placeholders.

Rows behave like sqlite3.Row (by position, by column name, iterable as values); the result is fetched
at once, so it outlives the transaction it ran in (SQLite's cursor does too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class Row(tuple[Any, ...]):
    """A tuple whose items can also be read by column name (sqlite3.Row's behaviour)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class Result:
    """A statement's rows (fetched at once) and rowcount: the part of sqlite3.Cursor callers use."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        rows, self._next = self._rows[self._next:], len(self._rows)
        return rows

    def __iter__(self) -> Any:
        return iter(self.fetchall())


def to_pg(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal % doubled). No `?` may appear in literals."""
    return sql.replace("%", "%%").replace("?", "%s")
