"""The durable outbox: every report is in SQLite (WAL, fsync per commit) before it is sent.

A report leaves the `outbox` table only when the server acknowledged it, or into `dead_letters`
with the reason when the server refused it for good. Reports form streams delivered in order
(lowest id first): one per incident (open, updates, resolution, pcap), one for metrics, one for
command acks, one for heartbeats. Streams are independent, so a stuck one blocks no other.

Bounded by policy: heartbeats coalesce (only the newest is worth sending); beyond `max_metrics`
queued samples the oldest half is downsampled 2:1 (marked `downsampled`, `samples`, `peak_*`);
incidents, updates, pcaps and acks are never dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodwatch.errors import StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL DEFAULT '',
    incident_key TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_stream ON outbox (stream, id);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE TABLE IF NOT EXISTS incidents (
    incident_key TEXT PRIMARY KEY,
    incident_id INTEGER NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incident_refs (
    incident_key TEXT PRIMARY KEY,
    ref TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    incident_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""

METRICS = "metrics"
QUIET = "quiet"  # the `op` of a metric sample queued while no incident was open (it may wait and merge)
ACKS = "acks"
HEARTBEAT = "heartbeat"
INCIDENT_MEMORY_DAYS = 30  # server incident ids older than this are forgotten at start


def incident_stream(incident_key: str) -> str:
    return f"incident:{incident_key}"


@dataclass(frozen=True)
class Row:
    id: int
    stream: str
    kind: str  # heartbeat | metrics | incident | pcap | ack
    op: str  # incidents: open | update | resolve
    incident_key: str
    body: dict[str, Any]
    created_at: float
    attempts: int


def merge_samples(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two consecutive metric samples -> one that says it stands for both (weighted by `samples`)."""
    na, nb = int(a.get("samples", 1)), int(b.get("samples", 1))
    n = na + nb
    out = dict(a)
    for key in ("pps", "bps", "conn_count"):
        if key in a and key in b:
            out[key] = round((a[key] * na + b[key] * nb) / n)
    for key in ("tcp_pct", "udp_pct", "icmp_pct"):
        if key in a and key in b:
            out[key] = round((a[key] * na + b[key] * nb) / n, 2)
    out["peak_pps"] = max(int(a.get("peak_pps", a.get("pps", 0))), int(b.get("peak_pps", b.get("pps", 0))))
    out["peak_bps"] = max(int(a.get("peak_bps", a.get("bps", 0))), int(b.get("peak_bps", b.get("bps", 0))))
    out["samples"] = n
    out["downsampled"] = True
    return out


