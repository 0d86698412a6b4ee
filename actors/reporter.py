"""The reporter actor: bus events -> durable outbox -> the Agent API; remote config -> bus.

Thin adapter: mapping (floodwatch/reporter/mapping.py), the queue (outbox.py), delivery (delivery.py)
and the config poll (poller.py) hold the logic. `python -m actors.reporter --config FILE`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from floodwatch import __version__, paths
from floodwatch.config import Config
from floodwatch.logs import RateLimitedLog
from floodwatch.messages import (
    CommandFinished,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Message,
    PcapSaved,
    ReporterDrained,
    TrafficSecond,
)
from floodwatch.reporter import mapping
from floodwatch.reporter.client import ApiClient, local_node_credentials, resolve_api_key
from floodwatch.reporter.delivery import Deliverer
from floodwatch.reporter.os_info import os_name
from floodwatch.reporter.outbox import ACKS, Outbox, incident_stream
from floodwatch.reporter.poller import ConfigPoller
from floodwatch.runtime.aio import AsyncActor
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.reporter import ReporterSettings

NOT_CONFIGURED = ("api: not configured (set reporter.api_key or api_key_file, and node_uuid, or run the "
                  "embedded server); reports are queued")


def pcap_dir(config: Config) -> Path:
    """Only captures the recorder wrote are uploaded: a path elsewhere on the bus is refused."""
    return paths.recorder_dir(config.recorder, config.agent.state_dir).resolve()


class Reporter(AsyncActor[ReporterSettings]):
    name = "reporter"
    subscribes = (TrafficSecond, IncidentOpened, IncidentUpdated, IncidentResolved, PcapSaved, CommandFinished)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.api_key = resolve_api_key(self.settings)  # ConfigError (exit 1, clear text) on a bad key file
        self.outbox = Outbox(paths.reporter_outbox(config.reporter, config.agent.state_dir),
                             self.settings.outbox_max_metrics)
        self.os_name = os_name()
        self.pcap_dir = pcap_dir(config)
        self.client: ApiClient | None = None
        self.deliverer: Deliverer | None = None
        self.poller: ConfigPoller | None = None
        self._bad = RateLimitedLog(self.log, 10.0)
        self._workers: list[asyncio.Task[Any]] = []
        self.incident_events = 0  # incident.* events received (ReporterDrained)
        self.pcaps = 0  # pcap.saved events received
        self.open_incidents: set[str] = set()  # while empty, metric samples wait for metrics_interval
        self.count_from(self._outbox_counters, gauges=("outbox_pending", "metrics_held", "dead_letters"))

    async def on_start(self) -> None:
        s = self.settings
        if not s.enabled:
            self.health = "disabled (reporter.enabled = false)"
            return
        self.every(s.heartbeat_interval, self._queue_heartbeat, first=0.0)
        if not self._connect():
            self.health = NOT_CONFIGURED
            self.log.warning("{}", NOT_CONFIGURED)
            self.every(1.0, self._retry_connect)

    async def _retry_connect(self) -> None:
        if self.client is None:
            self._connect()

    def _credentials(self) -> tuple[str, str] | None:
        """(node_uuid, api_key) from the settings, else the embedded server's file for this host."""
        if self.api_key and self.settings.node_uuid:
            return self.settings.node_uuid, self.api_key
        if self.api_key or self.settings.node_uuid:
            return None  # half configured: do not mix in other credentials
        path = paths.local_node_file(self.config.apiserver, self.config.agent.state_dir)
        return local_node_credentials(path) if path is not None else None

    def _connect(self) -> bool:
        creds = self._credentials()
        if creds is None:
            return False
        s = self.settings
        node_uuid, api_key = creds
        self.client = ApiClient(s, api_key, node_uuid)
        self.deliverer = Deliverer(self.outbox, self.client, s, self.log, self._set_health)
        self.poller = ConfigPoller(self.client, self.outbox, self.publish, s.config_interval, self.log,
                                   self.deliverer.throttle)
        self._workers = [self.create_task(self.deliverer.run(), name="delivery"),
                         self.create_task(self.poller.run(), name="config-poll")]
        self.log.info("reporting to {} as node {} ({} reports queued)", s.url, node_uuid, self.outbox.pending)
        self.health = "ok"
        return True

    def _set_health(self, text: str) -> None:
        self.health = text

    async def _queue_heartbeat(self) -> None:
        uptime = time.time() - self.started_at
        self.outbox.add_heartbeat(mapping.heartbeat_body(__version__, uptime, self.os_name))
        self._queued()

    def _queued(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()

    def events_together(self) -> AbstractContextManager[None]:
        """The events that arrived together are queued in one transaction: one fsync for a silent link's
        seconds, which come in one go every few seconds (capture's idle_interval)."""
        return self.outbox.transaction()

    async def on_message(self, msg: Message) -> None:
        self.incident_events += isinstance(msg, IncidentEvent)
        self.pcaps += isinstance(msg, PcapSaved)
        if isinstance(msg, IncidentEvent):
            self._follow_incident(msg)
        try:
            held = self._enqueue(msg)
        except (ValueError, TypeError, OverflowError) as e:  # e.g. a NaN timestamp: the message is bad
            self.counters["bad_messages"] += 1
            self._bad.warning("map", "dropped a {} that cannot be reported: {}", msg.TOPIC, e)
            return
        if not held:  # a held sample is due later: the delivery loop already sleeps until its head is due
            self._queued()
        if isinstance(msg, IncidentOpened) and self.poller is not None:
            self.poller.trigger()

    def _follow_incident(self, msg: IncidentEvent) -> None:
        """Metrics go at once while an incident is open: an opening one releases the held samples."""
        if isinstance(msg, IncidentResolved) or msg.status == "resolved":
            self.open_incidents.discard(msg.incident_key)
            return
        if not self.open_incidents:
            self.outbox.release_metrics()
        self.open_incidents.add(msg.incident_key)

    def _enqueue(self, msg: Message) -> bool:
        """Queue the report of one event; True when it is a metric sample held for a quiet stretch."""
        ob = self.outbox
        if isinstance(msg, TrafficSecond):
            busy = self.deliverer.metrics_busy_upto if self.deliverer else 0
            hold = 0.0 if self.open_incidents else self.settings.metrics_interval
            ob.add_metric(mapping.metrics_sample(msg), busy, hold)
            return hold > 0
        elif isinstance(msg, IncidentEvent):
            key = msg.incident_key
            ob.add("incident", incident_stream(key), mapping.incident_body(msg), mapping.incident_op(msg), key)
        elif isinstance(msg, PcapSaved):
            path = Path(msg.path).resolve()
            if not path.is_relative_to(self.pcap_dir):
                raise ValueError(f"{msg.path} is outside the recorder's directory {self.pcap_dir}")
            body: dict[str, Any] = {"path": str(path), "sha256": msg.sha256, "bytes": msg.bytes,
                                    "packets": msg.packets, "truncated": msg.truncated}
            ob.add("pcap", incident_stream(msg.incident_key), body, "upload", msg.incident_key)
        elif isinstance(msg, CommandFinished) and msg.source == "api":
            ob.add("ack", ACKS, mapping.ack_body(msg))
            if self.poller is not None:
                self.poller.note_acked(msg.command_id)
        return False

    def _outbox_counters(self) -> dict[str, Any]:
        """The delivery's and the config poll's counters, and the outbox's state (exact at each beat)."""
        out: dict[str, Any] = {}
        for part in (self.deliverer, self.poller):
            if part is not None:
                out.update(part.counters)
        held = self.outbox.held_metrics()  # waiting for the quiet interval by design: not "pending"
        return {**out, "outbox_pending": self.outbox.pending - held, "metrics_held": held,
                "metrics_downsampled": self.outbox.downsampled}

    def drained(self) -> ReporterDrained | None:
        if self.outbox.pending:
            return None
        return ReporterDrained(incident_events=self.incident_events, pcaps=self.pcaps)

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


def main(argv: list[str] | None = None) -> int:
    return run_actor(Reporter, argv)


if __name__ == "__main__":
    raise SystemExit(main())
