"""Statements for several store calls of one kind at once on PostgreSQL (the database thread's batches,
dbthread.py): one round trip where the calls one by one would make one each, storing the same."""

from __future__ import annotations

from typing import Any

HeartbeatCall = tuple[int, dict[str, Any], float]  # record_heartbeat's arguments: (node_id, heartbeat, now)

NODE_AUTH_MANY = "SELECT uuid, id, key_hash FROM nodes WHERE uuid = ANY(%s)"
NODE_CONFIG_MANY = "SELECT id, pps_threshold, bps_threshold, baseline, ioc_patterns FROM nodes WHERE id = ANY(%s)"
# the nodes with a command not acked (usually none: then nothing else to do for any of them)
PENDING_ANY = "SELECT DISTINCT node_id FROM commands WHERE node_id = ANY(%s) AND acked_at IS NULL"
# one row per node (an UPDATE changes a row once): heartbeats_merged's columns
HEARTBEAT_MANY = ("UPDATE nodes SET last_seen_at = v.now, "
                  "agent_version = coalesce(v.agent_version, nodes.agent_version), os = coalesce(v.os, nodes.os), "
                  "uptime = coalesce(v.uptime, nodes.uptime) "
                  "FROM unnest(%s::bigint[], %s::float8[], %s::text[], %s::text[], %s::bigint[]) "
                  "AS v(id, now, agent_version, os, uptime) WHERE nodes.id = v.id")


def number_arrays(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows of numbers (or None) -> one PostgreSQL array literal per column ('{1,2.5,NULL}'), for `%s::<type>[]`
    in unnest: built by str.join, a fraction of psycopg's adaptation of a list element by element (a regular
    expression per element). Only numbers: a str element would go in unquoted (anything else fails in the
    statement, as a wrong type does through psycopg)."""
    return ["{" + ",".join(["NULL" if v is None else repr(v) for v in column]) + "}"
            for column in zip(*rows, strict=True)]


def heartbeats_merged(calls: list[HeartbeatCall]) -> list[list[Any]]:
    """record_heartbeat calls -> HEARTBEAT_MANY's columns, one row per node, as the calls in order would leave
    it: the last call's time, and of each field the last value given (a missing one keeps the stored)."""
    merged: dict[int, list[Any]] = {}
    for node_id, hb, now in calls:
        row = merged.setdefault(node_id, [node_id, now, None, None, None])
        row[1] = now
        for i, field in enumerate(("agent_version", "os", "uptime"), start=2):
            if hb.get(field) is not None:
                row[i] = hb[field]
    return [list(c) for c in zip(*merged.values(), strict=True)] if merged else [[]] * 5