def _private_file(path: Path) -> None:
    """Create the directory (0700) and the database file (0600) before SQLite opens it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class Outbox:
    """The queue. One instance per process, used from one thread (the actor's event loop)."""

    def __init__(self, path: str | Path, max_metrics: int = 20000, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_metrics = max_metrics
        self.clock = clock
        self.downsampled = 0  # samples merged away since start
        try:
            _private_file(self.path)
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
            cutoff = clock() - INCIDENT_MEMORY_DAYS * 86400
            self.db.execute("DELETE FROM incidents WHERE stored_at < ?", (cutoff,))
            self.db.execute("DELETE FROM incident_refs WHERE stored_at < ?", (cutoff,))
            self.pending = self._count()
            self.metric_rows = self._count("kind = 'metrics'")
            self.dead_letters = int(self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"outbox {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One durable commit (one fsync) for what is done inside; within another one, part of it (the
        reporter queues the events that arrive together in one)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _count(self, where: str = "1") -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM outbox WHERE {where}").fetchone()[0])  # noqa: S608

    # -- adding ------------------------------------------------------------------------------------
    def add(self, kind: str, stream: str, body: dict[str, Any], op: str = "", incident_key: str = "",
            hold: float = 0.0) -> int:
        """Queue one report durably (due `hold` seconds from now); returns its id."""
        now = self.clock()
        cur = self.db.execute(
            "INSERT INTO outbox (stream, kind, op, incident_key, body, created_at, next_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (stream, kind, op, incident_key, json.dumps(body, separators=(",", ":")), now, now + hold if hold else 0),
        )
        self.pending += 1
        return int(cur.lastrowid or 0)

    def add_heartbeat(self, body: dict[str, Any]) -> None:
        """Only the newest heartbeat matters: replace a queued one instead of piling them up."""
        cur = self.db.execute("UPDATE outbox SET body = ? WHERE kind = 'heartbeat'", (json.dumps(body),))
        if cur.rowcount == 0:
            self.add("heartbeat", HEARTBEAT, body)

    def add_metric(self, sample: dict[str, Any], busy_upto: int = 0, hold: float = 0.0) -> None:
        """Queue a sample; past the cap, downsample the oldest (never rows up to `busy_upto`, in flight).

        `hold` > 0: a quiet sample (no incident open), due that many seconds from now, so the samples of a
        quiet stretch go together (`release_metrics` makes them due at once when an incident opens)."""
        self.add("metrics", METRICS, sample, QUIET if hold > 0 else "", hold=hold)
        self.metric_rows += 1
        if self.metric_rows > self.max_metrics:
            self.compact_metrics(busy_upto)

    def compact_metrics(self, busy_upto: int = 0) -> int:
        """Merge the oldest half of the queued samples pairwise; returns how many rows went away."""
        half = self.metric_rows // 2
        rows = self.db.execute(
            "SELECT id, body FROM outbox WHERE kind = 'metrics' AND id > ? ORDER BY id LIMIT ?",
            (busy_upto, half - half % 2),
        ).fetchall()
        removed = 0
        with self.transaction():
            for (id_a, body_a), (id_b, body_b) in zip(rows[0::2], rows[1::2], strict=False):
                merged = merge_samples(json.loads(body_a), json.loads(body_b))
                self.db.execute("UPDATE outbox SET body = ? WHERE id = ?", (json.dumps(merged), id_a))
                self.db.execute("DELETE FROM outbox WHERE id = ?", (id_b,))
                removed += 1
        self.pending -= removed
        self.metric_rows -= removed
        self.downsampled += removed
        return removed

    def held_metrics(self) -> int:
        """Quiet samples that wait for their interval (not yet due, never tried)."""
        row = self.db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'metrics' AND attempts = 0 AND next_at > ?",
                              (self.clock(),)).fetchone()
        return int(row[0])

    def release_metrics(self) -> None:
        """Samples held back for a quiet stretch become due now (an incident opened)."""
        now = self.clock()
        self.db.execute("UPDATE outbox SET next_at = ? WHERE kind = 'metrics' AND attempts = 0 AND next_at > ?",
                        (now, now))

    # -- reading -----------------------------------------------------------------------------------
    def _rows(self, sql: str, args: Iterable[Any]) -> list[Row]:
        out = []
        for rid, stream, kind, op, key, body, created, attempts in self.db.execute(sql, tuple(args)):
            out.append(Row(rid, stream, kind, op, key, json.loads(body), created, attempts))
        return out

    def heads(self, now: float, busy: set[str], limit: int) -> list[Row]:
        """The first report of each stream that is due and not in flight, oldest first."""
        rows = self._rows(
            "SELECT o.id, o.stream, o.kind, o.op, o.incident_key, o.body, o.created_at, o.attempts "
            "FROM outbox o JOIN (SELECT MIN(id) AS id FROM outbox GROUP BY stream) h ON o.id = h.id "
            "WHERE o.next_at <= ? ORDER BY o.id",
            (now,),
        )
        return [r for r in rows if r.stream not in busy][:limit]

    def next_due(self, busy: set[str] | frozenset[str] = frozenset()) -> float | None:
        """When the earliest head of a stream not in `busy` becomes due (None: there is none)."""
        heads = self.db.execute(
            "SELECT o.stream, o.next_at FROM outbox o JOIN (SELECT MIN(id) AS id FROM outbox GROUP BY stream) h "
            "ON o.id = h.id"
        ).fetchall()
        dues = [float(at) for stream, at in heads if stream not in busy]
        return min(dues) if dues else None

    def metrics_batch(self, limit: int) -> list[Row]:
        return self._rows(
            "SELECT id, stream, kind, op, incident_key, body, created_at, attempts FROM outbox "
            "WHERE kind = 'metrics' ORDER BY id LIMIT ?",
            (limit,),
        )

    def pending_ack_ids(self) -> set[int]:
        return {int(r.body["command_id"]) for r in self._rows(
            "SELECT id, stream, kind, op, incident_key, body, created_at, attempts FROM outbox "
            "WHERE kind = 'ack'", ())}

    def incident_id(self, incident_key: str) -> int | None:
        row = self.db.execute("SELECT incident_id FROM incidents WHERE incident_key = ?", (incident_key,)).fetchone()
        return None if row is None else int(row[0])

    def set_incident_id(self, incident_key: str, incident_id: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO incidents (incident_key, incident_id, stored_at) VALUES (?, ?, ?)",
            (incident_key, incident_id, self.clock()),
        )

    def incident_ref(self, incident_key: str) -> str | None:
        """The uuid a part-C server gave the incident (the flowtriq dialect), or None."""
        row = self.db.execute("SELECT ref FROM incident_refs WHERE incident_key = ?", (incident_key,)).fetchone()
        return None if row is None else str(row[0])

    def set_incident_ref(self, incident_key: str, ref: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO incident_refs (incident_key, ref, stored_at) VALUES (?, ?, ?)",
                        (incident_key, ref, self.clock()))

    def dead_letter_rows(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT kind, op, incident_key, body, reason, failed_at FROM dead_letters ORDER BY id")
        return [{"kind": k, "op": o, "incident_key": ik, "body": json.loads(b), "reason": r, "failed_at": f}
                for k, o, ik, b, r, f in cur]

    # -- outcomes ----------------------------------------------------------------------------------
    def delivered(self, rows: list[Row]) -> None:
        ids = [(r.id,) for r in rows]
        with self.transaction():
            self.db.executemany("DELETE FROM outbox WHERE id = ?", ids)
        self.pending -= len(ids)
        self.metric_rows -= sum(1 for r in rows if r.kind == "metrics")

    def retry_later(self, row: Row, delay: float, error: str, count: bool = True) -> None:
        """Keep the report; its stream waits `delay` seconds (`count`: this was a failed attempt)."""
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + ?, next_at = ?, last_error = ? WHERE id = ?",
            (1 if count else 0, self.clock() + delay, error[:500], row.id),
        )

    def dead_letter(self, row: Row, reason: str) -> None:
        """Move a report the server refused for good to `dead_letters`, with the reason."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO dead_letters (stream, kind, op, incident_key, body, created_at, attempts, failed_at,"
                " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.stream, row.kind, row.op, row.incident_key, json.dumps(row.body), row.created_at,
                 row.attempts + 1, self.clock(), reason[:1000]),
            )
            self.db.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
        self.pending -= 1
        self.dead_letters += 1
        if row.kind == "metrics":
            self.metric_rows -= 1
