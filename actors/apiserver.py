"""The embedded Agent API server as a supervised actor: `python -m actors.apiserver --config FILE`.

A thin adapter: the server (floodwatch.server) knows nothing of the bus. At start it makes sure a node
for this host exists and writes its credentials (0600) where the reporter finds them, then serves
`[apiserver] listen`; its request counters go out with every heartbeat. With `[metrics] in_apiserver`
(the default) it also serves the agent's GET /metrics on `[metrics] listen` (floodwatch/prom/endpoint.py),
so the agent runs one process fewer; its counters go out as `metrics_*`.
"""

from __future__ import annotations

import sys

from floodwatch.config import Config
from floodwatch.errors import ConfigError
from floodwatch.paths import local_node_file, server_files
from floodwatch.prom.endpoint import AgentMetrics
from floodwatch.runtime.aio import AsyncActor
from floodwatch.runtime.entry import run_actor
from floodwatch.server.app import ApiServer
from floodwatch.settings.apiserver import ApiserverSettings


class ApiServerActor(AsyncActor[ApiserverSettings]):
    name = "apiserver"
    subscribes = ()

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.server: ApiServer | None = None
        self.metrics: AgentMetrics | None = None

    async def on_start(self) -> None:
        settings = self.settings
        db, pcaps = server_files(settings, self.config.agent.state_dir)
        self.server = ApiServer(settings, db, pcaps, self.config.notify)
        creds_path = local_node_file(settings, self.config.agent.state_dir)
        if creds_path is not None:
            self.server.provision_local_node(creds_path, settings.local_node_name)
        addresses = await self.server.start()
        self.log.info("serving the Agent API on {} (db {})", addresses, self.server.where)
        self.count_from(self.server.snapshot)
        if self.config.metrics_in_apiserver():
            self.metrics = AgentMetrics(self.config, self.ctx, self.log, prefix="metrics_")
            self.count_from(self.metrics.snapshot)
            try:
                await self.metrics.start()
            except (OSError, ConfigError) as e:  # the Agent API goes on; status shows what is wrong
                self.health = f"/metrics not served: {e}"
                self.log.error("cannot serve /metrics on {}: {}", self.config.metrics.listen, e)
                await self.metrics.stop()

    async def on_stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
        if self.server is not None:
            await self.server.stop()


def main(argv: list[str] | None = None) -> int:
    return run_actor(ApiServerActor, argv)


if __name__ == "__main__":
    sys.exit(main())
