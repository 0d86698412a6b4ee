"""Live updates for open pages: server-sent events fed by the store's commit listener.

The store calls `Hub.from_store` in the database thread after each commit. Incidents go out at once
(with the row as stored); metrics are coalesced to each node's newest sample and sent every FLUSH_SECONDS,
so a thousand nodes reporting every second cost each browser a few messages per second. Each browser
has a bounded queue: a client too slow to read loses messages (counted), never the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from floodwatch.server.sqlite_store import SQLiteStore

FLUSH_SECONDS = 0.25
QUEUE_MAX = 256
MAX_CLIENTS = 1000
PING_SECONDS = 15.0


def incident_summary(inc: dict[str, Any]) -> dict[str, Any]:
    keys = ("incident_id", "node_name", "status", "attack_family", "attack_subtype", "severity", "peak_pps",
            "peak_bps", "started_at", "ended_at", "confidence", "updates", "node_uuid")
    return {k: inc.get(k) for k in keys}


class Hub:
    def __init__(self, store: SQLiteStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.clients: set[asyncio.Queue[str]] = set()
        self.pending_pps: dict[int, list[float]] = {}
        self.stats = {"sse_clients": 0, "sse_dropped": 0}

    # -- database thread ---------------------------------------------------------------------------
    def from_store(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        out: list[tuple[str, Any]] = []
        for kind, data in events:
            if kind == "metrics":
                out.append(("pps", (data["node_id"], data["recorded_at"], data["pps"], data["bps"])))
            elif kind == "incident":
                inc = self.store.incident(data["incident_id"], history=False)  # committed: safe to read
                if inc is not None:
                    out.append(("incident", {**incident_summary(inc), **self._node_of(data["incident_id"])}))
        if out:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self.loop.call_soon_threadsafe(self._take, out)

    def _node_of(self, incident_id: int) -> dict[str, int]:
        node_id = self.store.incident_node(incident_id) or 0
        row = self.store.conn.execute("SELECT count(*) FROM incidents WHERE status = 'active' AND node_id = ?",
                                      (node_id,)).fetchone()
        return {"node_id": node_id, "node_active": int(row[0])}

    # -- event loop --------------------------------------------------------------------------------
    def _take(self, items: list[tuple[str, Any]]) -> None:
        for kind, data in items:
            if kind == "pps":
                node_id, t, pps, bps = data
                prev = self.pending_pps.get(node_id)
                if prev is None or prev[0] <= t:
                    self.pending_pps[node_id] = [t, pps, bps]
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
                self.stats["sse_dropped"] += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
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
