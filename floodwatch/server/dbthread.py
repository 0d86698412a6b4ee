"""One thread owns the database: requests queue store calls, which run in batches, one commit per batch.

This keeps SQLite off the event loop and turns many small writes into one fsync (group commit) while
every caller still learns the outcome of its own call only after the commit: an answer the client
gets means the write is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from loguru import logger

from floodwatch.server.store import Store

T = TypeVar("T")
_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller went away (client disconnected); the write happened regardless
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class DbWorker:
    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self.stats: dict[str, int] = {"db_calls": 0, "db_commits": 0, "db_errors": 0}
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="server-db", daemon=True)
        self._stopped = False
        # (seconds, operation) after each store call and each commit ("commit"), in this thread
        self.on_timing: Callable[[float, str], None] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        if not self._stopped and self._thread.is_alive():
            self._stopped = True
            self._q.put(None)
            self._thread.join(30)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (a bound store method) in the database thread; its result after the commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return await fut

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(batch)
            if stop:
                return

    def _timed(self, started: float, operation: str) -> float:
        now = time.perf_counter()
        if self.on_timing is not None:
            self.on_timing(now - started, operation)
        return now

    def _run_batch(self, batch: list[_Item]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with self.store.group():
                t = time.perf_counter()
                for fn, args, _, _ in batch:
                    try:
                        results.append((True, fn(*args)))
                    except Exception as e:  # noqa: BLE001 - handed to the caller, who maps it
                        results.append((False, e))
                    t = self._timed(t, getattr(fn, "__name__", "other"))
            self._timed(t, "commit")
        except Exception as e:  # noqa: BLE001 - the commit failed: every caller gets the error
            logger.bind(actor="apiserver").error("database commit failed: {}", e)
            self.stats["db_errors"] += 1
            results = [(False, e)] * len(batch)
        self.stats["db_calls"] += len(batch)
        self.stats["db_commits"] += 1
        for (_, _, fut, loop), (ok, value) in zip(batch, results, strict=True):
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, fut, ok, value)
