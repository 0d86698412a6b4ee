"""Metric rollups the server keeps as samples arrive, so a chart never aggregates raw rows per request.

Three resolutions: the raw 1 s samples (table `metrics`, kept `metrics_retention_days`), one row per node
and minute (`metrics_1m`, kept ROLLUP_1M_DAYS) and one per node and hour (`metrics_1h`, kept
ROLLUP_1H_DAYS). `node_latest` holds each node's newest sample (the fleet page's current pps/bps).
Each row keeps sums and maxima, so any coarser bucket is an exact re-aggregation of finer ones.
`init_schema` and `record_many` work on SQLite's connection (pg_store.py has its own writes); the readers and
`prune` take either store (`Store.execute`).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from floodwatch.server.store import Store

ROLLUP_1M_DAYS = 30.0
ROLLUP_1H_DAYS = 400.0
TABLES = {60: "metrics_1m", 3600: "metrics_1h"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics_1m (
  node_id INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL, pps_sum INTEGER NOT NULL,
  pps_max INTEGER NOT NULL, bps_sum INTEGER NOT NULL, bps_max INTEGER NOT NULL,
  tcp_sum REAL NOT NULL, udp_sum REAL NOT NULL, icmp_sum REAL NOT NULL, PRIMARY KEY (node_id, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metrics_1h (
  node_id INTEGER NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL, pps_sum INTEGER NOT NULL,
  pps_max INTEGER NOT NULL, bps_sum INTEGER NOT NULL, bps_max INTEGER NOT NULL,
  tcp_sum REAL NOT NULL, udp_sum REAL NOT NULL, icmp_sum REAL NOT NULL, PRIMARY KEY (node_id, t)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_1m_time ON metrics_1m (t);
CREATE TABLE IF NOT EXISTS node_latest (
  node_id INTEGER PRIMARY KEY, recorded_at REAL NOT NULL, pps INTEGER NOT NULL, bps INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_status_node ON incidents (status, node_id);
CREATE INDEX IF NOT EXISTS incidents_status_id ON incidents (status, id);
CREATE INDEX IF NOT EXISTS incidents_node_id ON incidents (node_id, id);
CREATE INDEX IF NOT EXISTS incidents_family_id ON incidents (attack_family, id);
CREATE INDEX IF NOT EXISTS incidents_node_started ON incidents (node_id, started_at);
CREATE INDEX IF NOT EXISTS commands_node_id ON commands (node_id, id);
"""
_UPSERT = ("INSERT INTO {table} VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (node_id, t) DO UPDATE SET "
           "n = n + excluded.n, pps_sum = pps_sum + excluded.pps_sum, pps_max = max(pps_max, excluded.pps_max), "
           "bps_sum = bps_sum + excluded.bps_sum, bps_max = max(bps_max, excluded.bps_max), "
           "tcp_sum = tcp_sum + excluded.tcp_sum, udp_sum = udp_sum + excluded.udp_sum, "
           "icmp_sum = icmp_sum + excluded.icmp_sum")

_LATEST = ("INSERT INTO node_latest VALUES (?,?,?,?) ON CONFLICT (node_id) DO UPDATE SET "
           "recorded_at = excluded.recorded_at, pps = excluded.pps, bps = excluded.bps "
           "WHERE excluded.recorded_at >= node_latest.recorded_at")


