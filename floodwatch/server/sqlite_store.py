"""The Store on one SQLite file in WAL mode (0600 in a 0700 directory)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from floodwatch.errors import StorageError
from floodwatch.server import migrations, rollup
from floodwatch.server.store import PCAPS_OF_NODE, REMOVE_NODE, Conflict, NotFound, incident_filter, removed_counts
from floodwatch.server.validate import iso_from_epoch, stored_details, stored_json

# Columns of `incidents` set straight from the validated body; the rest of the body goes to `details`.
INCIDENT_COLUMNS = ("status", "attack_family", "severity", "attack_subtype", "confidence", "started_at",
                    "ended_at", "peak_pps", "peak_bps", "source_ip_count", "spoofing_detected",
                    "botnet_detected")
DETAIL_FIELDS = ("protocol_breakdown", "tcp_flag_breakdown", "geo_breakdown", "top_src_ips", "top_dst_ports",
                 "target_ips", "ioc_matches", "vectors")
SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# Called inside the transaction that opens, updates or resolves an incident: (store, incident_id, the
# incident as it was before, None for a new one). The notifier queues its messages this way (notify/).
IncidentHook = Callable[["SQLiteStore", int, "dict[str, Any] | None"], None]


def _ts(v: float | None) -> str | None:
    return None if v is None else iso_from_epoch(v)


def open_db_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


class SQLiteStore:
    """See floodwatch.server.store.Store for the methods' contract."""

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL", create: bool = True) -> None:
        self.path = Path(path)
        self._in_group = False
        self._savepoint = 0
        self.incident_hooks: list[IncidentHook] = []
        # Called in the database thread after each commit with what it recorded: [(kind, data), ...]
        # ("metrics": the newest sample of a batch; "incident": an open, update or resolve).
        self.listeners: list[Callable[[list[tuple[str, dict[str, Any]]]], None]] = []
        self._events: list[tuple[str, dict[str, Any]]] = []
        if synchronous.upper() not in SYNC_MODES:
            raise StorageError(f"synchronous: {synchronous!r} is not one of {SYNC_MODES}")
        try:
            if create:
                open_db_file(self.path)
            elif not self.path.is_file():
                raise StorageError(f"no database at {self.path}")
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=10000")
            self._init_schema()
        except (sqlite3.Error, OSError) as e:
            raise StorageError(f"{self.path}: cannot open the database: {e}") from e

    def _init_schema(self) -> None:
        """Create or upgrade the schema (migrations.py); a newer one is refused before anything changes."""
        self.schema_before = migrations.version(self.conn)
        self.backup_path: Path | None = None
        self.migrated: list[migrations.Migration] = []
        try:
            migrations.refuse_newer(self.schema_before, str(self.path))
        except migrations.SchemaTooNew:
            self.conn.close()
            raise
        if 0 < self.schema_before < migrations.CURRENT:
            self.backup_path = migrations.backup(self.conn, self.path, self.schema_before, time.time())
        with self._tx():
            self.migrated = migrations.upgrade(self.conn, time.time())
            rollup.init_schema(self.conn)  # tables and indexes added IF NOT EXISTS since the last migration

    def close(self) -> None:
        self.conn.close()

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[None]:
        if self._in_group:
            self._savepoint += 1
            name = f"sp{self._savepoint}"
            self._exec(f"SAVEPOINT {name}")
            mark = len(self._events)
            try:
                yield
            except BaseException:
                del self._events[mark:]
                self._exec(f"ROLLBACK TO {name}")
                self._exec(f"RELEASE {name}")
                raise
            self._exec(f"RELEASE {name}")
            return
        self._exec("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._events.clear()
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        self._exec("COMMIT")
        self._publish()

    def _publish(self) -> None:
        events, self._events = self._events, []
        for listener in self.listeners if events else ():
            listener(events)

    @contextmanager
    def group(self, optimistic: bool = False) -> Iterator[None]:  # optimistic: savepoints cost nothing here
        self._exec("BEGIN IMMEDIATE")
        self._in_group = True
        try:
            yield
        except BaseException:
            self._events.clear()
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        finally:
            self._in_group = False
        self._exec("COMMIT")
        self._publish()

    def transaction(self) -> AbstractContextManager[None]:
        """A transaction (a savepoint inside group()) for code that keeps its own tables here (notify/)."""
        return self._tx()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._exec(sql, args)

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, args)
        except sqlite3.IntegrityError as e:
            raise Conflict(str(e)) from e
        except sqlite3.Error as e:
            raise StorageError(f"{self.path}: {e}") from e

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._exec(sql, args).fetchone()
        return row

    # -- nodes -----------------------------------------------------------------------------------
    def add_node(self, name: str, node_uuid: str, key_hash: str, now: float) -> dict[str, Any]:
        with self._tx():
            if self._one("SELECT 1 FROM nodes WHERE name = ?", (name,)):
                raise Conflict(f"a node named {name!r} exists")
            cur = self._exec("INSERT INTO nodes (uuid, name, key_hash, created_at) VALUES (?, ?, ?, ?)",
                             (node_uuid, name, key_hash, now))
        return {"node_id": cur.lastrowid, "node_uuid": node_uuid, "name": name}

    def node_auth(self, node_uuid: str) -> tuple[int, str] | None:
        row = self._one("SELECT id, key_hash FROM nodes WHERE uuid = ?", (node_uuid,))
        return None if row is None else (int(row["id"]), str(row["key_hash"]))

    def node_auth_many(self, calls: list[tuple[str]]) -> list[tuple[int, str] | None]:
        return [self.node_auth(*args) for args in calls]  # in-process: nothing to gain from one statement

    def find_node(self, ref: str, now: float = 0.0, offline_after: float = 90.0) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM nodes WHERE name = ? OR uuid = ? OR CAST(id AS TEXT) = ? "
                        "ORDER BY name = ? DESC LIMIT 1", (ref, ref.lower(), ref, ref))
        return None if row is None else self._node(row, now or time.time(), offline_after)

    def list_nodes(self, now: float, offline_after: float) -> list[dict[str, Any]]:
        rows = self._exec("SELECT * FROM nodes ORDER BY id").fetchall()
        return [self._node(r, now, offline_after) for r in rows]

    def _node(self, r: sqlite3.Row, now: float, offline_after: float) -> dict[str, Any]:
        return node_row(r, now, offline_after)

    def record_heartbeat(self, node_id: int, hb: dict[str, Any], now: float) -> None:
        with self._tx():
            self._exec("UPDATE nodes SET last_seen_at = ?, agent_version = coalesce(?, agent_version), "
                       "os = coalesce(?, os), uptime = coalesce(?, uptime) WHERE id = ?",
                       (now, hb.get("agent_version"), hb.get("os"), hb.get("uptime"), node_id))

    def record_heartbeat_many(self, calls: list[tuple[int, dict[str, Any], float]]) -> list[None]:
        with self._tx():  # all or nothing, as on PostgreSQL
            for args in calls:
                self.record_heartbeat(*args)
        return [None] * len(calls)

    def remove_node(self, node_id: int) -> dict[str, Any] | None:
        with self._tx():
            files = [str(r[0]) for r in self._exec(PCAPS_OF_NODE, (node_id, node_id)).fetchall()]
            counts = {what: self._exec(sql, (node_id,) * sql.count("?")).rowcount for what, sql in REMOVE_NODE}
        return removed_counts(counts, files)

    # -- metrics ---------------------------------------------------------------------------------
    def add_metrics(self, node_id: int, samples: list[dict[str, Any]], now: float) -> int:
        return self.add_metrics_many([(node_id, samples, now)])[0]

    def add_metrics_many(self, calls: list[rollup.MetricsCall]) -> list[int]:
        """Several add_metrics calls as one (the database thread's batch): each call's count of samples stored
        (a sample already stored, or earlier in the batch, is not stored again nor counted in the rollups);
        stores what the calls one by one would (rows, rollups, node_latest); all or nothing."""
        calls = rollup.first_copies(calls)
        rows = rollup.metric_rows(calls)
        with self._tx():
            try:
                self.conn.execute("SAVEPOINT metrics")
                if self.conn.executemany(rollup.INSERT_METRICS, rows).rowcount != len(rows):
                    calls = self._stored_only(calls)  # a retry: some were stored before (the rare path)
                self.conn.execute("RELEASE metrics")
                rollup.record_many(self.conn, calls)
            except sqlite3.Error as e:
                raise StorageError(f"{self.path}: {e}") from e
            self._events.extend(metrics_events(calls))
        return [len(samples) for _, samples, _ in calls]

    def _stored_only(self, calls: list[rollup.MetricsCall]) -> list[rollup.MetricsCall]:
        """The batch again, sample by sample, after undoing it: the calls with only the samples now stored."""
        self.conn.execute("ROLLBACK TO metrics")
        return [(node_id, [s for s, row in zip(samples, rollup.metric_rows([(node_id, samples, now)]), strict=True)
                           if self.conn.execute(rollup.INSERT_METRICS, row).rowcount == 1], now)
                for node_id, samples, now in calls]

    def metrics(self, node_id: int, since: float, limit: int) -> list[dict[str, Any]]:
        rows = self._exec("SELECT * FROM metrics WHERE node_id = ? AND recorded_at >= ? "
                          "ORDER BY recorded_at, id LIMIT ?", (node_id, since, limit)).fetchall()
        return [metric_row(r) for r in rows]

    def prune_metrics(self, before: float) -> int:
        with self._tx():
            return self._exec("DELETE FROM metrics WHERE recorded_at < ?", (before,)).rowcount

    # -- incidents -------------------------------------------------------------------------------
    def upsert_incident(self, node_id: int, inc: dict[str, Any], now: float) -> tuple[int, bool]:
        with self._tx():
            if inc.get("incident_id") is not None:
                row = self._one("SELECT id, incident_key, status, details FROM incidents WHERE id = ? "
                                "AND node_id = ?", (inc["incident_id"], node_id))
                if row is None:
                    raise NotFound(f"incident_id: no incident {inc['incident_id']} for this node")
                if inc.get("incident_key") and row["incident_key"] and inc["incident_key"] != row["incident_key"]:
                    raise Conflict("incident_key: does not match the incident's key")
                before = self.incident(int(row["id"]), history=False) if self.incident_hooks else None
                self._update_incident(row, inc, now)
                self._run_hooks(int(row["id"]), before)
                self._events.append(("incident", {"incident_id": int(row["id"]), "created": False}))
                return int(row["id"]), False
            if inc.get("incident_key"):
                row = self._one("SELECT id FROM incidents WHERE node_id = ? AND incident_key = ?",
                                (node_id, inc["incident_key"]))
                if row is not None:  # a retried open: same id, nothing changed
                    return int(row["id"]), False
            incident_id = self._insert_incident(node_id, inc, now)
            self._run_hooks(incident_id, None)
            self._events.append(("incident", {"incident_id": incident_id, "created": True}))
            return incident_id, True

    def _run_hooks(self, incident_id: int, before: dict[str, Any] | None) -> None:
        for hook in self.incident_hooks:
            hook(self, incident_id, before)

    def _insert_incident(self, node_id: int, inc: dict[str, Any], now: float) -> int:
        values = {k: inc.get(k) for k in INCIDENT_COLUMNS}
        values["status"] = values["status"] or "active"
        details = {k: inc[k] for k in DETAIL_FIELDS if inc.get(k) is not None}
        cols = ["node_id", "incident_key", *values, "details", "created_at", "updated_at"]
        args = (node_id, inc.get("incident_key"), *values.values(), json.dumps(details), now, now)
        cur = self._exec(f"INSERT INTO incidents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
                         args)
        incident_id = int(cur.lastrowid or 0)
        self._history(incident_id, "open", inc, now)
        return incident_id

    def _update_incident(self, row: sqlite3.Row, inc: dict[str, Any], now: float) -> None:
        changes = {k: inc[k] for k in INCIDENT_COLUMNS if inc.get(k) is not None}
        if row["status"] == "resolved" and changes.get("status") == "active":
            del changes["status"]  # a late update never reopens a resolved incident
        details, _ = stored_details(row["details"])  # what was withheld is replaced or dropped
        details.update({k: inc[k] for k in DETAIL_FIELDS if inc.get(k) is not None})
        sets = ", ".join(f"{k} = ?" for k in changes)
        sql = f"UPDATE incidents SET {sets + ', ' if sets else ''}details = ?, updated_at = ?, updates = updates + 1 WHERE id = ?"  # noqa: S608,E501
        self._exec(sql, (*changes.values(), json.dumps(details), now, row["id"]))
        kind = "resolve" if changes.get("status") == "resolved" else "update"
        self._history(int(row["id"]), kind, inc, now)

    def _history(self, incident_id: int, kind: str, inc: dict[str, Any], now: float) -> None:
        """The body as the agent sent it (unknown fields included); a body built here: its fields, ISO times."""
        body = inc.get("raw")
        if not isinstance(body, dict):
            body = {k: _ts(v) if k in ("started_at", "ended_at") else v for k, v in inc.items() if v is not None}
        self._exec("INSERT INTO incident_history (incident_id, received_at, kind, body) VALUES (?, ?, ?, ?)",
                   (incident_id, now, kind, json.dumps(body)))

    def incident(self, incident_id: int, history: bool = True) -> dict[str, Any] | None:
        row = self._one(_INCIDENT_SELECT + " WHERE i.id = ?", (incident_id,))
        if row is None:
            return None
        out = _incident(row)
        if history:
            rows = self._exec("SELECT received_at, kind, body FROM incident_history WHERE incident_id = ? "
                              "ORDER BY id", (incident_id,)).fetchall()
            out["history"] = [_history_entry(r) for r in rows]
        return out

    def list_incidents(self, node_id: int | None = None, status: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]:
        where, args = incident_filter(node_id, status)
        rows = self._exec(_INCIDENT_SELECT + where + " ORDER BY i.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_incident(r) for r in rows]

    def incident_by_key(self, node_id: int, incident_key: str) -> tuple[int, float | None] | None:
        """(incident_id, started_at) of a node's incident with that key, or None."""
        row = self._one("SELECT id, started_at FROM incidents WHERE node_id = ? AND incident_key = ?",
                        (node_id, incident_key))
        return None if row is None else (int(row["id"]), row["started_at"])

    def incident_node(self, incident_id: int) -> int | None:
        row = self._one("SELECT node_id FROM incidents WHERE id = ?", (incident_id,))
        return None if row is None else int(row["node_id"])

    # -- pcaps -----------------------------------------------------------------------------------
    def set_pcap(self, incident_id: int, node_id: int, file_name: str, size: int, sha256: str,
                 now: float) -> str | None:
        with self._tx():
            old = self._one("SELECT file_name FROM pcaps WHERE incident_id = ?", (incident_id,))
            self._exec("INSERT OR REPLACE INTO pcaps VALUES (?, ?, ?, ?, ?, ?)",
                       (incident_id, node_id, file_name, size, sha256, now))
        return None if old is None else str(old["file_name"])

    def pcap(self, incident_id: int) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM pcaps WHERE incident_id = ?", (incident_id,))
        if row is None:
            return None
        return pcap_row(incident_id, row)

    def pcap_bytes_total(self) -> int:
        row = self._one("SELECT coalesce(sum(bytes), 0) AS n FROM pcaps")
        return int(row["n"]) if row else 0

    def pcap_files(self) -> set[str]:
        return {str(r[0]) for r in self._exec("SELECT file_name FROM pcaps").fetchall()}

    # -- remote config and commands --------------------------------------------------------------
    def node_config(self, node_id: int) -> dict[str, Any]:
        row = self._one("SELECT pps_threshold, bps_threshold, baseline, ioc_patterns FROM nodes WHERE id = ?",
                        (node_id,))
        if row is None:
            raise NotFound(f"no node {node_id}")
        return config_row(node_id, row)

    def node_config_many(self, calls: list[tuple[int]]) -> list[dict[str, Any]]:
        return [self.node_config(*args) for args in calls]  # in-process: nothing to gain from one statement

    def update_node_config(self, node_id: int, changes: dict[str, Any]) -> None:
        cols = {k: (json.dumps(v) if k in ("baseline", "ioc_patterns") else v) for k, v in changes.items()
                if k in ("pps_threshold", "bps_threshold", "baseline", "ioc_patterns")}
        if not cols:
            return
        with self._tx():
            sets = ", ".join(f"{k} = ?" for k in cols)
            if self._exec(f"UPDATE nodes SET {sets} WHERE id = ?", (*cols.values(), node_id)).rowcount != 1:  # noqa: S608
                raise NotFound(f"no node {node_id}")

    def queue_command(self, node_id: int, command: Any, now: float) -> int:
        with self._tx():
            cur = self._exec("INSERT INTO commands (node_id, command, created_at) VALUES (?, ?, ?)",
                             (node_id, json.dumps(command), now))
        return int(cur.lastrowid or 0)

    def pending_commands(self, node_id: int, now: float) -> list[dict[str, Any]]:
        with self._tx():
            rows = self._exec("SELECT id, command FROM commands WHERE node_id = ? AND acked_at IS NULL "
                              "ORDER BY id LIMIT 1000", (node_id,)).fetchall()
            self._exec("UPDATE commands SET delivered_at = ? WHERE node_id = ? AND acked_at IS NULL "
                       "AND delivered_at IS NULL", (now, node_id))
        return [{"id": r["id"], "command": stored_json(r["command"])[0]} for r in rows]  # None: the agent rejects it

    def pending_commands_many(self, calls: list[tuple[int, float]]) -> list[list[dict[str, Any]]]:
        with self._tx():  # all or nothing, as on PostgreSQL
            return [self.pending_commands(*args) for args in calls]

    def ack_command(self, node_id: int, ack: dict[str, Any], now: float) -> bool:
        with self._tx():
            row = self._one("SELECT acked_at FROM commands WHERE id = ? AND node_id = ?",
                            (ack["command_id"], node_id))
            if row is None:
                raise NotFound(f"command_id: no command {ack['command_id']} for this node")
            if row["acked_at"] is not None:
                return False
            self._exec("UPDATE commands SET acked_at = ?, ack_status = ?, ack_error = ?, ack_output = ?, "
                       "executed_at = ? WHERE id = ?", (now, ack["status"], ack["error"], ack["output"],
                                                         ack.get("executed_at"), ack["command_id"]))
        return True

    def list_commands(self, node_id: int) -> list[dict[str, Any]]:
        rows = self._exec("SELECT * FROM commands WHERE node_id = ? ORDER BY id", (node_id,)).fetchall()
        return [command_row(r) for r in rows]

    # -- operators -------------------------------------------------------------------------------
    def add_admin_token(self, name: str, token_hash: str, now: float) -> None:
        with self._tx():
            self._exec("INSERT INTO admin_tokens (name, token_hash, created_at) VALUES (?, ?, ?)",
                       (name, token_hash, now))

    def admin_token_hashes(self) -> list[str]:
        return [str(r[0]) for r in self._exec("SELECT token_hash FROM admin_tokens").fetchall()]

    def check(self) -> list[str]:
        problems = [str(r[0]) for r in self._exec("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self._exec("PRAGMA foreign_key_check").fetchall()]
        return problems


_INCIDENT_SELECT = ("SELECT i.*, n.uuid AS node_uuid, n.name AS node_name, p.bytes AS pcap_bytes, "
                    "p.sha256 AS pcap_sha256 FROM incidents i JOIN nodes n ON n.id = i.node_id "
                    "LEFT JOIN pcaps p ON p.incident_id = i.id")


def _incident(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"incident_id": r["id"], "incident_key": r["incident_key"], "node_uuid": r["node_uuid"],
                           "node_name": r["node_name"]}
    for k in INCIDENT_COLUMNS:
        out[k] = r[k]
    for k in ("started_at", "ended_at"):
        out[k] = _ts(out[k])
    for k in ("spoofing_detected", "botnet_detected"):
        out[k] = None if out[k] is None else bool(out[k])
    details, withheld = stored_details(r["details"])
    for k in DETAIL_FIELDS:
        out[k] = details.get(k)
    if withheld:
        out["withheld"] = withheld
    out.update(created_at=_ts(r["created_at"]), updated_at=_ts(r["updated_at"]), updates=r["updates"],
               pcap_stored=r["pcap_bytes"] is not None, pcap_bytes=r["pcap_bytes"], pcap_sha256=r["pcap_sha256"])
    return out


def _history_entry(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    body, withheld = stored_details(r["body"])
    entry = {"received_at": _ts(r["received_at"]), "kind": r["kind"], "body": body}
    if withheld:
        entry["withheld"] = withheld
    return entry


# -- rows to the dicts both stores return (pg_store.py uses these too) ---------------------------------
def node_row(r: sqlite3.Row | dict[str, Any], now: float, offline_after: float) -> dict[str, Any]:
    seen = r["last_seen_at"]
    status = "new" if seen is None else ("online" if now - seen <= offline_after else "offline")
    return {"node_id": r["id"], "node_uuid": r["uuid"], "name": r["name"], "status": status,
            "last_seen_at": _ts(seen), "agent_version": r["agent_version"], "os": r["os"],
            "uptime": r["uptime"], "created_at": _ts(r["created_at"]),
            "pps_threshold": r["pps_threshold"], "bps_threshold": r["bps_threshold"]}


def metrics_events(calls: list[rollup.MetricsCall]) -> list[tuple[str, dict[str, Any]]]:
    """The "metrics" events add_metrics records, one per call with samples (its newest), for several calls."""
    return [("metrics", {"node_id": node_id, **max(samples, key=lambda s: s["recorded_at"])})
            for node_id, samples, _ in calls if samples]


def metric_row(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    return {"pps": r["pps"], "bps": r["bps"], "tcp_pct": r["tcp_pct"], "udp_pct": r["udp_pct"],
            "icmp_pct": r["icmp_pct"], "conn_count": r["conn_count"],
            "recorded_at": _ts(r["recorded_at"]), "received_at": _ts(r["received_at"])}


def pcap_row(incident_id: int, row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    return {"incident_id": incident_id, "file_name": row["file_name"], "bytes": row["bytes"],
            "sha256": row["sha256"], "uploaded_at": _ts(row["uploaded_at"])}


def config_row(node_id: int, row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    return {"node_id": node_id, "pps_threshold": row["pps_threshold"], "bps_threshold": row["bps_threshold"],
            "baseline": stored_json(row["baseline"])[0] or {},
            "ioc_patterns": stored_json(row["ioc_patterns"])[0] or []}


def command_row(r: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "command": stored_json(r["command"])[0], "created_at": _ts(r["created_at"]),
            "delivered_at": _ts(r["delivered_at"]), "acked_at": _ts(r["acked_at"]),
            "status": r["ack_status"] or "pending", "error": r["ack_error"], "output": r["ack_output"],
            "executed_at": _ts(r["executed_at"])}
