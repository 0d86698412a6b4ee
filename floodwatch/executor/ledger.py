"""The executor's memory (SQLite, WAL): commands seen, rules in force, and the audit trail.

A command is recorded as "running" *before* it runs, so a crash mid-run never leads to a second run:
after a restart it is reported "failed" (interrupted) instead. Rules in force carry the argv that undoes
them, their incident key and their expiry time. Every step is also appended to a JSONL audit file (0600).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodwatch.errors import StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    source TEXT NOT NULL, command_id INTEGER NOT NULL, command TEXT NOT NULL, status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '', output TEXT NOT NULL DEFAULT '', received_at REAL NOT NULL,
    executed_at REAL, incident_key TEXT NOT NULL DEFAULT '', PRIMARY KEY (source, command_id));
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT, identity TEXT NOT NULL, argv TEXT NOT NULL, undo TEXT NOT NULL,
    source TEXT NOT NULL, command_id INTEGER NOT NULL, incident_key TEXT NOT NULL,
    added_at REAL NOT NULL, expires_at REAL, weight INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS rules_identity ON rules (identity);
CREATE INDEX IF NOT EXISTS rules_incident ON rules (incident_key);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, event TEXT NOT NULL, source TEXT NOT NULL,
    command_id INTEGER, argv TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_RULE_SELECT = ("SELECT id, identity, argv, undo, source, command_id, incident_key, added_at, expires_at "
                "FROM rules {where} ORDER BY id")


@dataclass(frozen=True)
class CommandRecord:
    source: str
    command_id: int
    status: str  # running | applied | rejected | failed
    error: str
    output: str
    executed_at: float | None


@dataclass(frozen=True)
class Rule:
    id: int
    identity: str
    argv: list[str]
    undo: list[str]
    source: str
    command_id: int
    incident_key: str
    added_at: float
    expires_at: float | None


class Ledger:
    def __init__(self, path: str | Path, audit_path: str | Path | None = None, max_audit_bytes: int = 1 << 26):
        self.path = Path(path)
        self.audit_path = Path(audit_path) if audit_path else None
        self.max_audit_bytes = max_audit_bytes
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(rules)")}
            if "weight" not in columns:  # a ledger written before entries were weighed
                self.db.execute("ALTER TABLE rules ADD COLUMN weight INTEGER NOT NULL DEFAULT 1")
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the executor ledger {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    # -- commands ----------------------------------------------------------------------------------
    def command(self, source: str, command_id: int) -> CommandRecord | None:
        row = self.db.execute("SELECT source, command_id, status, error, output, executed_at FROM commands "
                              "WHERE source=? AND command_id=?", (source, command_id)).fetchone()
        return CommandRecord(*row) if row else None

    def begin(self, source: str, command_id: int, command: str, now: float, incident_key: str = "") -> bool:
        """Record a command as running; False when this id was seen before (it must not run again)."""
        cur = self.db.execute("INSERT OR IGNORE INTO commands (source, command_id, command, status, received_at, "
                              "incident_key) VALUES (?, ?, ?, 'running', ?, ?)",
                              (source, command_id, command[:2000], now, incident_key))
        return cur.rowcount == 1

    def commands_for_incident(self, source: str, incident_key: str) -> set[str]:
        """Command texts already handled for an incident (policies do not repeat themselves)."""
        rows = self.db.execute("SELECT command FROM commands WHERE source=? AND incident_key=?",
                               (source, incident_key)).fetchall()
        return {r[0] for r in rows}

    def finish(self, source: str, command_id: int, status: str, error: str, output: str, now: float) -> None:
        self.db.execute("UPDATE commands SET status=?, error=?, output=?, executed_at=? WHERE source=? AND "
                        "command_id=?", (status, error, output, now, source, command_id))

    def interrupted(self) -> list[CommandRecord]:
        """Commands left "running" by a crash."""
        rows = self.db.execute("SELECT source, command_id, status, error, output, executed_at FROM commands "
                               "WHERE status='running'").fetchall()
        return [CommandRecord(*r) for r in rows]

    def next_id(self, name: str) -> int:
        """A persistent sequence (policy command ids)."""
        self.db.execute("INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET "
                        "value = value + 1", (name,))
        return int(self.db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()[0])

    def meta(self, name: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else ""

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                        "value = excluded.value", (name, value))

    # -- rules in force ----------------------------------------------------------------------------
    def add_rule(self, identity: str, argv: list[str], undo: list[str], source: str, command_id: int,
                 incident_key: str, now: float, expires_at: float | None, weight: int = 1) -> int:
        cur = self.db.execute(
            "INSERT INTO rules (identity, argv, undo, source, command_id, incident_key, added_at, expires_at, "
            "weight) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (identity, json.dumps(argv), json.dumps(undo), source, command_id, incident_key, now, expires_at,
             weight))
        return int(cur.lastrowid or 0)

    def remove_rule(self, rule_id: int) -> None:
        self.db.execute("DELETE FROM rules WHERE id=?", (rule_id,))

    def _rules(self, where: str = "", args: tuple[Any, ...] = ()) -> list[Rule]:
        query = _RULE_SELECT.replace("{where}", where)  # `where` is one of our constant clauses
        rows = self.db.execute(query, args).fetchall()
        return [Rule(r[0], r[1], json.loads(r[2]), json.loads(r[3]), *r[4:]) for r in rows]

    def rules(self) -> list[Rule]:
        return self._rules()

    def rules_by_identity(self, identity: str) -> list[Rule]:
        return self._rules("WHERE identity=?", (identity,))

    def rules_for_incident(self, incident_key: str) -> list[Rule]:
        return self._rules("WHERE incident_key=?", (incident_key,))

    def expired(self, now: float) -> list[Rule]:
        return self._rules("WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

    def count_rules(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rules").fetchone()[0])

    def count_entries(self) -> int:
        """Rules in force weighed by the kernel entries they stand for (an ipset /24 counts 256)."""
        return int(self.db.execute("SELECT COALESCE(SUM(weight), 0) FROM rules").fetchone()[0])

    # -- audit ---------------------------------------------------------------------------------------
    def audit(self, now: float, event: str, source: str, command_id: int | None, argv: list[str] | str,
              status: str, detail: str = "") -> None:
        argv_text = argv if isinstance(argv, str) else json.dumps(argv)
        self.db.execute("INSERT INTO audit (ts, event, source, command_id, argv, status, detail) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (now, event, source, command_id, argv_text, status,
                                                         detail[:4000]))
        if self.audit_path is not None:
            self._append_jsonl({"ts": now, "event": event, "source": source, "command_id": command_id,
                                "argv": argv, "status": status, "detail": detail[:4000]})

    def audit_rows(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT ts, event, source, command_id, argv, status, detail FROM audit "
                               "ORDER BY id").fetchall()
        keys = ("ts", "event", "source", "command_id", "argv", "status", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def _append_jsonl(self, entry: dict[str, Any]) -> None:
        assert self.audit_path is not None
        try:
            if self.audit_path.exists() and self.audit_path.stat().st_size > self.max_audit_bytes:
                os.replace(self.audit_path, self.audit_path.with_name(self.audit_path.name + ".1"))
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=True) + "\n")
        except OSError as e:
            raise StorageError(f"cannot write the audit log {self.audit_path}: {e}") from e
