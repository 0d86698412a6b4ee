"""The metrics actor: the agent's Prometheus endpoint, `python -m actors.metrics --config FILE`.

GET /metrics on `[metrics] listen` (127.0.0.1:9108 by default). Each scrape asks the supervisor's
control ROUTER for its status, exactly as `floodwatch status` does (cli.query_status, in a thread, on
this actor's ZeroMQ context), and renders it (floodwatch/prom/agent.py): every actor's state, restarts,
heartbeat age and heartbeat counters, typed by the `gauges` each heartbeat declares. The supervisor
does no HTTP and loads nothing new; if it does not answer within `status_timeout`, the scrape still
answers, with floodwatch_supervisor_up 0.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import web

from floodwatch.cli import query_status
from floodwatch.config import Config
from floodwatch.errors import BusError, MessageDecodeError
from floodwatch.messages import StatusReply
from floodwatch.prom import agent
from floodwatch.prom.access import read_token, refusal
from floodwatch.prom.text import CONTENT_TYPE
from floodwatch.runtime.aio import AsyncActor
from floodwatch.runtime.entry import run_actor
from floodwatch.server.netaddr import parse_listen
from floodwatch.settings.metrics import MetricsSettings


class MetricsActor(AsyncActor[MetricsSettings]):
    name = "metrics"
    subscribes = ()

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.runner: web.AppRunner | None = None
        self.token: str | None = None
        self.node = config.agent.node_name or socket.gethostname()
        self.counters.update({"scrapes": 0, "scrapes_refused": 0, "status_timeouts": 0})
        self._lock = asyncio.Lock()

    async def on_start(self) -> None:
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

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

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


def main(argv: list[str] | None = None) -> int:
    return run_actor(MetricsActor, argv)


if __name__ == "__main__":
    sys.exit(main())
