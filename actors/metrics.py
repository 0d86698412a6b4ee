"""The metrics actor: the agent's Prometheus endpoint, `python -m actors.metrics --config FILE`.

GET /metrics on `[metrics] listen` (127.0.0.1:9108 by default), floodwatch/prom/endpoint.py. It runs as
its own process when `[metrics] in_apiserver = false` or the API server's actor does not run; otherwise
the API server's actor serves the endpoint and the supervisor does not start this one.
"""

from __future__ import annotations

import sys

from floodwatch.config import Config
from floodwatch.prom.endpoint import COUNTERS, AgentMetrics
from floodwatch.runtime.aio import AsyncActor
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.metrics import MetricsSettings


class MetricsActor(AsyncActor[MetricsSettings]):
    name = "metrics"
    subscribes = ()

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.endpoint: AgentMetrics | None = None
        self.counters.update(dict.fromkeys(COUNTERS, 0))

    async def on_start(self) -> None:
        self.endpoint = AgentMetrics(self.config, self.ctx, self.log)
        self.count_from(self.endpoint.snapshot)
        await self.endpoint.start()

    async def on_stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()


def main(argv: list[str] | None = None) -> int:
    return run_actor(MetricsActor, argv)


if __name__ == "__main__":
    sys.exit(main())
