"""The outbox: one row per message in the server's SQLite database, written before it is sent.

A row is queued in the same transaction that stores the incident change it reports (the store's
incident hook), so an incident acknowledged to an agent always has its messages on disk. Rows leave
`pending` only by being delivered (`sent`), folded into a digest (`folded`), or given up (`failed`).
A server killed mid-delivery finds the row still pending and sends it again with the same
`delivery_id` (the idempotency key receivers can use). Every function here runs in the database
thread (DbWorker.call), inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from floodwatch.server.notify.channels import Channel
from floodwatch.server.notify.rules import (
    DIGEST,
    ESCALATE,
    OPEN,
    WINDOW,
    Pending,
    Step,
    events_for,
    plan,
    recipients,
)
from floodwatch.server.notify.summary import Message
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.server.validate import iso_from_epoch

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_outbox (
  id INTEGER PRIMARY KEY, channel TEXT NOT NULL, delivery_id TEXT NOT NULL UNIQUE, incident_id INTEGER,
  event TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  created_at REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, sent_at REAL,
  last_error TEXT, answer TEXT, digest_id INTEGER);
CREATE INDEX IF NOT EXISTS notify_outbox_pending ON notify_outbox (channel, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS notify_outbox_incident ON notify_outbox (incident_id);
CREATE INDEX IF NOT EXISTS notify_outbox_sent ON notify_outbox (channel, sent_at) WHERE sent_at IS NOT NULL
"""
MAX_FOLD = 1000  # rows one digest covers at most


def init(store: SQLiteStore) -> None:
    with store.transaction():
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                store.execute(stmt)


