"""The reporter actor: bus events -> durable outbox -> the Agent API; remote config -> bus.

Thin adapter: mapping (floodwatch/reporter/mapping.py), the queue (outbox.py), delivery (delivery.py)
and the config poll (poller.py) hold the logic. `python -m actors.reporter --config FILE`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from floodwatch import __version__
from floodwatch.actor import AsyncActor, run_actor
from floodwatch.config import Config
from floodwatch.logs import RateLimited
from floodwatch.messages import (
    ActorHeartbeat,
    CommandFinished,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Message,
    PcapSaved,
    TrafficSecond,
)
from floodwatch.reporter import mapping
from floodwatch.reporter.client import ApiClient, resolve_api_key
from floodwatch.reporter.delivery import Deliverer
from floodwatch.reporter.os_info import os_name
from floodwatch.reporter.outbox import ACKS, Outbox, incident_stream
from floodwatch.reporter.poller import ConfigPoller
from floodwatch.settings.reporter import ReporterSettings

NOT_CONFIGURED = "api: not configured (set reporter.api_key or api_key_file, and node_uuid); reports are queued"


def outbox_path(config: Config) -> Path:
    s: ReporterSettings = config.reporter
    return Path(s.outbox_path) if s.outbox_path else config.state_path("reporter", "outbox.sqlite")


class Reporter(AsyncActor):
    name = "reporter"
    subscribes = (TrafficSecond, IncidentOpened, IncidentUpdated, IncidentResolved, PcapSaved, CommandFinished)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.settings: ReporterSettings = config.reporter
        self.api_key = resolve_api_key(self.settings)  # ConfigError (exit 1, clear text) on a bad key file
        self.outbox = Outbox(outbox_path(config), self.settings.outbox_max_metrics)
        self.os_name = os_name()
        self.client: ApiClient | None = None
        self.deliverer: Deliverer | None = None
        self.poller: ConfigPoller | None = None
        self._bad = RateLimited(10.0)
        self._workers: list[asyncio.Task[Any]] = []
        self.counters["outbox_pending"] = self.outbox.pending

    async def on_start(self) -> None:
        s = self.settings
        if not s.enabled:
            self.health = "disabled (reporter.enabled = false)"
            return
        self.every(s.heartbeat_interval, self._queue_heartbeat, first=0.0)
        if not (self.api_key and s.node_uuid):
            self.health = NOT_CONFIGURED
            self.log.error("{}", NOT_CONFIGURED)
            return
        self.client = ApiClient(s, self.api_key, s.node_uuid)
        self.deliverer = Deliverer(self.outbox, self.client, s, self.counters, self.log, self._set_health)
        self.poller = ConfigPoller(self.client, self.outbox, self.publish, s.config_interval, self.counters,
                                   self.log, self.deliverer.throttle)
        self._workers = [self.create_task(self.deliverer.run(), name="delivery"),
                         self.create_task(self.poller.run(), name="config-poll")]
        self.log.info("reporting to {} as node {} ({} reports queued)", s.url, s.node_uuid, self.outbox.pending)

    def _set_health(self, text: str) -> None:
        self.health = text

    async def _queue_heartbeat(self) -> None:
        uptime = time.time() - self.started_at
        self.outbox.add_heartbeat(mapping.heartbeat_body(__version__, uptime, self.os_name))
        self._queued()

    def _queued(self) -> None:
        self.counters["outbox_pending"] = self.outbox.pending
        if self.deliverer is not None:
            self.deliverer.sync_counters()
            self.deliverer.wake()

    async def on_message(self, msg: Message) -> None:
        try:
            self._enqueue(msg)
        except (ValueError, TypeError, OverflowError) as e:  # e.g. a NaN timestamp: the message is bad
            self.counters["bad_messages"] += 1
            ok, _ = self._bad.allow("map")
            if ok:
                self.log.warning("dropped a {} that cannot be reported: {}", msg.TOPIC, e)
            return
        self._queued()
        if isinstance(msg, IncidentOpened) and self.poller is not None:
            self.poller.trigger()

    def _enqueue(self, msg: Message) -> None:
        ob = self.outbox
        if isinstance(msg, TrafficSecond):
            busy = self.deliverer.metrics_busy_upto if self.deliverer else 0
            ob.add_metric(mapping.metrics_sample(msg), busy)
        elif isinstance(msg, IncidentEvent):
            key = msg.incident_key
            ob.add("incident", incident_stream(key), mapping.incident_body(msg), mapping.incident_op(msg), key)
        elif isinstance(msg, PcapSaved):
            body: dict[str, Any] = {"path": msg.path, "sha256": msg.sha256, "bytes": msg.bytes,
                                    "packets": msg.packets, "truncated": msg.truncated}
            ob.add("pcap", incident_stream(msg.incident_key), body, "upload", msg.incident_key)
        elif isinstance(msg, CommandFinished) and msg.source == "api":
            ob.add("ack", ACKS, mapping.ack_body(msg))
            if self.poller is not None:
                self.poller.note_acked(msg.command_id)

    def heartbeat(self) -> ActorHeartbeat:
        self.counters["outbox_pending"] = self.outbox.pending  # exact: `analyze` waits for 0
        self.counters["metrics_downsampled"] = self.outbox.downsampled
        return super().heartbeat()

    async def on_stop(self) -> None:
        """Stop sending; what was not acknowledged stays in the outbox for the next start.

        The outbox stays open: a late bus event is still queued durably; SQLite closes at exit."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self.deliverer is not None:
            await self.deliverer.stop()
        if self.client is not None:
            await self.client.close()
        self.counters["outbox_pending"] = self.outbox.pending


def main(argv: list[str] | None = None) -> int:
    return run_actor(Reporter, argv)


if __name__ == "__main__":
    raise SystemExit(main())
