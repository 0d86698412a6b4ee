"""The server's storage interface: SQLite (sqlite_store.py, the default) and PostgreSQL (pg_store.py).

Methods are synchronous and each is one transaction, unless called inside `group()`, where they share
one transaction (the server commits many requests at once that way) and a failing call is rolled back
alone. Rows come back as plain dicts with JSON-ready values (timestamps as ISO 8601 strings).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from floodwatch.errors import StorageError


class NotFound(StorageError):
    """The node, incident or command does not exist (or belongs to another node)."""


class Conflict(StorageError):
    """The request contradicts what is stored (e.g. an incident_key that does not match the id)."""


class GroupRetry(StorageError):
    """An optimistic group() failed in a call that skipped its savepoint: the whole transaction is rolled back;
    run the group again without `optimistic` (then each call fails alone)."""


class Store(Protocol):
    dialect: str  # "sqlite" or "postgresql"
    # (store, incident_id, the incident before or None) inside the transaction that changes an incident
    incident_hooks: list[Any]
    # called after each commit with what it recorded: [(kind, data), ...]
    listeners: list[Any]

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction (a savepoint inside group()) for code keeping its own tables here (notify/)."""
        ...

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """Backend-neutral SQL with `?` placeholders, in the current transaction; a cursor-like result
        (fetchone, fetchall, rowcount; rows readable by position and by column name)."""
        ...

    def pcap_files(self) -> set[str]: ...

    def group(self, optimistic: bool = False) -> AbstractContextManager[None]:
        """One transaction for the calls inside; a failing call is rolled back alone (a savepoint each). With
        `optimistic`, the batched writes (`*_many`) may skip their savepoint (PostgreSQL: two round trips
        fewer each): if one fails, the group raises GroupRetry, all rolled back (the database thread then runs
        the batch again without it). SQLite keeps its savepoints (they cost nothing there)."""
        ...

    # nodes
    def add_node(self, name: str, node_uuid: str, key_hash: str, now: float) -> dict[str, Any]: ...

    def node_auth(self, node_uuid: str) -> tuple[int, str] | None:
        """(node_id, key_hash) of a node, or None."""
        ...

    def node_auth_many(self, calls: list[tuple[str]]) -> list[tuple[int, str] | None]:
        """node_auth of several nodes [(node_uuid,), ...] (the database thread's batch): each call's answer."""
        ...

    def find_node(self, ref: str, now: float = 0.0, offline_after: float = 90.0) -> dict[str, Any] | None:
        """A node by name, UUID or numeric id (status as of `now`, default: the current time)."""
        ...

    def list_nodes(self, now: float, offline_after: float) -> list[dict[str, Any]]: ...

    def record_heartbeat(self, node_id: int, hb: dict[str, Any], now: float) -> None: ...

    def record_heartbeat_many(self, calls: list[tuple[int, dict[str, Any], float]]) -> list[None]:
        """Several record_heartbeat calls [(node_id, heartbeat, now), ...]: what they one by one would store,
        all or nothing."""
        ...

    def remove_node(self, node_id: int) -> dict[str, Any] | None:
        """Delete a node with everything it sent (REMOVE_NODE, one transaction): {"incidents", "metrics",
        "commands", "pcap_files"} (the capture files for the caller to delete), or None when unknown."""
        ...

    # metrics
    def add_metrics(self, node_id: int, samples: list[dict[str, Any]], now: float) -> int: ...

    def add_metrics_many(self, calls: list[tuple[int, list[dict[str, Any]], float]]) -> list[int]:
        """Several add_metrics calls [(node_id, samples, now), ...] in one go (the database thread's batch):
        what the calls one by one would store, all or nothing; each call's count."""
        ...

    def metrics(self, node_id: int, since: float, limit: int) -> list[dict[str, Any]]: ...

    def prune_metrics(self, before: float) -> int: ...

    # incidents
    def upsert_incident(self, node_id: int, inc: dict[str, Any], now: float) -> tuple[int, bool]:
        """Open (or find by incident_key) or update an incident: (incident_id, created)."""
        ...

    def incident(self, incident_id: int, history: bool = True) -> dict[str, Any] | None: ...

    def list_incidents(self, node_id: int | None = None, status: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]: ...

    def incident_by_key(self, node_id: int, incident_key: str) -> tuple[int, float | None] | None:
        """(incident_id, started_at as epoch seconds) of a node's incident with that key, or None."""
        ...

    def incident_node(self, incident_id: int) -> int | None: ...

    # pcaps
    def set_pcap(self, incident_id: int, node_id: int, file_name: str, size: int, sha256: str,
                 now: float) -> str | None:
        """Record an incident's capture; returns the file name it replaces (to delete), if any."""
        ...

    def pcap(self, incident_id: int) -> dict[str, Any] | None: ...

    def pcap_bytes_total(self) -> int: ...

    # remote config and commands
    def node_config(self, node_id: int) -> dict[str, Any]: ...

    def node_config_many(self, calls: list[tuple[int]]) -> list[dict[str, Any]]:
        """node_config of several nodes [(node_id,), ...]: each call's answer; NotFound if one is missing."""
        ...

    def update_node_config(self, node_id: int, changes: dict[str, Any]) -> None: ...

    def queue_command(self, node_id: int, command: Any, now: float) -> int: ...

    def pending_commands(self, node_id: int, now: float) -> list[dict[str, Any]]: ...

    def pending_commands_many(self, calls: list[tuple[int, float]]) -> list[list[dict[str, Any]]]:
        """Several pending_commands calls [(node_id, now), ...]: each call's answer, all or nothing."""
        ...

    def ack_command(self, node_id: int, ack: dict[str, Any], now: float) -> bool:
        """True for a first ack, False for a repeated one; NotFound for an unknown command."""
        ...

    def list_commands(self, node_id: int) -> list[dict[str, Any]]: ...

    # operators
    def add_admin_token(self, name: str, token_hash: str, now: float) -> None: ...

    def admin_token_hashes(self) -> list[str]: ...

    def check(self) -> list[str]:
        """Integrity problems found (empty when consistent)."""
        ...


