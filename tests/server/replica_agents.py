"""Agents for the replica tests: the reporter's own parts, many in one process.

Each agent is what the reporter actor runs (actors/reporter.py), minus the bus: its durable outbox
(floodwatch/reporter/outbox.py, SQLite on disk), the delivery loop with its retries and backoff
(delivery.py), the API client (client.py) and the config poll (poller.py). Reports are queued the way the
actor queues bus events (mapping.py); a command the poll hands over is "executed" once (the executor
deduplicates by id) and its ack queued like a `command.finished`. The outbox records what the agent
considered delivered: the rows the server acknowledged with a 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from loguru import logger

from floodwatch.messages import (
    CommandFinished,
    CommandReceived,
    IncidentEvent,
    IncidentOpened,
    Message,
    TrafficSecond,
)
from floodwatch.reporter import mapping
from floodwatch.reporter.client import ApiClient
from floodwatch.reporter.delivery import Deliverer
from floodwatch.reporter.outbox import ACKS, Outbox, Row, incident_stream
from floodwatch.reporter.poller import ConfigPoller
from floodwatch.settings.reporter import ReporterSettings


class RecordingOutbox(Outbox):
    """The outbox, remembering every row the server acknowledged."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.acknowledged: list[Row] = []

    def delivered(self, rows: list[Row]) -> None:
        super().delivered(rows)
        self.acknowledged.extend(rows)


def traffic_second(t: float, pps: int) -> TrafficSecond:
    return TrafficSecond(t_start=t, t_end=t + 1, pps=pps, bps=pps * 800, pps_in=pps, bps_in=pps * 800, pps_out=0,
                         bps_out=0, tcp_pct=10.0, udp_pct=89.5, icmp_pct=0.5, other_pct=0.0, conn_count=5,
                         src_distinct=4, sample_rate=1.0, exact=True, kernel_drops=0, malformed=0)


class Agent:
    """One simulated agent. Construct and run inside the event loop."""

    def __init__(self, directory: Path, url: str, node_uuid: str, api_key: str, dialect: str) -> None:
        self.settings = ReporterSettings(
            url=url, api_key=api_key, node_uuid=node_uuid, dialect=dialect, heartbeat_interval=1.0,
            config_interval=0.5, backoff_initial=0.2, backoff_max=1.0, connect_timeout=2.0, request_timeout=10.0,
            metrics_batch=25)
        self.node_uuid = node_uuid
        self.outbox = RecordingOutbox(directory / "outbox.sqlite")
        self.client = ApiClient(self.settings, api_key, node_uuid)
        self.health = "ok"
        log = logger.bind(actor=f"agent-{node_uuid[:8]}")
        self.deliverer = Deliverer(self.outbox, self.client, self.settings, log, self._set_health)
        self.poller = ConfigPoller(self.client, self.outbox, self._publish, self.settings.config_interval, log,
                                   self.deliverer.throttle)
        self.commands: dict[int, int] = {}  # command id -> times the poll handed it over
        self.executed: list[int] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def _set_health(self, text: str) -> None:
        self.health = text

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self.deliverer.run()), asyncio.ensure_future(self.poller.run())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.deliverer.stop()
        await self.client.close()
        self.outbox.close()

    # -- what the actor does with bus events ----------------------------------------------------------
    def second(self, t: float, pps: int) -> None:
        self.outbox.add_metric(mapping.metrics_sample(traffic_second(t, pps)), self.deliverer.metrics_busy_upto)
        self.deliverer.wake()

    def incident(self, msg: IncidentEvent) -> None:
        key = msg.incident_key
        self.outbox.add("incident", incident_stream(key), mapping.incident_body(msg), mapping.incident_op(msg), key)
        self.deliverer.wake()
        if isinstance(msg, IncidentOpened):
            self.poller.trigger()

    def heartbeat(self, uptime: float) -> None:
        self.outbox.add_heartbeat(mapping.heartbeat_body("test", uptime, "replica-test"))
        self.deliverer.wake()

    async def _publish(self, msg: Message) -> None:
        if not isinstance(msg, CommandReceived):
            return
        self.commands[msg.command_id] = self.commands.get(msg.command_id, 0) + 1
        if msg.command_id in self.executed:
            return  # the executor runs a command id once
        self.executed.append(msg.command_id)
        done = CommandFinished(command_id=msg.command_id, status="applied", error="", output=f"ran {msg.command}",
                               executed_at=msg.received_at)
        self.outbox.add("ack", ACKS, mapping.ack_body(done))
        self.poller.note_acked(msg.command_id)
        self.deliverer.wake()

    # -- what the test reads ------------------------------------------------------------------------
    def delivered(self, kind: str) -> list[Row]:
        return [r for r in self.outbox.acknowledged if r.kind == kind]

    @property
    def pending(self) -> int:
        return self.outbox.pending


async def drained(agents: list[Agent], timeout: float) -> None:
    """Wait until every agent's outbox is empty (AssertionError with the stragglers' health after timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(a.pending for a in agents):
        if loop.time() > deadline:
            left = {a.node_uuid[:8]: (a.pending, a.health) for a in agents if a.pending}
            raise AssertionError(f"outboxes not drained within {timeout} s: {left}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(agents: list[Agent]) -> Any:
    for a in agents:
        a.start()
    try:
        yield agents
    finally:
        for a in agents:
            await a.stop()
