"""The agent's GET /metrics as an aiohttp site, for whichever actor serves it.

The metrics actor (actors/metrics.py) serves it on its own; with `[metrics] in_apiserver` (the default)
the API server's actor serves it beside the Agent API, one process fewer (about 13 MB of memory: each
Python process forked from the zygote holds some 9-10 MB of pages of its own). Each scrape asks the
supervisor's control ROUTER for its status, exactly as `floodwatch status` does (cli.query_status, in a
thread, on the actor's ZeroMQ context), and renders it (floodwatch/prom/agent.py). The supervisor does
no HTTP; if it does not answer within `status_timeout`, the scrape still answers, with
floodwatch_supervisor_up 0.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import zmq
from aiohttp import web

from floodwatch.cli import query_status
from floodwatch.config import Config
from floodwatch.errors import BusError, MessageDecodeError
from floodwatch.messages import StatusReply
from floodwatch.prom import agent
from floodwatch.prom.access import read_token, refusal
from floodwatch.prom.text import CONTENT_TYPE
from floodwatch.server.netaddr import parse_listen

COUNTERS = ("scrapes", "scrapes_refused", "status_timeouts")


class AgentMetrics:
    """GET /metrics on `[metrics] listen`; `counters` go into the serving actor's heartbeat (under
    `prefix`: "metrics_" in the API server's, none in the metrics actor's)."""

    def __init__(self, config: Config, ctx: zmq.Context[Any], log: Any, prefix: str = "") -> None:
        self.config, self.settings, self.ctx, self.log = config, config.metrics, ctx, log
        self.node = config.agent.node_name or socket.gethostname()
        self.prefix = prefix
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.runner: web.AppRunner | None = None
        self.token: str | None = None
        self._lock = asyncio.Lock()

    def snapshot(self) -> dict[str, int]:
        return {self.prefix + k: v for k, v in self.counters.items()}

    async def start(self) -> None:
        self.token = read_token(self.settings.token_file, "metrics.token_file")
        app = web.Application()
        app.router.add_get("/metrics", self.scrape)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        host, port = parse_listen(self.settings.listen)
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        bound = [s.getsockname()[:2] for s in getattr(site._server, "sockets", None) or []]
        self.log.info("serving /metrics on {}{}", bound, "" if self.token else " (loopback clients only)")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def status(self) -> StatusReply | None:
        """The supervisor's answer, one request at a time; None when it does not answer in time."""
        async with self._lock:
            try:
                return await asyncio.to_thread(query_status, self.config, self.settings.status_timeout, self.ctx)
            except (ConnectionError, BusError, MessageDecodeError) as e:
                self.counters["status_timeouts"] += 1
                self.log.warning("no status from the supervisor: {}", e)
                return None

    async def scrape(self, request: web.Request) -> web.Response:
        refused = refusal(request.remote, request.headers.get("Authorization"), self.token)
        if refused is not None:
            self.counters["scrapes_refused"] += 1
            return web.Response(status=refused[0], text=refused[1] + "\n")
        self.counters["scrapes"] += 1
        text = agent.render(await self.status(), self.node)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
