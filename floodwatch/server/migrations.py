"""Versions of the server's database schema and the upgrades between them (SQLite).

The version is the highest row of `schema_migrations` (version, name, applied_at); a database from
before that table (the schema shipped first) is version 1 by its `meta` row `schema_version`. Opening
a database applies the missing upgrades in order, in one transaction (all or nothing), after a copy of
the file (`<db>.schema<N>-<time>.bak`) when it holds data; a database newer than this code knows is
refused (SchemaTooNew), never touched. `floodwatch server migrate` does the same explicitly.

Convention: a new table or index may still be created `IF NOT EXISTS` by the module that owns it
(notify/); anything that changes an existing table or its data is a new entry in MIGRATIONS.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from floodwatch.errors import StorageError
from floodwatch.server import rollup


class SchemaTooNew(StorageError):
    """The database was written by a newer floodwatch: this one refuses to use it."""


# The schema of the first released server (version 1); kept as it shipped (its upgrades follow).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL,
  created_at REAL NOT NULL, last_seen_at REAL, agent_version TEXT, os TEXT, uptime INTEGER,
  pps_threshold INTEGER, bps_threshold INTEGER,
  baseline TEXT NOT NULL DEFAULT '{}', ioc_patterns TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS metrics (
  id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id),
  recorded_at REAL NOT NULL, received_at REAL NOT NULL, pps INTEGER NOT NULL, bps INTEGER NOT NULL,
  tcp_pct REAL, udp_pct REAL, icmp_pct REAL, conn_count INTEGER);
CREATE INDEX IF NOT EXISTS metrics_node_time ON metrics (node_id, recorded_at);
CREATE INDEX IF NOT EXISTS metrics_time ON metrics (recorded_at);
CREATE TABLE IF NOT EXISTS incidents (
  id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id), incident_key TEXT,
  status TEXT NOT NULL, attack_family TEXT NOT NULL, severity TEXT NOT NULL, attack_subtype TEXT,
  confidence INTEGER, started_at REAL, ended_at REAL, peak_pps INTEGER, peak_bps INTEGER,
  source_ip_count INTEGER, spoofing_detected INTEGER, botnet_detected INTEGER,
  details TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, updated_at REAL NOT NULL,
  updates INTEGER NOT NULL DEFAULT 0, UNIQUE (node_id, incident_key));
CREATE TABLE IF NOT EXISTS incident_history (
  id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL REFERENCES incidents(id),
  received_at REAL NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_incident ON incident_history (incident_id);
CREATE TABLE IF NOT EXISTS pcaps (
  incident_id INTEGER PRIMARY KEY REFERENCES incidents(id), node_id INTEGER NOT NULL,
  file_name TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, uploaded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
  id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL REFERENCES nodes(id), command TEXT NOT NULL,
  created_at REAL NOT NULL, delivered_at REAL, acked_at REAL, ack_status TEXT, ack_error TEXT,
  ack_output TEXT, executed_at REAL);
CREATE INDEX IF NOT EXISTS commands_pending ON commands (node_id) WHERE acked_at IS NULL;
CREATE TABLE IF NOT EXISTS admin_tokens (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
"""


def _v1(conn: sqlite3.Connection) -> None:
    _script(conn, SCHEMA_V1)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '1')")


def _v2(conn: sqlite3.Connection) -> None:
    """The version table; metric rollups and each node's newest sample, filled from the stored metrics."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at REAL NOT NULL)")
    rollup.init_schema(conn)
    for width, table in rollup.TABLES.items():  # buckets a server already keeps (it ran newer code) stay
        conn.execute(f"INSERT INTO {table} SELECT node_id, CAST(recorded_at / {width} AS INTEGER) * {width} AS b, "  # noqa: S608
                     "count(*), sum(pps), max(pps), sum(bps), max(bps), sum(coalesce(tcp_pct, 0)), "
                     "sum(coalesce(udp_pct, 0)), sum(coalesce(icmp_pct, 0)) FROM metrics GROUP BY node_id, b "
                     "ORDER BY node_id, b ON CONFLICT (node_id, t) DO NOTHING")
    # SQLite: the bare columns of a max() aggregate come from the row holding the maximum
    conn.execute("INSERT INTO node_latest SELECT node_id, max(recorded_at), pps, bps FROM metrics "
                 "GROUP BY node_id ORDER BY node_id ON CONFLICT (node_id) DO NOTHING")


# Version 3: the dashboard's users (made IF NOT EXISTS by older servers), its sessions and the sign-in
# failures, in the database so that every replica knows them and a restart signs nobody out; and the index
# /metrics counts active incidents by family with (older servers made it at start).
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS dash_users (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, pw_hash TEXT NOT NULL,
  created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dash_sessions (
  token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL REFERENCES dash_users(name) ON DELETE CASCADE,
  csrf TEXT NOT NULL, created_at REAL NOT NULL, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dash_sessions_seen ON dash_sessions (seen_at);
CREATE INDEX IF NOT EXISTS dash_sessions_user ON dash_sessions (user_name);
CREATE TABLE IF NOT EXISTS dash_login_failures (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dash_login_failures_key ON dash_login_failures (key, at);
CREATE INDEX IF NOT EXISTS dash_login_failures_at ON dash_login_failures (at);
CREATE INDEX IF NOT EXISTS incidents_status_family ON incidents (status, attack_family)
"""


