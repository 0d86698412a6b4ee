"""The asyncio actor face (for aiohttp-based actors) over the same core: the same lifecycle, the hooks
are coroutines, workers are tasks (self.create_task) and a task dying with an error stops the actor.

The handshake and the bus wait run on the core's blocking sockets before anything else is scheduled;
then only the SUB is read through asyncio (control sends never block, control reads happen at each beat).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import zmq.asyncio

from floodwatch.config import Config
from floodwatch.messages import Message
from floodwatch.runtime.core import ActorCore, S, die_with_supervisor

EVENTS_AT_ONCE = 256  # events handled in one turn (inside one events_together()) at most


class AsyncActor(ActorCore[S]):
    """An asyncio actor: override on_start / on_message / on_stop (coroutines)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop_event: asyncio.Event | None = None
        self._failure: BaseException | None = None

    async def on_start(self) -> None:
        """Start servers, clients and workers."""

    async def on_message(self, msg: Message) -> None:
        """One decoded event from the bus (of a subscribed type)."""

    async def on_stop(self) -> None:
        """Flush and release."""

    def events_together(self) -> AbstractContextManager[Any]:
        """Entered around the events that arrived together (up to EVENTS_AT_ONCE), handled in one turn of
        the loop: the reporter queues them in one transaction (one fsync, not one each)."""
        return contextlib.nullcontext()

    async def publish(self, msg: Message) -> None:
        self._send_event(msg)

    def create_task(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        """A background task: if it dies with an error, the actor stops and exits non-zero."""
        task = asyncio.ensure_future(coro)
        task.set_name(name or repr(coro))
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def every(self, seconds: float | Callable[[], float], fn: Callable[[], Awaitable[None]],
              first: float | None = None) -> None:
        """Call fn every `seconds` (a number, or a function giving the delay to the next call)."""
        def delay() -> float:
            return seconds() if callable(seconds) else seconds

        async def loop() -> None:
            await asyncio.sleep(delay() if first is None else first)
            while not self.stopping:
                await fn()
                await asyncio.sleep(delay())

        self.create_task(loop(), name=f"every-{getattr(fn, '__name__', 'timer')}")

    def request_stop(self, *_: Any) -> None:
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failure = exc
            self.request_stop()

    async def _events(self, sock: zmq.asyncio.Socket) -> None:
        while not self.stopping:
            together = [await sock.recv_multipart()]
            while len(together) < EVENTS_AT_ONCE:
                try:
                    together.append(await sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            with self.events_together():
                for parts in together:
                    await self._dispatch(parts)

    async def _dispatch(self, parts: list[bytes]) -> None:
        msg = self._accept(parts)
        if msg is not None:
            await self.on_message(msg)

    async def _abeat(self) -> None:
        self._beat()

    async def run_async(self) -> int:
        self._stop_event = asyncio.Event()
        self._failure = None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        die_with_supervisor()
        try:
            sub, early = self._open_bus()
            await self.on_start()
            for parts in early:
                await self._dispatch(parts)
            self.create_task(self._events(zmq.asyncio.Socket.from_socket(sub)), name="events")
            self._ready()
            self.every(self._beat_period(), self._abeat, first=0.0)
            await self._stop_event.wait()
            await self.on_stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._stopped(self._failure)
            return 0
        finally:
            self._close()

    def run(self) -> int:
        return asyncio.run(self.run_async())