def _insert(store: SQLiteStore, channel: str, incident_id: int | None, event: str, reason: str,
            body: dict[str, Any], now: float) -> int:
    cur = store.execute("INSERT INTO notify_outbox (channel, delivery_id, incident_id, event, reason, body, "
                        "created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (channel, str(uuid.uuid4()), incident_id, event, reason, json.dumps(body), now, now))
    return int(cur.lastrowid or 0)


def queue_incident_change(store: SQLiteStore, channels: Sequence[Channel], incident_id: int,
                          before: dict[str, Any] | None, now: float) -> set[str]:
    """The store's incident hook: queue what the change calls for; returns the channels given work."""
    after = store.incident(incident_id, history=False)
    if after is None:
        return set()
    queued: set[str] = set()
    for event in events_for(before, after):
        told = {str(r[0]) for r in store.execute(
            "SELECT DISTINCT channel FROM notify_outbox WHERE incident_id = ? AND event IN (?, ?)",
            (incident_id, OPEN, ESCALATE)).fetchall()}
        for ch in recipients(channels, event, after, told):
            _insert(store, ch.name, incident_id, event.kind, event.reason, {"incident": after}, now)
            queued.add(ch.name)
    return queued


def _message(row: sqlite3.Row) -> Message:
    body = json.loads(row["body"])
    return Message(str(row["delivery_id"]), str(row["event"]), str(row["reason"]), body.get("incident"),
                   list(body.get("items") or []), float(row["created_at"]), str(row["channel"]))


def next_step(store: SQLiteStore, channel: Channel, now: float, can_digest: bool) -> tuple[Step, Message | None]:
    """The channel's next step (rules.plan) and, to send, its message (a digest is folded here)."""
    rows = store.execute("SELECT id, event, next_at FROM notify_outbox WHERE channel = ? AND status = 'pending' "
                         "ORDER BY id LIMIT ?", (channel.name, MAX_FOLD)).fetchall()
    sent = [float(r[0]) for r in store.execute(
        "SELECT sent_at FROM notify_outbox WHERE channel = ? AND sent_at > ?", (channel.name, now - WINDOW)).fetchall()]
    step = plan([Pending(int(r["id"]), str(r["event"]), float(r["next_at"])) for r in rows], sent,
                channel.rate_per_minute, now, can_digest)
    if step.action == "digest":
        step = Step("send", (fold(store, channel.name, step.ids, now),))
    if step.action != "send":
        return step, None
    row = store.execute("SELECT * FROM notify_outbox WHERE id = ?", (step.ids[0],)).fetchone()
    return step, _message(row)


def fold(store: SQLiteStore, channel: str, ids: Sequence[int], now: float) -> int:
    """Replace pending rows by one digest row (in one transaction): the digest is their message."""
    with store.transaction():
        marks = ",".join("?" * len(ids))
        rows = store.execute(f"SELECT event, reason, body FROM notify_outbox WHERE id IN ({marks}) "  # noqa: S608
                             "ORDER BY id", tuple(ids)).fetchall()
        items = [{"event": r["event"], "reason": r["reason"], "incident": json.loads(r["body"]).get("incident")}
                 for r in rows]
        digest = _insert(store, channel, None, DIGEST, f"{len(items)} messages in one", {"items": items}, now)
        store.execute(f"UPDATE notify_outbox SET status = 'folded', digest_id = ? WHERE id IN ({marks})",  # noqa: S608
                      (digest, *ids))
    return digest


def mark_sent(store: SQLiteStore, delivery_id: str, now: float, answer: str) -> None:
    with store.transaction():
        store.execute("UPDATE notify_outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, answer = ?, "
                      "last_error = NULL WHERE delivery_id = ?", (now, answer[:1000], delivery_id))


def mark_retry(store: SQLiteStore, delivery_id: str, next_at: float, error: str) -> int:
    """Another attempt later; returns the attempts made so far."""
    with store.transaction():
        store.execute("UPDATE notify_outbox SET attempts = attempts + 1, next_at = ?, last_error = ? "
                      "WHERE delivery_id = ?", (next_at, error[:1000], delivery_id))
        row = store.execute("SELECT attempts FROM notify_outbox WHERE delivery_id = ?", (delivery_id,)).fetchone()
    return int(row[0]) if row else 0


def mark_failed(store: SQLiteStore, delivery_id: str, error: str) -> None:
    with store.transaction():
        store.execute("UPDATE notify_outbox SET status = 'failed', attempts = attempts + 1, last_error = ? "
                      "WHERE delivery_id = ?", (error[:1000], delivery_id))


def attempts_of(store: SQLiteStore, delivery_id: str) -> int:
    row = store.execute("SELECT attempts FROM notify_outbox WHERE delivery_id = ?", (delivery_id,)).fetchone()
    return int(row[0]) if row else 0


def prune(store: SQLiteStore, before: float) -> int:
    with store.transaction():
        cur = store.execute("DELETE FROM notify_outbox WHERE status != 'pending' AND created_at < ?", (before,))
    return int(cur.rowcount)


def channel_status(store: SQLiteStore) -> list[dict[str, Any]]:
    """Per channel: messages by status, the last delivery and the last error (for operators)."""
    out = []
    for (name,) in store.execute("SELECT DISTINCT channel FROM notify_outbox ORDER BY channel").fetchall():
        counts = dict(store.execute("SELECT status, count(*) FROM notify_outbox WHERE channel = ? GROUP BY status",
                                    (name,)).fetchall())
        last = store.execute("SELECT max(sent_at) FROM notify_outbox WHERE channel = ?", (name,)).fetchone()[0]
        err = store.execute("SELECT last_error FROM notify_outbox WHERE channel = ? AND last_error IS NOT NULL "
                            "ORDER BY id DESC LIMIT 1", (name,)).fetchone()
        out.append({"channel": name, "pending": counts.get("pending", 0), "sent": counts.get("sent", 0),
                    "folded": counts.get("folded", 0), "failed": counts.get("failed", 0),
                    "last_sent_at": iso_from_epoch(last) if last is not None else None,
                    "last_error": err[0] if err else None})
    return out
