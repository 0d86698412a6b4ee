"""Polls GET /config on an interval (and at once on demand) and publishes what the server wants.

Publishes ConfigReceived for the detector, and CommandReceived for each pending command that this
agent has not acknowledged yet (re-published on every poll while still pending; the executor
deduplicates by command id). Garbage from the server is logged, counted and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from floodwatch.logs import RateLimitedLog
from floodwatch.messages import CommandReceived, ConfigReceived, Message
from floodwatch.reporter.client import ApiClient, ApiUnreachable
from floodwatch.reporter.outbox import Outbox
from floodwatch.reporter.policy import Throttle, parse_retry_after
from floodwatch.reporter.remote_config import BadRemoteConfig, RemoteConfig, parse_remote_config

RECENT_ACKS = 10000  # command ids acked lately, remembered in memory (bounded)


class ConfigPoller:
    def __init__(self, client: ApiClient, outbox: Outbox, publish: Callable[[Message], Awaitable[None]],
                 interval: float, log: Any, throttle: Throttle,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.outbox = outbox
        self.publish = publish
        self.interval = interval
        self.counters: dict[str, Any] = {}  # read by the actor's heartbeat (count_from)
        self.log = log
        self.clock = clock
        self.throttle = throttle
        self._trigger = asyncio.Event()
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._say = RateLimitedLog(self.log, 30.0)
        for name in ("config_polls", "config_rejected", "config_errors", "commands_published"):
            self.counters[name] = 0

    def trigger(self) -> None:
        """Poll now (an incident opened): the server may have commands waiting."""
        self._trigger.set()

    def note_acked(self, command_id: int) -> None:
        self._recent[command_id] = None
        while len(self._recent) > RECENT_ACKS:
            self._recent.popitem(last=False)

    async def run(self) -> None:
        while True:
            self._trigger.clear()
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trigger.wait(), self.interval)

    def _warn(self, key: str, text: str, *args: Any) -> None:
        self.counters["config_errors"] += 1
        self._say.warning(key, text, *args)

    async def poll(self) -> RemoteConfig | None:
        if self.throttle.remaining():
            return None  # the server asked for quiet (Retry-After) or refused our key: wait
        self.counters["config_polls"] += 1
        try:
            answer = await self.client.call("GET", "config")
        except ApiUnreachable as e:
            self._warn("unreachable", "config poll failed: {}", e)
            return None
        if answer.status in (429, 503):
            self.throttle.pause(parse_retry_after(answer.retry_after, self.clock()) or self.interval)
        if answer.status != 200:
            hint = " (check api key / node uuid)" if answer.status in (401, 403) else ""
            self._warn(f"status{answer.status}", "config poll: server answered {}{}", answer.status, hint)
            return None
        try:
            remote = parse_remote_config(json.loads(answer.body))
        except (ValueError, UnicodeDecodeError, BadRemoteConfig) as e:
            kind = answer.content_type.split(";")[0] or "no content type"
            self.counters["config_rejected"] += 1
            self._warn("garbage", "config poll: ignored an answer that is not a config ({}, {} bytes): {}",
                       kind, len(answer.body), str(e)[:120])
            return None
        await self._publish(remote)
        return remote

    async def _publish(self, remote: RemoteConfig) -> None:
        if remote.problems:
            self._warn("problems:" + remote.problems[0][:40], "config poll: {} problem(s) in the answer{}: {}",
                       len(remote.problems), "" if remote.settings_ok else ", thresholds/baseline/IOCs NOT applied",
                       "; ".join(remote.problems[:3]))
        if not remote.settings_ok:
            self.counters["config_rejected"] += 1
        else:
            await self.publish(ConfigReceived(
                fetched_at=self.clock(), node_id=remote.node_id, pps_threshold=remote.pps_threshold,
                bps_threshold=remote.bps_threshold, baseline=remote.baseline, ioc_patterns=remote.ioc_patterns,
            ))
        acked = self.outbox.pending_ack_ids() | set(self._recent)
        for command_id, command in remote.commands:
            if command_id in acked:
                continue
            try:
                await self.publish(CommandReceived(command_id=command_id, command=command,
                                                   received_at=self.clock(), source="api"))
            except (OverflowError, TypeError, ValueError) as e:  # not msgpack-able (e.g. a huge integer)
                self._warn("command", "pending command {} cannot be passed on: {}", command_id, e)
                continue
            self.counters["commands_published"] += 1