def _v3(conn: sqlite3.Connection) -> None:
    _script(conn, SCHEMA_V3)


# Version 4: each sample stored once. A sample is known by (node, the agent's own recorded_at): a retry
# of a batch whose answer was lost (a replica died after its commit) is ignored, not stored again. A sample
# the server stamped at arrival (its agent sent no recorded_at: the official agent) has no identity of its
# own: `timed_by_agent` is NULL there, and NULLs never collide in a unique index. Rows stored before are
# told apart by their times: the server's stamp is recorded_at == received_at exactly. The upgrade
# REMOVES the extra copies of an agent-timed sample already stored (the lowest id stays) and takes them
# out of the rollups' counts and sums (their maxima stay: a retried copy holds the same values);
# nothing else changes.
V4_DUPLICATES = """
CREATE TEMP TABLE v4_duplicates AS SELECT m.id, m.node_id, m.recorded_at, m.pps, m.bps, m.tcp_pct, m.udp_pct,
  m.icmp_pct FROM metrics m WHERE m.recorded_at <> m.received_at AND EXISTS (SELECT 1 FROM metrics o
  WHERE o.node_id = m.node_id AND o.recorded_at = m.recorded_at AND o.recorded_at <> o.received_at AND o.id < m.id)
"""
V4_ROLLUP = """UPDATE {table} SET n = {table}.n - d.n, pps_sum = {table}.pps_sum - d.pps,
  bps_sum = {table}.bps_sum - d.bps, tcp_sum = {table}.tcp_sum - d.tcp, udp_sum = {table}.udp_sum - d.udp,
  icmp_sum = {table}.icmp_sum - d.icmp FROM (SELECT node_id, {bucket} AS b, count(*) AS n, sum(pps) AS pps,
  sum(bps) AS bps, sum(coalesce(tcp_pct, 0)) AS tcp, sum(coalesce(udp_pct, 0)) AS udp,
  sum(coalesce(icmp_pct, 0)) AS icmp FROM v4_duplicates GROUP BY node_id, b) AS d
  WHERE {table}.node_id = d.node_id AND {table}.t = d.b"""  # the same text on PostgreSQL (pg_schema.V4)
V4_KEY = """
DELETE FROM metrics WHERE id IN (SELECT id FROM v4_duplicates);
DROP TABLE v4_duplicates;
ALTER TABLE metrics ADD COLUMN timed_by_agent INTEGER DEFAULT 1;
UPDATE metrics SET timed_by_agent = NULL WHERE recorded_at = received_at;
DROP INDEX IF EXISTS metrics_node_time;
CREATE UNIQUE INDEX metrics_sample ON metrics (node_id, recorded_at, timed_by_agent)
"""


def _v4(conn: sqlite3.Connection) -> None:
    _script(conn, V4_DUPLICATES)
    for width, table in rollup.TABLES.items():
        conn.execute(V4_ROLLUP.format(table=table, bucket=f"CAST(recorded_at / {width} AS INTEGER) * {width}"))
    _script(conn, V4_KEY)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS = (
    Migration(1, "nodes, metrics, incidents and their history, captures, commands, admin tokens", _v1),
    Migration(2, "schema_migrations; metric rollups (1 min, 1 h) and node_latest, filled from metrics", _v2),
    Migration(3, "dashboard users, sessions and sign-in failures in the database; incidents by status and family",
              _v3),
    Migration(4, "each metric sample stored once, known by (node, the agent's recorded_at); removes the extra "
                 "copies of a sample already stored and their counts in the rollups", _v4),
)
CURRENT = MIGRATIONS[-1].version


def _script(conn: sqlite3.Connection, ddl: str) -> None:
    for stmt in ddl.split(";"):
        if stmt.strip():
            conn.execute(stmt)


def version(conn: sqlite3.Connection) -> int:
    """The schema version of a database (0: empty)."""
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_migrations" in tables:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        if row[0] is not None:
            return int(row[0])
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 1 if "nodes" in tables else 0


def refuse_newer(found: int, where: str) -> None:
    if found > CURRENT:
        raise SchemaTooNew(f"{where}: the database's schema is version {found}, newer than this floodwatch "
                           f"knows (up to {CURRENT}): it was upgraded by a newer floodwatch; run that version "
                           f"(or restore the copy taken before the upgrade)")


def backup(conn: sqlite3.Connection, path: Path, found: int, now: float) -> Path:
    """A consistent copy of the database (0600) before it is upgraded from version `found`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    dest = path.with_name(f"{path.name}.schema{found}-{stamp}.bak")
    dest.touch(mode=0o600, exist_ok=False)
    conn.execute("VACUUM INTO ?", (str(dest),))
    return dest


def upgrade(conn: sqlite3.Connection, now: float) -> list[Migration]:
    """Apply the missing migrations (inside the caller's transaction); returns those applied."""
    found = version(conn)
    refuse_newer(found, "database")
    todo = [m for m in MIGRATIONS if m.version > found]
    for m in todo:
        m.apply(conn)
    if todo:  # an upgraded version-1 database gets its row 1 here too
        conn.executemany("INSERT OR IGNORE INTO schema_migrations VALUES (?, ?, ?)",
                         [(m.version, m.name, now) for m in MIGRATIONS])
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(CURRENT),))
    return todo
