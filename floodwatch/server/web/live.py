"""Live updates for open pages: server-sent events fed by what the store commits.

SQLite (one server): the store calls `Hub.from_store` in the database thread after each commit.
PostgreSQL (replicas): a commit that changed incidents NOTIFYs their ids (`encode`, sent by the store with
the commit) and every replica's hub LISTENs (`Hub.follow`), so a browser on any replica sees an incident
at once, whichever replica stored it. Metric samples are not NOTIFYed (PostgreSQL holds its global NOTIFY
lock through each notifying commit's WAL flush: every replica's sample batches would queue behind it).
Instead, only while it has a live client, a hub reads each node's newest sample from `node_latest` every
POLL_SECONDS (`Hub.poll`: one query in the database thread, returning only the rows newer than those it
already saw), so a sample stored through any replica reaches a page within about POLL_SECONDS +
FLUSH_SECONDS. With no page open there is no query at all.
Incidents go out at once (with the row as stored); metrics are coalesced to each node's newest sample
and sent every FLUSH_SECONDS, so a thousand nodes reporting every second cost each browser a few messages
per second. With no page open nothing is kept and the flush task sleeps until a sample arrives for a
browser (no idle timer). Each browser has a bounded queue: a client too slow to read loses messages
(counted), never the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from loguru import logger

from floodwatch.errors import StorageError
from floodwatch.server.store import Store

if TYPE_CHECKING:
    from floodwatch.server.dbthread import DbWorker
    from floodwatch.server.pg_store import PGStore

FLUSH_SECONDS = 0.25
POLL_SECONDS = 1.0  # PostgreSQL: a hub with live clients reads node_latest this often (agents report every 1 s)
PAYLOAD_BYTES = 7000  # a NOTIFY payload stays under PostgreSQL's 8000 bytes
RELISTEN_SECONDS = (1.0, 30.0)  # wait before listening again after a failure: first, most
QUEUE_MAX = 256
MAX_CLIENTS = 1000
PING_SECONDS = 15.0


def incident_summary(inc: dict[str, Any]) -> dict[str, Any]:
    keys = ("incident_id", "node_name", "status", "attack_family", "attack_subtype", "severity", "peak_pps",
            "peak_bps", "started_at", "ended_at", "confidence", "updates", "node_uuid")
    return {k: inc.get(k) for k in keys}


def encode(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """A commit's incident changes as NOTIFY payloads (JSON arrays of ["i", incident_id], each under
    PAYLOAD_BYTES); none for a commit without one. Samples are not sent: replicas poll them (Hub.poll)."""
    items = [["i", data["incident_id"]] for kind, data in events if kind == "incident"]
    out: list[str] = []
    chunk: list[str] = []
    size = 2
    for item in items:
        text = json.dumps(item, separators=(",", ":"))
        if chunk and size + len(text) + 1 > PAYLOAD_BYTES:
            out.append("[" + ",".join(chunk) + "]")
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        out.append("[" + ",".join(chunk) + "]")
    return out


def decode(payload: str) -> tuple[list[int], list[tuple[int, float, int, int]]]:
    """(incident ids, pps samples) of a payload; ValueError for anything else. Samples ("m" items) come
    only from a replica of an older version (during a rolling upgrade): still shown."""
    items = json.loads(payload)
    if not isinstance(items, list):
        raise ValueError("not a list")
    incidents, samples = [], []
    for item in items:
        if isinstance(item, list) and len(item) == 2 and item[0] == "i" and isinstance(item[1], int):
            incidents.append(item[1])
        elif (isinstance(item, list) and len(item) == 5 and item[0] == "m"
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item[1:])):
            samples.append((int(item[1]), float(item[2]), int(item[3]), int(item[4])))
        else:
            raise ValueError(f"unknown item {str(item)[:80]}")
    return incidents, samples


class Hub:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 count: Callable[[str, int], None] | None = None) -> None:
        self.store = store
        self.loop = loop
        self.clients: set[asyncio.Queue[str]] = set()
        self.pending_pps: dict[int, list[float]] = {}
        self.stats = {"sse_clients": 0}
        # the server's counters (its snapshot, /metrics): sse_dropped, sse_listen_errors, sse_bad_events
        self.count = count or (lambda name, n: None)
        self._has_pending = asyncio.Event()  # set when pending_pps gets its first sample since a flush
        self._has_clients = asyncio.Event()  # set while a browser is connected (PostgreSQL: poll only then)
        self.seen: dict[int, float] = {}  # PostgreSQL: each node's newest recorded_at read by poll()

    # -- database thread ---------------------------------------------------------------------------
    def from_store(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """SQLite: the store's commit listener."""
        out: list[tuple[str, Any]] = []
        for kind, data in events:
            if kind == "metrics":
                out.append(("pps", (data["node_id"], data["recorded_at"], data["pps"], data["bps"])))
        out += self.incident_items([data["incident_id"] for kind, data in events if kind == "incident"])
        if out:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(self._take, out)

    def incident_items(self, incident_ids: list[int]) -> list[tuple[str, Any]]:
        """The `incident` messages for these incidents, read as committed."""
        out: list[tuple[str, Any]] = []
        for incident_id in incident_ids:
            inc = self.store.incident(incident_id, history=False)
            if inc is not None:
                out.append(("incident", {**incident_summary(inc), **self._node_of(incident_id)}))
        return out

    def _node_of(self, incident_id: int) -> dict[str, int]:
        node_id = self.store.incident_node(incident_id) or 0
        row = self.store.execute("SELECT count(*) FROM incidents WHERE status = 'active' AND node_id = ?",
                                 (node_id,)).fetchone()
        return {"node_id": node_id, "node_active": int(row[0])}

    def newest_samples(self, seen: dict[int, float]) -> list[tuple[int, float, int, int]]:
        """PostgreSQL: the rows of node_latest newer than `seen` (node id -> recorded_at), or of nodes not in
        it. A scan of node_latest (one row per node) joined to `seen`: no index on recorded_at, which every
        sample's upsert changes (the upsert stays a HOT update); the rows sent back are the changed ones."""
        rows = self.store.execute(
            "SELECT l.node_id, l.recorded_at, l.pps, l.bps FROM node_latest l "
            "LEFT JOIN unnest(?::bigint[], ?::float8[]) AS s(node_id, t) ON s.node_id = l.node_id "
            "WHERE s.t IS NULL OR l.recorded_at > s.t", (list(seen), list(seen.values()))).fetchall()
        return [(int(r[0]), float(r[1]), int(r[2]), int(r[3])) for r in rows]

    # -- event loop: PostgreSQL ----------------------------------------------------------------------
    async def poll(self, db: DbWorker) -> None:
        """Feed the pages each node's newest sample, whichever replica stored it: one query every
        POLL_SECONDS while a browser is connected, none otherwise (counted: sse_polls, sse_poll_errors)."""
        log = logger.bind(actor="apiserver")
        while True:
            await self._has_clients.wait()
            await asyncio.sleep(POLL_SECONDS)
            if not self.clients:  # the last browser left: read everything again for the next one
                self._has_clients.clear()
                self.seen = {}
                continue
            try:
                samples = await db.call(self.newest_samples, dict(self.seen))
            except StorageError as e:
                self.count("sse_poll_errors", 1)
                log.warning("live updates: {}", e)
                continue
            self.count("sse_polls", 1)
            for node_id, t, _pps, _bps in samples:
                self.seen[node_id] = max(t, self.seen.get(node_id, t))
            self._take([("pps", s) for s in samples])

    async def follow(self, store: PGStore, db: DbWorker) -> None:
        """Feed the pages the incidents any replica commits (LISTEN); listen again after a failure."""
        log = logger.bind(actor="apiserver")
        wait = RELISTEN_SECONDS[0]
        while True:
            try:
                async for payload in store.listen():
                    wait = RELISTEN_SECONDS[0]
                    if self.clients:  # nobody watching: nothing to read
                        await self._from_payload(payload, db)
            except StorageError as e:
                self.count("sse_listen_errors", 1)
                log.warning("live updates: {}; listening again in {:.0f} s", e, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RELISTEN_SECONDS[1])

    async def _from_payload(self, payload: str, db: DbWorker) -> None:
        try:
            incident_ids, samples = decode(payload)
        except ValueError:  # a replica of another version, or not ours: counted, skipped
            self.count("sse_bad_events", 1)
            return
        out: list[tuple[str, Any]] = [("pps", s) for s in samples]
        if incident_ids:
            out += await db.call(self.incident_items, incident_ids)
        self._take(out)

    # -- event loop --------------------------------------------------------------------------------
    def _take(self, items: list[tuple[str, Any]]) -> None:
        for kind, data in items:
            if kind == "pps":
                if not self.clients:
                    continue  # nobody to show it to: no flush to schedule
                node_id, t, pps, bps = data
                prev = self.pending_pps.get(node_id)
                if prev is None or prev[0] <= t:
                    self.pending_pps[node_id] = [t, pps, bps]
                self._has_pending.set()
            else:
                self.send("incident", data)

    def send(self, event: str, data: Any) -> None:
        if not self.clients:
            return
        msg = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for q in self.clients:
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:
                self.count("sse_dropped", 1)

    async def run(self) -> None:
        """Flush the coalesced samples at most every FLUSH_SECONDS, and only when there are some."""
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(FLUSH_SECONDS)  # what arrives meanwhile goes out in the same message
            self._has_pending.clear()
            if self.pending_pps:
                pending, self.pending_pps = self.pending_pps, {}
                self.send("pps", {str(k): v for k, v in pending.items()})

    def close(self) -> None:
        for q in self.clients:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait("")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(reason="too many live connections")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q: asyncio.Queue[str] = asyncio.Queue(QUEUE_MAX)
        self.clients.add(q)
        self._has_clients.set()
        self.stats["sse_clients"] = len(self.clients)
        try:
            await resp.write(b"retry: 1000\n\n")
            while True:
                try:
                    msg = await asyncio.wait_for(q.get(), PING_SECONDS)
                except TimeoutError:
                    msg = ": ping\n\n"
                if not msg:  # close(): the server is stopping
                    break
                await resp.write(msg.encode())
        except ConnectionError:
            pass  # the browser went away
        finally:
            self.clients.discard(q)
            self.stats["sse_clients"] = len(self.clients)
        return resp
