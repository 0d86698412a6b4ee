"""The delivery loop in the server process: one asyncio task per channel, woken by new outbox rows.

Install before the database thread starts (`install()` adds the outbox tables and the store's incident
hook), start after it. Each channel sends oldest first, one message at a time, under its rate limit
(rules.plan); a failed attempt is retried with backoff (or after the receiver's Retry-After) until
`give_up_after`; a refused message (HTTP 4xx other than 408/425/429, SMTP 5xx) is marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from loguru import logger

from floodwatch.errors import StorageError
from floodwatch.server.dbthread import DbWorker
from floodwatch.server.notify import outbox
from floodwatch.server.notify.channels import Channel, load_secrets, parse_channels
from floodwatch.server.notify.deliver import Outcome, deliver, tls_context
from floodwatch.server.notify.render import render
from floodwatch.server.notify.rules import backoff
from floodwatch.server.notify.summary import Message
from floodwatch.server.store import Store
from floodwatch.settings.notify import NotifySettings

IDLE_CHECK = 30.0  # a channel with nothing to do looks again after this long (rows queued by other processes)
SHARED_IDLE_CHECK = 2.0  # the same on PostgreSQL, where other replicas queue rows all the time
STANDBY_CHECK = 5.0  # a replica that does not hold a channel's lease checks this often whether it expired
LEASE_MARGIN = 15.0  # a channel's lease outlasts one delivery attempt (`timeout`) by this much


def holder_died(holder: str) -> bool:
    """Whether a lease holder ("host:pid:random") was a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
PRUNE_EVERY = 3600.0


def channels_of(settings: NotifySettings) -> list[Channel]:
    """The configured channels with their secrets (ConfigError naming the key when one cannot be read)."""
    return load_secrets(parse_channels(settings.channel))


class Notifier:
    def __init__(self, settings: NotifySettings, store: Store, db: DbWorker,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.db = db
        self.clock = clock
        self.channels = channels_of(settings)
        self.log = logger.bind(actor="notify")
        self.counters: dict[str, int] = {"notify_queued": 0, "notify_sent": 0, "notify_retries": 0,
                                         "notify_failed": 0}
        self._wake: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        # PostgreSQL (maybe several replicas): one process delivers a channel at a time, under a lease
        # longer than any delivery (outbox.hold)
        self.shared = store.dialect == "postgresql"
        self.lease = outbox.Lease(f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}",
                                  settings.timeout + LEASE_MARGIN, STANDBY_CHECK, holder_died)
        self.idle_check = SHARED_IDLE_CHECK if self.shared else IDLE_CHECK

    def install(self) -> None:
        outbox.init(self.store)
        self.store.incident_hooks.append(self._on_incident)

    def _on_incident(self, store: Store, incident_id: int, before: dict[str, Any] | None) -> None:
        """In the database thread, inside the incident's transaction."""
        queued = outbox.queue_incident_change(store, self.channels, incident_id, before, self.clock())
        self.counters["notify_queued"] += len(queued)
        loop = self._loop
        if loop is not None:
            for name in queued:  # the loop reads the rows in a later batch, after this commit
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake[name].set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        for ch in self.channels:
            tls_context(ch)  # made now, not in the first message's latency
            self._wake[ch.name] = asyncio.Event()
            self._tasks.append(asyncio.ensure_future(self._run(ch)))
        self._tasks.append(asyncio.ensure_future(self._prune()))
        self.log.info("notifications: {} channel(s): {}", len(self.channels),
                      ", ".join(f"{c.name} ({c.kind})" for c in self.channels))

    async def stop(self) -> None:
        self._loop = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self.channels if self.shared else ():
            with contextlib.suppress(StorageError):  # else the lease expires on its own
                await self.db.call(outbox.release, self.store, ch.name, self.lease.holder)
        if self._session is not None:
            await self._session.close()

    async def _run(self, ch: Channel) -> None:
        while True:
            try:
                wait = await self._step(ch)
            except StorageError as e:
                self.log.error("{}: outbox unavailable: {}", ch.name, e)
                wait = 5.0
            if wait > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake[ch.name].wait(), wait)
                self._wake[ch.name].clear()

    async def _step(self, ch: Channel) -> float:
        """Do the channel's next step; returns how long to sleep before the next (0: go on at once)."""
        now = self.clock()
        step, msg = await self.db.call(outbox.next_step, self.store, ch, now, ch.kind != "pagerduty",
                                       self.lease if self.shared else None)
        if step.action == "idle":
            return self.idle_check
        if step.action == "wait":
            return max(0.01, min(self.idle_check, step.until - now))
        assert msg is not None
        outcome = await self.send(ch, msg)
        await self._record(ch, msg, outcome)
        return 0.0

    async def send(self, ch: Channel, msg: Message) -> Outcome:
        assert self._session is not None
        return await deliver(self._session, ch, render(ch, msg, self.settings.link_base_url),
                             self.settings.timeout, self.clock)

    async def _record(self, ch: Channel, msg: Message, outcome: Outcome) -> None:
        now = self.clock()
        if outcome.ok:
            await self.db.call(outbox.mark_sent, self.store, msg.delivery_id, now, outcome.answer)
            self.counters["notify_sent"] += 1
            return
        too_old = now - msg.created_at > self.settings.give_up_after
        if not outcome.retry or too_old:
            await self.db.call(outbox.mark_failed, self.store, msg.delivery_id, outcome.answer)
            self.counters["notify_failed"] += 1
            self.log.error("{} ({}): {} message {} dropped: {}", ch.name, ch.kind, msg.event, msg.delivery_id,
                           "retried for too long" if too_old else outcome.answer)
            return
        attempts = await self.db.call(outbox.attempts_of, self.store, msg.delivery_id) + 1
        delay = outcome.retry_after if outcome.retry_after is not None else \
            backoff(attempts, self.settings.backoff_initial, self.settings.backoff_max)
        await self.db.call(outbox.mark_retry, self.store, msg.delivery_id, now + delay, outcome.answer)
        self.counters["notify_retries"] += 1
        self.log.warning("{} ({}): attempt {} of {} message failed ({}); next in {:.1f}s", ch.name, ch.kind,
                         attempts, msg.event, outcome.answer[:200], delay)

    async def _prune(self) -> None:
        while True:
            try:
                before = self.clock() - self.settings.retention_days * 86400
                await self.db.call(outbox.prune, self.store, before)
            except StorageError as e:
                self.log.error("pruning the outbox failed: {}", e)
            await asyncio.sleep(PRUNE_EVERY)