# What removing a node deletes, children first ("?": each backend's placeholder; the node's id).
REMOVE_NODE = (
    ("history", "DELETE FROM incident_history WHERE incident_id IN (SELECT id FROM incidents WHERE node_id = ?)"),
    ("pcaps", "DELETE FROM pcaps WHERE node_id = ? OR incident_id IN (SELECT id FROM incidents WHERE node_id = ?)"),
    ("incidents", "DELETE FROM incidents WHERE node_id = ?"),
    ("metrics", "DELETE FROM metrics WHERE node_id = ?"),
    ("metrics_1m", "DELETE FROM metrics_1m WHERE node_id = ?"),
    ("metrics_1h", "DELETE FROM metrics_1h WHERE node_id = ?"),
    ("node_latest", "DELETE FROM node_latest WHERE node_id = ?"),
    ("commands", "DELETE FROM commands WHERE node_id = ?"),
    ("node", "DELETE FROM nodes WHERE id = ?"),
)
PCAPS_OF_NODE = ("SELECT file_name FROM pcaps WHERE node_id = ? "
                 "OR incident_id IN (SELECT id FROM incidents WHERE node_id = ?)")


def removed_counts(counts: dict[str, int], files: list[str]) -> dict[str, Any] | None:
    """remove_node's answer from the rows each REMOVE_NODE statement deleted."""
    if counts.get("node", 0) != 1:
        return None
    return {"incidents": counts["incidents"], "metrics": counts["metrics"], "commands": counts["commands"],
            "pcap_files": sorted(files)}


def incident_filter(node_id: int | None, status: str | None) -> tuple[str, tuple[Any, ...]]:
    """list_incidents' WHERE clause ("?" placeholders) with only the filters given, so an index answers it
    (`? IS NULL OR i.node_id = ?` would make SQLite read every incident)."""
    parts = [(sql, v) for sql, v in (("i.node_id = ?", node_id), ("i.status = ?", status)) if v is not None]
    where = " WHERE " + " AND ".join(sql for sql, _ in parts) if parts else ""
    return where, tuple(v for _, v in parts)


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
