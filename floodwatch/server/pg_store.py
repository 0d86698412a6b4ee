"""The Store on PostgreSQL (psycopg 3 with its connection pool), the same contract as SQLiteStore.

The server's database thread (dbthread.py) calls the store from one thread, so a synchronous driver fits:
each top-level call (or a whole `group()`) borrows a pooled connection for one transaction; calls inside
a group are savepoints. The pool replaces broken connections (a PostgreSQL restart costs the batch in
flight, which its callers see as an error, not the server). psycopg prepares a statement on the server
once it has run a few times (prepare_threshold), so per-request queries are prepared. A batch of metrics
is one statement. The password comes from the caller (a file or FLOODWATCH_DB_PASSWORD), never from the URL.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import psycopg.sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from floodwatch.errors import StorageError
from floodwatch.server import migrations, pg_batch, pg_rows, pg_schema, rollup
from floodwatch.server.backend import redact
from floodwatch.server.sqlite_store import (
    _INCIDENT_SELECT,
    DETAIL_FIELDS,
    INCIDENT_COLUMNS,
    _history_entry,
    _incident,
    _ts,
    command_row,
    config_row,
    metric_row,
    metrics_events,
    node_row,
    pcap_row,
)
from floodwatch.server.store import (
    PCAPS_OF_NODE,
    REMOVE_NODE,
    Conflict,
    GroupRetry,
    NotFound,
    incident_filter,
    removed_counts,
)
from floodwatch.server.validate import BadField, stored_details, stored_json

# A batch of samples in one statement (a constant text: prepared): the rows go in by one multi-row insert
# that skips a sample already stored (rollup.ONCE), and the rollups and node_latest take only the rows it
# inserted (aggregated per node and bucket: a statement may not update one row twice); it returns the
# agent-timed samples it stored, so each call learns its count.
_ROLLUP_UPSERT = ("INSERT INTO {table} " + pg_schema.ROLLUP_ROWS.replace("{src}", "ins") + " ON CONFLICT (node_id, t) "
                  "DO UPDATE SET n = {table}.n + excluded.n, pps_sum = {table}.pps_sum + excluded.pps_sum, "
                  "pps_max = greatest({table}.pps_max, excluded.pps_max), "
                  "bps_sum = {table}.bps_sum + excluded.bps_sum, "
                  "bps_max = greatest({table}.bps_max, excluded.bps_max), "
                  "tcp_sum = {table}.tcp_sum + excluded.tcp_sum, udp_sum = {table}.udp_sum + excluded.udp_sum, "
                  "icmp_sum = {table}.icmp_sum + excluded.icmp_sum")
_ADD_METRICS = (
    f"WITH ins AS (INSERT INTO metrics ({rollup.METRIC_COLUMNS}) SELECT * FROM unnest(%s::bigint[], %s::float8[], "  # noqa: S608
    "%s::float8[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[], %s::integer[]) "
    f"{rollup.ONCE} RETURNING node_id, recorded_at, pps, bps, tcp_pct, udp_pct, icmp_pct, timed_by_agent), "
    + ", ".join(f"{table} AS ({_ROLLUP_UPSERT.format(table=table, w=width)})" for width, table in rollup.TABLES.items())
    + ", latest AS (INSERT INTO node_latest SELECT DISTINCT ON (node_id) node_id, recorded_at, pps, bps FROM ins "
    "ORDER BY node_id, recorded_at DESC ON CONFLICT (node_id) DO UPDATE SET recorded_at = excluded.recorded_at, "
    "pps = excluded.pps, bps = excluded.bps WHERE excluded.recorded_at >= node_latest.recorded_at) "
    "SELECT node_id, recorded_at FROM ins WHERE timed_by_agent IS NOT NULL")

EVENTS_CHANNEL = "floodwatch_events"  # what each commit recorded, for every replica's live pages (web/live.py)
NODES_CHANNEL = "floodwatch_nodes"  # the id of each node removed, for every replica's credentials cache
LISTEN_CHECK_SECONDS = 30.0  # a quiet listening connection is checked this often (a dead one is replaced)
NOTIFY_MAX = 7900  # bytes: PostgreSQL refuses a NOTIFY payload of 8000 or more


class _Transaction(threading.local):
    """The transaction a thread is in (group()): several database threads share one PGStore, each with
    its own pooled connection, aborted flag and events."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        self.aborted = False  # a read inside group() failed: the transaction cannot commit (_read)
        self.optimistic = False  # group(optimistic=True): the batched writes skip their savepoint (_write)
        self.retry = False  # something failed without a savepoint in an optimistic group: GroupRetry at its end
        self.events: list[tuple[str, dict[str, Any]]] = []