def init_schema(conn: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def buckets(node_id: int, samples: list[dict[str, Any]], width: int) -> list[tuple[Any, ...]]:
    """Samples -> one rollup row per bucket of `width` seconds (pure; the unit tests use it)."""
    acc: dict[int, list[float]] = {}
    for s in samples:
        t = int(s["recorded_at"] // width * width)
        a = acc.get(t)
        pps, bps = int(s["pps"]), int(s["bps"])
        tcp, udp, icmp = (float(s.get(k) or 0.0) for k in ("tcp_pct", "udp_pct", "icmp_pct"))
        if a is None:
            acc[t] = [1, pps, pps, bps, bps, tcp, udp, icmp]
        else:
            a[0] += 1
            a[1] += pps
            a[2] = max(a[2], pps)
            a[3] += bps
            a[4] = max(a[4], bps)
            a[5] += tcp
            a[6] += udp
            a[7] += icmp
    return [(node_id, t, int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5], a[6], a[7])
            for t, a in acc.items()]


MetricsCall = tuple[int, list[dict[str, Any]], float]  # add_metrics' arguments: (node_id, samples, now)


# A sample is stored once: the unique index metrics_sample (migrations.py, version 4) knows it by node and
# the agent's own recorded_at; a repeat is skipped (only that conflict: a missing node is still an error).
METRIC_COLUMNS = "node_id, recorded_at, received_at, pps, bps, tcp_pct, udp_pct, icmp_pct, conn_count, timed_by_agent"
ONCE = "ON CONFLICT (node_id, recorded_at, timed_by_agent) DO NOTHING"
INSERT_METRICS = f"INSERT INTO metrics ({METRIC_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) {ONCE}"  # noqa: S608


def first_copies(calls: list[MetricsCall]) -> list[MetricsCall]:
    """The calls without the samples an earlier call of the batch (or the same call) already holds: the same
    node and the agent's own recorded_at, a retry; samples the server stamped (`stamped`) all stay. Pure."""
    seen: set[tuple[int, float]] = set()
    out: list[MetricsCall] = []
    for node_id, samples, now in calls:
        kept = []
        for s in samples:
            if not s.get("stamped"):
                key = (node_id, s["recorded_at"])
                if key in seen:
                    continue
                seen.add(key)
            kept.append(s)
        out.append((node_id, kept, now))
    return out


def metric_rows(calls: list[MetricsCall]) -> list[tuple[Any, ...]]:
    """The calls' samples as rows of `metrics` (INSERT_METRICS' order); timed_by_agent is NULL for a sample the
    server stamped (never a duplicate of another: NULLs differ in the unique index), else 1."""
    return [(node_id, s["recorded_at"], now, s["pps"], s["bps"], s.get("tcp_pct"), s.get("udp_pct"),
             s.get("icmp_pct"), s.get("conn_count"), None if s.get("stamped") else 1)
            for node_id, samples, now in calls for s in samples]


def buckets_many(calls: list[MetricsCall], width: int) -> list[tuple[Any, ...]]:
    """Several add_metrics calls' samples -> one rollup row per (node, bucket): one upsert each (SQLite's
    writes; PostgreSQL aggregates the rows it inserted in its statement, pg_store.py). Pure."""
    per_node: dict[int, list[dict[str, Any]]] = {}
    for node_id, samples, _ in calls:
        per_node.setdefault(node_id, []).extend(samples)
    return [row for node_id, samples in per_node.items() for row in buckets(node_id, samples, width)]


def newest_many(calls: list[MetricsCall]) -> dict[int, dict[str, Any]]:
    """Each node's newest sample among these calls (node_latest's rows). Pure."""
    out: dict[int, dict[str, Any]] = {}
    for node_id, samples, _ in calls:
        if not samples:
            continue
        newest, cur = max(samples, key=lambda s: s["recorded_at"]), out.get(node_id)
        if cur is None or newest["recorded_at"] >= cur["recorded_at"]:  # as node_latest's upsert, call by call
            out[node_id] = newest
    return out


def record_many(conn: sqlite3.Connection, calls: list[MetricsCall]) -> None:
    """Fold several calls' samples into the rollups and node_latest (SQLite), one upsert per row."""
    for width, table in TABLES.items():
        conn.executemany(_UPSERT.format(table=table), buckets_many(calls, width))
    conn.executemany(_LATEST, [(n, s["recorded_at"], s["pps"], s["bps"]) for n, s in newest_many(calls).items()])


def prune(store: Store, now: float) -> int:
    n = int(store.execute("DELETE FROM metrics_1m WHERE t < ?", (int(now - ROLLUP_1M_DAYS * 86400),)).rowcount)
    n += int(store.execute("DELETE FROM metrics_1h WHERE t < ?", (int(now - ROLLUP_1H_DAYS * 86400),)).rowcount)
    return n


# -- reading: the resolution that answers a time range with a few hundred to a few thousand points ---
RANGES = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


def resolution(span: float) -> int:
    """Seconds per point for a range: raw up to 1 h, 1 min up to 1 day, 10 min up to 7 d, else 1 h."""
    if span <= 3600:
        return 1
    if span <= 86400:
        return 60
    if span <= 7 * 86400:
        return 600
    return 3600


def series(store: Store, node_id: int, since: float, until: float) -> dict[str, Any]:
    """Points [t, pps_avg, pps_max, bps_avg, bps_max, tcp%, udp%, icmp%] between since and until (either
    backend: PostgreSQL's sums are numeric, hence the float())."""
    step = resolution(until - since)
    if step == 1:
        rows = store.execute("SELECT recorded_at, pps, pps, bps, bps, coalesce(tcp_pct, 0), coalesce(udp_pct, 0), "
                            "coalesce(icmp_pct, 0) FROM metrics WHERE node_id = ? AND recorded_at >= ? "
                            "AND recorded_at <= ? ORDER BY recorded_at", (node_id, since, until)).fetchall()
    else:
        table = "metrics_1h" if step == 3600 else "metrics_1m"
        rows = store.execute(
            f"SELECT (t / {step}) * {step} AS b, sum(pps_sum) * 1.0 / sum(n), max(pps_max), "  # noqa: S608
            f"sum(bps_sum) * 1.0 / sum(n), max(bps_max), sum(tcp_sum) / sum(n), sum(udp_sum) / sum(n), "
            f"sum(icmp_sum) / sum(n) FROM {table} WHERE node_id = ? AND t >= ? AND t <= ? GROUP BY b ORDER BY b",
            (node_id, int(since) // step * step, int(until))).fetchall()
    return {"step": step, "since": since, "until": until,
            "points": [[float(t), _r1(pps), int(pps_max), _r1(bps), int(bps_max), _r1(tcp), _r1(udp), _r1(icmp)]
                       for t, pps, pps_max, bps, bps_max, tcp, udp, icmp in rows]}  # unpacked: a row by index is slow


def _r1(v: Any) -> float:
    return round(float(v), 1)


def sparklines(store: Store, since: float, node_ids: list[int]) -> dict[int, list[tuple[int, float]]]:
    """These nodes' per-minute average pps since `since` (the fleet page's sparklines), in one query."""
    out: dict[int, list[tuple[int, float]]] = {}
    if not node_ids:
        return out
    marks = ",".join("?" * len(node_ids))
    for node_id, t, pps in store.execute(f"SELECT node_id, t, pps_sum * 1.0 / n FROM metrics_1m WHERE node_id IN "  # noqa: S608
                                         f"({marks}) AND t >= ? ORDER BY node_id, t",
                                         (*node_ids, int(since) // 60 * 60)):
        out.setdefault(int(node_id), []).append((int(t), float(pps)))
    return out
