"""One thread owns the database: requests queue store calls, which run in batches, one commit per batch.

This keeps SQLite off the event loop and turns many small writes into one fsync (group commit) while
every caller still learns the outcome of its own call only after the commit: an answer the client
gets means the write is on disk. A batch's `add_metrics` calls (most of the traffic: one per agent per
second) go to the store as one `add_metrics_many` call: on PostgreSQL one statement instead
of four round trips and a savepoint per call.
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


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as e:  # noqa: BLE001 - handed to the caller, who maps it
        return False, e


class DbWorker:
    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self.stats: dict[str, int] = {"db_calls": 0, "db_commits": 0, "db_errors": 0, "db_metrics_coalesced": 0,
                                      "db_metrics_fallbacks": 0}
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

    def _add_metrics_many(self, batch: list[_Item]) -> dict[int, tuple[bool, Any]]:
        """The batch's add_metrics calls as one store call (on PostgreSQL one statement), when
        there are several: {position in the batch: (ok, result)}. If the combined call fails (rolled back
        alone), the calls run one by one, so a bad one fails alone."""
        at = [i for i, (fn, _, _, _) in enumerate(batch) if fn == self.store.add_metrics]
        many = getattr(self.store, "add_metrics_many", None)
        if len(at) < 2 or many is None:
            return {}
        try:
            counts = many([batch[i][1] for i in at])
        except Exception:  # noqa: BLE001 - retried call by call below, each with its own outcome
            self.stats["db_metrics_fallbacks"] += 1
            return {i: _outcome(batch[i][0], batch[i][1]) for i in at}
        self.stats["db_metrics_coalesced"] += len(at)
        return {i: (True, n) for i, n in zip(at, counts, strict=True)}

    def _run_batch(self, batch: list[_Item]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with self.store.group():
                t = time.perf_counter()
                metrics = self._add_metrics_many(batch)
                if metrics:
                    t = self._timed(t, "add_metrics_many")
                for i, (fn, args, _, _) in enumerate(batch):
                    if i in metrics:
                        results.append(metrics[i])
                        continue
                    results.append(_outcome(fn, args))
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