class PGStore:
    """See floodwatch.server.store.Store for the methods' contract. Safe for several threads at once: each
    thread's group() is its own transaction on its own pooled connection."""

    dialect = "postgresql"

    def __init__(self, url: str, password: str | None = None, min_size: int = 1, max_size: int = 4) -> None:
        self.where = redact(url)
        self.incident_hooks: list[Callable[[PGStore, int, dict[str, Any] | None], None]] = []
        self.listeners: list[Callable[[list[tuple[str, dict[str, Any]]]], None]] = []
        self._tx_state = _Transaction()
        # Turns a transaction's events into NOTIFY payloads on EVENTS_CHANNEL, sent with its commit (set by
        # the dashboard, web/live.py: every replica's live pages learn the incidents any replica stored; a
        # commit without one, such as a batch of samples, sends none and takes no NOTIFY lock)
        self.announce: Callable[[list[tuple[str, dict[str, Any]]]], list[str]] | None = None
        kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True}
        if password is not None:
            kwargs["password"] = password
        self._url, self._kwargs = url, kwargs
        try:  # one connection first, for the server's own reason when it fails (never the password)
            psycopg.connect(url, connect_timeout=10, **kwargs).close()
            self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=False)
            self.pool.open(wait=True, timeout=15)
        except Exception as e:  # psycopg's errors and the pool's timeout alike
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1].replace(password or "\0", "***")
            raise StorageError(f"{self.where}: cannot connect to the database: {reason}") from e
        self.schema_before, self.migrated = 0, list[migrations.Migration]()
        with self._tx() as cur:
            self.schema_before, self.migrated = pg_schema.upgrade(cur, time.time(), self.where)

    def close(self) -> None:
        self.pool.close()

    @property
    def _conn(self) -> psycopg.Connection[Any] | None:
        return self._tx_state.conn

    @_conn.setter
    def _conn(self, conn: psycopg.Connection[Any] | None) -> None:
        self._tx_state.conn = conn

    @property
    def _aborted(self) -> bool:
        return self._tx_state.aborted

    @_aborted.setter
    def _aborted(self, aborted: bool) -> None:
        self._tx_state.aborted = aborted

    @property
    def _events(self) -> list[tuple[str, dict[str, Any]]]:
        return self._tx_state.events

    @_events.setter
    def _events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self._tx_state.events = events

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        if self._conn is not None:  # inside group(): a savepoint
            mark = len(self._events)
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except BaseException:
                del self._events[mark:]
                raise
            return
        with self.group():
            assert self._conn is not None
            with self._conn.cursor() as cur:
                yield cur

    @contextmanager
    def group(self, optimistic: bool = False) -> Iterator[None]:
        """One transaction (BEGIN and COMMIT by hand: the COMMIT goes with the NOTIFYs, _commit)."""
        state = self._tx_state
        try:
            with self.pool.connection() as conn:
                conn.execute("BEGIN", prepare=False)
                state.conn, state.aborted, state.optimistic, state.retry = conn, False, optimistic, False
                try:
                    yield
                    if state.retry:
                        raise GroupRetry(f"{self.where}: a call without its savepoint failed: rolled back")
                    if self._aborted:
                        raise StorageError(f"{self.where}: a read failed in the transaction: rolled back")
                    self._commit(conn)
                except BaseException:
                    with contextlib.suppress(psycopg.Error):  # a lost connection: the pool replaces it
                        conn.rollback()
                    raise
                finally:
                    state.conn, state.optimistic = None, False
        except psycopg.Error as e:  # BEGIN, NOTIFY or COMMIT on a lost connection, or no connection in time
            self._events.clear()
            raise StorageError(f"{self.where}: {_first_line(e)}") from e
        except BaseException:
            self._events.clear()
            raise
        events, self._events = self._events, []
        for listener in self.listeners if events else ():
            listener(events)

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        """COMMIT, after a NOTIFY of the transaction's events (delivered to every listener when, and only if, it
        commits) in the same round trip: one text of several statements (the simple query protocol; the
        payloads as quoted literals). A failure stops at the failing statement: nothing is committed."""
        payloads = [] if self.announce is None or not self._events else [
            p for p in self.announce(self._events) if len(p.encode()) <= NOTIFY_MAX]
        notify = psycopg.sql.SQL("SELECT pg_notify({}, {}); ")
        conn.execute(psycopg.sql.Composed([*(notify.format(EVENTS_CHANNEL, p) for p in payloads),
                                          psycopg.sql.SQL("COMMIT")]), prepare=False)

    async def listen(self, channel: str = EVENTS_CHANNEL,
                     on_listening: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """The payloads NOTIFYed on `channel` by any process using this database, on a connection of its
        own (checked every LISTEN_CHECK_SECONDS when quiet); `on_listening` is called once LISTEN is in
        effect. StorageError when it fails: the caller listens again (what was sent in between is not
        replayed)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, connect_timeout=10, keepalives=1,
                                                         keepalives_idle=30, keepalives_interval=10,
                                                         keepalives_count=3,
                                                         application_name=listener_name(channel), **self._kwargs)
        except psycopg.Error as e:
            raise StorageError(f"{self.where}: cannot listen: {_first_line(e)}") from e
        try:
            async with conn:
                await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
                if on_listening is not None:
                    on_listening()
                while True:
                    async for note in conn.notifies(timeout=LISTEN_CHECK_SECONDS):
                        yield note.payload
                    await conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise StorageError(f"{self.where}: listening failed: {_first_line(e)}") from e

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction (a savepoint inside group()) for code that keeps its own tables here (notify/)."""
        return self._tx()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> pg_rows.Result:
        """Backend-neutral SQL (`?` placeholders) in the current transaction, else in its own (pg_rows.py)."""
        with self._tx() as cur:
            cur.row_factory = pg_rows.row_factory  # type: ignore[assignment]
            self._exec(cur, pg_rows.to_pg(sql), args)
            return pg_rows.Result(cur.fetchall() if cur.description else [], cur.rowcount)

    def _exec(self, cur: psycopg.Cursor[Any], sql: str, args: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        try:
            return cur.execute(sql, args)
        except psycopg.errors.IntegrityError as e:
            raise Conflict(str(e).splitlines()[0]) from e
        except psycopg.DataError as e:  # a value the request sent (a NUL in a name from a URL): 400, not 503
            raise BadField("value", _first_line(e)) from e
        except psycopg.Error as e:
            raise StorageError(f"{self.where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e

    @contextmanager
    def _read(self, bare: bool) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor for one read-only statement; `bare`: inside group() without a savepoint (two round trips
        fewer), only for the per-agent reads whose arguments the server made (an id, a canonical UUID), never
        text from a request. A bare read failing on the server has aborted the group's transaction, so the
        group then rolls back and every call in it gets an error (none is told "stored" wrongly)."""
        if self._conn is None or not bare:
            with self._tx() as cur:
                yield cur
            return
        try:
            with self._conn.cursor() as cur:
                yield cur
        except BaseException:
            if self._conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                if self._tx_state.optimistic:
                    self._tx_state.retry = True  # run again without optimism: then only this fails, not all
                self._aborted = True
            raise

    @contextmanager
    def _write(self) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor for a batched write (`*_many`, all or nothing): in an optimistic group() without a savepoint
        (two round trips fewer; if it fails the group is rolled back and raises GroupRetry), else in its own
        savepoint (or transaction)."""
        state = self._tx_state
        if state.conn is None or not state.optimistic:
            with self._tx() as cur:
                yield cur
            return
        try:
            with state.conn.cursor() as cur:
                yield cur
        except Exception as e:
            state.retry = True
            raise GroupRetry(f"{self.where}: a batched write failed ({_first_line(e)}): rolled back") from e

    def _one(self, sql: str, args: tuple[Any, ...] = (), bare: bool = False) -> dict[str, Any] | None:
        with self._read(bare) as cur:
            row: dict[str, Any] | None = self._exec(cur, sql, args).fetchone()
        return row

    def _all(self, sql: str, args: tuple[Any, ...] = (), bare: bool = False) -> list[dict[str, Any]]:
        with self._read(bare) as cur:
            return self._exec(cur, sql, args).fetchall()

    # -- nodes -----------------------------------------------------------------------------------
    def add_node(self, name: str, node_uuid: str, key_hash: str, now: float) -> dict[str, Any]:
        with self._tx() as cur:
            if self._exec(cur, "SELECT 1 FROM nodes WHERE name = %s", (name,)).fetchone():
                raise Conflict(f"a node named {name!r} exists")
            row = _fetch1(self._exec(cur, "INSERT INTO nodes (uuid, name, key_hash, created_at) "
                                     "VALUES (%s, %s, %s, %s) RETURNING id", (node_uuid, name, key_hash, now)))
        return {"node_id": row["id"], "node_uuid": node_uuid, "name": name}

    def node_auth(self, node_uuid: str) -> tuple[int, str] | None:
        row = self._one("SELECT id, key_hash FROM nodes WHERE uuid = %s", (node_uuid,), bare=True)
        return None if row is None else (int(row["id"]), str(row["key_hash"]))

    def node_auth_many(self, calls: list[tuple[str]]) -> list[tuple[int, str] | None]:
        """node_auth of several nodes (the database thread's batch) in one statement."""
        uuids = [node_uuid for node_uuid, in calls]
        rows = self._all(pg_batch.NODE_AUTH_MANY, (uuids,), bare=True)
        found = {str(r["uuid"]): (int(r["id"]), str(r["key_hash"])) for r in rows}
        return [found.get(u) for u in uuids]

    def find_node(self, ref: str, now: float = 0.0, offline_after: float = 90.0) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM nodes WHERE name = %s OR uuid = %s OR id::text = %s "
                        "ORDER BY name = %s DESC LIMIT 1", (ref, ref.lower(), ref, ref))
        return None if row is None else node_row(row, now or time.time(), offline_after)

    def list_nodes(self, now: float, offline_after: float) -> list[dict[str, Any]]:
        return [node_row(r, now, offline_after) for r in self._all("SELECT * FROM nodes ORDER BY id")]

    def record_heartbeat(self, node_id: int, hb: dict[str, Any], now: float) -> None:
        self.record_heartbeat_many([(node_id, hb, now)])  # in an optimistic group: without a savepoint too

    def record_heartbeat_many(self, calls: list[pg_batch.HeartbeatCall]) -> list[None]:
        """Several record_heartbeat calls in one statement (a node's calls merged first, as one by one they
        would leave it: the last time, the last value given of each field); all or nothing."""
        with self._write() as cur:
            self._exec(cur, pg_batch.HEARTBEAT_MANY, tuple(pg_batch.heartbeats_merged(calls)))
        return [None] * len(calls)

    def remove_node(self, node_id: int) -> dict[str, Any] | None:
        with self._tx() as cur:
            files = [str(r["file_name"]) for r in
                     self._exec(cur, PCAPS_OF_NODE.replace("?", "%s"), (node_id, node_id)).fetchall()]
            counts = {what: self._exec(cur, sql.replace("?", "%s"), (node_id,) * sql.count("?")).rowcount
                      for what, sql in REMOVE_NODE}
            if counts["node"]:  # every replica forgets its key (delivered if, and when, this commits)
                self._exec(cur, "SELECT pg_notify(%s, %s)", (NODES_CHANNEL, str(node_id)))
        return removed_counts(counts, files)

    # -- metrics ---------------------------------------------------------------------------------
    def add_metrics(self, node_id: int, samples: list[dict[str, Any]], now: float) -> int:
        return self.add_metrics_many([(node_id, samples, now)])[0]

    def add_metrics_many(self, calls: list[rollup.MetricsCall]) -> list[int]:
        """Several add_metrics calls as one (the database thread's batch), in one statement (_ADD_METRICS): each
        call's count of samples stored (a sample already stored, or earlier in the batch, is not stored again
        nor counted in the rollups). Stores what the calls one by one would; all or nothing."""
        calls = rollup.first_copies(calls)
        rows = rollup.metric_rows(calls)
        if rows:
            with self._write() as cur:
                try:
                    cur.execute(_ADD_METRICS, pg_batch.number_arrays(rows))
                    stored = {(r["node_id"], r["recorded_at"]) for r in cur.fetchall()}
                except psycopg.Error as e:
                    raise StorageError(f"{self.where}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
                if len(stored) < len(rows):  # a retry (or a sample the server stamped): keep what was stored
                    calls = [(n, [s for s in samples if s.get("stamped") or (n, s["recorded_at"]) in stored], now)
                             for n, samples, now in calls]
                self._events.extend(metrics_events(calls))
        return [len(samples) for _, samples, _ in calls]

    def metrics(self, node_id: int, since: float, limit: int) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM metrics WHERE node_id = %s AND recorded_at >= %s "
                         "ORDER BY recorded_at, id LIMIT %s", (node_id, since, limit))
        return [metric_row(r) for r in rows]

    def prune_metrics(self, before: float) -> int:
        with self._tx() as cur:
            return self._exec(cur, "DELETE FROM metrics WHERE recorded_at < %s", (before,)).rowcount

    # -- incidents -------------------------------------------------------------------------------
    def upsert_incident(self, node_id: int, inc: dict[str, Any], now: float) -> tuple[int, bool]:
        with self._tx() as cur:
            if inc.get("incident_id") is not None:
                row = self._exec(cur, "SELECT id, incident_key, status, details FROM incidents WHERE id = %s "
                                 "AND node_id = %s FOR UPDATE", (inc["incident_id"], node_id)).fetchone()
                if row is None:
                    raise NotFound(f"incident_id: no incident {inc['incident_id']} for this node")
                if inc.get("incident_key") and row["incident_key"] and inc["incident_key"] != row["incident_key"]:
                    raise Conflict("incident_key: does not match the incident's key")
                before = self.incident(int(row["id"]), history=False) if self.incident_hooks else None
                self._update_incident(cur, row, inc, now)
                self._run_hooks(int(row["id"]), before)
                self._events.append(("incident", {"incident_id": int(row["id"]), "created": False}))
                return int(row["id"]), False
            incident_id = self._insert_incident(cur, node_id, inc, now)
            if incident_id is None:  # a retried open (here or on another replica): same id, nothing changed
                row = _fetch1(self._exec(cur, "SELECT id FROM incidents WHERE node_id = %s AND incident_key = %s",
                                         (node_id, inc["incident_key"])))
                return int(row["id"]), False
            self._run_hooks(incident_id, None)
            self._events.append(("incident", {"incident_id": incident_id, "created": True}))
            return incident_id, True

    def _run_hooks(self, incident_id: int, before: dict[str, Any] | None) -> None:
        for hook in self.incident_hooks:
            hook(self, incident_id, before)

    def _insert_incident(self, cur: psycopg.Cursor[Any], node_id: int, inc: dict[str, Any], now: float) -> int | None:
        """The new incident's id; None when the node already has one with this key (ON CONFLICT: no race)."""
        values: dict[str, Any] = {k: inc.get(k) for k in INCIDENT_COLUMNS}
        values["status"] = values["status"] or "active"
        for k in ("spoofing_detected", "botnet_detected"):
            values[k] = None if values[k] is None else int(values[k])
        details = {k: inc[k] for k in DETAIL_FIELDS if inc.get(k) is not None}
        cols = ["node_id", "incident_key", *values, "details", "created_at", "updated_at"]
        args = (node_id, inc.get("incident_key"), *values.values(), json.dumps(details), now, now)
        row = self._exec(cur, f"INSERT INTO incidents ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "  # noqa: S608
                         "ON CONFLICT (node_id, incident_key) DO NOTHING RETURNING id", args).fetchone()
        if row is None:
            return None
        self._history(cur, int(row["id"]), "open", inc, now)
        return int(row["id"])

    def _update_incident(self, cur: psycopg.Cursor[Any], row: dict[str, Any], inc: dict[str, Any], now: float) -> None:
        changes = {k: inc[k] for k in INCIDENT_COLUMNS if inc.get(k) is not None}
        for k in ("spoofing_detected", "botnet_detected"):
            if k in changes:
                changes[k] = int(changes[k])
        if row["status"] == "resolved" and changes.get("status") == "active":
            del changes["status"]  # a late update never reopens a resolved incident
        details, _ = stored_details(row["details"])
        details.update({k: inc[k] for k in DETAIL_FIELDS if inc.get(k) is not None})
        sets = "".join(f"{k} = %s, " for k in changes)
        self._exec(cur, f"UPDATE incidents SET {sets}details = %s, updated_at = %s, updates = updates + 1 "  # noqa: S608
                   "WHERE id = %s", (*changes.values(), json.dumps(details), now, row["id"]))
        self._history(cur, int(row["id"]), "resolve" if changes.get("status") == "resolved" else "update", inc, now)

    def _history(self, cur: psycopg.Cursor[Any], incident_id: int, kind: str, inc: dict[str, Any], now: float) -> None:
        body = inc.get("raw")
        if not isinstance(body, dict):
            body = {k: _ts(v) if k in ("started_at", "ended_at") else v for k, v in inc.items() if v is not None}
        self._exec(cur, "INSERT INTO incident_history (incident_id, received_at, kind, body) VALUES (%s, %s, %s, %s)",
                   (incident_id, now, kind, json.dumps(body)))

    def incident(self, incident_id: int, history: bool = True) -> dict[str, Any] | None:
        row = self._one(_INCIDENT_SELECT + " WHERE i.id = %s", (incident_id,))
        if row is None:
            return None
        out = _incident(row)
        if history:
            out["history"] = [_history_entry(r) for r in self._all(
                "SELECT received_at, kind, body FROM incident_history WHERE incident_id = %s ORDER BY id",
                (incident_id,))]
        return out

    def list_incidents(self, node_id: int | None = None, status: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]:
        where, args = incident_filter(node_id, status)
        sql = _INCIDENT_SELECT + where.replace("?", "%s") + " ORDER BY i.id DESC LIMIT %s"
        return [_incident(r) for r in self._all(sql, (*args, limit))]

    def incident_by_key(self, node_id: int, incident_key: str) -> tuple[int, float | None] | None:
        row = self._one("SELECT id, started_at FROM incidents WHERE node_id = %s AND incident_key = %s",
                        (node_id, incident_key))
        return None if row is None else (int(row["id"]), row["started_at"])

    def incident_node(self, incident_id: int) -> int | None:
        row = self._one("SELECT node_id FROM incidents WHERE id = %s", (incident_id,))
        return None if row is None else int(row["node_id"])

    # -- pcaps -----------------------------------------------------------------------------------
    def set_pcap(self, incident_id: int, node_id: int, file_name: str, size: int, sha256: str,
                 now: float) -> str | None:
        with self._tx() as cur:
            old = self._exec(cur, "SELECT file_name FROM pcaps WHERE incident_id = %s FOR UPDATE",
                             (incident_id,)).fetchone()
            self._exec(cur, "INSERT INTO pcaps VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (incident_id) DO UPDATE "
                       "SET node_id = excluded.node_id, file_name = excluded.file_name, bytes = excluded.bytes, "
                       "sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at",
                       (incident_id, node_id, file_name, size, sha256, now))
        return None if old is None else str(old["file_name"])

    def pcap(self, incident_id: int) -> dict[str, Any] | None:
        row = self._one("SELECT * FROM pcaps WHERE incident_id = %s", (incident_id,))
        if row is None:
            return None
        return pcap_row(incident_id, row)

    def pcap_bytes_total(self) -> int:
        row = self._one("SELECT coalesce(sum(bytes), 0) AS n FROM pcaps")
        return int(row["n"]) if row else 0

    def pcap_files(self) -> set[str]:
        return {str(r["file_name"]) for r in self._all("SELECT file_name FROM pcaps")}

    # -- remote config and commands --------------------------------------------------------------
    def node_config(self, node_id: int) -> dict[str, Any]:
        row = self._one("SELECT pps_threshold, bps_threshold, baseline, ioc_patterns FROM nodes WHERE id = %s",
                        (node_id,), bare=True)
        if row is None:
            raise NotFound(f"no node {node_id}")
        return config_row(node_id, row)

    def node_config_many(self, calls: list[tuple[int]]) -> list[dict[str, Any]]:
        """node_config of several nodes in one statement; NotFound if one is missing (the database thread
        then runs the calls one by one: each its own answer)."""
        ids = [node_id for node_id, in calls]
        rows = {int(r["id"]): r for r in self._all(pg_batch.NODE_CONFIG_MANY, (ids,), bare=True)}
        for node_id in ids:
            if node_id not in rows:
                raise NotFound(f"no node {node_id}")
        return [config_row(node_id, rows[node_id]) for node_id in ids]

    def update_node_config(self, node_id: int, changes: dict[str, Any]) -> None:
        cols = {k: (json.dumps(v) if k in ("baseline", "ioc_patterns") else v) for k, v in changes.items()
                if k in ("pps_threshold", "bps_threshold", "baseline", "ioc_patterns")}
        if not cols:
            return
        with self._tx() as cur:
            sets = ", ".join(f"{k} = %s" for k in cols)
            if self._exec(cur, f"UPDATE nodes SET {sets} WHERE id = %s", (*cols.values(), node_id)).rowcount != 1:  # noqa: S608
                raise NotFound(f"no node {node_id}")

    def queue_command(self, node_id: int, command: Any, now: float) -> int:
        with self._tx() as cur:
            row = _fetch1(self._exec(cur, "INSERT INTO commands (node_id, command, created_at) "
                                     "VALUES (%s, %s, %s) RETURNING id", (node_id, json.dumps(command), now)))
        return int(row["id"])

    def pending_commands(self, node_id: int, now: float) -> list[dict[str, Any]]:
        rows = self._all("SELECT id, command FROM commands WHERE node_id = %s AND acked_at IS NULL "
                         "ORDER BY id LIMIT 1000", (node_id,), bare=True)
        if rows:  # none pending (the usual answer): a read only, without a savepoint
            with self._tx() as cur:
                self._exec(cur, "UPDATE commands SET delivered_at = %s WHERE node_id = %s AND acked_at IS NULL "
                           "AND delivered_at IS NULL AND id <= %s", (now, node_id, rows[-1]["id"]))
        return [{"id": r["id"], "command": stored_json(r["command"])[0]} for r in rows]

    def pending_commands_many(self, calls: list[tuple[int, float]]) -> list[list[dict[str, Any]]]:
        """pending_commands of several nodes: one statement finds those with any (usually none), which
        then take the call one by one."""
        rows = self._all(pg_batch.PENDING_ANY, (sorted({node_id for node_id, _ in calls}),), bare=True)
        waiting = {int(r["node_id"]) for r in rows}
        return [self.pending_commands(node_id, now) if node_id in waiting else [] for node_id, now in calls]

    def ack_command(self, node_id: int, ack: dict[str, Any], now: float) -> bool:
        with self._tx() as cur:
            row = self._exec(cur, "SELECT acked_at FROM commands WHERE id = %s AND node_id = %s FOR UPDATE",
                             (ack["command_id"], node_id)).fetchone()
            if row is None:
                raise NotFound(f"command_id: no command {ack['command_id']} for this node")
            if row["acked_at"] is not None:
                return False
            self._exec(cur, "UPDATE commands SET acked_at = %s, ack_status = %s, ack_error = %s, ack_output = %s, "
                       "executed_at = %s WHERE id = %s", (now, ack["status"], ack["error"], ack["output"],
                                                          ack.get("executed_at"), ack["command_id"]))
        return True

    def list_commands(self, node_id: int) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM commands WHERE node_id = %s ORDER BY id", (node_id,))
        return [command_row(r) for r in rows]

    # -- operators -------------------------------------------------------------------------------
    def add_admin_token(self, name: str, token_hash: str, now: float) -> None:
        with self._tx() as cur:
            self._exec(cur, "INSERT INTO admin_tokens (name, token_hash, created_at) VALUES (%s, %s, %s)",
                       (name, token_hash, now))

    def admin_token_hashes(self) -> list[str]:
        return [str(r["token_hash"]) for r in self._all("SELECT token_hash FROM admin_tokens")]

    def check(self) -> list[str]:
        """PostgreSQL keeps its own integrity (constraints are enforced): nothing to find here."""
        return []


def listener_name(channel: str) -> str:
    """The application_name of the connection listening on `channel` (what pg_stat_activity shows for it)."""
    return f"floodwatch listen {channel}"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _fetch1(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    row: dict[str, Any] | None = cur.fetchone()
    if row is None:
        raise StorageError("the database returned no row")
    return row
